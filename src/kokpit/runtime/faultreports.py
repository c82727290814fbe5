"""Reporting node faults to the event center: one NodeFault per node+type, updated by every report.

Every reporter — the node agent, the simulator's hosts, the fault detector, node-problem-detector's
conditions and Events ingested by it, a person — goes through :class:`FaultReporter`: it creates the
NodeFault under its deterministic name (:func:`kokpit.api.fault.fault_name`) the first time and afterwards
updates its status with the object's ``resourceVersion`` (optimistic concurrency: two reporters of the same
fault never lose each other's report; a 409 re-reads and re-applies).  The merge of one report into a status
is the pure :func:`apply_report`, so the rules are unit-tested without a server:

* a report refreshes its reporter's source (``count``, ``lastSeen``, message) and the fault's ``count`` and
  ``lastSeen``; every reporter keeps its own provenance entry (who, first/last seen, how often, what it said);
* a report of a Resolved, Expired or Invalid fault opens a new episode (the old one goes to ``history``);
* a *clear* marks the reporter's source cleared; when every source is cleared the fault is Resolved
  (``resolution.by`` = the last reporter, reason ``ReportCleared``).

Expiry (no report within the TTL) and retention are the event center's decisions
(``kokpit.operators.faults``), made from the sources' ``lastSeen`` — never from a timer in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock, RealClock, format_micro_time
from kokpit.api.fault import (
    HISTORY_MAX,
    SOURCES_MAX,
    FaultReason,
    FaultSource,
    FaultState,
    NodeFaultSpec,
    SourceKind,
    fault_labels,
    fault_name,
)
from kokpit.client import AlreadyExistsError, ConflictError, Kind, NotFoundError

__all__ = [
    "FAULTSUBSCRIPTION",
    "FAULTTYPE",
    "NODEFAULT",
    "FaultReport",
    "FaultReporter",
    "apply_report",
    "new_episode",
]

log = logging.getLogger("kokpit.runtime.faultreports")

Obj = dict[str, Any]

NODEFAULT: Final = Kind("kokpit.io", "v1alpha1", "NodeFault", "nodefaults", namespaced=False)
FAULTTYPE: Final = Kind("kokpit.io", "v1alpha1", "FaultType", "faulttypes", namespaced=False)
FAULTSUBSCRIPTION: Final = Kind("kokpit.io", "v1alpha1", "FaultSubscription", "faultsubscriptions",
                                namespaced=False)
_HISTORY_STATES = (FaultState.RESOLVED, FaultState.EXPIRED, FaultState.INVALID)


@dataclass(frozen=True)
class FaultReport:
    """One report (or clear) of a fault by one reporter.  ``ttl_seconds`` overrides the type's TTL for this
    reporter (how often it promises to report again while the fault lasts)."""

    node: str
    type: str
    reporter: str
    message: str = ""
    reason: str = ""
    component: str = ""
    kind: SourceKind = SourceKind.AGENT
    ttl_seconds: int | None = None
    cleared: bool = False

    def __post_init__(self) -> None:
        # the same rules admission applies, so a caller learns at once (and no request is wasted)
        NodeFaultSpec(node_name=self.node, type=self.type, component=self.component)
        FaultSource(reporter=self.reporter, kind=self.kind, first_seen="2000-01-01T00:00:00Z",
                    last_seen="2000-01-01T00:00:00Z", ttl_seconds=self.ttl_seconds)

    @property
    def name(self) -> str:
        return fault_name(self.node, self.type, self.component)


def new_episode(status: Obj, now: str) -> Obj:
    """The status of a fault starting over: the current episode (if any) is pushed onto ``history``."""
    history = list(status.get("history") or [])
    if status.get("firstSeen") and status.get("state"):
        ep: Obj = {"firstSeen": status["firstSeen"], "lastSeen": status.get("lastSeen") or status["firstSeen"],
                   "count": int(status.get("count") or 0), "state": status["state"],
                   "endedAt": status.get("endedAt") or now}
        if status.get("maintenanceFlow"):
            ep["maintenanceFlow"] = status["maintenanceFlow"]
        if status.get("resolution"):
            ep["resolution"] = status["resolution"]
        history = [ep, *history][:HISTORY_MAX]
    out: Obj = {k: v for k, v in status.items()
                if k in ("severity", "category", "flow", "conditions", "observedEpisode")}
    out["history"] = history
    out["count"] = 0
    out["sources"] = []
    return out


def apply_report(status: Obj | None, report: FaultReport, now: dt.datetime) -> Obj | None:
    """The fault's status after ``report`` (a new dict), or None when the report changes nothing (a clear
    of a fault that is not active, or by a reporter that never reported it)."""
    cur: Obj = dict(status or {})
    ts = format_micro_time(now)
    state = cur.get("state")
    if report.cleared:
        if state != FaultState.ACTIVE:
            return None
        sources = [dict(s) for s in cur.get("sources") or []]
        mine = next((s for s in sources if s.get("reporter") == report.reporter), None)
        if mine is None or mine.get("cleared"):
            return None
        mine["cleared"], mine["clearedAt"] = True, ts
        if report.message:
            mine["message"] = report.message[:1024]
        cur["sources"] = sources
        if all(s.get("cleared") for s in sources):
            cur["state"] = FaultState.RESOLVED.value
            cur["endedAt"] = ts
            cur["resolution"] = {"by": report.reporter, "at": ts, "reason": FaultReason.CLEARED,
                                 "note": (report.message or "every reporter cleared the fault")[:1024]}
        return cur
    if state in _HISTORY_STATES:
        cur = new_episode(cur, ts)
    sources = [dict(s) for s in cur.get("sources") or []]
    mine = next((s for s in sources if s.get("reporter") == report.reporter), None)
    if mine is None:
        mine = {"reporter": report.reporter, "kind": report.kind.value, "firstSeen": ts, "count": 0}
        sources.append(mine)
    mine["lastSeen"] = ts
    mine["count"] = int(mine.get("count") or 0) + 1
    mine["kind"] = report.kind.value
    mine["cleared"] = False
    mine.pop("clearedAt", None)
    for key, value in (("reason", report.reason[:128]), ("message", report.message[:1024])):
        if value:
            mine[key] = value
    if report.ttl_seconds is not None:
        mine["ttlSeconds"] = report.ttl_seconds
    if len(sources) > SOURCES_MAX:  # keep the reporters heard from most recently
        sources.sort(key=lambda s: str(s.get("lastSeen") or ""), reverse=True)
        sources = sources[:SOURCES_MAX]
    cur["sources"] = sources
    cur["state"] = FaultState.ACTIVE.value
    cur.pop("resolution", None)
    cur.pop("endedAt", None)
    cur["count"] = int(cur.get("count") or 0) + 1
    cur.setdefault("firstSeen", ts)
    if not cur.get("firstSeen"):
        cur["firstSeen"] = ts
    cur["lastSeen"] = ts
    cur["reporter"] = report.reporter
    if report.message:
        cur["message"] = report.message[:1024]
    return cur


class FaultReporter:
    """Writes :class:`FaultReport` s as NodeFaults (create the first time, then status updates guarded by
    resourceVersion).  Raises the client's ``ApiError`` for what the server refuses (a malformed report is
    a 422 naming the field) and ``TransportError`` when the server cannot be reached.

    A conflicting write is read and applied again after a short jittered backoff (client-go's
    ``retry.RetryOnConflict``): writers of one NodeFault — reporters of the same fault on several hosts, the
    event center's own status changes — that retry at once collide again and again (eight in a row were seen
    under load).  The backoff sleeps on ``sleep`` (the event loop's by default), not on ``clock``: a few
    milliseconds between requests to a server are no decision a test's clock should have to drive."""

    def __init__(self, client: Any, *, clock: Clock | None = None, max_conflicts: int = 8,
                 backoff: ExponentialBackoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self.clock: Clock = clock or RealClock()
        self.max_conflicts = max_conflicts
        self.backoff = backoff or ExponentialBackoff(base=0.01, factor=2.0, cap=0.5, jitter=1.0)
        self._sleep = sleep

    async def report(self, report: FaultReport, *, likely_new: bool = False) -> Obj | None:
        """Apply one report; returns the NodeFault as written (None: a clear that changed nothing).
        ``likely_new``: the reporter has not reported this fault before, so it is created without reading it
        first (two requests instead of three; an existing one is read after the create is refused)."""
        name = report.name
        for attempt in range(self.max_conflicts):
            if attempt:
                await self._sleep(self.backoff.delay(attempt - 1))
            obj: Obj | None = None
            if likely_new and attempt == 0 and not report.cleared:
                obj = await self._create(report)  # None: it exists after all, read it below
            if obj is None:
                try:
                    obj = await self.client.get(NODEFAULT, name)
                except NotFoundError:
                    if report.cleared:
                        return None
                    obj = await self._create(report)
                    if obj is None:
                        continue  # someone else created it meanwhile: read theirs
            status = apply_report(obj.get("status"), report, self.clock.now())
            if status is None:
                return None
            body = {"apiVersion": NODEFAULT.api_version, "kind": NODEFAULT.kind,
                    "metadata": {"name": name, "resourceVersion": obj["metadata"]["resourceVersion"]},
                    "spec": obj.get("spec") or {}, "status": status}
            try:
                out: Obj = await self.client.update_status(NODEFAULT, body)
                return out
            except ConflictError:
                continue  # a concurrent report or the event center: re-read, re-apply
        raise ConflictError(409, {"kind": "Status", "code": 409, "reason": "Conflict",
                                  "message": f"nodefault {name}: still conflicting after "
                                             f"{self.max_conflicts} attempts"})

    async def clear(self, node: str, fault_type: str, reporter: str, *, component: str = "",
                    message: str = "", kind: SourceKind = SourceKind.AGENT) -> Obj | None:
        return await self.report(FaultReport(node, fault_type, reporter, message=message, component=component,
                                             kind=kind, cleared=True))

    async def _create(self, report: FaultReport) -> Obj | None:
        spec: Obj = {"nodeName": report.node, "type": report.type}
        if report.component:
            spec["component"] = report.component
        body = {"apiVersion": NODEFAULT.api_version, "kind": NODEFAULT.kind,
                "metadata": {"name": report.name,
                             "labels": fault_labels(report.node, report.type, report.component)},
                "spec": spec}
        try:
            out: Obj = await self.client.create(NODEFAULT, body)
            return out
        except AlreadyExistsError:
            return None
