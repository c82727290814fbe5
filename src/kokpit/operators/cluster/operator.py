"""The cluster operator: runs each business cluster's control plane as Pods of the meta cluster (Kube on Kube).

Like CloudNativePG it owns Pods directly, so it alone decides isolation, replacement and the one-at-a-time
order of a release.  One level-triggered reconcile per Cluster reads only informer caches (Clusters,
ClusterPackageVersions, and the Pods, Services and Secrets labelled ``kokpit.io/cluster``), probes the
business API server's ``/readyz`` and ``/version`` through its endpoint, takes the steps that are due, and
writes the Cluster's status once.  Everything it must remember across restarts lives in the API: which
release a Pod runs (a label and a spec hash), when a step began (the Pod's creationTimestamp), and which
release failed (``status.failedPackageVersion``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from kokpit import __version__
from kokpit._lib import pki
from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock, RealClock
from kokpit.api.cluster import (
    APISERVER_COMPONENT,
    MACHINE_OPERATOR_COMPONENT,
    SIMULATOR_COMPONENT,
    ClusterComponentStatus,
    ClusterConditionType,
    ClusterReason,
    ClusterSpec,
    DeletionPolicy,
)
from kokpit.api.machine import GROUP, VERSION
from kokpit.client import (
    NODE,
    POD,
    SECRET,
    AlreadyExistsError,
    ApiError,
    Kind,
    LeanPool,
    NotFoundError,
    ObjectClient,
    TransportError,
)
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    DATA_CLEANUP_COMPONENT,
    DATA_COMPONENTS,
    HASH_ANNOTATION,
    KUBECONFIG_KEY,
    VERSION_LABEL,
    Names,
    Wiring,
    cleanup_pod,
    component_order,
    desired_pod,
    pod_health,
    pod_ready,
    validate_cpv,
)
from kokpit.runtime import (
    EventRecorder,
    Manager,
    PatchHelper,
    Request,
    Result,
    Store,
    add_finalizer,
    find_condition,
    has_finalizer,
    is_deleting,
    reconcile_view,
    remove_finalizer,
    set_object_condition,
)

__all__ = [
    "CLUSTER",
    "CPV",
    "FINALIZER",
    "SERVICE",
    "ClusterOperator",
    "ClusterReconciler",
    "HttpsProber",
    "OperatorOptions",
    "PodReadinessProber",
    "Probe",
    "Prober",
]

log = logging.getLogger("kokpit.operators.cluster")

Obj = dict[str, Any]

CLUSTER = Kind(GROUP, VERSION, "Cluster", "clusters")
CPV = Kind(GROUP, VERSION, "ClusterPackageVersion", "clusterpackageversions", namespaced=False)
SERVICE = Kind("", "v1", "Service", "services")
FINALIZER = "kokpit.io/cluster-operator"
CT = ClusterConditionType
R = ClusterReason
_DRIVER_SERVICE_PORT = 9740


@dataclass
class OperatorOptions:
    """Tunables; the defaults suit a real meta cluster, tests shorten the timeouts."""

    workers: int = 64  # a reconcile mostly waits on API round trips: 16 capped 3,000 Clusters at ~90/s
    data_root: str = "/var/lib/kokpit/clusters"  # host folder of every business cluster's data
    port_range: tuple[int, int] = (30000, 32767)  # NodePorts of the API servers and node drivers
    unhealthy_timeout: float = 30.0  # a Pod not ready this long is replaced
    release_timeout: float = 60.0  # a release step not healthy this long is rolled back
    poll: float = 1.0  # re-check while something is in flight
    resync: float = 15.0  # health re-check of a settled cluster
    retry_base: float = 2.0  # backoff between replacements of a Pod that keeps failing
    retry_cap: float = 120.0
    max_failures: int = 3  # replacements in a row before the Cluster is Degraded
    extra_sans: tuple[str, ...] = ()  # more names/IPs for the business API servers' certificates
    probe_timeout: float = 3.0
    # the simulated-kubelet mode (scale benchmarks): no process serves a business endpoint, so the API server
    # component's health is its Pod's readiness alone (PodReadinessProber) instead of /readyz through it
    trust_pod_readiness: bool = False
    # the kokpit image of the Pods that remove a deleted cluster's data folder on its nodes
    tools_image: str = f"kokpit:{__version__}"


@dataclass(frozen=True)
class Probe:
    """What the business API server said: ready, and the gitVersion it reports."""

    ready: bool
    version: str | None = None
    message: str = ""
    serving: str = ""  # the replica that answered (X-Kokpit-Instance), when the server says


class Prober(Protocol):
    async def check(self, endpoint: str, ca_pem: bytes) -> Probe: ...


class HttpsProber:
    """``/readyz`` and ``/version`` over HTTPS, verifying the cluster's own CA (both paths are public)."""

    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        url = urlsplit(endpoint)
        if not url.hostname:
            return Probe(False, None, f"bad endpoint {endpoint!r}")
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        pool = LeanPool(url.hostname, url.port or 443, ssl_context=ctx, token=None, size=1, timeout=self.timeout)
        try:
            code, body, headers = await pool.request_with_headers("GET", "/readyz")
            serving = headers.get("x-kokpit-instance", "")
            if code != 200:
                return Probe(False, None, f"/readyz answered {code}: {body[:200].decode(errors='replace')}",
                             serving)
            code, body = await pool.request("GET", "/version")
            version = None
            if code == 200:
                with contextlib.suppress(ValueError, AttributeError):
                    version = json.loads(body).get("gitVersion")
            return Probe(True, version, "", serving)
        except (TransportError, ssl.SSLError, OSError) as e:
            return Probe(False, None, f"{endpoint} unreachable: {e}")
        finally:
            await pool.close()


class PodReadinessProber:
    """The simulated-kubelet mode: Pods are marked Ready but no process serves the endpoint, so nothing is
    probed and the API server component counts as healthy exactly when its Pod is Ready (the reconcile
    still requires that).  It says so in the ControlPlaneReady message; never use it with a real kubelet."""

    MESSAGE = "endpoint not probed (simulated kubelet: trusting Pod readiness)"

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        return Probe(True, None, self.MESSAGE)


OperatorClient = ObjectClient  # what a reconcile needs of kokpit.client.Client (a fake in unit tests)


def cluster_key(obj: Obj) -> list[str]:
    """Index of the objects a Cluster owns: ``<namespace>/<cluster>`` from the ``kokpit.io/cluster`` label."""
    meta = obj.get("metadata") or {}
    c = (meta.get("labels") or {}).get(CLUSTER_LABEL)
    return [f"{meta.get('namespace') or ''}/{c}"] if c else []


def _cpv_refs(obj: Obj) -> list[str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [str(v) for v in {spec.get("packageVersion"), status.get("lastGoodPackageVersion")} if v]


def _node_ports(obj: Obj) -> list[str]:
    """Index of Services by the NodePorts they hold (a free port is then one lookup, not a scan of all)."""
    return [str(p["nodePort"]) for p in ((obj.get("spec") or {}).get("ports") or [])
            if isinstance(p, dict) and p.get("nodePort")]


INDEXERS_OWNED: dict[str, Callable[[Obj], list[str]]] = {"cluster": cluster_key, "nodeport": _node_ports}
INDEXERS_CLUSTER: dict[str, Callable[[Obj], list[str]]] = {"cpv": _cpv_refs}


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _hash_of(data: Obj) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _unb64(secret: Obj | None, key: str) -> bytes:
    raw = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(raw) if raw else b""


@dataclass
class _Failures:
    count: int = 0
    next_at: float = 0.0
    message: str = ""


@dataclass
class _Walk:
    """What the component walk found and did."""

    rows: list[Obj] = field(default_factory=list)
    converged: bool = True  # every component of the target release current and healthy
    busy: bool = False  # something in flight: poll soon
    all_ready: bool = True  # every component has its replicas ready (whatever release)
    rollback: str = ""  # why the release step failed (the operator turns back)
    degraded: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    endpoint: str | None = None
    probe: Probe = field(default_factory=lambda: Probe(False, None, "not probed"))


class ClusterReconciler:
    """The reconcile of one Cluster; stores are informer caches (plain :class:`Store` in unit tests)."""

    def __init__(self, client: OperatorClient, *, clusters: Store, cpvs: Store, pods: Store, services: Store,
                 secrets: Store, recorder: EventRecorder, prober: Prober | None = None,
                 options: OperatorOptions | None = None, clock: Clock | None = None) -> None:
        self.client = client
        self.clusters, self.cpvs, self.pods, self.services, self.secrets = clusters, cpvs, pods, services, secrets
        self.recorder = recorder
        self.opts = options or OperatorOptions()
        self.prober: Prober = prober or (PodReadinessProber() if self.opts.trust_pod_readiness
                                         else HttpsProber(self.opts.probe_timeout))
        self.clock: Clock = clock or RealClock()
        self._backoff = ExponentialBackoff(base=self.opts.retry_base, cap=self.opts.retry_cap)
        self._failures: dict[tuple[str, str, str], _Failures] = {}  # (ns, cluster, pod) -> replacements
        self._reserved_ports: set[int] = set()
        self._probe_bad_since: dict[tuple[str, str], float] = {}  # (ns, cluster) -> monotonic time

    # ------------------------------------------------------------------------------ reconcile
    async def reconcile(self, req: Request) -> Result | None:
        raw = self.clusters.get_by_name(req.name, req.namespace)
        if raw is None:
            for k in [k for k in self._failures if k[:2] == (req.namespace, req.name)]:
                del self._failures[k]
            self._probe_bad_since.pop((req.namespace, req.name), None)
            return None
        names = Names(req.namespace, req.name)
        if is_deleting(raw):
            return await self._teardown(raw, names)
        if not has_finalizer(raw, FINALIZER):
            raw = await add_finalizer(self.client, CLUSTER, raw, FINALIZER)
        helper = PatchHelper(self.client, CLUSTER, reconcile_view(raw, CLUSTER))
        obj = helper.obj
        status = obj.setdefault("status", {})
        now = self.clock.now()
        try:
            spec = ClusterSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            first = e.errors()[0]
            where = "spec." + ".".join(str(x) for x in first["loc"])
            self._invalid(obj, R.INVALID_SPEC, f"{where}: {first['msg']}")
            await helper.patch()
            return None

        desired = spec.package_version
        failed = status.get("failedPackageVersion")
        if failed and failed != desired:  # a new pointer: the failed release is history
            status.pop("failedPackageVersion", None)
            failed = None
        cpv = self.cpvs.get_by_name(desired)
        problem = validate_cpv(cpv)
        last_good = status.get("lastGoodPackageVersion")
        lg_cpv = self.cpvs.get_by_name(last_good) if last_good else None
        target_name, target = desired, cpv
        if (problem is not None or failed == desired) and last_good and last_good != desired \
                and validate_cpv(lg_cpv) is None:
            target_name, target = str(last_good), lg_cpv
        elif problem is not None:
            self._invalid(obj, problem[0], f"{desired}: {problem[1]}")
            await helper.patch()
            return None
        assert target is not None

        if spec.paused:
            walk = self._observe_only(names, target, spec)
            walk.endpoint, walk.probe = await self._endpoint_and_probe(names)
        else:
            walk = await self._converge(obj, names, spec, target, now)
        if walk.endpoint:
            status["endpoint"] = walk.endpoint
        self._record_data_nodes(names, status)
        self._finish(obj, spec, walk, target_name, desired, problem, walk.probe, now)
        await helper.patch()
        for msg in walk.actions:
            await self.recorder.event(obj, "Normal", "ControlPlane", msg)
        if walk.rollback:
            await self.recorder.event(obj, "Warning", "ReleaseFailed", walk.rollback)
            return Result(requeue_after=0.01)
        if spec.paused:
            return Result(requeue_after=self.opts.resync)
        return Result(requeue_after=self.opts.poll if walk.busy or not walk.converged else self.opts.resync)

    def _invalid(self, obj: Obj, reason: str, message: str) -> None:
        """Bad input: say so; nothing is created or torn down."""
        now = self.clock.now()
        running = bool((obj.get("status") or {}).get("lastGoodPackageVersion"))
        set_object_condition(obj, CT.UPGRADING, False, reason, message, now=now)
        if not running:
            set_object_condition(obj, CT.READY, False, reason, message, now=now)
            set_object_condition(obj, CT.CONTROL_PLANE_READY, False, reason, message, now=now)
        _stamp(obj, "Invalid")

    # ------------------------------------------------------------------------------ building blocks
    async def _ensure_pki(self, names: Names, keep: bool) -> Obj:
        """The CA, the API server's serving certificate and the bearer tokens, in ``<cluster>-pki``."""
        hosts = ["127.0.0.1", "localhost", *names.service_hosts(), *self.opts.extra_sans]
        cur = self.secrets.get_by_name(names.pki_secret, names.namespace)
        driver = {k: _unb64(cur, k) for k in pki.DRIVER_KEYS} if cur is not None else {}
        driver_want = pki.driver_pki(driver, hosts, ca_name=f"kokpit-node-driver-ca-{names.namespace}-{names.cluster}")
        if cur is not None and _unb64(cur, "ca.crt") and _unb64(cur, "tokens.json") and \
                pki.serving_cert_covers(_unb64(cur, "tls.crt"), hosts) and driver_want == driver:
            return cur
        if cur is not None and _unb64(cur, "ca.key"):
            ca = pki.CertPair(_unb64(cur, "ca.crt"), _unb64(cur, "ca.key"))
            tokens = _unb64(cur, "tokens.json")
        else:
            ca = pki.new_ca(f"kokpit-{names.namespace}-{names.cluster}")
            tokens = json.dumps({"admin": pki.new_token(), "readonly": pki.new_token()}).encode()
        if cur is not None and _unb64(cur, "ca.key") and _unb64(cur, "tls.key") and \
                pki.serving_cert_covers(_unb64(cur, "tls.crt"), hosts):
            serving = pki.CertPair(_unb64(cur, "tls.crt"), _unb64(cur, "tls.key"))  # only the driver's changed
        else:
            serving = pki.new_serving_cert(ca, hosts)
        data = {"ca.crt": _b64(ca.cert_pem), "ca.key": _b64(ca.key_pem), "tls.crt": _b64(serving.cert_pem),
                "tls.key": _b64(serving.key_pem), "tokens.json": _b64(tokens)}
        data |= {k: _b64(v) for k, v in driver_want.items()}  # the node driver's mutual TLS (kokpit.nodes.mtls)
        body: Obj = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": names.pki_secret, "namespace": names.namespace,
                                  "labels": {CLUSTER_LABEL: names.cluster},
                                  "annotations": {"kokpit.io/retained": str(keep).lower()}},
                     "data": data}
        if cur is None:
            try:
                return await self.client.create(SECRET, body, names.namespace)
            except AlreadyExistsError:  # the cache was behind: use what is there
                return await self.client.get(SECRET, names.pki_secret, names.namespace)
        return await self.client.patch(SECRET, names.pki_secret, {"data": data}, names.namespace)

    def _free_port(self, key: str) -> int:
        lo, hi = self.opts.port_range
        span = hi - lo + 1
        start = int.from_bytes(key.encode()[:8].ljust(8, b"\0"), "big") % span
        for i in range(span):
            port = lo + (start + i) % span
            if port not in self._reserved_ports and not self.services.index_keys("nodeport", str(port)) \
                    and _bindable(port):
                self._reserved_ports.add(port)
                return port
        raise RuntimeError(f"no free port in {lo}-{hi} for {key}")

    async def _ensure_service(self, names: Names, owner: Obj, want_driver: bool) -> tuple[int, int | None]:
        """The NodePort Service of the endpoint (and of the node driver); ports are chosen once, kept there."""
        svc = self.services.get_by_name(names.service, names.namespace)
        ports = {str(p.get("name")): p for p in ((svc or {}).get("spec") or {}).get("ports") or []}
        if svc is not None and "https" in ports and (not want_driver or "driver" in ports):
            drv = ports.get("driver")
            return int(ports["https"]["nodePort"]), int(drv["nodePort"]) if drv else None
        key = f"{names.namespace}/{names.cluster}"
        api = int(ports["https"]["nodePort"]) if "https" in ports else self._free_port(key)
        new_ports = [{"name": "https", "port": 443, "targetPort": api, "nodePort": api, "protocol": "TCP"}]
        drv_port: int | None = None
        if want_driver or "driver" in ports:
            drv_port = int(ports["driver"]["nodePort"]) if "driver" in ports else self._free_port(key + "/driver")
            new_ports.append({"name": "driver", "port": _DRIVER_SERVICE_PORT, "targetPort": drv_port,
                              "nodePort": drv_port, "protocol": "TCP"})
        if svc is None:
            body = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": names.service, "namespace": names.namespace,
                                 "labels": {CLUSTER_LABEL: names.cluster},
                                 "ownerReferences": _owner_refs(owner)},
                    "spec": {"type": "NodePort", "ports": new_ports,
                             "selector": {CLUSTER_LABEL: names.cluster, COMPONENT_LABEL: APISERVER_COMPONENT}}}
            try:
                await self.client.create(SERVICE, body, names.namespace)
            except AlreadyExistsError:  # the cache was behind: the ports already chosen are the ones to use
                svc = await self.client.get(SERVICE, names.service, names.namespace)
                ports = {str(p.get("name")): p for p in (svc.get("spec") or {}).get("ports") or []}
                drv = ports.get("driver")
                return int(ports["https"]["nodePort"]), int(drv["nodePort"]) if drv else None
        else:
            await self.client.patch(SERVICE, names.service, {"spec": {"ports": new_ports}}, names.namespace)
        return api, drv_port

    async def _ensure_kubeconfig(self, names: Names, endpoint: str, pki_secret: Obj) -> None:
        tokens = json.loads(_unb64(pki_secret, "tokens.json") or b"{}")
        data = {KUBECONFIG_KEY: _kubeconfig_b64(f"{names.namespace}-{names.cluster}", endpoint,
                                                _unb64(pki_secret, "ca.crt"), str(tokens.get("admin", "")))}
        cur = self.secrets.get_by_name(names.kubeconfig_secret, names.namespace)
        if cur is None:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": names.kubeconfig_secret, "namespace": names.namespace,
                                 "labels": {CLUSTER_LABEL: names.cluster}},
                    "data": data}
            try:
                await self.client.create(SECRET, body, names.namespace)
            except AlreadyExistsError:
                await self.client.patch(SECRET, names.kubeconfig_secret, {"data": data}, names.namespace)
        elif (cur.get("data") or {}) != data:
            await self.client.patch(SECRET, names.kubeconfig_secret, {"data": data}, names.namespace)

    def _owned_pods(self, names: Names) -> list[Obj]:
        return self.pods.by_index("cluster", f"{names.namespace}/{names.cluster}")

    def _endpoint_host(self, names: Names) -> str | None:
        """The node address of a ready API server Pod (an unready one is out of the endpoint)."""
        api = [p for p in self._owned_pods(names)
               if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == APISERVER_COMPONENT]
        for p in sorted(api, key=lambda p: (not pod_ready(p), p["metadata"]["name"])):
            host = (p.get("status") or {}).get("hostIP")
            if host:
                return str(host)
        return None

    async def _endpoint_and_probe(self, names: Names) -> tuple[str | None, Probe]:
        svc = self.services.get_by_name(names.service, names.namespace)
        port = next((p.get("nodePort") for p in ((svc or {}).get("spec") or {}).get("ports") or []
                     if p.get("name") == "https"), None)
        host = self._endpoint_host(names)
        if not host or not port:
            return None, Probe(False, None, "the API server has no address yet")
        endpoint = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
        secret = self.secrets.get_by_name(names.pki_secret, names.namespace)
        ca = _unb64(secret, "ca.crt")
        if not ca:
            return endpoint, Probe(False, None, "no CA yet")
        return endpoint, await self.prober.check(endpoint, ca)

    # ------------------------------------------------------------------------------ the walk
    def _replicas(self, comp: Obj, spec: ClusterSpec, driver: bool) -> int:
        name = str(comp.get("name"))
        if name == APISERVER_COMPONENT:
            return spec.control_plane.replicas
        if name == SIMULATOR_COMPONENT and spec.simulation.nodes == 0:
            return 0
        if name == MACHINE_OPERATOR_COMPONENT and not driver:
            return 0  # no node driver to reach (today only the simulator is one)
        return int(comp.get("replicas", 1))

    def _observe_only(self, names: Names, target: Obj, spec: ClusterSpec) -> _Walk:
        walk = _Walk()
        pods = self._owned_pods(names)
        for comp in component_order(target):
            name = str(comp["name"])
            mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == name]
            ready = [p for p in mine if pod_ready(p)]
            want = self._replicas(comp, spec, True)
            walk.all_ready &= len(ready) >= want
            walk.rows.append(ClusterComponentStatus(
                name=name, version=_versions(mine), replicas=want, ready_replicas=len(ready),
                restarts=_restarts(mine), healthy=len(ready) >= want, message="paused").to_wire())
        walk.converged = False
        return walk

    async def _converge(self, obj: Obj, names: Names, spec: ClusterSpec, target: Obj, now: dt.datetime) -> _Walk:
        walk = _Walk()
        status = obj.get("status") or {}
        target_name = str(target["metadata"]["name"])
        keep = spec.deletion_policy == DeletionPolicy.RETAIN
        pki_secret = await self._ensure_pki(names, keep)
        comps = component_order(target)
        want_driver = spec.simulation.nodes > 0 and any(c.get("name") == SIMULATOR_COMPONENT for c in comps)
        api_port, driver_port = await self._ensure_service(names, obj, want_driver)
        host = self._endpoint_host(names)
        if host:
            port_host = f"[{host}]" if ":" in host else host
            await self._ensure_kubeconfig(names, f"https://{port_host}:{api_port}", pki_secret)
        walk.endpoint, walk.probe = await self._endpoint_and_probe(names)
        probe = walk.probe
        probe_key = (names.namespace, names.cluster)
        if probe.ready:
            self._probe_bad_since.pop(probe_key, None)
        else:
            self._probe_bad_since.setdefault(probe_key, self.clock.monotonic())
        kv = str((target.get("spec") or {}).get("kubernetesVersion"))
        pki_data = pki_secret.get("data") or {}
        pki_hash = _hash_of({k: v for k, v in pki_data.items() if k not in pki.DRIVER_KEYS})
        wiring = Wiring(kv, api_port, driver_port if want_driver else None, host, spec.simulation.nodes,
                        self.opts.data_root, pki_hash,
                        driver_hash=_hash_of({k: pki_data.get(k) for k in pki.DRIVER_KEYS}))
        pods = {p["metadata"]["name"]: p for p in self._owned_pods(names)}
        releasing = target_name != status.get("lastGoodPackageVersion") and bool(
            status.get("lastGoodPackageVersion"))
        may_act = True  # one step at a time, in order: a component waits for the ones before it
        wanted_names: set[str] = set()
        for comp in comps:
            name = str(comp["name"])
            replicas = self._replicas(comp, spec, driver_port is not None and want_driver)
            mine = [p for p in pods.values() if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == name]
            wants = {names.pod(name, i): desired_pod(names, target, comp, i, wiring, obj) for i in range(replicas)}
            # Pods of this component that run something else than wanted (an older release, a dropped replica)
            stale = {str(p["metadata"]["name"]) for p in mine
                     if _pod_hash(p) != _pod_hash(wants.get(str(p["metadata"]["name"])))}
            ready_n, healthy_n, messages = 0, 0, []
            for pod_name, want in wants.items():
                wanted_names.add(pod_name)
                cur = pods.get(pod_name)
                if cur is not None and pod_ready(cur):
                    ready_n += 1
                if want is None:
                    messages.append("waiting for the API server's address")
                    walk.busy = True
                    continue
                if cur is None:
                    if may_act:
                        try:
                            await self.client.create(POD, want, names.namespace)
                            walk.actions.append(f"created {pod_name} ({target_name})")
                        except AlreadyExistsError:
                            pass
                        messages.append(f"{pod_name} starting")
                        may_act = False  # one step at a time: the next waits for this one to be healthy
                    else:
                        messages.append(f"{pod_name} waits for the Pods before it")
                    walk.busy = True
                    continue
                if cur["metadata"].get("deletionTimestamp"):
                    messages.append(f"{pod_name} terminating")
                    walk.busy = True
                    continue
                if pod_name in stale:
                    # outdated: replaced one at a time (a broken one at once: it serves nothing anyway)
                    if may_act or not pod_ready(cur):
                        await self._delete_pod(names, pod_name)
                        walk.actions.append(f"replacing {pod_name} with {target_name}")
                        messages.append(f"{pod_name} being replaced")
                        may_act = False
                    else:
                        messages.append(f"{pod_name} to be replaced")
                    walk.busy = True
                    continue
                if (cur["metadata"].get("labels") or {}).get(VERSION_LABEL) != target_name:
                    # the same Pod in both releases: nothing to restart, but it must say which release it runs
                    await self.client.patch(POD, pod_name, {"metadata": {"labels": {VERSION_LABEL: target_name}}},
                                            names.namespace)
                    cur = {**cur, "metadata": {**cur["metadata"], "labels": {
                        **(cur["metadata"].get("labels") or {}), VERSION_LABEL: target_name}}}
                    pods[pod_name] = cur
                    mine = [cur if p["metadata"]["name"] == pod_name else p for p in mine]
                health = pod_health(cur, now, self.opts.release_timeout if releasing
                                    else self.opts.unhealthy_timeout)
                ok = health.ready
                if ok and name == APISERVER_COMPONENT:
                    if not probe.ready:
                        ok, health.message = False, f"API server not ready: {probe.message}"
                    elif probe.version and probe.version != kv:
                        if stale:  # an older replica still holds the data; this one stands by until it goes
                            messages.append(f"{pod_name} standing by (the serving replica runs {probe.version})")
                        else:
                            ok, health.message = False, f"API server reports {probe.version}, want {kv}"
                    if not ok:
                        bad_for = self.clock.monotonic() - self._probe_bad_since.get(probe_key, self.clock.monotonic())
                        health.broken = bad_for > (self.opts.release_timeout if releasing
                                                   else self.opts.unhealthy_timeout)
                key = (names.namespace, names.cluster, pod_name)
                if ok:
                    healthy_n += 1
                    f = self._failures.get(key)
                    # a replacement counts as a fix once it has stayed healthy past its backoff and a timeout
                    if f is not None and self.clock.monotonic() >= f.next_at + self.opts.unhealthy_timeout:
                        del self._failures[key]
                    elif f is not None and f.count >= self.opts.max_failures:
                        walk.degraded.append(f"{pod_name} replaced {f.count} times: {f.message}")
                    continue
                walk.busy = True
                may_act = False  # the replicas after an unhealthy one keep running what they run
                messages.append(health.message)
                if not health.broken:
                    continue
                if releasing and target_name == (obj.get("spec") or {}).get("packageVersion"):
                    walk.rollback = (f"release {target_name} failed its post-check ({health.message}); "
                                     f"rolling back to {status.get('lastGoodPackageVersion')}")
                    return walk
                f = self._failures.setdefault(key, _Failures())
                mono = self.clock.monotonic()
                if mono >= f.next_at:
                    await self._delete_pod(names, pod_name)
                    f.count += 1
                    f.next_at = mono + self._backoff.delay(f.count - 1)
                    f.message = health.message
                    walk.actions.append(f"replaced {pod_name}: {health.message}")
                if f.count >= self.opts.max_failures:
                    walk.degraded.append(f"{pod_name} replaced {f.count} times: {f.message}")
            if name == APISERVER_COMPONENT and probe.serving and replicas > 1:
                messages.insert(0, f"{probe.serving} serving, the others standing by")
            component_ok = healthy_n >= replicas
            walk.converged &= component_ok
            walk.all_ready &= ready_n >= replicas
            if not component_ok:
                may_act = False
            walk.rows.append(ClusterComponentStatus(
                name=name, version=_versions(mine) or target_name, replicas=replicas, ready_replicas=ready_n,
                restarts=_restarts(mine), healthy=component_ok, message="; ".join(m for m in messages if m)
            ).to_wire())
        # Pods no release component wants any more (a dropped component, fewer replicas): last, once settled
        if walk.converged:
            for pod_name, p in pods.items():
                if pod_name not in wanted_names and not p["metadata"].get("deletionTimestamp"):
                    await self._delete_pod(names, pod_name)
                    walk.actions.append(f"removed {pod_name} (not in {target_name})")
        return walk

    def _record_data_nodes(self, names: Names, status: Obj) -> None:
        """Remember every node that ever ran a component with a host folder: deletionPolicy Delete must
        reach them even when the Pods are long gone (a foreground delete, an operator restart)."""
        known = set(status.get("dataNodes") or [])
        nodes = {str((p.get("spec") or {}).get("nodeName")) for p in self._owned_pods(names)
                 if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) in DATA_COMPONENTS
                 and (p.get("spec") or {}).get("nodeName")}
        if not nodes <= known:
            status["dataNodes"] = sorted(known | nodes)

    async def _delete_pod(self, names: Names, pod: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.client.delete(POD, pod, names.namespace)

    # ------------------------------------------------------------------------------ status
    def _finish(self, obj: Obj, spec: ClusterSpec, walk: _Walk, target_name: str, desired: str,
                problem: tuple[str, str] | None, probe: Probe, now: dt.datetime) -> None:
        status = obj.setdefault("status", {})
        status["components"] = walk.rows
        conds = status.get("conditions") or []
        old_up = find_condition(conds, CT.UPGRADING) or {}
        if walk.rollback:
            status["failedPackageVersion"] = desired
            set_object_condition(obj, CT.UPGRADING, True, R.ROLLING_BACK, walk.rollback, now=now)
        elif walk.converged:
            status["packageVersion"] = target_name
            status["lastGoodPackageVersion"] = target_name
            if target_name == desired:
                set_object_condition(obj, CT.UPGRADING, False, R.UP_TO_DATE, f"running {target_name}", now=now)
            elif problem is not None:
                set_object_condition(obj, CT.UPGRADING, False, problem[0],
                                     f"{desired}: {problem[1]}; still running {target_name}", now=now)
            else:
                why = str(old_up.get("message") or "") if old_up.get("reason") in (R.ROLLING_BACK, R.ROLLED_BACK) \
                    else f"release {desired} failed; running {target_name}"
                set_object_condition(obj, CT.UPGRADING, False, R.ROLLED_BACK, why, now=now)
        elif not spec.paused:
            if status.get("failedPackageVersion") == desired and target_name != desired:
                set_object_condition(obj, CT.UPGRADING, True, R.ROLLING_BACK,
                                     str(old_up.get("message") or f"rolling back to {target_name}"), now=now)
            elif status.get("packageVersion") and status.get("packageVersion") != target_name:
                set_object_condition(obj, CT.UPGRADING, True, R.UPGRADE_IN_PROGRESS,
                                     f"{status.get('packageVersion')} -> {target_name}", now=now)
            elif not status.get("packageVersion"):
                set_object_condition(obj, CT.UPGRADING, False, R.PROVISIONING, f"creating {target_name}",
                                     now=now)
        api_row = next((r for r in walk.rows if r["name"] == APISERVER_COMPONENT), {})
        cp_ok = probe.ready and int(api_row.get("readyReplicas", 0)) > 0
        set_object_condition(obj, CT.CONTROL_PLANE_READY, cp_ok,
                             R.COMPONENTS_READY if cp_ok else R.API_SERVER_NOT_READY,
                             (probe.message or "the API server answers /readyz") if cp_ok
                             else probe.message or "no ready API server",
                             now=now)
        if walk.degraded:
            set_object_condition(obj, CT.DEGRADED, True, R.COMPONENT_FAILING, "; ".join(walk.degraded), now=now)
        else:
            set_object_condition(obj, CT.DEGRADED, False, R.AS_EXPECTED, "", now=now)
        ready = cp_ok and walk.all_ready
        if spec.paused:
            set_object_condition(obj, CT.READY, ready, R.PAUSED, "spec.paused is true: not acting", now=now)
        else:
            bad = [f"{r['name']}: {r.get('message') or 'not ready'}" for r in walk.rows
                   if int(r.get("readyReplicas", 0)) < int(r.get("replicas", 0))]
            set_object_condition(obj, CT.READY, ready, R.READY if ready else R.NOT_READY,
                                 "control plane ready" if ready else "; ".join(bad) or probe.message, now=now)
        conds = status.get("conditions") or []
        if spec.paused:
            phase = "Paused"
        elif (find_condition(conds, CT.UPGRADING) or {}).get("reason") == R.ROLLING_BACK:
            phase = "RollingBack"
        elif (find_condition(conds, CT.UPGRADING) or {}).get("status") == "True":
            phase = "Upgrading"
        elif walk.degraded:
            phase = "Degraded"
        elif ready:
            phase = "Ready"
        elif not status.get("packageVersion"):
            phase = "Provisioning"
        else:
            phase = "NotReady"
        _stamp(obj, phase)

    # ------------------------------------------------------------------------------ delete
    async def _teardown(self, raw: Obj, names: Names) -> Result | None:
        """Pods, Service and Secrets go first; then, for ``deletionPolicy: Delete``, a Pod on every node in
        ``status.dataNodes`` removes the cluster's folder there.  The finalizer stays until that succeeded:
        a Delete that silently left data behind would be worse than a deletion that waits and says why."""
        if not has_finalizer(raw, FINALIZER):
            return None
        retain = (raw.get("spec") or {}).get("deletionPolicy") == DeletionPolicy.RETAIN.value
        owned = self._owned_pods(names)
        cleaners = {str(p["metadata"]["name"]): p for p in owned
                    if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == DATA_CLEANUP_COMPONENT}
        left = 0
        for p in owned:
            if p["metadata"]["name"] in cleaners:
                continue
            left += 1
            if not p["metadata"].get("deletionTimestamp"):
                await self._delete_pod(names, p["metadata"]["name"])
        with contextlib.suppress(NotFoundError):
            if self.services.get_by_name(names.service, names.namespace) is not None:
                await self.client.delete(SERVICE, names.service, names.namespace)
        secrets = [names.kubeconfig_secret] + ([] if retain else [names.pki_secret])
        for s in secrets:
            with contextlib.suppress(NotFoundError):
                if self.secrets.get_by_name(s, names.namespace) is not None:
                    await self.client.delete(SECRET, s, names.namespace)
        if left:  # the data dir is in use until the API server Pod is gone
            return Result(requeue_after=self.opts.poll)
        if not retain:
            waiting = await self._remove_data(raw, names, cleaners)
            if waiting:
                await self._say_deleting(raw, waiting)
                return Result(requeue_after=self.opts.poll)
        for name in cleaners:
            await self._delete_pod(names, name)
        await remove_finalizer(self.client, CLUSTER, raw, FINALIZER)
        log.info("cluster %s/%s deleted (%s)", names.namespace, names.cluster,
                 "PKI Secret and data retained" if retain else "everything removed")
        return None

    async def _remove_data(self, raw: Obj, names: Names, cleaners: dict[str, Obj]) -> str:
        """Run the cleanup Pods; '' once every node's folder is gone, else what is still awaited."""
        nodes = sorted(set((raw.get("status") or {}).get("dataNodes") or []))
        waiting = []
        for i, node in enumerate(nodes):
            pod_name = names.cleanup_pod(i)
            cur = cleaners.get(pod_name)
            phase = ((cur or {}).get("status") or {}).get("phase")
            if phase == "Succeeded":
                continue
            if phase in (None, "Pending") and not await self._node_exists(node):
                # the node is gone, and its folders with it: nothing left to remove (and nothing would run it)
                if cur is not None:
                    await self._delete_pod(names, pod_name)
                await self.recorder.event(raw, "Normal", "RemovingData",
                                          f"node {node} no longer exists; no data left to remove there")
                continue
            if cur is None:
                try:
                    await self.client.create(POD, cleanup_pod(names, i, node, self.opts.tools_image,
                                                              self.opts.data_root, raw), names.namespace)
                    await self.recorder.event(raw, "Normal", "RemovingData",
                                              f"removing the cluster's data on node {node} ({pod_name})")
                except AlreadyExistsError:
                    pass
                waiting.append(f"{pod_name} on {node}: starting")
            elif phase == "Failed" and not cur["metadata"].get("deletionTimestamp"):
                await self._delete_pod(names, pod_name)  # recreated on the next pass
                waiting.append(f"{pod_name} on {node}: failed, retrying")
            else:
                why = ""
                for c in ((cur.get("status") or {}).get("containerStatuses") or []):
                    w = (c.get("state") or {}).get("waiting") or {}
                    if w.get("reason"):
                        why = f" ({w['reason']}{': ' + w['message'] if w.get('message') else ''})"
                waiting.append(f"{pod_name} on {node}: {phase or 'Pending'}{why}")
        return "; ".join(waiting)

    async def _node_exists(self, node: str) -> bool:
        try:
            await self.client.get(NODE, node)
        except NotFoundError:
            return False
        return True

    async def _say_deleting(self, raw: Obj, waiting: str) -> None:
        """Why the deletion waits, on the Cluster (only when it changed: the cache has the last status)."""
        message = f"deletionPolicy Delete: removing data ({waiting})"
        cur = find_condition((raw.get("status") or {}).get("conditions"), CT.READY) or {}
        if cur.get("reason") == R.REMOVING_DATA and cur.get("message") == message:
            return
        helper = PatchHelper(self.client, CLUSTER, reconcile_view(raw, CLUSTER))
        set_object_condition(helper.obj, CT.READY, False, R.REMOVING_DATA, message, now=self.clock.now())
        _stamp(helper.obj, "Deleting")
        with contextlib.suppress(NotFoundError):
            await helper.patch()


@functools.lru_cache(maxsize=16384)
def _kubeconfig_b64(ctx: str, endpoint: str, ca_pem: bytes, token: str) -> str:
    """The business cluster's admin kubeconfig, base64 (memoized: YAML dumping it on every reconcile was a
    quarter of the operator's CPU at 3,000 Clusters)."""
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": ctx, "cluster": {"server": endpoint, "certificate-authority-data": _b64(ca_pem)}}],
           "users": [{"name": f"{ctx}-admin", "user": {"token": token}}],
           "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": f"{ctx}-admin"}}],
           "current-context": ctx}
    return _b64(yaml.safe_dump(doc, sort_keys=False))


def _owner_refs(owner: Obj) -> list[Obj]:
    meta = owner.get("metadata") or {}
    return [{"apiVersion": owner.get("apiVersion", CLUSTER.api_version), "kind": owner.get("kind", CLUSTER.kind),
             "name": meta.get("name"), "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]


def _bindable(port: int) -> bool:
    """False when something on this host already listens on ``port``.  Only meaningful where the operator
    shares the host network with the Pods (embedded mode); in a Pod of its own every port binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _pod_hash(pod: Obj | None) -> str | None:
    return ((pod or {}).get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)


def _versions(pods: list[Obj]) -> str:
    vs = sorted({str((p["metadata"].get("labels") or {}).get(VERSION_LABEL, "")) for p in pods} - {""})
    return ",".join(vs)


def _restarts(pods: list[Obj]) -> int:
    return sum(int(c.get("restartCount") or 0) for p in pods
               for c in (p.get("status") or {}).get("containerStatuses") or [])


def _stamp(obj: Obj, phase: str) -> None:
    status = obj.setdefault("status", {})
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is not None:
        status["observedGeneration"] = int(gen)
    status["phase"] = phase


class ClusterOperator:
    """Wires informers and the controller onto a :class:`Manager`; ``await op.run()``."""

    def __init__(self, manager: Manager, options: OperatorOptions | None = None, *, prober: Prober | None = None,
                 clock: Clock | None = None) -> None:
        self.manager = manager
        self.options = options or OperatorOptions()
        inf = manager.informers
        self.cluster_informer = inf.informer(CLUSTER)
        self.cpv_informer = inf.informer(CPV)
        self.pod_informer = inf.informer(POD, label_selector=CLUSTER_LABEL)
        self.service_informer = inf.informer(SERVICE, label_selector=CLUSTER_LABEL)
        self.secret_informer = inf.informer(SECRET, label_selector=CLUSTER_LABEL)
        for informer, indexers in ((self.pod_informer, INDEXERS_OWNED), (self.service_informer, INDEXERS_OWNED),
                                   (self.secret_informer, INDEXERS_OWNED),
                                   (self.cluster_informer, INDEXERS_CLUSTER)):
            for name, fn in indexers.items():
                with contextlib.suppress(ValueError):
                    informer.add_indexer(name, fn)
        self.controller = manager.controller("cluster", self._reconcile, workers=self.options.workers,
                                             needs_leader_election=False)
        self.recorder = EventRecorder(manager.client, "cluster-operator", clock=clock)
        self.reconciler = ClusterReconciler(
            manager.client, clusters=self.cluster_informer.store, cpvs=self.cpv_informer.store,
            pods=self.pod_informer.store, services=self.service_informer.store,
            secrets=self.secret_informer.store, recorder=self.recorder, prober=prober, options=self.options,
            clock=clock)
        clusters = self.cluster_informer.store
        self.controller.for_(self.cluster_informer)

        def owned(o: Obj) -> list[Request]:
            return [Request(*k.split("/", 1)) for k in cluster_key(o)]

        for src in (self.pod_informer, self.service_informer, self.secret_informer):
            self.controller.watches(src, owned)
        self.controller.watches(self.cpv_informer, lambda o: [
            Request.for_object(c) for c in clusters.by_index("cpv", str(o["metadata"]["name"]))])

    async def _reconcile(self, req: Request) -> Result | None:
        try:
            return await self.reconciler.reconcile(req)
        except (ApiError, TransportError) as e:
            log.warning("cluster %s: %s", req, e)
            return Result(requeue=True)

    async def run(self) -> None:
        await self.manager.run()

    def stop(self) -> None:
        self.manager.stop()
