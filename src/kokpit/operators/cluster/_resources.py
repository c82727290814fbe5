"""What a business cluster needs besides its Pods: PKI and kubeconfig Secrets, the NodePort Service, its ports.

Each ``ensure_*`` makes one object hold what it must and is safe to repeat (a stale cache that misses an
object gets AlreadyExists on create and uses what the server has).  NodePorts are allocated from records in
the API — one ConfigMap per port, named after it, in ``OperatorOptions.port_namespace`` (as Kubernetes
allocates ClusterIPs with one IPAddress object each): creating the record is the allocation (atomic; a
concurrent allocator gets AlreadyExists and moves on), deleting it is the release.  So a restarted operator
never hands out a port twice, and a deleted cluster's ports come back.
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
from collections.abc import Callable
from typing import Any

import yaml

from kokpit._lib import pki
from kokpit.api.cluster import APISERVER_COMPONENT
from kokpit.client import CONFIGMAP, SECRET, AlreadyExistsError, Kind, NotFoundError, ObjectClient
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    KUBECONFIG_KEY,
    METRICS_PORT_NAMES,
    Names,
    pod_ready,
)
from kokpit.runtime import Store

__all__ = [
    "DRIVER_SERVICE_PORT",
    "INDEXERS_PORTS",
    "PORT_LABEL",
    "SERVICE",
    "PortAllocator",
    "Resources",
    "b64",
    "bindable",
    "owner_refs",
    "unb64",
]

log = logging.getLogger("kokpit.operators.cluster")

Obj = dict[str, Any]

SERVICE = Kind("", "v1", "Service", "services")
DRIVER_SERVICE_PORT = 9740
PORT_LABEL = "kokpit.io/nodeport"  # on a port's allocation record; the value is the port
_PORT_RECORD = "kokpit-nodeport-{}"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(secret: Obj | None, key: str) -> bytes:
    raw = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(raw) if raw else b""


def owner_refs(owner: Obj) -> list[Obj]:
    meta = owner.get("metadata") or {}
    return [{"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", "Cluster"),
             "name": meta.get("name"), "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]


def bindable(port: int) -> bool:
    """False when something on this host already listens on ``port``.  Only meaningful where the operator
    shares the host network with the Pods (embedded mode); in a Pod of its own every port binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _port_owner(obj: Obj) -> list[str]:
    """Index of port records by the cluster holding them (``<namespace>/<cluster>``)."""
    owner = (obj.get("data") or {}).get("cluster")
    return [str(owner)] if owner else []


INDEXERS_PORTS: dict[str, Callable[[Obj], list[str]]] = {"owner": _port_owner}


@functools.lru_cache(maxsize=16384)
def _kubeconfig_b64(ctx: str, endpoint: str, ca_pem: bytes, token: str) -> str:
    """The business cluster's admin kubeconfig, base64 (memoized: YAML dumping it on every reconcile was a
    quarter of the operator's CPU at 3,000 Clusters)."""
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": ctx, "cluster": {"server": endpoint, "certificate-authority-data": b64(ca_pem)}}],
           "users": [{"name": f"{ctx}-admin", "user": {"token": token}}],
           "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": f"{ctx}-admin"}}],
           "current-context": ctx}
    return b64(yaml.safe_dump(doc, sort_keys=False))


class PortAllocator:
    """NodePorts allocated from, and released to, one record per port in the API (see the module doc).

    ``records`` is the informer cache of the records; what this process allocated and has not seen come
    back through the watch yet is overlaid (a cache of the API, not decision state: a restart re-reads the
    records)."""

    def __init__(self, client: ObjectClient, records: Store, services: Store, opts: OperatorOptions,
                 *, is_free: Callable[[int], bool] = bindable) -> None:
        self.client = client
        self.records = records
        self.services = services
        self.opts = opts
        self.is_free = is_free
        self._fresh: dict[str, dict[str, int]] = {}  # cluster key -> {port name: port} created, not yet cached
        self._creating: set[int] = set()  # ports whose record a worker of this process is creating right now

    def held(self, key: str) -> dict[str, int]:
        """The ports recorded as ``key``'s: port name -> port."""
        out = {str((r.get("data") or {}).get("port")): int((r.get("data") or {}).get("number") or 0)
               for r in self.records.by_index("owner", key)}
        fresh = self._fresh.get(key)
        if fresh:
            for name, port in list(fresh.items()):
                if out.get(name) == port:
                    del fresh[name]  # the cache has caught up
                out.setdefault(name, port)
            if not fresh:
                self._fresh.pop(key, None)
        return {k: v for k, v in out.items() if v}

    def _taken(self, port: int) -> bool:
        return (self.records.get_by_name(_PORT_RECORD.format(port), self.opts.port_namespace) is not None
                or bool(self.services.index_keys("nodeport", str(port)))
                or port in self._creating
                or any(port in ports.values() for ports in self._fresh.values()))

    def _record(self, key: str, name: str, port: int) -> Obj:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": _PORT_RECORD.format(port), "namespace": self.opts.port_namespace,
                             "labels": {PORT_LABEL: str(port)}},
                "data": {"cluster": key, "port": name, "number": str(port)}}

    async def allocate(self, key: str, name: str) -> int:
        """``key``'s port ``name``: the one already recorded, else a new one (recorded before it is used)."""
        have = self.held(key).get(name)
        if have:
            return have
        lo, hi = self.opts.port_range
        span = hi - lo + 1
        # start where the key hashes to: clusters created together do not all probe the same ports
        start = int.from_bytes(hashlib.sha256(f"{key}/{name}".encode()).digest()[:8], "big") % span
        for i in range(span):
            port = lo + (start + i) % span
            if self._taken(port) or not self.is_free(port):
                continue
            self._creating.add(port)  # taken for this process's other workers from here on (no await before)
            try:
                await self.client.create(CONFIGMAP, self._record(key, name, port), self.opts.port_namespace)
            except AlreadyExistsError:
                continue  # someone recorded it first (another operator)
            finally:
                self._creating.discard(port)
            self._fresh.setdefault(key, {})[name] = port
            return port
        raise RuntimeError(f"no free port in {lo}-{hi} for {key}")

    async def claim(self, key: str, name: str, port: int) -> None:
        """Record a port a Service already holds (a cluster made before ports were recorded)."""
        if self.held(key).get(name) == port:
            return
        try:
            await self.client.create(CONFIGMAP, self._record(key, name, port), self.opts.port_namespace)
            self._fresh.setdefault(key, {})[name] = port
        except AlreadyExistsError:
            log.warning("port %s of %s is recorded for another cluster", port, key)

    async def release(self, key: str, keep: set[int] | frozenset[int] = frozenset()) -> int:
        """Delete ``key``'s port records (except ``keep``); returns how many went."""
        n = 0
        for name, port in self.held(key).items():
            if port in keep:
                continue
            try:
                await self.client.delete(CONFIGMAP, _PORT_RECORD.format(port), self.opts.port_namespace)
            except NotFoundError:
                pass
            n += 1
            fresh = self._fresh.get(key)
            if fresh is not None:
                fresh.pop(name, None)
        return n


PKI_RECHECK = dt.timedelta(hours=1)  # a PKI Secret found good is checked again after this long


class Resources:
    """The PKI Secret, the Service and its ports, the kubeconfig Secret, and the endpoint, of one Cluster."""

    def __init__(self, client: ObjectClient, *, pods: Store, services: Store, secrets: Store,
                 ports: PortAllocator, opts: OperatorOptions) -> None:
        self.client = client
        self.pods, self.services, self.secrets = pods, services, secrets
        self.ports = ports
        self.opts = opts
        # Secret key -> (resourceVersion, hosts, checked at) of a PKI Secret found good: parsing and verifying
        # six certificates on every reconcile cost ~3 ms of the operator's one core each time (a third of
        # its CPU at 3,000 Clusters).  A cache of a pure function of the API's object, not a decision: a
        # restart checks again; a changed Secret (new resourceVersion) or host list is checked again, and so is
        # any Secret once :data:`PKI_RECHECK` has passed (certificates are renewed 30 days before expiry).
        self._pki_good: dict[str, tuple[str, tuple[str, ...], dt.datetime]] = {}

    async def ensure_pki(self, names: Names, keep: bool, now: dt.datetime | None = None) -> Obj:
        """The CA, the API server's serving certificate and the bearer tokens, in ``<cluster>-pki``."""
        hosts = ["127.0.0.1", "localhost", *names.service_hosts(), *self.opts.extra_sans]
        cur = self.secrets.get_by_name(names.pki_secret, names.namespace)
        key = f"{names.namespace}/{names.pki_secret}"
        now = now or dt.datetime.now(dt.UTC)
        if cur is None and key in self._pki_good:  # written by this process, the cache has not caught up
            with contextlib.suppress(NotFoundError):
                cur = await self.client.get(SECRET, names.pki_secret, names.namespace)
        if cur is not None:
            good = self._pki_good.get(key)
            if good is not None and good[0] == cur["metadata"].get("resourceVersion") and good[1] == tuple(hosts) \
                    and now - good[2] < PKI_RECHECK:
                return cur
        out = await self._ensure_pki(names, keep, hosts, cur)
        self._pki_good[key] = (str(out["metadata"].get("resourceVersion")), tuple(hosts), now)
        return out

    def forget_pki(self, names: Names) -> None:
        """A Cluster went away: drop its cached check."""
        self._pki_good.pop(f"{names.namespace}/{names.pki_secret}", None)

    async def _ensure_pki(self, names: Names, keep: bool, hosts: list[str], cur: Obj | None) -> Obj:
        driver = {k: unb64(cur, k) for k in pki.DRIVER_KEYS} if cur is not None else {}
        driver_want = pki.driver_pki(driver, hosts, ca_name=f"kokpit-node-driver-ca-{names.namespace}-{names.cluster}")
        if cur is not None and unb64(cur, "ca.crt") and unb64(cur, "tokens.json") and \
                pki.serving_cert_covers(unb64(cur, "tls.crt"), hosts) and driver_want == driver:
            return cur
        if cur is not None and unb64(cur, "ca.key"):
            ca = pki.CertPair(unb64(cur, "ca.crt"), unb64(cur, "ca.key"))
            tokens = unb64(cur, "tokens.json")
        else:
            ca = pki.new_ca(f"kokpit-{names.namespace}-{names.cluster}")
            tokens = json.dumps({"admin": pki.new_token(), "readonly": pki.new_token()}).encode()
        if cur is not None and unb64(cur, "ca.key") and unb64(cur, "tls.key") and \
                pki.serving_cert_covers(unb64(cur, "tls.crt"), hosts):
            serving = pki.CertPair(unb64(cur, "tls.crt"), unb64(cur, "tls.key"))  # only the driver's changed
        else:
            serving = pki.new_serving_cert(ca, hosts)
        data = {"ca.crt": b64(ca.cert_pem), "ca.key": b64(ca.key_pem), "tls.crt": b64(serving.cert_pem),
                "tls.key": b64(serving.key_pem), "tokens.json": b64(tokens)}
        data |= {k: b64(v) for k, v in driver_want.items()}  # the node driver's mutual TLS (kokpit.nodes.mtls)
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

    async def ensure_service(self, names: Names, owner: Obj, want_driver: bool) -> tuple[int, int | None]:
        """The NodePort Service of the endpoint (and of the node driver), with ports recorded as this
        cluster's; ports are chosen once and kept."""
        key = f"{names.namespace}/{names.cluster}"
        svc = self.services.get_by_name(names.service, names.namespace)
        ports = {str(p.get("name")): p for p in ((svc or {}).get("spec") or {}).get("ports") or []}
        metrics = list(METRICS_PORT_NAMES.values()) if want_driver else []  # the simulator's, the machine operator's
        if svc is not None and "https" in ports and (not want_driver or "driver" in ports) \
                and all(n in ports for n in metrics):
            have = {n: int(p["nodePort"]) for n, p in ports.items() if p.get("nodePort")}
            held = self.ports.held(key)
            for n, port in have.items():
                if held.get(n) != port:
                    await self.ports.claim(key, n, port)
            if set(held.values()) - set(have.values()):
                await self.ports.release(key, keep=set(have.values()))  # allocated, never used
            drv = have.get("driver")
            return have["https"], drv
        api = int(ports["https"]["nodePort"]) if "https" in ports else await self.ports.allocate(key, "https")
        new_ports = [{"name": "https", "port": 443, "targetPort": api, "nodePort": api, "protocol": "TCP"}]
        drv_port: int | None = None
        if want_driver or "driver" in ports:
            drv_port = int(ports["driver"]["nodePort"]) if "driver" in ports \
                else await self.ports.allocate(key, "driver")
            new_ports.append({"name": "driver", "port": DRIVER_SERVICE_PORT, "targetPort": drv_port,
                              "nodePort": drv_port, "protocol": "TCP"})
        for i, n in enumerate(metrics, start=1):
            port = int(ports[n]["nodePort"]) if n in ports else await self.ports.allocate(key, n)
            new_ports.append({"name": n, "port": DRIVER_SERVICE_PORT + i, "targetPort": port, "nodePort": port,
                              "protocol": "TCP"})
        if svc is None:
            body = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": names.service, "namespace": names.namespace,
                                 "labels": {CLUSTER_LABEL: names.cluster},
                                 "ownerReferences": owner_refs(owner)},
                    "spec": {"type": "NodePort", "ports": new_ports,
                             "selector": {CLUSTER_LABEL: names.cluster, COMPONENT_LABEL: APISERVER_COMPONENT}}}
            try:
                await self.client.create(SERVICE, body, names.namespace)
            except AlreadyExistsError:  # the cache was behind: the ports already chosen are the ones to use
                svc = await self.client.get(SERVICE, names.service, names.namespace)
                got = {str(p.get("name")): int(p["nodePort"]) for p in (svc.get("spec") or {}).get("ports") or []
                       if p.get("nodePort")}
                return got["https"], got.get("driver")
        else:
            await self.client.patch(SERVICE, names.service, {"spec": {"ports": new_ports}}, names.namespace)
        return api, drv_port

    def metrics_ports(self, names: Names) -> dict[str, int]:
        """Component -> the port of its /metrics (allocated with the Service's, recorded like them)."""
        held = self.ports.held(f"{names.namespace}/{names.cluster}")
        return {c: held[n] for c, n in METRICS_PORT_NAMES.items() if held.get(n)}

    async def ensure_kubeconfig(self, names: Names, endpoint: str, pki_secret: Obj) -> None:
        """``<cluster>-kubeconfig`` (key ``value``, as Cluster API names it): the business admin kubeconfig."""
        tokens = json.loads(unb64(pki_secret, "tokens.json") or b"{}")
        data = {KUBECONFIG_KEY: _kubeconfig_b64(f"{names.namespace}-{names.cluster}", endpoint,
                                                unb64(pki_secret, "ca.crt"), str(tokens.get("admin", "")))}
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

    def owned_pods(self, names: Names) -> list[Obj]:
        return self.pods.by_index("cluster", f"{names.namespace}/{names.cluster}")

    def endpoint_host(self, names: Names) -> str | None:
        """The node address of a ready API server Pod (an unready one is out of the endpoint)."""
        api = [p for p in self.owned_pods(names)
               if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == APISERVER_COMPONENT]
        for p in sorted(api, key=lambda p: (not pod_ready(p), p["metadata"]["name"])):
            host = (p.get("status") or {}).get("hostIP")
            if host:
                return str(host)
        return None

    def endpoint(self, names: Names) -> str | None:
        """``https://<node>:<nodePort>`` of the business API server, once it has both."""
        svc = self.services.get_by_name(names.service, names.namespace)
        port = next((p.get("nodePort") for p in ((svc or {}).get("spec") or {}).get("ports") or []
                     if p.get("name") == "https"), None)
        host = self.endpoint_host(names)
        if not host or not port:
            return None
        return f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"

    def ca(self, names: Names) -> bytes:
        return unb64(self.secrets.get_by_name(names.pki_secret, names.namespace), "ca.crt")
