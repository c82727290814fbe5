"""In-memory stand-ins for the cluster operator's unit tests: an API client over Stores, a kubelet that marks
Pods Running/Ready, and a prober whose answers the test decides."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from kokpit._lib.clock import FakeClock, format_time
from kokpit.apiserver.patch import json_merge_patch
from kokpit.client import AlreadyExistsError, Kind, NotFoundError
from kokpit.operators.cluster import COMPONENT_LABEL, ClusterReconciler, OperatorOptions, Probe
from kokpit.operators.cluster._identity import IDENTITY_KINDS
from kokpit.operators.cluster._resources import INDEXERS_PORTS
from kokpit.operators.cluster.operator import INDEXERS_CLUSTER, INDEXERS_OWNED
from kokpit.runtime import EventRecorder, Request, Result, Store

Obj = dict[str, Any]


class StoreClient:
    """Objects live in informer Stores (writes show in the cache at once, like a watch); deletes are immediate."""

    def __init__(self, stores: dict[str, Store], clock: FakeClock) -> None:
        self.stores = stores
        self.extra: dict[str, Store] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.clock = clock
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)

    def _store(self, kind: Kind) -> Store:
        if kind.plural in self.stores:
            return self.stores[kind.plural]
        return self.extra.setdefault(kind.plural, Store())

    def writes(self, verb: str | None = None, plural: str | None = None) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "get" and (verb is None or c[0] == verb)
                and (plural is None or c[1] == plural)]

    async def get(self, kind: Kind, name: str, namespace: str | None = None, *,
                  subresource: str | None = None) -> Obj:
        self.calls.append(("get", kind.plural, name))
        o = self._store(kind).get_by_name(name, namespace if kind.namespaced else None)
        if o is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        return copy.deepcopy(o)

    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None, *, dry_run: bool = False) -> Obj:
        self.calls.append(("create", kind.plural, obj["metadata"]["name"]))
        st = self._store(kind)
        o = copy.deepcopy(obj)
        if kind.namespaced:
            o["metadata"]["namespace"] = namespace or o["metadata"].get("namespace") or "default"
        if st.get_by_name(o["metadata"]["name"], o["metadata"].get("namespace")) is not None:
            raise AlreadyExistsError(409, {"reason": "AlreadyExists"})
        o["metadata"]["resourceVersion"] = str(next(self._rv))
        o["metadata"]["uid"] = f"uid-{next(self._uid)}"
        o["metadata"]["creationTimestamp"] = format_time(self.clock.now())
        st.put(o)
        return copy.deepcopy(o)

    async def patch(self, kind: Kind, name: str, body: Any, namespace: str | None = None, *,
                    patch_type: Any = "merge", subresource: str | None = None,
                    field_manager: str | None = None, force: bool = False) -> Obj:
        self.calls.append((f"patch{'/' + subresource if subresource else ''}", kind.plural, name))
        st = self._store(kind)
        cur = st.get_by_name(name, namespace if kind.namespaced else None)
        if cur is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        if patch_type == "json":
            new = copy.deepcopy(cur)
            for op in body:
                if op["op"] in ("add", "replace") and op["path"] == "/metadata/finalizers":
                    new["metadata"]["finalizers"] = op["value"]
        else:
            new = json_merge_patch(cur, body)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            st.delete(f"{new['metadata'].get('namespace')}/{name}" if kind.namespaced else name)
        else:
            st.put(new)
        return copy.deepcopy(new)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        self.calls.append(("delete", kind.plural, name))
        st = self._store(kind)
        cur = st.get_by_name(name, namespace if kind.namespaced else None)
        if cur is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        st.delete(f"{namespace}/{name}" if kind.namespaced else name)
        return {}


class FakeProber:
    """Ready unless the running version is listed in ``broken``; reports ``version``."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.serving = ""  # the replica that answers (set by the Harness's kubelet)
        self.broken: set[str] = set()
        self.calls = 0

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        self.calls += 1
        assert endpoint.startswith("https://") and b"BEGIN CERTIFICATE" in ca_pem
        if self.version is None or self.version in self.broken:
            return Probe(False, None, "/readyz answered 503")
        return Probe(True, self.version, "", self.serving)


CPV_COMPONENTS = [
    {"name": "kube-apiserver", "args": ["apiserver"]},
    {"name": "machine-operator", "args": ["machine-operator"]},
    {"name": "simulator", "args": ["simulator"]},
]


class Harness:
    """A ClusterReconciler over Stores; ``kubelet()`` marks Pods Running/Ready, ``run()`` reconciles once."""

    def __init__(self, **opts: Any) -> None:
        self.clock = FakeClock()
        self.clusters = Store(INDEXERS_CLUSTER)
        self.cpvs = Store()
        self.pods = Store(INDEXERS_OWNED)
        self.services = Store(INDEXERS_OWNED)
        self.secrets = Store(INDEXERS_OWNED)
        self.port_records = Store(INDEXERS_PORTS)  # the NodePort allocation records (ConfigMaps)
        self.client = StoreClient({"clusters": self.clusters, "clusterpackageversions": self.cpvs,
                                   "pods": self.pods, "services": self.services, "secrets": self.secrets,
                                   "configmaps": self.port_records},
                                  self.clock)
        self.prober = FakeProber()
        self.options = OperatorOptions(**{"unhealthy_timeout": 10.0, "release_timeout": 20.0,
                                          "retry_base": 5.0, "retry_cap": 60.0, "max_failures": 3, **opts})
        self.unready_images: set[str] = set()
        self.serving: str | None = None  # the API server replica that holds the data dir's lock
        self.client.extra["nodes"] = Store()
        self.client.extra["nodes"].put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
        self.new_reconciler()

    def next_rv(self) -> str:
        """A resourceVersion for a write made by "a user" of the test, after every one before (as a server's)."""
        return str(next(self.client._rv))

    def new_reconciler(self) -> ClusterReconciler:
        """A fresh reconciler (empty memory), as after an operator restart."""
        self.rec = ClusterReconciler(self.client, clusters=self.clusters, cpvs=self.cpvs, pods=self.pods,
                                     services=self.services, secrets=self.secrets,
                                     recorder=EventRecorder(self.client, "cluster-operator", clock=self.clock),
                                     prober=self.prober, options=self.options, clock=self.clock,
                                     ports=self.port_records,
                                     identities={k.plural: self.client._store(k) for k in IDENTITY_KINDS})
        return self.rec

    def cpv(self, name: str, kube: str, components: list[Obj] | None = None) -> None:
        comps = copy.deepcopy(components if components is not None else CPV_COMPONENTS)
        for c in comps:
            c.setdefault("image", f"kokpit:{kube}")
        self.cpvs.put({"apiVersion": "kokpit.io/v1alpha1", "kind": "ClusterPackageVersion",
                       "metadata": {"name": name, "resourceVersion": self.next_rv()},
                       "spec": {"kubernetesVersion": kube, "components": comps}})

    def cluster(self, name: str = "c1", cpv: str = "v1", nodes: int = 3, policy: str = "Delete",
                replicas: int = 1, paused: bool = False) -> None:
        cur = self.clusters.get_by_name(name, "default")
        gen = int((cur or {}).get("metadata", {}).get("generation", 0)) + 1
        meta = (cur or {}).get("metadata") or {"name": name, "namespace": "default", "uid": f"uid-{name}",
                                               "resourceVersion": self.next_rv()}
        meta = {**meta, "generation": gen}
        obj: Obj = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "metadata": meta,
                    "spec": {"packageVersion": cpv, "controlPlane": {"replicas": replicas},
                             "simulation": {"nodes": nodes}, "paused": paused, "deletionPolicy": policy}}
        if cur is not None and "status" in cur:
            obj["status"] = cur["status"]
        self.clusters.put(obj)

    def kubelet(self) -> int:
        """Mark every Pod Running and Ready (unless its image is in ``unready_images``); returns how many
        changed.  The API server's reported version follows the running apiserver Pod's image."""
        n = 0
        for p in self.pods.list():
            image = p["spec"]["containers"][0]["image"]
            ready = image not in self.unready_images
            if not p["spec"].get("nodeName"):
                p["spec"]["nodeName"] = "node-a"
                self.pods.put(p)
            if p["spec"].get("restartPolicy", "Always") != "Always":  # runs to completion (a data cleanup)
                phase = "Succeeded" if ready else "Pending"
                if p.get("status", {}).get("phase") != phase:
                    p["status"] = {"phase": phase, "hostIP": "127.0.0.1"}
                    self.pods.put(p)
                    n += 1
                continue
            want: Obj = {"phase": "Running", "hostIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                    "lastTransitionTime": p["metadata"]["creationTimestamp"]}],
                    "containerStatuses": [{"name": "c", "restartCount": 0, "ready": ready}]}
            if p.get("status", {}).get("phase") != "Running" or \
                    p["status"]["conditions"][0]["status"] != want["conditions"][0]["status"]:
                p["status"] = want
                self.pods.put(p)
                n += 1
        # replicas share one data dir: the one holding its lock serves until it goes, then a ready one takes over
        api = {p["metadata"]["name"]: p for p in self.pods.list()
               if p["metadata"]["labels"][COMPONENT_LABEL] == "kube-apiserver"}
        ready_api = sorted(name for name, p in api.items() if p["status"]["conditions"][0]["status"] == "True")
        if self.serving not in ready_api:
            self.serving = ready_api[0] if ready_api else None
        self.prober.version = api[self.serving]["spec"]["containers"][0]["image"].split(":", 1)[1] \
            if self.serving else None
        self.prober.serving = self.serving or ""
        return n

    def status(self, name: str = "c1") -> Obj:
        c = self.clusters.get_by_name(name, "default")
        assert c is not None
        out: Obj = c.get("status") or {}
        return out

    def cond(self, type_: str, name: str = "c1") -> Obj:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        raise AssertionError(f"no condition {type_} in {self.status(name).get('conditions')}")

    def pod_names(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.pods.list())

    def pod_versions(self) -> dict[str, str]:
        return {p["metadata"]["name"]: p["metadata"]["labels"]["kokpit.io/package-version"]
                for p in self.pods.list()}

    def events(self, reason: str | None = None) -> list[Obj]:
        st = self.client.extra.get("events")
        return [e for e in (st.list() if st else []) if reason is None or e["reason"] == reason]

    async def run(self, name: str = "c1") -> Result | None:
        return await self.rec.reconcile(Request("default", name))

    async def converge(self, name: str = "c1", limit: int = 20) -> int:
        """Reconcile and run the kubelet until a reconcile changes nothing and the kubelet has nothing to do."""
        for i in range(limit):
            before = len(self.client.writes())
            await self.run(name)
            changed = self.kubelet()
            if changed == 0 and len(self.client.writes()) == before:
                return i
        raise AssertionError(f"no convergence in {limit} rounds; pods={self.pod_versions()} "
                             f"status={self.status(name)}")


@pytest.fixture
def harness() -> Harness:
    return Harness()
