"""Pure pieces of the cluster operator: names, the Pods a release wants, and how healthy a Pod is.

Everything here is a function of its arguments (objects as plain dicts, ``now`` passed in), so the decisions
that matter — which Pod is outdated, which is broken, which release to run — are unit-tested without a
server.  The operator module does the I/O around them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib import pki
from kokpit._lib.clock import parse_time
from kokpit.api.cluster import APISERVER_COMPONENT, MACHINE_OPERATOR_COMPONENT, SIMULATOR_COMPONENT
from kokpit.api.risk import RISK_ACTOR_COMPONENTS
from kokpit.runtime import find_condition

__all__ = [
    "APISERVER_DATA_MOUNT",
    "CLUSTER_LABEL",
    "COMPONENT_LABEL",
    "DATA_CLEANUP_COMPONENT",
    "DATA_COMPONENTS",
    "HASH_ANNOTATION",
    "KUBECONFIG_KEY",
    "KUBECONFIG_MOUNT",
    "METRICS_PORT_NAMES",
    "PKI_MOUNT",
    "RESTARTED_ANNOTATION",
    "VERSION_LABEL",
    "Names",
    "PodHealth",
    "Wiring",
    "cleanup_pod",
    "component_order",
    "desired_pod",
    "pod_health",
    "pod_ready",
    "restarted",
    "validate_cpv",
]

Obj = dict[str, Any]

CLUSTER_LABEL = "kokpit.io/cluster"
COMPONENT_LABEL = "kokpit.io/component"
VERSION_LABEL = "kokpit.io/package-version"
HASH_ANNOTATION = "kokpit.io/pod-spec-hash"
# the Cluster's spec.controlPlane.restartedAt entry a Pod was made for (kubectl.kubernetes.io/restartedAt's role)
RESTARTED_ANNOTATION = "kokpit.io/restarted-at"
KUBECONFIG_KEY = "value"  # the key Cluster API uses in <cluster>-kubeconfig Secrets
PKI_MOUNT = "/etc/kokpit/pki"
KUBECONFIG_MOUNT = "/etc/kokpit/kubeconfig"
APISERVER_DATA_MOUNT = "/var/lib/kokpit/apiserver"
SIMULATOR_DATA_MOUNT = "/var/lib/kokpit/simulator"
DRIVER_TLS_MOUNT = "/etc/kokpit/driver"  # node-driver mutual TLS: ca.crt, tls.crt, tls.key (kokpit.nodes.mtls)
# every server binds to its node's address (the Downward API's status.hostIP), never to a wildcard
_HOST_IP_ENV = {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
_DRIVER_TLS_ARGS = {  # component → (its flags for ca.crt, tls.crt, tls.key; the PKI Secret keys to mount)
    SIMULATOR_COMPONENT: (("--client-ca-file", "--tls-cert-file", "--tls-private-key-file"),
                          (pki.DRIVER_CA_CERT, pki.DRIVER_SERVING_CERT, pki.DRIVER_SERVING_KEY)),
    MACHINE_OPERATOR_COMPONENT: (("--driver-ca-file", "--driver-client-certificate", "--driver-client-key"),
                                 (pki.DRIVER_CA_CERT, pki.DRIVER_CLIENT_CERT, pki.DRIVER_CLIENT_KEY)),
}


METRICS_TOKENS_MOUNT = "/etc/kokpit/metrics"  # tokens.json of the business API server: /metrics takes them
# component -> the name of its metrics port in the Service (the ports of a simulated cluster's processes)
METRICS_PORT_NAMES = {SIMULATOR_COMPONENT: "sim-metrics", MACHINE_OPERATOR_COMPONENT: "mo-metrics",
                      "kube-scheduler": "sched-metrics", "kube-controller-manager": "kcm-metrics"}


def _metrics_args(name: str, w: Wiring) -> list[str]:
    port = w.metrics_ports.get(name)
    if not port:
        return []
    return ["--metrics-host", "$(HOST_IP)", "--metrics-port", str(port),
            "--metrics-token-file", f"{METRICS_TOKENS_MOUNT}/tokens.json"]


def _driver_tls_args(name: str) -> list[str]:
    flags, _ = _DRIVER_TLS_ARGS[name]
    return [x for flag, f in zip(flags, ("ca.crt", "tls.crt", "tls.key"), strict=True)
            for x in (flag, f"{DRIVER_TLS_MOUNT}/{f}")]
DATA_CLEANUP_COMPONENT = "data-cleanup"  # the Pod that removes a deleted cluster's host folder
_CLEANUP_MOUNT = "/var/lib/kokpit/clusters"
DATA_COMPONENTS = (APISERVER_COMPONENT, SIMULATOR_COMPONENT, "etcd")  # the components with a host folder


@dataclass(frozen=True)
class Names:
    """Every object name of one Cluster (all in the Cluster's own namespace: ownerReferences cannot cross
    namespaces, and the garbage collector deletes dependents whose owner it cannot find there)."""

    namespace: str
    cluster: str

    @property
    def service(self) -> str:
        return f"{self.cluster}-apiserver"

    @property
    def pki_secret(self) -> str:
        return f"{self.cluster}-pki"

    @property
    def kubeconfig_secret(self) -> str:
        return f"{self.cluster}-kubeconfig"

    @property
    def actor_service_account(self) -> str:
        """The machine operator's meta-cluster identity (only Permits; see ``_identity``)."""
        return self.actor(MACHINE_OPERATOR_COMPONENT)

    def actor(self, component: str) -> str:
        """The meta-cluster identity of risk actor ``component`` (``RISK_ACTOR_COMPONENTS``): only its
        Cluster's Permits (RBAC: the namespace; admission: ``spec.cluster``)."""
        return f"{self.cluster}-{component}"

    def pod(self, component: str, index: int) -> str:
        return f"{self.cluster}-{component}-{index}"

    def cleanup_pod(self, index: int) -> str:
        return f"{self.cluster}-{DATA_CLEANUP_COMPONENT}-{index}"

    def host_dir(self, root: str, what: str) -> str:
        """Where a component's data lives on the host: outlives every Pod (and, with Retain, the Cluster)."""
        return f"{root.rstrip('/')}/{self.namespace}/{self.cluster}/{what}"

    def service_hosts(self) -> list[str]:
        s = self.service
        return [s, f"{s}.{self.namespace}", f"{s}.{self.namespace}.svc", f"{s}.{self.namespace}.svc.cluster.local"]


@dataclass(frozen=True)
class Wiring:
    """What the operator adds to a component's default arguments to connect it to its cluster."""

    kubernetes_version: str
    apiserver_port: int
    driver_port: int | None  # the simulator's node-driver port (None without simulation)
    endpoint_host: str | None  # where the other components reach the API server / the driver
    nodes: int
    data_root: str
    pki_hash: str
    driver_hash: str = ""  # of the node driver's credentials: the Pods that mount them restart when they change
    metrics_ports: dict[str, int] = field(default_factory=dict)  # component -> its /metrics port
    # the risk actors (machine operator: upgrades, cordons; controller-manager: taint-based eviction) ask the
    # risk center, each as its own ServiceAccount (Names.actor)
    asks_risk_center: bool = False


def validate_cpv(cpv: Obj | None) -> tuple[str, str] | None:
    """``(reason, message)`` when a ClusterPackageVersion cannot be run, else None."""
    if cpv is None:
        return "PackageVersionNotFound", "the ClusterPackageVersion does not exist"
    spec = cpv.get("spec") or {}
    names = [str(c.get("name")) for c in spec.get("components") or []]
    if APISERVER_COMPONENT not in names:
        return "InvalidPackageVersion", f"the ClusterPackageVersion has no {APISERVER_COMPONENT} component"
    if not spec.get("kubernetesVersion"):
        return "InvalidPackageVersion", "the ClusterPackageVersion has no kubernetesVersion"
    return None


def component_order(cpv: Obj) -> list[Obj]:
    """The API server first (every other component talks to it), then the rest in their listed order;
    the machine operator after the simulator whose driver it uses."""
    comps = list((cpv.get("spec") or {}).get("components") or [])
    rank = {APISERVER_COMPONENT: 0, SIMULATOR_COMPONENT: 2, MACHINE_OPERATOR_COMPONENT: 3}
    return sorted(comps, key=lambda c: rank.get(str(c.get("name")), 1))


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _wired_args(name: str, args: list[str], w: Wiring, pod: str = "") -> list[str] | None:
    """The component's arguments plus its wiring; None when it cannot run yet (a dependency is missing)."""
    kc = f"{KUBECONFIG_MOUNT}/{KUBECONFIG_KEY}"
    if name == APISERVER_COMPONENT:
        # --standby: replicas share one data folder; one serves, the others wait on its lock and take over
        return [*args, "--data-dir", APISERVER_DATA_MOUNT, "--standby", "--instance-name", pod, "--host", "$(HOST_IP)",
                "--port", str(w.apiserver_port), "--version-label", w.kubernetes_version,
                "--tls-cert-file", f"{PKI_MOUNT}/tls.crt", "--tls-private-key-file", f"{PKI_MOUNT}/tls.key",
                "--ca-file", f"{PKI_MOUNT}/ca.crt", "--token-file", f"{PKI_MOUNT}/tokens.json"]
    if name == SIMULATOR_COMPONENT:
        if w.driver_port is None:
            return None
        return [*args, "--kubeconfig", kc, "--nodes", str(w.nodes), "--data-dir", SIMULATOR_DATA_MOUNT,
                "--driver-host", "$(HOST_IP)", "--driver-port", str(w.driver_port),
                *_driver_tls_args(SIMULATOR_COMPONENT), *_metrics_args(name, w)]
    if name == MACHINE_OPERATOR_COMPONENT:
        if w.driver_port is None or not w.endpoint_host:
            return None  # no node driver to reach (today only the simulator is one)
        host = f"[{w.endpoint_host}]" if ":" in w.endpoint_host else w.endpoint_host
        return [*args, "--kubeconfig", kc, "--driver-url", f"https://{host}:{w.driver_port}",
                *_driver_tls_args(MACHINE_OPERATOR_COMPONENT), *_metrics_args(name, w)]
    return [*args, *_metrics_args(name, w)]


def desired_pod(names: Names, cpv: Obj, component: Obj, index: int, wiring: Wiring,
                owner: Obj) -> Obj | None:
    """The Pod one replica of ``component`` of release ``cpv`` should be; None when it cannot run yet.

    Its spec hash (an annotation) covers everything that shapes the Pod, so "outdated" is one comparison.
    """
    name = str(component["name"])
    args = _wired_args(name, list(component.get("args") or []), wiring, names.pod(name, index))
    if args is None:
        return None
    cpv_name = str(cpv["metadata"]["name"])
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    env: list[Obj] = [_HOST_IP_ENV]
    ports: list[Obj] = []
    probe: Obj | None = None
    if name == APISERVER_COMPONENT:
        mounts += [{"name": "data", "mountPath": APISERVER_DATA_MOUNT},
                   {"name": "pki", "mountPath": PKI_MOUNT, "readOnly": True}]
        volumes += [{"name": "data", "hostPath": {"path": names.host_dir(wiring.data_root, "apiserver"),
                                                  "type": "DirectoryOrCreate"}},
                    {"name": "pki", "secret": {"secretName": names.pki_secret, "items": [
                        {"key": k, "path": k} for k in ("ca.crt", "tls.crt", "tls.key", "tokens.json")]}}]
        # no containerPorts: with hostNetwork they become hostPorts, and the scheduler would refuse to put
        # two replicas on the one node that holds their shared data folder (affinity below keeps them there)
        probe = {"httpGet": {"path": "/readyz", "port": wiring.apiserver_port, "scheme": "HTTPS"},
                 "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3}
    else:
        mounts.append({"name": "kubeconfig", "mountPath": KUBECONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "kubeconfig", "secret": {"secretName": names.kubeconfig_secret}})
        env.append({"name": "KUBECONFIG", "value": f"{KUBECONFIG_MOUNT}/{KUBECONFIG_KEY}"})
        if name == SIMULATOR_COMPONENT:
            mounts.append({"name": "data", "mountPath": SIMULATOR_DATA_MOUNT})
            volumes.append({"name": "data", "hostPath": {"path": names.host_dir(wiring.data_root, "simulator"),
                                                         "type": "DirectoryOrCreate"}})
            if wiring.driver_port is not None:
                ports.append({"name": "driver", "containerPort": wiring.driver_port, "protocol": "TCP"})
        if wiring.metrics_ports.get(name):
            ports.append({"name": "metrics", "containerPort": wiring.metrics_ports[name], "protocol": "TCP"})
            mounts.append({"name": "metrics-tokens", "mountPath": METRICS_TOKENS_MOUNT, "readOnly": True})
            volumes.append({"name": "metrics-tokens", "secret": {"secretName": names.pki_secret, "items": [
                {"key": "tokens.json", "path": "tokens.json"}]}})
        if name in _DRIVER_TLS_ARGS:
            _, keys = _DRIVER_TLS_ARGS[name]
            mounts.append({"name": "driver-tls", "mountPath": DRIVER_TLS_MOUNT, "readOnly": True})
            volumes.append({"name": "driver-tls", "secret": {"secretName": names.pki_secret, "items": [
                {"key": k, "path": f} for k, f in zip(keys, ("ca.crt", "tls.crt", "tls.key"), strict=True)]}})
    actor = name in RISK_ACTOR_COMPONENTS and wiring.asks_risk_center
    if actor:
        # the meta cluster through the Pod's own ServiceAccount token (in-cluster config), as that cluster's actor
        args = [*args, "--risk-in-cluster", "--risk-cluster", names.cluster, "--risk-namespace", names.namespace]
    container: Obj = {"name": name, "image": str(component["image"]), "args": args, "volumeMounts": mounts}
    if env:
        container["env"] = env
    if ports:
        container["ports"] = ports
    if probe:
        container["readinessProbe"] = probe
    spec: Obj = {"containers": [container], "volumes": volumes, "restartPolicy": "Always",
                 "hostNetwork": True, "terminationGracePeriodSeconds": 10}
    if name != MACHINE_OPERATOR_COMPONENT and not actor:
        # least privilege: a business component talks to its own cluster (the kubeconfig Secret), never to the
        # meta cluster, so its Pod gets no meta credential at all (not even the namespace's default
        # ServiceAccount token); a risk actor's meta identity (Permits) is given to it explicitly
        spec["automountServiceAccountToken"] = False
    if actor:
        spec["serviceAccountName"] = names.actor(name)
    if name == APISERVER_COMPONENT:
        spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {CLUSTER_LABEL: names.cluster, COMPONENT_LABEL: name}},
            "topologyKey": "kubernetes.io/hostname"}]}}
    secrets = wiring.pki_hash if name == APISERVER_COMPONENT else wiring.driver_hash if name in _DRIVER_TLS_ARGS else ""
    pod_hash = _hash({"spec": spec, "pki": secrets})
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": names.pod(name, index), "namespace": names.namespace,
            "labels": {CLUSTER_LABEL: names.cluster, COMPONENT_LABEL: name, VERSION_LABEL: cpv_name},
            "annotations": {HASH_ANNOTATION: pod_hash},
            "ownerReferences": [{"apiVersion": owner.get("apiVersion", "kokpit.io/v1alpha1"),
                                 "kind": owner.get("kind", "Cluster"), "name": meta.get("name"),
                                 "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }


def restarted(pod: Obj, stamp: str) -> Obj:
    """``pod`` as a restart asked at ``stamp`` wants it: the stamp annotated and folded into the spec hash, so
    every replica made before it is outdated (and one made for it is not) — one comparison, as for a release."""
    meta = pod.get("metadata") or {}
    ann = dict(meta.get("annotations") or {})
    ann[HASH_ANNOTATION] = _hash({"pod": ann.get(HASH_ANNOTATION), "restartedAt": stamp})
    ann[RESTARTED_ANNOTATION] = stamp
    return {**pod, "metadata": {**meta, "annotations": ann}}


def cleanup_pod(names: Names, index: int, node: str, image: str, data_root: str, owner: Obj) -> Obj:
    """The Pod that removes a deleted cluster's folder ``<data_root>/<ns>/<cluster>`` on ``node``.

    Data lives in hostPath folders, which only a process on that node can remove; a Pod pinned there by
    ``nodeName`` is how an operator that runs elsewhere reaches it (in embedded mode the local kubelet runs
    it like any kokpit Pod).  It mounts the namespace's folder, so the cluster's own folder goes entirely.
    """
    root = f"{data_root.rstrip('/')}/{names.namespace}"
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": names.cleanup_pod(index), "namespace": names.namespace,
            "labels": {CLUSTER_LABEL: names.cluster, COMPONENT_LABEL: DATA_CLEANUP_COMPONENT},
            "ownerReferences": [{"apiVersion": owner.get("apiVersion", "kokpit.io/v1alpha1"),
                                 "kind": owner.get("kind", "Cluster"), "name": meta.get("name"),
                                 "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": {
            "nodeName": node, "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 5,
            "containers": [{"name": DATA_CLEANUP_COMPONENT, "image": image,
                            "args": ["remove-cluster-data", "--root", _CLEANUP_MOUNT, "--name", names.cluster],
                            "volumeMounts": [{"name": "data", "mountPath": _CLEANUP_MOUNT}]}],
            "volumes": [{"name": "data", "hostPath": {"path": root, "type": "DirectoryOrCreate"}}],
        },
    }


def _time(s: Any) -> dt.datetime | None:
    if not s:
        return None
    try:
        return parse_time(str(s))
    except ValueError:
        return None


def pod_ready(pod: Obj) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and (find_condition(st.get("conditions"), "Ready") or {}).get(
        "status") == "True" and not (pod.get("metadata") or {}).get("deletionTimestamp")


@dataclass
class PodHealth:
    ready: bool
    broken: bool  # should be replaced now
    restarts: int
    message: str = ""
    since: dt.datetime | None = field(default=None)  # when it last stopped being ready (or was created)


def pod_health(pod: Obj, now: dt.datetime, timeout: float) -> PodHealth:
    """Ready, or broken: ended (Failed/Succeeded) or not ready for longer than ``timeout`` seconds."""
    meta = pod.get("metadata") or {}
    st = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    if pod_ready(pod):
        return PodHealth(True, False, restarts)
    phase = st.get("phase") or "Pending"
    if phase in ("Failed", "Succeeded"):
        return PodHealth(False, True, restarts, f"pod {meta.get('name')} ended ({phase}): "
                                                f"{st.get('reason') or st.get('message') or ''}".rstrip(": "))
    created = _time(meta.get("creationTimestamp")) or now
    ready_cond = find_condition(st.get("conditions"), "Ready") or {}
    since = max(created, _time(ready_cond.get("lastTransitionTime")) or created)
    waiting = ""
    for c in st.get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason"):
            waiting = f" ({w['reason']}{': ' + w['message'] if w.get('message') else ''})"
    broken = (now - since).total_seconds() > timeout
    msg = f"pod {meta.get('name')} not ready for {int((now - since).total_seconds())}s{waiting}"
    return PodHealth(False, broken, restarts, msg, since)
