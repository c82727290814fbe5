"""The fault detector: what no agent reports, found from what the cluster already shows.

One reconcile per *node* compares the faults the node's signals call for with the detector's own sources
on that node's NodeFaults, and reports, refreshes (every TTL/2 while the signal lasts: reports are
heartbeats) or clears them.  Every signal is read from an informer cache shared with the machine operator
(no second watch of Nodes or Machines, no extra calls to the hosts):

* **node-problem-detector conditions** and any Node condition the catalog lists (``KernelDeadlock``,
  ``ReadonlyFilesystem``, ``FrequentKubeletRestart``, the kubelet's ``DiskPressure``, the node agent's
  ``DiskFull``...) — reporter ``node-condition/<Type>``;
* **Ready** ``Unknown`` (node-unreachable) or ``False`` (node-not-ready) — reporter ``fault-detector/node-ready``;
* the node's **Lease** not renewed within ``lease_grace`` — node-unreachable, reporter ``fault-detector/lease``;
* **managed components** the machine operator found not running or failing their health check through the
  node driver (its Machine status) — reporter ``fault-detector/machine``.

node-problem-detector's **Events** (temporary problems: ``MemoryReadError``, ``IOError``...) are ingested by
:class:`EventIngester`, reporter ``<source component>/<host>``; an Event counts once: it is reported only when
it is newer than that reporter's ``lastSeen`` on the fault, so a restart that lists every Event again reports
none twice.  Everything is derived from API state on each pass; nothing is remembered in memory.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, RealClock, parse_time_or_none
from kokpit.api.fault import FaultState, SourceKind, component_fault_type
from kokpit.client import ApiError, TransportError
from kokpit.operators.faults._metrics import FaultMetrics
from kokpit.operators.faults.catalog import Catalog
from kokpit.runtime import Request, Result, Store, find_condition
from kokpit.runtime.faultreports import FaultReport, FaultReporter

__all__ = ["DETECTOR_PREFIXES", "Desired", "EventIngester", "NodeDetector", "desired_faults", "event_time"]

log = logging.getLogger("kokpit.operators.faults.detector")

Obj = dict[str, Any]
READY_REPORTER = "fault-detector/node-ready"
LEASE_REPORTER = "fault-detector/lease"
MACHINE_REPORTER = "fault-detector/machine"
POD_REPORTER = "fault-detector/pod-starts"
CONDITION_PREFIX = "node-condition/"
DETECTOR_PREFIXES = (CONDITION_PREFIX, "fault-detector/")


_t = parse_time_or_none  # tolerant: these times come from reports and other writers


@dataclass(frozen=True)
class Desired:
    """A fault a signal calls for: (type, component, reporter) and what to say."""

    type: str
    component: str
    reporter: str
    message: str
    reason: str
    kind: SourceKind
    since: dt.datetime | None = None  # when the signal started (detection latency)
    signal: str = ""


def desired_faults(node: Obj | None, lease: Obj | None, machine: Obj | None, cat: Catalog, now: dt.datetime,
                   lease_grace: float, pod_starts: str | None = None) -> tuple[list[Desired], float | None]:
    """The faults the node's signals call for, and in how many seconds the lease goes stale (None: no
    lease or already stale).  Pure: unit-tested with plain objects."""
    out: list[Desired] = []
    conds = ((node or {}).get("status") or {}).get("conditions") or []
    for c in conds:
        for sig in cat.by_condition.get((str(c.get("type")), str(c.get("status"))), ()):
            out.append(Desired(sig.fault_type, sig.component, CONDITION_PREFIX + str(c.get("type")),
                               str(c.get("message") or c.get("reason") or c.get("type"))[:1024],
                               str(c.get("reason") or "")[:128], SourceKind.NODE_PROBLEM_DETECTOR,
                               _t(c.get("lastTransitionTime")), "condition"))
    ready = find_condition(conds, "Ready")
    if ready is not None and ready.get("status") in ("Unknown", "False"):
        unknown = ready.get("status") == "Unknown"
        out.append(Desired("node-unreachable" if unknown else "node-not-ready", "", READY_REPORTER,
                           str(ready.get("message") or ready.get("reason") or "")[:1024],
                           str(ready.get("reason") or "")[:128], SourceKind.DETECTOR,
                           _t(ready.get("lastTransitionTime")), "ready"))
    stale_in: float | None = None
    if lease is not None and node is not None:
        spec = lease.get("spec") or {}
        renewed = _t(spec.get("renewTime")) or _t(spec.get("acquireTime"))
        if renewed is not None:
            deadline = renewed + dt.timedelta(seconds=lease_grace)
            if now >= deadline:
                out.append(Desired("node-unreachable", "", LEASE_REPORTER,
                                   f"Lease not renewed since {spec.get('renewTime')} (grace {lease_grace:g}s)",
                                   "LeaseExpired", SourceKind.DETECTOR, deadline, "lease"))
            else:
                stale_in = (deadline - now).total_seconds()
    if machine is not None:
        st = machine.get("status") or {}
        failing_health = {str(f.get("name", ""))[len("health/"):]: str(f.get("message") or "")
                          for f in st.get("failures") or [] if str(f.get("name", "")).startswith("health/")}
        for comp in st.get("components") or []:
            name = str(comp.get("name") or "")
            if not name:
                continue
            stopped = comp.get("installState") == "Installed" and comp.get("runState") == "Stopped"
            if stopped or name in failing_health:
                reason = "ComponentNotRunning" if stopped else "HealthCheckFailed"
                msg = (f"{name} {comp.get('version', '')} not running: {comp.get('message', '')}" if stopped
                       else f"{name} fails its health check: {failing_health[name]}")
                out.append(Desired(component_fault_type(name), name, MACHINE_REPORTER, msg.strip()[:1024], reason,
                                   SourceKind.DETECTOR, _t(comp.get("lastTransitionTime")), "component"))
    if pod_starts:
        out.append(Desired("pod-start-failures", "", POD_REPORTER, pod_starts[:1024], "PodStartFailures",
                           SourceKind.DETECTOR, None, "pod-starts"))
    # one desire per (type, component, reporter)
    seen: dict[tuple[str, str, str], Desired] = {}
    for d in out:
        seen.setdefault((d.type, d.component, d.reporter), d)
    return list(seen.values()), stale_in


def _ours(reporter: str) -> bool:
    return reporter.startswith(DETECTOR_PREFIXES)


@dataclass
class NodeDetector:
    """The per-node detector reconcile (see the module docstring)."""

    reporter: FaultReporter
    catalog: Callable[[], Catalog]
    nodes: Store
    leases: Store | None
    machines: Store
    faults: Store  # NodeFaults, indexed by "node"
    metrics: FaultMetrics
    lease_grace: float = 40.0
    clock: Clock = field(default_factory=RealClock)
    pod_starts: Callable[[], dict[str, str]] | None = None  # the business signal's verdict per node
    # True when a scan of the Lease cache wakes a node whose Lease goes stale (FaultCenter's): then a healthy
    # node is not requeued at its lease deadline — at 10,000 nodes that requeue alone was ~300 reconciles/s
    lease_scanned: bool = False

    def _machine(self, node: str) -> Obj | None:
        found = self.machines.by_index("node", node)
        return found[0] if found else None

    async def reconcile(self, req: Request) -> Result | None:
        name = req.name
        node = self.nodes.get_by_name(name)
        lease = self.leases.get_by_name(name, "kube-node-lease") if self.leases is not None else None
        cat = self.catalog()
        now = self.clock.now()
        business = self.pod_starts().get(name) if self.pod_starts is not None else None
        want, stale_in = desired_faults(node, lease, self._machine(name), cat, now, self.lease_grace, business)
        if node is None:
            want = []  # a node that is gone has no faults to detect (the event center invalidates the rest)
        have: dict[tuple[str, str, str], Obj] = {}  # our live sources on this node's active faults
        for f in self.faults.by_index("node", name):
            st = f.get("status") or {}
            if st.get("state") != FaultState.ACTIVE:
                continue
            spec = f.get("spec") or {}
            for s in st.get("sources") or []:
                rep = str(s.get("reporter") or "")
                if _ours(rep) and not s.get("cleared"):
                    have[(str(spec.get("type")), str(spec.get("component") or ""), rep)] = s
        requeue: list[float] = [stale_in + 0.05] if stale_in is not None and not self.lease_scanned else []
        try:
            for d in want:
                if d.type not in cat.types:
                    continue  # a signal for a type someone deleted from the catalog
                ttl = cat.ttl.get(d.type, 300.0)
                src = have.get((d.type, d.component, d.reporter))
                last = _t((src or {}).get("lastSeen"))
                if src is not None and last is not None and (now - last).total_seconds() < ttl / 2:
                    requeue.append(ttl / 2 - (now - last).total_seconds() + 0.05)
                    continue
                await self.reporter.report(FaultReport(name, d.type, d.reporter, message=d.message, reason=d.reason,
                                                       component=d.component, kind=d.kind))
                self.metrics.reports.labels(d.type, d.signal).inc()
                if src is None and d.since is not None:
                    self.metrics.detection_latency.labels(d.signal).observe(max(0.0, (now - d.since).total_seconds()))
                requeue.append(ttl / 2)
            wanted = {(d.type, d.component, d.reporter) for d in want}
            for (ftype, comp, rep) in have.keys() - wanted:
                await self.reporter.clear(name, ftype, rep, component=comp, kind=SourceKind.DETECTOR,
                                          message="the signal is gone")
        except (ApiError, TransportError) as e:
            log.warning("node %s: cannot report faults: %s", name, e)
            return Result(requeue=True)
        return Result(requeue_after=min(requeue)) if requeue else None


def event_time(ev: Obj) -> dt.datetime | None:
    """When an Event last happened (series, lastTimestamp, eventTime, firstTimestamp, in that order)."""
    for s in ((ev.get("series") or {}).get("lastObservedTime"), ev.get("lastTimestamp"), ev.get("eventTime"),
              ev.get("firstTimestamp")):
        t = _t(s)
        if t is not None:
            return t
    return None


@dataclass
class EventIngester:
    """node-problem-detector's Events on Nodes → fault reports (see the module docstring)."""

    reporter: FaultReporter
    catalog: Callable[[], Catalog]
    events: Store
    faults: Store
    nodes: Store
    metrics: FaultMetrics
    clock: Clock = field(default_factory=RealClock)

    def relevant(self, ev: Obj) -> bool:
        return ev.get("type") == "Warning" and str(ev.get("reason") or "") in self.catalog().by_event

    async def reconcile(self, req: Request) -> Result | None:
        ev = self.events.get_by_name(req.name, req.namespace)
        if ev is None or not self.relevant(ev):
            return None
        involved = ev.get("involvedObject") or {}
        node = str(involved.get("name") or "")
        if involved.get("kind") != "Node" or not node:
            return None
        src = ev.get("source") or {}
        component = str(src.get("component") or ev.get("reportingComponent") or "unknown")
        host = str(src.get("host") or ev.get("reportingInstance") or "")
        reporter = f"{component}/{host}" if host and host != component else component
        when = event_time(ev)
        cat = self.catalog()
        now = self.clock.now()
        for sig in cat.signals_for_event(str(ev.get("reason")), component):
            ttl = cat.ttl.get(sig.fault_type, 300.0)
            if when is None or (now - when).total_seconds() > ttl:
                continue  # an old Event: not a current fault
            if not self._newer(node, sig.fault_type, sig.component, reporter, when):
                continue  # already counted (a relist after a restart, or a resync)
            try:
                await self.reporter.report(FaultReport(
                    node, sig.fault_type, reporter, message=str(ev.get("message") or "")[:1024],
                    reason=str(ev.get("reason") or "")[:128], component=sig.component,
                    kind=SourceKind.NODE_PROBLEM_DETECTOR))
            except (ApiError, TransportError) as e:
                log.warning("event %s/%s: cannot report: %s", req.namespace, req.name, e)
                return Result(requeue=True)
            except ValueError as e:  # a reporter or node name the API would refuse: say so once, drop it
                log.warning("event %s/%s cannot be a fault report: %s", req.namespace, req.name, e)
                return None
            self.metrics.reports.labels(sig.fault_type, "event").inc()
            self.metrics.detection_latency.labels("event").observe(max(0.0, (now - when).total_seconds()))
        return None

    def _newer(self, node: str, ftype: str, component: str, reporter: str, when: dt.datetime) -> bool:
        for f in self.faults.by_index("node", node):
            spec = f.get("spec") or {}
            if spec.get("type") != ftype or str(spec.get("component") or "") != component:
                continue
            for s in (f.get("status") or {}).get("sources") or []:
                if s.get("reporter") == reporter:
                    last = _t(s.get("lastSeen"))
                    return last is None or when > last
        return True
