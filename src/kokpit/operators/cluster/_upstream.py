"""An upstream Kubernetes control plane as Pods: the PKI it needs and the Pods of etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, rendered the way kubeadm lays them out (flags wired to the PKI
files, the etcd members and the Service network; probes on each component's real health endpoint).

Pure functions, no API calls: the cluster operator stores `upstream_pki` in the Cluster's PKI Secret and
creates the Pods of `render_pods`; tests validate every Pod against the Kubernetes 1.37 schema, compare the
flags with a golden file reviewed against the upstream flag documentation, and run the etcd Pods' command
lines for real (Debian's etcd-server).  The operator uses it through ``_upstreamops`` (PKI Secret, kubeconfig,
the non-etcd Pods) and ``_etcd`` (the members, one membership change at a time).

Layout inside the Pods (one Secret volume, as kubeadm's /etc/kubernetes/pki):
``/etc/kubernetes/pki/{ca,apiserver,apiserver-kubelet-client,front-proxy-ca,front-proxy-client}.{crt,key}``,
``sa.{key,pub}``, ``etcd/{ca,<member>-server,<member>-peer,healthcheck-client}.{crt,key}``,
``apiserver-etcd-client.{crt,key}``, ``controller-manager.conf``, ``scheduler.conf``, ``admin.conf``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kokpit._lib.pki import CertPair, new_ca

__all__ = ["PKI_DIR", "EtcdMember", "UpstreamSpec", "etcd_command", "etcd_member_files", "etcd_pod", "initial_cluster",
           "member_command", "member_pki_items", "pki_paths", "render_pods", "secret_key", "upstream_pki"]

PKI_DIR = "/etc/kubernetes/pki"
Obj = dict[str, Any]


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member: its name, the address it is reached on, its ports (distinct per member only when
    several share a host, as on one machine)."""

    name: str
    host: str
    client_port: int = 2379
    peer_port: int = 2380
    metrics_port: int = 2381

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"


@dataclass(frozen=True)
class UpstreamSpec:
    """What the rendering needs to know about one business cluster."""

    cluster: str
    namespace: str
    version: str  # v1.37.0
    members: tuple[EtcdMember, ...]
    advertise_address: str
    apiserver_port: int = 6443
    service_cidr: str = "10.96.0.0/12"
    pod_cidr: str = "10.244.0.0/16"
    extra_sans: tuple[str, ...] = ()
    registry: str = "registry.k8s.io"
    etcd_image: str = "registry.k8s.io/etcd:3.5.21-0"
    data_root: str = "/var/lib/kokpit/clusters"
    image_overrides: dict[str, str] = field(default_factory=dict)
    kubeconfig_server: str = ""  # where the components' kubeconfigs point (default: the advertise address)

    @property
    def service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))


# ------------------------------------------------------------------------------------------ PKI

def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(ca: CertPair, cn: str, *, org: str = "", server: bool = False, client: bool = False,
          sans: tuple[str, ...] = (), days: int = 365, now: dt.datetime | None = None) -> CertPair:
    """A leaf signed by `ca` with serverAuth and/or clientAuth (etcd peers need both)."""
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
              if on]
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1))
         .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if sans:
        names: list[x509.GeneralName] = []
        for h in dict.fromkeys(sans):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return CertPair(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _kubeconfig(server: str, ca: CertPair, pair: CertPair, user: str) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": b64(ca.cert_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(pair.cert_pem),
                                          "client-key-data": b64(pair.key_pem)}}],
        "contexts": [{"name": user, "context": {"cluster": "kubernetes", "user": user}}],
        "current-context": user}, sort_keys=False).encode()


def etcd_member_files(etcd_ca: CertPair, m: EtcdMember, now: dt.datetime | None = None) -> dict[str, bytes]:
    """Serving and peer certificates of member `m` (also for a member added later, from the same CA); named
    after the member, so replacing one never touches another's files."""
    sans = (m.host, "localhost", "127.0.0.1", m.name)
    out: dict[str, bytes] = {}
    for kind in ("server", "peer"):
        pair = _cert(etcd_ca, m.name, server=True, client=True, sans=sans, now=now)
        out[f"etcd/{m.name}-{kind}.crt"], out[f"etcd/{m.name}-{kind}.key"] = pair.cert_pem, pair.key_pem
    return out


def pki_paths(spec: UpstreamSpec) -> list[str]:
    """Every file `upstream_pki` makes, relative to PKI_DIR (sorted)."""
    pairs = ["ca", "etcd/ca", "front-proxy-ca", "apiserver", "apiserver-kubelet-client", "front-proxy-client",
             "apiserver-etcd-client", "etcd/healthcheck-client"]
    pairs += [f"etcd/{m.name}-{k}" for m in spec.members for k in ("server", "peer")]
    files = [f"{p}.{ext}" for p in pairs for ext in ("crt", "key")]
    return sorted([*files, "sa.key", "sa.pub", "controller-manager.conf", "scheduler.conf", "admin.conf"])


def secret_key(path: str) -> str:
    """The Secret data key of a PKI file (keys cannot hold `/`): `etcd/ca.crt` -> `etcd_ca.crt`."""
    return path.replace("/", "_")


def upstream_pki(spec: UpstreamSpec, now: dt.datetime | None = None) -> dict[str, bytes]:
    """Every file of the layout in the module docstring, path relative to PKI_DIR -> PEM/YAML bytes."""
    out: dict[str, bytes] = {}

    def put(name: str, pair: CertPair) -> None:
        out[f"{name}.crt"], out[f"{name}.key"] = pair.cert_pem, pair.key_pem

    ca = new_ca(f"{spec.cluster}-kubernetes-ca", now=now)
    etcd_ca = new_ca(f"{spec.cluster}-etcd-ca", now=now)
    fp_ca = new_ca(f"{spec.cluster}-front-proxy-ca", now=now)
    put("ca", ca)
    put("etcd/ca", etcd_ca)
    put("front-proxy-ca", fp_ca)
    svc = f"{spec.cluster}-apiserver"
    sans = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
            spec.service_ip, spec.advertise_address, svc, f"{svc}.{spec.namespace}", f"{svc}.{spec.namespace}.svc",
            "127.0.0.1", "localhost", *spec.extra_sans)
    put("apiserver", _cert(ca, "kube-apiserver", server=True, sans=sans, now=now))
    put("apiserver-kubelet-client", _cert(ca, "kube-apiserver-kubelet-client", org="kubeadm:cluster-admins",
                                          client=True, now=now))
    put("front-proxy-client", _cert(fp_ca, "front-proxy-client", client=True, now=now))
    put("apiserver-etcd-client", _cert(etcd_ca, "kube-apiserver-etcd-client", client=True, now=now))
    put("etcd/healthcheck-client", _cert(etcd_ca, "kube-etcd-healthcheck-client", client=True, now=now))
    for m in spec.members:
        out.update(etcd_member_files(etcd_ca, m, now=now))
    sa = ec.generate_private_key(ec.SECP256R1())
    out["sa.key"] = _key_pem(sa)
    out["sa.pub"] = sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    server = spec.kubeconfig_server or f"https://{spec.advertise_address}:{spec.apiserver_port}"
    for name, cn, org in (("controller-manager", "system:kube-controller-manager", ""),
                          ("scheduler", "system:kube-scheduler", ""),
                          ("admin", "kubernetes-admin", "system:masters")):
        out[f"{name}.conf"] = _kubeconfig(server, ca, _cert(ca, cn, org=org, client=True, now=now), cn)
    return out


# ------------------------------------------------------------------------------------------ Pods

def _f(name: str) -> str:
    return f"{PKI_DIR}/{name}"


def _pod(spec: UpstreamSpec, component: str, index: int, image: str, command: list[str], probes: Obj,
         volumes: list[Obj], mounts: list[Obj], cpu: str) -> Obj:
    name = f"{spec.cluster}-{component}-{index}"
    labels = {"kokpit.io/cluster": spec.cluster, "kokpit.io/component": component}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
            "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical", "restartPolicy": "Always",
                     "automountServiceAccountToken": False,
                     "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": component, "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": command, **probes,
                                     "resources": {"requests": {"cpu": cpu}},
                                     "volumeMounts": mounts}],
                     "volumes": volumes}}


def _probe(path: str, port: int, scheme: str, host: str = "127.0.0.1", **extra: Any) -> Obj:
    return {"httpGet": {"host": host, "path": path, "port": port, "scheme": scheme},
            "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15, "failureThreshold": 8, **extra}


def _pki_volume(spec: UpstreamSpec) -> tuple[Obj, Obj]:
    items = [{"key": secret_key(p), "path": p} for p in pki_paths(spec)]
    return ({"name": "pki", "secret": {"secretName": f"{spec.cluster}-pki", "defaultMode": 0o600, "items": items}},
            {"name": "pki", "mountPath": PKI_DIR, "readOnly": True})


def initial_cluster(members: tuple[EtcdMember, ...] | list[EtcdMember]) -> str:
    """etcd's ``--initial-cluster`` value for these members."""
    return ",".join(f"{x.name}={x.peer_url}" for x in members)


def etcd_command(spec: UpstreamSpec, i: int, *, state: str = "new") -> list[str]:
    """The command line of member `i` (`state` is `existing` for a member added to a running cluster)."""
    return member_command(spec.cluster, spec.members[i], initial_cluster(spec.members), state)


def member_command(cluster: str, m: EtcdMember, initial: str, state: str) -> list[str]:
    """One member's command line: `initial` is the ``--initial-cluster`` it starts with (all members of a new
    cluster; the running members plus itself for one added later, `state` ``existing``)."""
    return ["etcd", f"--name={m.name}", "--data-dir=/var/lib/etcd",
            f"--listen-client-urls={m.client_url}" + ("" if m.host == "127.0.0.1" else
                                                      f",https://127.0.0.1:{m.client_port}"),
            f"--advertise-client-urls={m.client_url}", f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}", f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}", f"--initial-cluster-token={cluster}-etcd",
            f"--listen-metrics-urls=http://127.0.0.1:{m.metrics_port}",
            "--client-cert-auth=true", f"--cert-file={_f(f'etcd/{m.name}-server.crt')}",
            f"--key-file={_f(f'etcd/{m.name}-server.key')}", f"--trusted-ca-file={_f('etcd/ca.crt')}",
            "--peer-client-cert-auth=true", f"--peer-cert-file={_f(f'etcd/{m.name}-peer.crt')}",
            f"--peer-key-file={_f(f'etcd/{m.name}-peer.key')}", f"--peer-trusted-ca-file={_f('etcd/ca.crt')}",
            "--snapshot-count=10000"]


def member_pki_items(name: str) -> list[Obj]:
    """The Secret volume items of one member: the CA, its own certificates, the health-check client."""
    paths = ["etcd/ca.crt", *(f"etcd/{name}-{k}.{e}" for k in ("server", "peer") for e in ("crt", "key")),
             "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"]
    return [{"key": secret_key(p), "path": p} for p in paths]


def etcd_pod(spec: UpstreamSpec, m: EtcdMember, initial: str, state: str, *, name: str = "",
             image: str = "", extra_args: tuple[str, ...] = (), own_pki_only: bool = False) -> Obj:
    """The Pod of one etcd member; its data folder is the member's own (named after it: member names are
    never reused, so a new member never finds an old one's data).  `own_pki_only` mounts only this member's
    files (members added later get their certificates after the others started)."""
    pki_vol, pki_mount = _pki_volume(spec)
    if own_pki_only:
        pki_vol = {"name": "pki", "secret": {"secretName": f"{spec.cluster}-pki", "defaultMode": 0o600,
                                             "items": member_pki_items(m.name)}}
    data = {"name": "etcd-data", "hostPath": {
        "path": f"{spec.data_root}/{spec.namespace}/{spec.cluster}/etcd-{m.name}", "type": "DirectoryOrCreate"}}
    health = _probe("/health?exclude=NOSPACE&serializable=true", m.metrics_port, "HTTP")
    pod = _pod(spec, "etcd", 0, image or spec.image_overrides.get("etcd") or spec.etcd_image,
               [*member_command(spec.cluster, m, initial, state), *extra_args],
               {"livenessProbe": health, "startupProbe": {**health, "failureThreshold": 24},
                "readinessProbe": _probe("/health?serializable=false", m.metrics_port, "HTTP")},
               [data, pki_vol], [{"name": "etcd-data", "mountPath": "/var/lib/etcd"}, pki_mount], "100m")
    pod["metadata"]["name"] = name or m.name
    return pod


def render_pods(spec: UpstreamSpec, apiserver_replicas: int = 1) -> list[Obj]:
    """etcd members, then kube-apiserver replicas, then controller-manager and scheduler."""
    pki_vol, pki_mount = _pki_volume(spec)

    def img(component: str) -> str:
        return spec.image_overrides.get(component) or f"{spec.registry}/{component}:{spec.version}"

    pods: list[Obj] = [etcd_pod(spec, m, initial_cluster(spec.members), "new", name=f"{spec.cluster}-etcd-{i}")
                       for i, m in enumerate(spec.members)]
    etcd_servers = ",".join(m.client_url for m in spec.members)
    p = spec.apiserver_port
    apiserver = ["kube-apiserver", f"--advertise-address={spec.advertise_address}", f"--secure-port={p}",
                 "--allow-privileged=true", "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                 f"--client-ca-file={_f('ca.crt')}", f"--tls-cert-file={_f('apiserver.crt')}",
                 f"--tls-private-key-file={_f('apiserver.key')}", f"--etcd-servers={etcd_servers}",
                 f"--etcd-cafile={_f('etcd/ca.crt')}", f"--etcd-certfile={_f('apiserver-etcd-client.crt')}",
                 f"--etcd-keyfile={_f('apiserver-etcd-client.key')}",
                 f"--kubelet-client-certificate={_f('apiserver-kubelet-client.crt')}",
                 f"--kubelet-client-key={_f('apiserver-kubelet-client.key')}",
                 "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                 f"--proxy-client-cert-file={_f('front-proxy-client.crt')}",
                 f"--proxy-client-key-file={_f('front-proxy-client.key')}",
                 f"--requestheader-client-ca-file={_f('front-proxy-ca.crt')}",
                 "--requestheader-allowed-names=front-proxy-client", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                 "--requestheader-group-headers=X-Remote-Group", "--requestheader-username-headers=X-Remote-User",
                 "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                 f"--service-account-key-file={_f('sa.pub')}",
                 f"--service-account-signing-key-file={_f('sa.key')}",
                 f"--service-cluster-ip-range={spec.service_cidr}", "--enable-bootstrap-token-auth=true"]
    for i in range(apiserver_replicas):
        pods.append(_pod(spec, "kube-apiserver", i, img("kube-apiserver"), apiserver, {
            "livenessProbe": _probe("/livez", p, "HTTPS", spec.advertise_address),
            "readinessProbe": _probe("/readyz", p, "HTTPS", spec.advertise_address, periodSeconds=1, failureThreshold=3),
            "startupProbe": _probe("/livez", p, "HTTPS", spec.advertise_address, failureThreshold=24)},
            [pki_vol], [pki_mount], "250m"))
    kcm = ["kube-controller-manager", "--bind-address=127.0.0.1", "--leader-elect=true",
           f"--kubeconfig={_f('controller-manager.conf')}",
           f"--authentication-kubeconfig={_f('controller-manager.conf')}",
           f"--authorization-kubeconfig={_f('controller-manager.conf')}",
           f"--client-ca-file={_f('ca.crt')}", f"--requestheader-client-ca-file={_f('front-proxy-ca.crt')}",
           f"--cluster-signing-cert-file={_f('ca.crt')}", f"--cluster-signing-key-file={_f('ca.key')}",
           f"--root-ca-file={_f('ca.crt')}", f"--service-account-private-key-file={_f('sa.key')}",
           f"--service-cluster-ip-range={spec.service_cidr}", f"--cluster-cidr={spec.pod_cidr}",
           "--allocate-node-cidrs=true", f"--cluster-name={spec.cluster}",
           "--controllers=*,bootstrapsigner,tokencleaner", "--use-service-account-credentials=true"]
    pods.append(_pod(spec, "kube-controller-manager", 0, img("kube-controller-manager"), kcm, {
        "livenessProbe": _probe("/healthz", 10257, "HTTPS"), "startupProbe": _probe("/healthz", 10257, "HTTPS",
                                                                                      failureThreshold=24)},
        [pki_vol], [pki_mount], "200m"))
    sched = ["kube-scheduler", "--bind-address=127.0.0.1", "--leader-elect=true", f"--kubeconfig={_f('scheduler.conf')}",
             f"--authentication-kubeconfig={_f('scheduler.conf')}", f"--authorization-kubeconfig={_f('scheduler.conf')}"]
    pods.append(_pod(spec, "kube-scheduler", 0, img("kube-scheduler"), sched, {
        "livenessProbe": _probe("/livez", 10259, "HTTPS"), "readinessProbe": _probe("/readyz", 10259, "HTTPS"),
        "startupProbe": _probe("/livez", 10259, "HTTPS", failureThreshold=24)}, [pki_vol], [pki_mount], "100m"))
    return pods
