"""The portal's picture of the fleet: watch-fed caches of the meta cluster and of every business cluster.

A page never lists a business cluster: at 3,000 clusters that would be 3,000 requests per page view.  The
portal holds one informer per kind in the meta cluster and, per business cluster whose kubeconfig Secret
exists, one for its Machines and one for its Nodes (the same shared-informer machinery the operators use),
and renders pages from those caches.  Per-cluster node counts are recomputed only when something in that
cluster changed.

Every change also goes to the :class:`Hub`, which tells the open pages (server-sent events) which objects
changed, so a page updates within a second without polling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from lightkube.config.kubeconfig import KubeConfig

from kokpit.client import ApiError, Client, Kind, TransportError
from kokpit.portal._kinds import (
    CLUSTER,
    CPV,
    FLOW,
    MACHINE,
    MPV,
    NODE,
    NODE_FAULT,
    PERMIT,
    RISK_POLICY,
    SECRET,
)
from kokpit.runtime.conditions import find_condition
from kokpit.runtime.informer import Handlers, Informer, InformerFactory, strip_managed_fields

__all__ = ["BusinessCache", "FleetCache", "Hub", "NodeCounts", "flow_open", "topic_of"]

log = logging.getLogger("kokpit.portal")
Obj = dict[str, Any]
KUBECONFIG_KEY = "value"  # the key of the cluster operator's <cluster>-kubeconfig Secret


def topic_of(kind: str, obj: Obj, cluster: str = "") -> str:
    """The topic a change is published under: ``Kind/namespace/name`` (meta) or ``Kind@cluster/name``."""
    meta = obj.get("metadata") or {}
    where = f"@{cluster}" if cluster else f"/{meta.get('namespace') or ''}"
    return f"{kind}{where}/{meta.get('name', '')}"


class Hub:
    """Fan-out of change topics to subscribers (one per open page), coalesced: a subscriber sees a set."""

    def __init__(self) -> None:
        self._subs: set[_Sub] = set()
        self.published = 0
        self.closed = False

    def close(self) -> None:
        """End every subscription (the server is stopping: open event streams return)."""
        self.closed = True
        for s in self._subs:
            s.event.set()

    def publish(self, topic: str) -> None:
        self.published += 1
        for s in self._subs:
            s.topics.add(topic)
            s.event.set()

    @contextlib.contextmanager
    def subscribe(self) -> Any:
        s = _Sub()
        self._subs.add(s)
        try:
            yield s
        finally:
            self._subs.discard(s)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


@dataclass(eq=False)
class _Sub:
    topics: set[str] = field(default_factory=set)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, timeout: float) -> set[str]:
        """The topics changed since the last call (empty after ``timeout`` seconds of quiet)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        out, self.topics = self.topics, set()
        return out


def _cond(obj: Obj, type_: str) -> str:
    return str((find_condition((obj.get("status") or {}).get("conditions"), type_) or {}).get("status") or "Unknown")


@dataclass
class NodeCounts:
    total: int = 0
    ready: int = 0
    isolated: int = 0  # cordoned: spec.unschedulable on the Node
    not_ready: int = 0
    converged: int = 0  # Machines Ready at their newest spec
    repair: int = 0  # nodes with an open MaintenanceFlow
    manual: int = 0  # ... of which a person must finish (ManualRequired)
    faults: int = 0  # Active NodeFaults
    versions: dict[str, int] = field(default_factory=dict)  # kubelet version -> nodes


def flow_open(flow: Obj) -> bool:
    """Not Completed and not being deleted (what ``kokpit fault resolve|retry`` may still act on)."""
    return _cond(flow, "Completed") != "True" and not (flow.get("metadata") or {}).get("deletionTimestamp")


class BusinessCache:
    """Machines, Nodes, NodeFaults and MaintenanceFlows of one business cluster, and their counts (recomputed
    when dirty).  Faults and flows are served by CRDs the fault operators install; their informers retry until
    those are served and never hold ``synced``."""

    def __init__(self, name: str, client: Client, hub: Hub) -> None:
        self.name = name
        self.client = client
        self.hub = hub
        self.machines = Informer(client, MACHINE, transform=strip_managed_fields)
        self.nodes = Informer(client, NODE, transform=strip_managed_fields)
        self.mpvs = Informer(client, MPV, transform=strip_managed_fields)
        self.faults = Informer(client, NODE_FAULT, transform=strip_managed_fields)
        self.flows = Informer(client, FLOW, transform=strip_managed_fields)
        self._counts: NodeCounts | None = None
        self._order: list[str] | None = None  # Machine names, sorted (a page walks them in order)
        self.hay: dict[str, tuple[Obj, str]] = {}  # Machine name -> (object, its filter text)
        for kind, inf in (("Machine", self.machines), ("Node", self.nodes), ("NodeFault", self.faults),
                          ("MaintenanceFlow", self.flows)):
            inf.add_event_handler(self._handler(kind))
        self.machines.add_event_handler(Handlers(add=self._reorder, delete=self._reorder))

    def _reorder(self, obj: Obj) -> None:
        self._order = None
        self.hay.pop(str((obj.get("metadata") or {}).get("name")), None)

    def machine_order(self) -> list[str]:
        """The Machines' names in order, sorted again only after one was added or deleted (not per page)."""
        if self._order is None:
            self._order = sorted(str((m.get("metadata") or {}).get("name")) for m in self.machines.store.list())
        return self._order

    def _handler(self, kind: str) -> Handlers:
        def changed(obj: Obj) -> None:
            self._counts = None
            self.hub.publish(topic_of(kind, obj, self.name))

        return Handlers(add=changed, update=lambda _old, new: changed(new), delete=changed)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return self.machines, self.nodes, self.mpvs, self.faults, self.flows

    def start(self) -> None:
        for inf in self.informers:
            inf.start()

    async def stop(self) -> None:
        for inf in self.informers:
            await inf.stop()
        await self.client.close()

    @property
    def synced(self) -> bool:
        return self.machines.has_synced and self.nodes.has_synced and self.mpvs.has_synced

    def counts(self) -> NodeCounts:
        if self._counts is None:
            n = NodeCounts()
            for node in self.nodes.store.list():
                n.total += 1
                if (node.get("spec") or {}).get("unschedulable"):
                    n.isolated += 1
                elif _cond(node, "Ready") == "True":
                    n.ready += 1
                else:
                    n.not_ready += 1
                v = str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "?")
                n.versions[v] = n.versions.get(v, 0) + 1
            for m in self.machines.store.list():
                meta, st = m.get("metadata") or {}, m.get("status") or {}
                if _cond(m, "Ready") == "True" and int(st.get("observedGeneration") or 0) >= int(
                        meta.get("generation") or 0):
                    n.converged += 1
            for f in self.faults.store.list():
                if (f.get("status") or {}).get("state") == "Active":
                    n.faults += 1
            for fl in self.flows.store.list():
                if flow_open(fl):
                    n.repair += 1
                    if _cond(fl, "ManualRequired") == "True":
                        n.manual += 1
            self._counts = n
        return self._counts


class FleetCache:
    """Informers over the meta cluster (Clusters, releases, risk) and one :class:`BusinessCache` per Cluster
    that has a kubeconfig Secret.  ``extra_kinds`` are more meta kinds pages read (change requests, audit)."""

    def __init__(self, meta: Client, *, extra_kinds: Iterable[Kind] = (), business: bool = True,
                 business_interval: float = 2.0) -> None:
        self.meta = meta
        self.hub = Hub()
        self.factory = InformerFactory(meta, transform=strip_managed_fields)
        self.kinds: dict[str, Informer] = {}
        for kind in (CLUSTER, CPV, RISK_POLICY, PERMIT, *extra_kinds):
            self._add(kind)
        self.business_enabled = business
        self.business_interval = business_interval
        self.business: dict[str, BusinessCache] = {}  # "<namespace>/<name>" -> cache
        self.business_errors: dict[str, str] = {}
        self.optional: list[Informer] = []
        self._task: asyncio.Task[None] | None = None

    def _add(self, kind: Kind) -> None:
        inf = self.factory.informer(kind)
        self.kinds[kind.kind] = inf
        name = kind.kind
        inf.add_event_handler(Handlers(add=lambda o: self.hub.publish(topic_of(name, o)),
                                       update=lambda _o, n: self.hub.publish(topic_of(name, n)),
                                       delete=lambda o: self.hub.publish(topic_of(name, o))))

    def add_kind(self, kind: Kind, *, optional: bool = False) -> Informer:
        """One more meta kind.  ``optional``: a kind another part of kokpit serves (Rollouts, NodeFaults) —
        watched as soon as its CRD exists, without holding the portal's start until then."""
        if kind.kind not in self.kinds:
            if optional:
                inf = Informer(self.meta, kind, transform=strip_managed_fields)
                name = kind.kind
                inf.add_event_handler(Handlers(add=lambda o: self.hub.publish(topic_of(name, o)),
                                               update=lambda _o, n: self.hub.publish(topic_of(name, n)),
                                               delete=lambda o: self.hub.publish(topic_of(name, o))))
                self.kinds[kind.kind] = inf
                self.optional.append(inf)
            else:
                self._add(kind)
        return self.kinds[kind.kind]

    def objects(self, kind: str) -> list[Obj]:
        inf = self.kinds.get(kind)
        return inf.store.list() if inf is not None else []

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        inf = self.kinds.get(kind)
        return inf.store.get_by_name(name, namespace) if inf is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        self.factory.start()
        for inf in self.optional:
            inf.start()
        await asyncio.wait_for(self.factory.wait_synced(), timeout)
        if self.business_enabled:
            self._task = asyncio.create_task(self._business_loop(), name="portal-business")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(b.stop() for b in self.business.values()), return_exceptions=True)
        self.business.clear()
        for inf in self.optional:
            await inf.stop()
        await self.factory.stop()

    def cluster_cache(self, namespace: str, name: str) -> BusinessCache | None:
        return self.business.get(f"{namespace}/{name}")

    async def _business_loop(self) -> None:
        while True:
            try:
                await self.sync_business()
            except Exception as e:  # keep looking; the next pass retries
                log.warning("business cluster caches: %s", e)
            await asyncio.sleep(self.business_interval)

    async def sync_business(self) -> None:
        """Start a cache for every Cluster with an endpoint whose kubeconfig can be read; stop the caches of
        Clusters that are gone."""
        wanted: dict[str, Obj] = {}
        for c in self.objects("Cluster"):
            meta = c.get("metadata") or {}
            if (c.get("status") or {}).get("endpoint") and not meta.get("deletionTimestamp"):
                wanted[f"{meta.get('namespace')}/{meta.get('name')}"] = c
        for key in [k for k in self.business if k not in wanted]:
            await self.business.pop(key).stop()
        for key, c in wanted.items():
            if key in self.business:
                continue
            ns, name = key.split("/", 1)
            try:
                secret = await self.meta.get(SECRET, f"{name}-kubeconfig", ns)
                raw = base64.b64decode((secret.get("data") or {}).get(KUBECONFIG_KEY) or "")
                conf = KubeConfig.from_dict(yaml.safe_load(raw)).get()
                if conf is None:
                    raise ValueError("no current context")
            except (ApiError, TransportError, OSError, ValueError, yaml.YAMLError) as e:
                self.business_errors[key] = f"kubeconfig not readable: {e}"
                continue
            client = Client(conf, field_manager="kokpit-portal", max_retries=1, timeout=15.0, lean_connections=2)
            cache = BusinessCache(name, client, self.hub)
            cache.start()
            self.business[key] = cache
            self.business_errors.pop(key, None)
            self.hub.publish(topic_of("Cluster", c))
