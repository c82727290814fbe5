"""Upstream control planes (issue 18, item 4): the PKI, the rendered Pods (valid against Kubernetes 1.37, flags
equal to a golden file reviewed against the upstream flag documentation), and etcd for real — Debian's
etcd-server runs the rendered etcd command lines (the local kubelet's mapping: image → local binary, the Pod's
mount paths → folders), a 3-member TLS cluster comes up, `etcdctl endpoint health` passes with the rendered
client certificate, and a member is replaced one at a time without losing quorum or data."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from kokpit._lib.pki import CertPair
from kokpit.apiserver.testing import free_port
from kokpit.operators.cluster._upstream import (
    PKI_DIR,
    EtcdMember,
    UpstreamSpec,
    etcd_command,
    etcd_member_files,
    pki_paths,
    render_pods,
    secret_key,
    upstream_pki,
)

GOLDEN = Path(__file__).parent / "golden" / "upstream-flags.yaml"
SPEC = UpstreamSpec(cluster="c1", namespace="team-a", version="v1.37.0", advertise_address="10.0.0.10",
                    members=(EtcdMember("etcd-0", "10.0.0.10"), EtcdMember("etcd-1", "10.0.0.11"),
                             EtcdMember("etcd-2", "10.0.0.12")))


def _flags() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pod in render_pods(SPEC):
        c = pod["spec"]["containers"][0]
        out[pod["metadata"]["name"]] = c["command"]
    return out


@pytest.mark.parametrize("pod", render_pods(SPEC, apiserver_replicas=2), ids=lambda p: p["metadata"]["name"])
def test_rendered_pods_validate_against_kubernetes_1_37(pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(pod, "1.37.0", strict=True)


def test_flags_match_the_golden_file() -> None:
    """tests/operators/cluster/golden/upstream-flags.yaml was reviewed flag by flag against the upstream
    reference pages (kube-apiserver, kube-controller-manager, kube-scheduler, etcd configuration flags);
    a change here must be reviewed the same way, then the golden file rewritten."""
    assert _flags() == yaml.safe_load(GOLDEN.read_text())


def test_flags_point_at_files_the_pki_makes_and_at_every_member() -> None:
    made = {f"{PKI_DIR}/{p}" for p in pki_paths(SPEC)}
    assert made == {f"{PKI_DIR}/{p}" for p in upstream_pki(SPEC)}
    for name, cmd in _flags().items():
        for arg in cmd[1:]:
            _flag, _, value = arg.partition("=")
            if value.startswith(PKI_DIR):
                assert value in made, f"{name}: {arg} names a file the PKI does not make"
    api = _flags()["c1-kube-apiserver-0"]
    assert "--etcd-servers=https://10.0.0.10:2379,https://10.0.0.11:2379,https://10.0.0.12:2379" in api
    e1 = _flags()["c1-etcd-1"]
    assert ("--initial-cluster=etcd-0=https://10.0.0.10:2380,etcd-1=https://10.0.0.11:2380,"
            "etcd-2=https://10.0.0.12:2380") in e1
    # the Secret volume maps each key to its kubeadm path
    vol = render_pods(SPEC)[0]["spec"]["volumes"][1]["secret"]
    assert {i["path"] for i in vol["items"]} == set(pki_paths(SPEC))
    assert all("/" not in i["key"] for i in vol["items"])


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_pki_chains_names_and_identities() -> None:
    pki = upstream_pki(SPEC)
    ca, etcd_ca, fp = _cert(pki["ca.crt"]), _cert(pki["etcd/ca.crt"]), _cert(pki["front-proxy-ca.crt"])
    assert len({ca.subject, etcd_ca.subject, fp.subject}) == 3  # three separate CAs
    api = _cert(pki["apiserver.crt"])
    api.verify_directly_issued_by(ca)
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    ips = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    assert {"kubernetes", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
            "c1-apiserver.team-a.svc"} <= names
    assert {"10.96.0.1", "10.0.0.10", "127.0.0.1"} <= ips
    for name in ("etcd/etcd-0-server", "etcd/etcd-2-peer", "apiserver-etcd-client", "etcd/healthcheck-client"):
        _cert(pki[f"{name}.crt"]).verify_directly_issued_by(etcd_ca)
    _cert(pki["front-proxy-client.crt"]).verify_directly_issued_by(fp)
    kcm = yaml.safe_load(pki["controller-manager.conf"])
    assert kcm["clusters"][0]["cluster"]["server"] == "https://10.0.0.10:6443"
    user = _cert(base64.b64decode(kcm["users"][0]["user"]["client-certificate-data"]))
    assert user.subject.rfc4514_string() == "CN=system:kube-controller-manager"
    admin = yaml.safe_load(pki["admin.conf"])
    admin_cert = _cert(base64.b64decode(admin["users"][0]["user"]["client-certificate-data"]))
    assert "O=system:masters" in admin_cert.subject.rfc4514_string()
    assert secret_key("etcd/ca.crt") == "etcd_ca.crt"


# ------------------------------------------------------------------------------------------ etcd for real

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


class LocalEtcd:
    """Runs rendered etcd Pods as the local kubelet would: the image's etcd is the local binary, the Pod's
    PKI mount is a folder with the Secret's files, /var/lib/etcd is a folder of its own per member."""

    def __init__(self, root: Path, spec: UpstreamSpec, pki: dict[str, bytes]) -> None:
        self.root, self.spec, self.pki = root, spec, pki
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pki_dir = root / "pki"
        self.write_pki(pki)

    def write_pki(self, files: dict[str, bytes]) -> None:
        for rel, data in files.items():
            p = self.pki_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(0o600)

    def start(self, spec: UpstreamSpec, i: int, state: str = "new") -> None:
        m = spec.members[i]
        data = self.root / f"data-{m.name}"
        args = [a.replace(PKI_DIR, str(self.pki_dir)).replace("/var/lib/etcd", str(data))
                for a in etcd_command(spec, i, state=state)]
        assert ETCD is not None
        log = open(self.root / f"{m.name}.log", "ab")
        self.procs[m.name] = subprocess.Popen([ETCD, *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True, env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""})
        log.close()

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        with_signal(p, signal.SIGTERM)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def ctl(self, endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        assert ETCDCTL is not None
        return subprocess.run([ETCDCTL, f"--endpoints={','.join(endpoints)}", f"--cacert={self.pki_dir}/etcd/ca.crt",
                               f"--cert={self.pki_dir}/etcd/healthcheck-client.crt",
                               f"--key={self.pki_dir}/etcd/healthcheck-client.key", *args],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})

    def wait(self, endpoints: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = self.ctl(endpoints, "endpoint", "health")
            if r.returncode == 0 and (r.stdout + r.stderr).count("is healthy") == len(endpoints):  # 3.4: stderr
                return
            assert time.monotonic() < deadline, f"etcd not healthy: {r.stdout} {r.stderr}\n" + "\n".join(
                (self.root / f"{n}.log").read_text()[-1500:] for n in self.procs)
            time.sleep(0.3)


def with_signal(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
        p.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def _members(names: list[str]) -> tuple[EtcdMember, ...]:
    return tuple(EtcdMember(n, "127.0.0.1", free_port(), free_port(), free_port()) for n in names)


@pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason="Debian's etcd-server and etcd-client are needed "
                    "(.ci/run installs them)")
def test_three_member_etcd_with_tls_and_one_at_a_time_replacement(tmp_path: Path) -> None:
    spec = UpstreamSpec(cluster="c1", namespace="team-a", version="v1.37.0", advertise_address="127.0.0.1",
                        members=_members(["etcd-0", "etcd-1", "etcd-2"]))
    pki = upstream_pki(spec)
    etcd = LocalEtcd(tmp_path, spec, pki)
    try:
        for i in range(3):
            etcd.start(spec, i)
        endpoints = [m.client_url for m in spec.members]
        etcd.wait(endpoints)
        assert etcd.ctl(endpoints, "put", "/registry/kokpit", "survives").returncode == 0
        # without a client certificate of the etcd CA nobody gets in
        plain = subprocess.run([ETCDCTL or "", f"--endpoints={endpoints[0]}", f"--cacert={tmp_path}/pki/etcd/ca.crt",
                                "endpoint", "health"], capture_output=True, text=True, timeout=30,
                               env={**os.environ, "ETCDCTL_API": "3"})
        assert plain.returncode != 0
        # replace etcd-0 by etcd-3: remove it (2 of 3 left: quorum), then add the new member and start it
        listing = etcd.ctl(endpoints[1:], "member", "list", "-w", "json")
        ids = {m["name"]: m["ID"] for m in yaml.safe_load(listing.stdout)["members"]}
        assert etcd.ctl(endpoints[1:], "member", "remove", format(ids["etcd-0"], "x")).returncode == 0
        etcd.stop("etcd-0")
        assert etcd.ctl(endpoints[1:], "get", "/registry/kokpit", "--print-value-only").stdout.strip() == "survives"
        new = _members(["etcd-3"])[0]
        replaced = UpstreamSpec(cluster="c1", namespace="team-a", version="v1.37.0", advertise_address="127.0.0.1",
                                members=(*spec.members[1:], new))
        etcd_ca = CertPair(pki["etcd/ca.crt"], pki["etcd/ca.key"])
        etcd.write_pki(etcd_member_files(etcd_ca, new))
        added = etcd.ctl(endpoints[1:], "member", "add", "etcd-3", f"--peer-urls={new.peer_url}")
        assert added.returncode == 0, added.stderr
        etcd.start(replaced, 2, state="existing")
        endpoints = [m.client_url for m in replaced.members]
        etcd.wait(endpoints)
        names = {m["name"] for m in yaml.safe_load(etcd.ctl(endpoints, "member", "list", "-w", "json").stdout)["members"]}
        assert names == {"etcd-1", "etcd-2", "etcd-3"}
        got = etcd.ctl([new.client_url], "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
    finally:
        etcd.close()


# ------------------------------------------------------------------------------------------ admission

def _cpv(name: str, components: list[str], flavor: str = "Upstream") -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "ClusterPackageVersion", "metadata": {"name": name},
            "spec": {"kubernetesVersion": "v1.37.0", "flavor": flavor,
                     "components": [{"name": c, "image": f"registry.k8s.io/{c}:v1.37.0"} for c in components]}}


async def test_upstream_cpv_admission(apiserver: Any) -> None:
    from kokpit.api import install_crds
    from kokpit.client import ApiError, Client
    from kokpit.operators.cluster import CPV

    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        ok = await c.create(CPV, _cpv("full", ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]))
        assert ok["spec"]["flavor"] == "Upstream"
        made = await c.create(CPV, _cpv("kokpit", ["kube-apiserver", "simulator"], flavor="Kokpit"))
        assert made["spec"]["flavor"] == "Kokpit"
        defaulted = await c.create(CPV, {**_cpv("old", ["kube-apiserver"]), "spec": {
            "kubernetesVersion": "v1.37.0", "components": [{"name": "kube-apiserver", "image": "kokpit"}]}})
        assert defaulted["spec"]["flavor"] == "Kokpit"  # existing releases keep meaning kokpit's components
        with pytest.raises(ApiError) as e:
            await c.create(CPV, _cpv("no-etcd", ["kube-apiserver", "kube-scheduler"]))
        assert e.value.code == 422 and e.value.reason == "Invalid"
        assert "an Upstream control plane needs the etcd and kube-apiserver components" in str(e.value)
        with pytest.raises(ApiError) as e:
            await c.create(CPV, _cpv("extra", ["etcd", "kube-apiserver", "simulator"]))
        assert e.value.code == 422 and "components are etcd, kube-apiserver, kube-controller-manager, kube-scheduler" in str(e.value)
