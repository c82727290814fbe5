"""The change engine: carries approved ChangeRequests forward and closes them with their outcome.

Level-triggered, like an operator: every pass reads each open request and its targets from the caches and
does the one next thing, with everything it decides on read back from the API — so a restarted portal
(or a second replica: every status write is guarded by the request's resourceVersion) picks up where it was.

- A change run as a **Rollout** (component upgrades; releases of several Clusters — :mod:`._asrollout`):
  the Rollout was created at approval with the approver's token; the engine copies its progress and closes
  the request when the Rollout completed, aborted or rolled back.  Batching, analysis, pause and rollback are
  the rollout controller's.
- A **node operation** (reboot, reinstall, component restart): the engine reports the next nodes' repair
  requests as NodeFaults (the portal's access to that business cluster — permitted because the request was
  created and approved by people the meta cluster's RBAC allowed to) when the ones before are done, and the
  maintenance flows ask the risk center before they disrupt anything.
- A **single-target meta change** (a release of one Cluster, a new Cluster, a control-plane component's
  restart) was made with the approver's token; the engine watches the Cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from kokpit.api import ChangeRequest
from kokpit.api.fault import SourceKind
from kokpit.client import ApiError, Client, ConflictError, NotFoundError, TransportError
from kokpit.portal._asrollout import rollout_of, rollout_progress
from kokpit.portal._cache import BusinessCache, FleetCache
from kokpit.portal._kinds import kind_of
from kokpit.portal._plan import NODE_OPERATIONS, Progress, progress, requested_fault
from kokpit.runtime.faultreports import FaultReport, FaultReporter
from kokpit.runtime.leaderelection import LeaderElectionConfig, LeaderElector

__all__ = ["CHANGE", "ChangeEngine", "change_reporter", "now_iso", "set_cond"]

log = logging.getLogger("kokpit.portal.changes")
CHANGE = kind_of(ChangeRequest)
Obj = dict[str, Any]


def change_reporter(namespace: str, name: str) -> str:
    """The reporter name a change's requests carry in NodeFault sources (provenance: which change asked)."""
    return f"changerequest/{namespace}/{name}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_cond(st: Obj, type_: str, status: str, reason: str, message: str = "") -> None:
    conds = st.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now_iso()
            c.update(status=status, reason=reason, message=message)
            return
    conds.append({"type": type_, "status": status, "reason": reason, "message": message,
                  "lastTransitionTime": now_iso()})


def cond(obj: Obj, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def phase(st: Obj) -> str:
    """For people only (derived last from the conditions)."""
    if st.get("outcome"):
        return str(st["outcome"])
    c = {x.get("type"): x.get("status") for x in st.get("conditions") or []}
    if c.get("Executing") == "True":
        return "Executing"
    if c.get("Approved") == "True":
        return "Approved"
    return "AwaitingApproval" if c.get("Planned") == "True" else "Pending"


def close(st: Obj, outcome: str, message: str, user: str = "kokpit-portal") -> None:
    st["outcome"] = outcome
    set_cond(st, "Executing", "False", outcome, message)
    set_cond(st, "Closed", "True", outcome, message)
    st.setdefault("history", []).append({"time": now_iso(), "user": user, "action": "closed",
                                         "message": f"{outcome}: {message}"})
    st["phase"] = phase(st)


class ChangeEngine:
    """One pass every ``interval`` seconds (and soon after any ChangeRequest or target changes)."""

    def __init__(self, cache: FleetCache, client: Client, *, interval: float = 0.5,
                 lease: LeaderElectionConfig | None = None) -> None:
        self.cache = cache
        self.client = client
        self.interval = interval
        self.lease = lease
        self.elector: LeaderElector | None = None
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the passes — with ``lease``, only while this replica holds it: every replica serves pages and
        takes changes, one carries them forward (two would each start "the next batch" from the same
        cache before seeing the other's write)."""
        if self.lease is None:
            self._task = asyncio.create_task(self._run(), name="portal-change-engine")
            return
        self.elector = LeaderElector(self.client, self.lease)
        self._task = asyncio.create_task(self.elector.run(self._run), name="portal-change-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def kick(self) -> None:
        self._kick.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception as e:  # the next pass tries again
                log.warning("change engine: %s", e)
            try:
                await asyncio.wait_for(self._kick.wait(), self.interval)
            except TimeoutError:
                pass
            self._kick.clear()

    async def pass_once(self) -> None:
        for cr in self.cache.objects("ChangeRequest"):
            if cond(cr, "Closed") or not (cr.get("status") or {}).get("author"):
                continue
            try:
                await self.step(cr)
            except (ApiError, TransportError) as e:
                log.warning("change %s: %s", (cr.get("metadata") or {}).get("name"), e)

    async def step(self, cr: Obj) -> None:
        meta, spec = cr["metadata"], cr.get("spec") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        st: Obj = dict(cr.get("status") or {})
        before = repr(st)
        if spec.get("cancel") and not st.get("outcome"):
            close(st, "Aborted", "aborted: nothing more is started")
        elif cond(cr, "Executing"):
            await self._advance(spec, str(ns), str(name), st, str(meta.get("creationTimestamp") or ""))
        if repr(st) != before:
            st["phase"] = phase(st)
            try:
                await self.client.patch_status(CHANGE, str(name), {"metadata": {"resourceVersion":
                                                                                meta.get("resourceVersion")},
                                                                   "status": st}, str(ns))
            except (ConflictError, NotFoundError):
                pass  # changed or gone meanwhile: the next pass sees the new state

    async def _advance(self, spec: Obj, ns: str, name: str, st: Obj, created: str) -> None:
        ref = rollout_of(st)
        if ref is not None:
            units = len(spec.get("targets") or [])
            done, failed, total, outcome, message = rollout_progress(self.cache.get("Rollout", ref[1], ref[0] or ns),
                                                                     units)
            st["done"], st["total"] = done, total
            st["progress"] = f"{done}/{total} done" + (f", {failed} failed" if failed else "") + \
                ("" if outcome else f" (Rollout {ref[1]}: {message})")
            if outcome:
                close(st, outcome, message)
            return
        cluster_name = str(spec.get("cluster") or "")
        cluster = self.cache.get("Cluster", cluster_name, ns)
        bc = self.cache.cluster_cache(ns, cluster_name)
        synced = bc is not None and bc.synced
        machines = {str((m.get("metadata") or {}).get("name")): m for m in bc.machines.store.list()} \
            if bc is not None and synced else None
        op = str(spec.get("operation") or "")
        reporter = change_reporter(ns, name)
        faults = flows = None
        if op in NODE_OPERATIONS and bc is not None:
            faults = {str(f["metadata"]["name"]): f for f in bc.faults.store.list()}
            flows = {str(f["metadata"]["name"]): f for f in bc.flows.store.list()}
        recorded = {str(o.get("name")) for o in st.get("objects") or [] if o.get("kind") == "NodeFault"}
        p = progress(spec, cluster=cluster, machines=machines, faults=faults, flows=flows, reporter=reporter,
                     recorded=recorded, asked_at=created)
        st["done"], st["total"] = p.done, p.total
        st["progress"] = f"{p.done}/{p.total} done" + (f", {len(p.failed)} failed" if p.failed else "") + \
            (f", {len(p.waiting)} waiting for a person" if p.waiting else "")
        if op in NODE_OPERATIONS and machines is not None and bc is not None and bc.faults.has_synced:
            await self._next_requests(spec, st, machines, p, bc, reporter)
        if p.finished:
            if p.failed:
                close(st, "Failed", "; ".join(p.messages)[:1000] or f"{len(p.failed)} target(s) failed")
            else:
                close(st, "Succeeded", st["progress"])

    async def _next_requests(self, spec: Obj, st: Obj, machines: dict[str, Obj], p: Progress, bc: BusinessCache,
                             reporter: str) -> None:
        """Ask for the next nodes' repairs: a NodeFault of the operation's type per node, reported as a person
        (the change), at most batchSize in flight, none after a failure, while one waits for a person, or while
        paused.  The maintenance flows do the rest — isolate, migrate, repair through the risk center, verify,
        give back — and resolve the fault, which is what "done" is read from."""
        in_flight = len(p.started) - p.done - len(p.failed)
        batch = int((st.get("plan") or {}).get("batchSize") or 1)
        if p.failed or p.waiting or spec.get("paused"):
            return
        author = str(st.get("author") or "someone")
        approvers = ", ".join(str(a.get("user")) for a in st.get("approvals") or [])
        reporter_client = FaultReporter(bc.client)
        for t in [t for t in spec.get("targets") or [] if t not in p.started][:max(0, batch - in_flight)]:
            node, ftype, fname = requested_fault(spec, machines.get(t), t)
            comp = str(spec.get("component") or "") if ftype == "component-restart-requested" else ""
            why = f"{spec.get('operation')} asked by {author}" + (f", approved by {approvers}" if approvers else "") \
                + (f": {spec.get('reason')}" if spec.get("reason") else "")
            await reporter_client.report(FaultReport(node=node, type=ftype, reporter=reporter, message=why[:1000],
                                                     reason="ChangeRequested", component=comp,
                                                     kind=SourceKind.PERSON))
            st.setdefault("objects", []).append({"kind": "NodeFault", "name": fname, "cluster": spec.get("cluster"),
                                                 "verb": "report"})
            st.setdefault("history", []).append({"time": now_iso(), "user": "kokpit-portal", "action": "started",
                                                 "message": f"{t}: {ftype} reported"})
