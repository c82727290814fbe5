"""The fault controllers of a business cluster, wired onto a Manager (inside ``kokpit machine-operator``).

They run in the machine operator's process because that process already has what they need: the business
cluster's API, shared informers of Nodes and Machines (the machine operator's node-driver polling feeds the
Machine status the detector reads), a Manager with /metrics, and a place in every ``kokpit up`` fleet and
ClusterPackageVersion.  They share its informers (one watch of Nodes and Machines per process, not two) but
import nothing of it: ``kokpit.cli`` composes the two (``--faults``/``--no-faults``).

Controllers: ``fault-center`` (per NodeFault: :mod:`._center`), ``fault-detector`` (per Node:
:mod:`._detector`), ``fault-events`` (per Event on a Node: node-problem-detector's temporary problems) and
``fault-webhooks`` (per FaultSubscription: :mod:`._webhooks`); plus the default catalog, created when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit._lib.podutil import slim_pod
from kokpit.client import EVENT, LEASE, NODE, POD, ApiError, Client, Kind, TransportError
from kokpit.operators.faults._business import PodStartRule, pod_start_failures
from kokpit.operators.faults._center import CenterOptions, EventCenter
from kokpit.operators.faults._detector import EventIngester, NodeDetector
from kokpit.operators.faults._metrics import FaultMetrics
from kokpit.operators.faults._permits import PERMIT, permit_causes
from kokpit.operators.faults._webhooks import WebhookDeliverer
from kokpit.operators.faults.catalog import Catalog, install_defaults
from kokpit.runtime import EventRecorder, Handlers, InformerFactory, Manager, Request, find_condition
from kokpit.runtime.faultreports import FAULTSUBSCRIPTION, FAULTTYPE, NODEFAULT, FaultReporter
from kokpit.runtime.informer import strip_managed_fields

__all__ = ["MACHINE", "FaultCenter", "FaultOptions"]

log = logging.getLogger("kokpit.operators.faults")

Obj = dict[str, Any]
MACHINE = Kind("kokpit.io", "v1alpha1", "Machine", "machines", namespaced=False)
NODE_LEASE_NAMESPACE = "kube-node-lease"


@dataclass
class FaultOptions:
    retention: float = 24 * 3600.0  # seconds a Resolved/Expired/Invalid NodeFault is kept
    lease_grace: float = 40.0  # a node Lease not renewed this long is node-unreachable
    lease_scan: float = 1.0  # seconds between scans for Leases gone stale
    watch_leases: bool = True
    ingest_events: bool = True
    install_catalog: bool = True
    workers: int = 32  # the center writes four times per new fault: a storm of reports needs them in parallel
    watch_pods: bool = True  # the business signal (pods failing to start on one node)
    pod_scan: float = 5.0  # seconds between evaluations of it
    pod_rule: PodStartRule = field(default_factory=PodStartRule)
    catalog_debounce: float = 0.3  # seconds a burst of FaultType changes is gathered before waking every node


def _spec_node(obj: Obj) -> list[str]:
    n = (obj.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


def _slim_lease(lease: Obj) -> Obj:
    """What the detector reads of a node Lease: its name and when it was last renewed."""
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta},
            "spec": {k: spec[k] for k in ("renewTime", "acquireTime") if k in spec}}


def _node_signals(node: Obj) -> tuple[Any, ...]:
    """What of a Node the detector reads: its conditions' types, statuses and reasons (not heartbeats)."""
    conds = (node.get("status") or {}).get("conditions") or []
    return tuple(sorted((str(c.get("type")), str(c.get("status")), str(c.get("reason"))) for c in conds))


def _machine_signals(m: Obj) -> tuple[Any, ...]:
    st = m.get("status") or {}
    comps = tuple(sorted((str(c.get("name")), str(c.get("installState")), str(c.get("runState")),
                          str(c.get("version"))) for c in st.get("components") or []))
    fails = tuple(sorted(str(f.get("name")) for f in st.get("failures") or []))
    return comps, fails


class FaultCenter:
    """Wires the fault controllers onto ``manager`` (sharing its Node and Machine informers)."""

    def __init__(self, manager: Manager, options: FaultOptions | None = None, *, clock: Clock | None = None,
                 meta: Client | None = None, meta_namespace: str = "default", cluster: str = "") -> None:
        """``meta`` (the meta cluster, with this cluster's Cluster ``meta_namespace/cluster``) adds the risk
        center's granted Permits to the changes a fault may have been caused by."""
        self.manager = manager
        self.options = opts = options or FaultOptions()
        self.clock: Clock = clock or RealClock()
        inf = manager.informers
        self.fault_informer = inf.informer(NODEFAULT)
        self.type_informer = inf.informer(FAULTTYPE)
        self.sub_informer = inf.informer(FAULTSUBSCRIPTION)
        self.node_informer = inf.informer(NODE)
        self.machine_informer = inf.informer(MACHINE)
        for informer, fn in ((self.fault_informer, _spec_node), (self.machine_informer, _spec_node)):
            with contextlib.suppress(ValueError):  # the machine operator may have added it already
                informer.add_indexer("node", fn)
        self.lease_informer = inf.informer(LEASE, NODE_LEASE_NAMESPACE) if opts.watch_leases else None
        if self.lease_informer is not None and self.lease_informer.transform in (None, strip_managed_fields):
            self.lease_informer.transform = _slim_lease
        self.event_informer = (inf.informer(EVENT, field_selector="involvedObject.kind=Node")
                               if opts.ingest_events else None)
        self.pod_informer = inf.informer(POD) if opts.watch_pods else None
        if self.pod_informer is not None and self.pod_informer.transform in (None, strip_managed_fields):
            self.pod_informer.transform = slim_pod  # 100,000 full Pods would dominate the memory
        self._pod_starts: dict[str, str] = {}
        self._wake_all_pending = False
        self._catalog: Catalog | None = None
        permit_lookup = None
        if meta is not None:
            meta_informers = InformerFactory(meta)
            permits = meta_informers.informer(PERMIT, meta_namespace)
            permit_lookup = lambda node: permit_causes(permits.store.list(), cluster, node)  # noqa: E731

            async def run_meta() -> None:
                meta_informers.start()
                try:
                    await asyncio.Event().wait()
                finally:
                    await meta_informers.stop()
            manager.add_runnable(run_meta)
        self.type_informer.add_event_handler(Handlers(add=self._catalog_changed, update=lambda o, n:
                                                      self._catalog_changed(n), delete=self._catalog_changed))
        self.metrics = FaultMetrics(manager.registry, self.fault_informer.store.list)
        self.recorder = EventRecorder(manager.client, "fault-center", clock=clock)
        reporter = FaultReporter(manager.client, clock=clock)
        faults, nodes, machines = self.fault_informer.store, self.node_informer.store, self.machine_informer.store

        self.center = EventCenter(manager.client, faults, self.catalog, nodes, machines, self.recorder,
                                  self.metrics, CenterOptions(retention=opts.retention), self.clock,
                                  permit_causes=permit_lookup)
        c = manager.controller("fault-center", self.center.reconcile, workers=opts.workers,
                               needs_leader_election=False)
        c.for_(self.fault_informer)
        c.watches(self.type_informer, lambda o: [Request.for_object(f) for f in faults.list()
                                                 if (f.get("spec") or {}).get("type") == o["metadata"]["name"]])
        c.watches(self.node_informer, lambda o: [Request.for_object(f) for f in
                                                 faults.by_index("node", o["metadata"]["name"])],
                  predicate=None)
        self.center_controller = c

        self.detector = NodeDetector(reporter, self.catalog, nodes, self.lease_informer.store
                                     if self.lease_informer else None, machines, faults, self.metrics,
                                     lease_grace=opts.lease_grace, clock=self.clock,
                                     lease_scanned=self.lease_informer is not None,
                                     pod_starts=(lambda: self._pod_starts) if self.pod_informer else None)
        d = manager.controller("fault-detector", self.detector.reconcile, workers=opts.workers,
                               needs_leader_election=False)
        node_wake = Handlers(add=lambda o: self._wake(o["metadata"]["name"]),
                             update=lambda old, new: self._wake(new["metadata"]["name"])
                             if _node_signals(old) != _node_signals(new) else None,
                             delete=lambda o: self._wake(o["metadata"]["name"]))
        self.node_informer.add_event_handler(node_wake)
        self.machine_informer.add_event_handler(Handlers(add=self._wake_spec, update=self._machine_changed))
        # a fault of ours changing (expired, resolved by a flow) may need a fresh report
        self.fault_informer.add_event_handler(Handlers(add=self._wake_spec, update=self._fault_changed,
                                                       delete=self._wake_spec))
        if self.lease_informer is not None:
            # a renewal of a node we hold a lease fault for clears it at once; stale ones are found by the scan
            self.lease_informer.add_event_handler(Handlers(
                update=lambda old, new: self._wake(new["metadata"]["name"])
                if self._has_lease_fault(new["metadata"]["name"]) else None))
            manager.add_runnable(self._scan_leases)
        self.detector_controller = d
        if self.pod_informer is not None:
            manager.add_runnable(self._scan_pods)
        self._nodes_synced = False
        manager.add_runnable(self._start)

        if self.event_informer is not None:
            self.ingester = EventIngester(reporter, self.catalog, self.event_informer.store, faults, nodes,
                                          self.metrics, clock=self.clock)
            e = manager.controller("fault-events", self.ingester.reconcile, workers=2,
                                   needs_leader_election=False)
            e.for_(self.event_informer, predicate=self.ingester.relevant)

        self.deliverer = WebhookDeliverer(manager.client, self.sub_informer.store, faults, self.recorder,
                                          self.metrics, clock=self.clock)
        w = manager.controller("fault-webhooks", self.deliverer.reconcile, workers=4,
                               needs_leader_election=False)
        w.for_(self.sub_informer)
        subs = self.sub_informer.store
        w.watches(self.fault_informer, lambda o: [Request.for_object(s) for s in subs.list()])

    # ------------------------------------------------------------------ catalog
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.from_objects(self.type_informer.store.list())
        return self._catalog

    def _catalog_changed(self, _obj: Obj) -> None:
        """A new signal may match nodes already showing it: wake every node, once per burst of changes (the
        default catalog's 15 creates would otherwise wake 15 × N nodes at start-up)."""
        self._catalog = None
        if self._wake_all_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._wake_all()
            return
        self._wake_all_pending = True
        loop.call_later(self.options.catalog_debounce, self._wake_all)

    def _wake_all(self) -> None:
        self._wake_all_pending = False
        for n in self.node_informer.store.list():
            self._wake(n["metadata"]["name"])

    # ------------------------------------------------------------------ detector wiring
    def _wake(self, node: str) -> None:
        self.detector_controller.queue.add(Request("", node))

    def _wake_spec(self, obj: Obj) -> None:
        for n in _spec_node(obj):
            self._wake(n)

    def _machine_changed(self, old: Obj, new: Obj) -> None:
        if _machine_signals(old) != _machine_signals(new):
            self._wake_spec(new)

    def _fault_changed(self, old: Obj, new: Obj) -> None:
        if (old.get("status") or {}).get("state") != (new.get("status") or {}).get("state"):
            self._wake_spec(new)

    def _has_lease_fault(self, node: str) -> bool:
        for f in self.fault_informer.store.by_index("node", node):
            for s in (f.get("status") or {}).get("sources") or []:
                if s.get("reporter") == "fault-detector/lease" and not s.get("cleared"):
                    return True
        return False

    async def _scan_leases(self) -> None:
        """Every ``lease_scan`` seconds: wake the detector for nodes whose Lease just went stale (a silent
        node sends no event; this scan is the timer, and it is derived from the cache each time)."""
        assert self.lease_informer is not None
        await self.lease_informer.wait_synced()
        from kokpit._lib.clock import parse_time

        stale: set[str] = set()
        parsed: dict[str, tuple[Any, Any]] = {}  # name → (renewTime text, its time): each text parsed once
        while True:
            now = self.clock.now()
            current: set[str] = set()
            seen: dict[str, tuple[Any, Any]] = {}
            for lease in self.lease_informer.store.list():
                name = str(lease["metadata"]["name"])
                renewed = (lease.get("spec") or {}).get("renewTime")
                hit = parsed.get(name)
                if hit is None or hit[0] != renewed:
                    try:
                        hit = (renewed, parse_time(str(renewed)) if renewed else None)
                    except ValueError:
                        hit = (renewed, None)
                seen[name] = hit
                t = hit[1]
                if t is not None and (now - t).total_seconds() >= self.options.lease_grace:
                    current.add(name)
            parsed = seen
            for n in current - stale:
                self._wake(n)
            stale = current
            await self.clock.sleep(self.options.lease_scan)

    async def _scan_pods(self) -> None:
        """Every ``pod_scan`` seconds: the business signal from the pod cache; wake the nodes whose verdict
        changed (the verdict is derived from the cache each time, never remembered across restarts)."""
        assert self.pod_informer is not None
        await self.pod_informer.wait_synced()
        while True:
            verdict = pod_start_failures(self.pod_informer.store.list(), self.clock.now(), self.options.pod_rule)
            changed = {n for n in verdict.keys() | self._pod_starts.keys()
                       if verdict.get(n) is None or self._pod_starts.get(n) is None}
            self._pod_starts = verdict
            for n in changed:
                self._wake(n)
            await self.clock.sleep(self.options.pod_scan)

    async def _start(self) -> None:
        if self.options.install_catalog:
            delay = 0.5
            while True:
                try:
                    await install_defaults(self.manager.client)
                    break
                except (ApiError, TransportError) as e:
                    log.warning("cannot install the default fault catalog yet: %s", e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        await self.node_informer.wait_synced()
        await self.type_informer.wait_synced()
        self._wake_all()

    @staticmethod
    def node_ready(node: Obj) -> bool:
        c = find_condition((node.get("status") or {}).get("conditions"), "Ready")
        return bool(c and c.get("status") == "True")
