"""The reconcile of one MaintenanceFlow: isolate, migrate, drain, repair, verify, restore — and escalate.

One level-triggered :class:`~kokpit.runtime.StepReconciler` per flow; every step is named for what it holds
true and is safe to repeat after a crash at any line.  What must survive a restart lives in the flow's
status: the escalation level and attempt, each step's times and outcome, the migration deadline, and above
all the **repair intent** — ``status.repair`` with its ``requestId`` is written to the API *before* the node
driver is called, and the driver is idempotent by that id, so a controller killed mid-reboot asks about the
same reboot after its restart instead of starting a second one.

Permits come from the risk center through :class:`kokpit.runtime.permits.PermitGate` (``node-isolate``
before the cordon, ``node-drain`` before pods are marked, the repair's own operation before the repair);
they are held (renewed on every reconcile) until the node is given back, and a refusal is shown on the
``RiskPermitted`` condition with the refusing policies.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, format_micro_time, format_time, parse_time
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.maintenance import (
    MIGRATE_LABEL,
    TAINT_KEY,
    FlowConditionType,
    FlowReason,
    FlowStep,
    FlowTemplate,
    HumanActionType,
    MaintenanceFlowSpec,
    MaintenancePolicySpec,
    RepairAction,
    parse_duration,
)
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.client import Kind
from kokpit.nodes import DriverError, RepairKind
from kokpit.operators.maintenance import _nodeops as ops
from kokpit.operators.maintenance._faultref import ACTIVE, NODE_FAULT, RESOLVED
from kokpit.operators.maintenance._metrics import FlowMetrics
from kokpit.operators.maintenance._policy import condition_status, escalate, policy_spec, timed_out
from kokpit.runtime import (
    EventRecorder,
    InvalidSpec,
    PhaseRule,
    ReconcileContext,
    Request,
    Result,
    Step,
    StepReconciler,
    StepResult,
    Store,
    act,
    derive_phase,
    done,
    find_condition,
    is_true,
    named_steps,
    wait,
)
from kokpit.runtime.permits import PermitGate

__all__ = ["FLOW", "NODE_FAULT", "POLICY", "FlowCtx", "FlowOptions", "FlowReconciler"]

log = logging.getLogger("kokpit.operators.maintenance")

Obj = dict[str, Any]
FLOW = Kind(GROUP, VERSION, "MaintenanceFlow", "maintenanceflows", namespaced=False)
POLICY = Kind(GROUP, VERSION, "MaintenancePolicy", "maintenancepolicies", namespaced=False)
CT = FlowConditionType
R = FlowReason
_OPERATION = {RepairAction.COMPONENT_RESTART: OperationType.COMPONENT_UPGRADE,
              RepairAction.REBOOT: OperationType.NODE_REBOOT, RepairAction.REINSTALL: OperationType.NODE_REINSTALL}
_DRIVER_KIND = {RepairAction.COMPONENT_RESTART: RepairKind.RESTART_COMPONENT, RepairAction.REBOOT: RepairKind.REBOOT,
                RepairAction.REINSTALL: RepairKind.REINSTALL}
PERSON = "person-"  # request ids of repairs a person declared done


@dataclass
class FlowOptions:
    """Tunables; the defaults suit a real fleet, tests shorten them."""

    workers: int = 16
    poll: float = 5.0  # looking again while waiting (risk center, migration, drain, repair)
    verify_grace: float = 30.0  # after a repair, a fault not reported again within this is gone
    retention: float = 86400.0  # completed flows are deleted this long after they finished
    permits: PermitGate | None = None  # the risk center (None: no risk center configured)


@dataclass
class FlowCtx(ReconcileContext):
    spec: MaintenanceFlowSpec | None = None
    policy: MaintenancePolicySpec | None = None
    tpl: FlowTemplate | None = None
    node: Obj | None = None
    faults: list[Obj] = field(default_factory=list)  # this node's NodeFaults (every state)
    machine: Obj | None = None
    risk: tuple[str, str] | None = None  # (reason, message) while a permit is refused
    flow_name: str = ""

    @property
    def active_faults(self) -> list[Obj]:
        return [f for f in self.faults if (f.get("status") or {}).get("state") == ACTIVE]

    def record_step(self, step: FlowStep, outcome: str, message: str = "") -> None:
        """A step's row in status.steps: started once per attempt, finished when it holds."""
        rows: list[Obj] = self.status.setdefault("steps", [])
        row = next((r for r in rows if r.get("name") == step.value), None)
        attempt = int(self.status.get("attempt") or 1)
        now = format_time(self.now)
        if row is None or (row.get("attempt") != attempt and step in (FlowStep.REPAIR, FlowStep.VERIFY)):
            if row is not None:
                rows.remove(row)
            row = {"name": step.value, "attempt": attempt, "startedAt": now}
            rows.append(row)
            rows.sort(key=lambda r: list(FlowStep).index(FlowStep(r["name"])))
        if row.get("outcome") == outcome and row.get("message") == message[:2048]:
            return
        row["outcome"], row["message"] = outcome, message[:2048]
        if outcome in ("Succeeded", "Failed", "Skipped"):
            row.setdefault("finishedAt", now)
        else:
            row.pop("finishedAt", None)
        self.status["step"] = step.value


_PHASES = (
    PhaseRule("Completed", CT.COMPLETED, ("True",)),
    PhaseRule("ManualRequired", CT.MANUAL_REQUIRED, ("True",)),
    PhaseRule("Invalid", CT.COMPLETED, ("False",), ("InvalidSpec", R.UNKNOWN_FLOW, R.NO_POLICY)),
    PhaseRule("Waiting", CT.RISK_PERMITTED, ("False",)),
    PhaseRule("Waiting", CT.ISOLATED, ("False",), (R.STORM_BREAKER_OPEN,)),
)


class FlowReconciler(StepReconciler[FlowCtx]):
    """The reconcile of one MaintenanceFlow; stores are informer caches (plain :class:`Store` in tests)."""

    kind = FLOW
    spec_model = MaintenanceFlowSpec
    invalid_conditions = (CT.COMPLETED,)

    def __init__(self, client: Any, recorder: EventRecorder, driver: Any, *, flows: Store, policies: Store,
                 faults: Store, nodes: Store, pods: Store, machines: Store, metrics: FlowMetrics,
                 options: FlowOptions | None = None, clock: Clock | None = None,
                 storm_open: Callable[[str], bool] | None = None) -> None:
        super().__init__(client, recorder, clock)
        self.client: Any = client
        self.driver = driver
        self.flows, self.policies, self.faults = flows, policies, faults
        self.nodes, self.pods, self.machines = nodes, pods, machines
        self.metrics = metrics
        self.opts = options or FlowOptions()
        self.storm_open = storm_open or (lambda policy: False)

    # ------------------------------------------------------------------------------ the skeleton's parts
    def get(self, req: Request) -> Obj | None:
        return self.flows.get_by_name(req.name)

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> FlowCtx:
        ctx = FlowCtx(req, obj, now, mono, spec=spec, flow_name=req.name)
        node = spec.node_name
        ctx.node = self.nodes.get_by_name(node)
        ctx.faults = self.faults.by_index("node", node)
        ctx.machine = next(iter(self.machines.by_index("node", node)), None)
        raw = self.policies.get_by_name(spec.policy)
        ctx.policy, why = policy_spec(raw)
        if ctx.policy is None:
            raise InvalidSpec(R.NO_POLICY, f"spec.policy: MaintenancePolicy {spec.policy!r} {why}")
        st = ctx.status
        st.setdefault("currentFlow", spec.flow)
        st.setdefault("attempt", 1)
        st.setdefault("level", 0)
        ctx.tpl = ctx.policy.flow(str(st["currentFlow"]))
        if ctx.tpl is None:
            raise InvalidSpec(R.UNKNOWN_FLOW, f"status.currentFlow: flow {st['currentFlow']!r} is not defined in "
                                              f"MaintenancePolicy {spec.policy} (spec.flows)")
        return ctx

    def steps(self, ctx: FlowCtx) -> Sequence[Step[FlowCtx]]:
        return named_steps(
            self.human_requests_are_recorded,
            self.flow_is_open,
            self.node_exists,
            self.fault_is_still_present,
            self.node_is_isolated,
            self.pods_are_marked_for_migration,
            self.pods_are_drained,
            self.node_is_repaired,
            self.node_is_verified,
            self.node_is_restored,
        )

    def observe(self, ctx: FlowCtx) -> None:
        if ctx.risk is not None:
            ctx.condition(CT.RISK_PERMITTED, False, *ctx.risk)
        elif condition_status(ctx.obj, CT.RISK_PERMITTED) == "False":
            ctx.condition(CT.RISK_PERMITTED, True, "Permitted", "no step waits for the risk center")

    def phase(self, ctx: FlowCtx) -> str:
        step = str(ctx.status.get("step") or "Pending")
        return derive_phase(ctx.conditions, _PHASES, step)

    async def forget(self, req: Request) -> Result | None:
        return None

    # ------------------------------------------------------------------------------ helpers
    def _has(self, ctx: FlowCtx, step: FlowStep) -> bool:
        assert ctx.tpl is not None
        return step in ctx.tpl.steps

    async def _permit(self, ctx: FlowCtx, op: OperationType, intent: str, reason: str) -> bool:
        """Hold (or ask for) the permit for ``op`` on the node; False (and RiskPermitted False) while refused."""
        gate = self.opts.permits
        if gate is None:
            return True
        assert ctx.spec is not None
        adm = await gate.admit(op, [ctx.spec.node_name], intent, repair=True, reason=reason)
        held: list[str] = ctx.status.setdefault("permits", [])
        if adm.permit not in held:
            held.append(adm.permit)
        if not adm.granted:
            ctx.risk = (adm.reason, adm.message)
            ctx.requeue_after(adm.retry_after or self.opts.poll)
            return False
        return True

    async def _release(self, ctx: FlowCtx, names: Sequence[str], outcome: PermitOutcome, message: str) -> None:
        gate = self.opts.permits
        held: list[str] = ctx.status.get("permits") or []
        for n in list(names):
            if gate is not None:
                view = gate.permits.cached(n)
                if view is None:
                    try:
                        view = await gate.permits.get(n)
                    except Exception:  # gone: nothing to release
                        view = None
                if view is not None and not view.released:
                    await gate.finish(view, outcome, message)
            if n in held:
                held.remove(n)

    def _intent(self, ctx: FlowCtx, what: str) -> str:
        return f"{ctx.obj['metadata'].get('uid') or ctx.flow_name}/{what}"

    async def _write_status_now(self, ctx: FlowCtx, fields: Obj) -> None:
        """Persist ``fields`` of the status before acting on them (the repair intent)."""
        out = await self.client.patch(FLOW, ctx.flow_name, {"status": fields}, subresource="status")
        if isinstance(out, dict) and (out.get("metadata") or {}).get("resourceVersion"):
            self._written[ctx.request] = out  # the skeleton's mutation cache: the next reconcile starts here

    # ------------------------------------------------------------------------------ steps
    async def human_requests_are_recorded(self, ctx: FlowCtx) -> StepResult:
        """A person's resolve or retry (``spec.request``) is applied once and recorded: who, when, note."""
        assert ctx.spec is not None and ctx.policy is not None
        req = ctx.spec.request
        actions: list[Obj] = ctx.status.setdefault("humanActions", [])
        if req is None or any(a.get("id") == req.id for a in actions):
            return done()
        if is_true(ctx.conditions, CT.COMPLETED):
            actions.append({"id": req.id, "action": req.action.value, "user": req.user, "note": req.note,
                            "at": format_time(ctx.now)})
            return done()
        actions.append({"id": req.id, "action": req.action.value, "user": req.user, "note": req.note,
                        "at": format_time(ctx.now)})
        del actions[:-64]
        who = req.user or "someone"
        note = f": {req.note}" if req.note else ""
        if req.action == HumanActionType.RETRY:
            first = ctx.spec.flow
            self._close_attempt(ctx, "Superseded", f"retried by {who}")
            ctx.status.update(currentFlow=first, attempt=1, level=0)
            ctx.status.pop("repair", None)
            ctx.condition(CT.MANUAL_REQUIRED, False, R.RETRIED_BY_PERSON, f"{who} asked to retry{note}")
            ctx.normal(R.RETRIED_BY_PERSON, f"{who} asked to retry the repair of node {ctx.spec.node_name} "
                                            f"from flow {first}{note}")
            ctx.tpl = ctx.policy.flow(first)
            if ctx.tpl is None:
                raise InvalidSpec(R.UNKNOWN_FLOW, f"spec.flow: flow {first!r} is not defined in the policy")
        else:
            rep = ctx.status.get("repair") or {}
            ticket = ctx.status.get("ticket")
            if ticket and not ticket.get("closedAt"):
                ticket.update(closedAt=format_time(ctx.now), message=f"closed by {who}{note}")
            if rep and not rep.get("outcome"):
                rep.update(finishedAt=rep.get("finishedAt") or format_time(ctx.now),
                           message=f"resolved by {who}{note}", resolvedBy=who)
            else:
                ctx.status["repair"] = {"flow": ctx.status["currentFlow"], "action": RepairAction.NONE.value,
                                        "attempt": ctx.status.get("attempt", 1), "requestId": f"{PERSON}{req.id}",
                                        "startedAt": format_time(ctx.now), "finishedAt": format_time(ctx.now),
                                        "message": f"resolved by {who}{note}"}
            ctx.condition(CT.MANUAL_REQUIRED, False, R.RESOLVED_BY_PERSON, f"{who} resolved it{note}")
            ctx.condition(CT.REPAIRED, True, R.RESOLVED_BY_PERSON, f"{who} resolved it{note}")
            ctx.normal(R.RESOLVED_BY_PERSON, f"{who} resolved the repair of node {ctx.spec.node_name}{note}; "
                                             "verifying before giving the node back")
        return act(req.action.value, f"{req.action.value} by {who}")

    async def flow_is_open(self, ctx: FlowCtx) -> StepResult:
        """A completed flow is history: nothing runs; it is deleted after the retention period."""
        if not is_true(ctx.conditions, CT.COMPLETED):
            if is_true(ctx.conditions, CT.MANUAL_REQUIRED):
                await self._renew_held(ctx)
                await self._mark_manual_required(ctx, True)
                return wait(R.MANUAL_REQUIRED, "a person must finish it: kokpit fault resolve|retry",
                            after=self.opts.poll * 6)
            await self._mark_manual_required(ctx, False)
            return done()
        finished = ctx.status.get("completedAt")
        if finished:
            left = self.opts.retention - (ctx.now - parse_time(str(finished))).total_seconds()
            if left <= 0:
                await self.client.delete(FLOW, ctx.flow_name)
                return wait(R.COMPLETED, "deleted after the retention period")
            return wait(R.COMPLETED, "completed", after=left)
        return wait(R.COMPLETED, "completed")

    async def _renew_held(self, ctx: FlowCtx) -> None:
        """Permits of a flow that waits for a person stay held (the node stays isolated): renew them."""
        gate = self.opts.permits
        if gate is None:
            return
        for n in ctx.status.get("permits") or []:
            view = gate.permits.cached(n)
            if view is not None and not view.released:
                renewed = (view.obj.get("spec") or {}).get("renewTime")
                if not renewed or (ctx.now - parse_time(str(renewed))).total_seconds() > gate.permits.ttl_seconds / 3:
                    await gate.permits.renew(n)

    async def node_exists(self, ctx: FlowCtx) -> StepResult:
        if ctx.node is not None:
            return done()
        await self._complete(ctx, R.NODE_GONE, f"node {ctx.spec.node_name if ctx.spec else ''} no longer exists",
                             PermitOutcome.ABORTED)
        return wait(R.NODE_GONE, "the node is gone")

    async def fault_is_still_present(self, ctx: FlowCtx) -> StepResult:
        """A fault that cleared before the node was isolated needs no repair: give up quietly."""
        if ctx.active_faults or ctx.status.get("isolatedAt") or ctx.status.get("repair"):
            return done()
        await self._complete(ctx, R.RECOVERED, "every fault cleared before the node was isolated; nothing to "
                                               "repair", PermitOutcome.ABORTED)
        return wait(R.RECOVERED, "recovered without repair")

    async def node_is_isolated(self, ctx: FlowCtx) -> StepResult:
        """Permit ``node-isolate``, then cordon + taint ``kokpit.io/maintenance:NoSchedule``."""
        assert ctx.spec is not None and ctx.node is not None
        if not self._has(ctx, FlowStep.ISOLATE):
            return done()
        if ops.is_isolated(ctx.node, ctx.flow_name):
            if not ctx.status.get("isolatedAt"):
                self._isolated(ctx)
            # the permit stays held (renewed) while the node is isolated
            await self._permit(ctx, OperationType.NODE_ISOLATE, self._intent(ctx, "isolate"), "maintenance")
            return done()
        if not ctx.status.get("isolatedAt") and self.storm_open(ctx.spec.policy):
            msg = f"fault storm breaker of MaintenancePolicy {ctx.spec.policy} is open: no new node is isolated"
            ctx.condition(CT.ISOLATED, False, R.STORM_BREAKER_OPEN, msg)
            ctx.record_step(FlowStep.ISOLATE, "Waiting", msg)
            return wait(R.STORM_BREAKER_OPEN, msg, after=self.opts.poll)
        ctx.record_step(FlowStep.ISOLATE, "Running", "asking the risk center for node-isolate")
        if not await self._permit(ctx, OperationType.NODE_ISOLATE, self._intent(ctx, "isolate"),
                                  f"maintenance flow {ctx.flow_name}: {ctx.spec.fault_type}"):
            assert ctx.risk is not None
            ctx.condition(CT.ISOLATED, False, ctx.risk[0], ctx.risk[1])
            ctx.record_step(FlowStep.ISOLATE, "Waiting", ctx.risk[1])
            return wait(ctx.risk[0], ctx.risk[1])
        node = await ops.isolate(self.client, ctx.node, ctx.flow_name, ctx.now)
        if node is not None:
            ctx.node = node
        self._isolated(ctx)
        return act(R.ISOLATED, f"cordoned and tainted node {ctx.spec.node_name}")

    def _isolated(self, ctx: FlowCtx) -> None:
        assert ctx.spec is not None
        ctx.status["isolatedAt"] = format_time(ctx.now)
        msg = f"node {ctx.spec.node_name} cordoned and tainted {TAINT_KEY}:NoSchedule"
        ctx.condition(CT.ISOLATED, True, R.ISOLATED, msg)
        ctx.record_step(FlowStep.ISOLATE, "Succeeded", msg)
        ctx.normal(R.ISOLATED, msg)
        created = ctx.obj["metadata"].get("creationTimestamp")
        if created:
            self.metrics.isolate.observe(max(0.0, (ctx.now - parse_time(str(created))).total_seconds()))

    def _migration_skipped(self, ctx: FlowCtx) -> bool:
        """A person resolved it: pods not yet moved stay."""
        return str((ctx.status.get("repair") or {}).get("requestId") or "").startswith(PERSON)

    async def pods_are_marked_for_migration(self, ctx: FlowCtx) -> StepResult:
        """Permit ``node-drain``; label every movable pod ``kokpit.io/to-be-migrated=true`` with the reason and
        the deadline (set once, in status, so a restart keeps the same deadline)."""
        assert ctx.spec is not None and ctx.policy is not None
        if not self._has(ctx, FlowStep.MIGRATE) or self._migration_skipped(ctx):
            return done()
        if ctx.status.get("drainedAt"):
            await self._permit(ctx, OperationType.NODE_DRAIN, self._intent(ctx, "drain"), "maintenance")
            return done()
        if not await self._permit(ctx, OperationType.NODE_DRAIN, self._intent(ctx, "drain"),
                                  f"maintenance flow {ctx.flow_name}: migrate the pods of {ctx.spec.node_name}"):
            assert ctx.risk is not None
            ctx.record_step(FlowStep.MIGRATE, "Waiting", ctx.risk[1])
            return wait(ctx.risk[0], ctx.risk[1])
        deadline = ctx.status.get("migrationDeadline")
        if not deadline:
            at = ctx.now + dt.timedelta(seconds=parse_duration(ctx.policy.migration_deadline))
            deadline = ctx.status["migrationDeadline"] = format_time(at)
        pods = self.pods.by_index("node", ctx.spec.node_name)
        reason = f"node {ctx.spec.node_name} under maintenance ({ctx.spec.fault_type or 'fault'}, flow " \
                 f"{ctx.status['currentFlow']})"
        marked = await ops.mark_pods(self.client, pods, ctx.flow_name, reason, str(deadline))
        left = ops.movable_pods(pods)
        known = {(r["namespace"], r["name"]) for r in ctx.status.get("pods") or []}
        self._note_pods(ctx, [p for p in left if (p["metadata"].get("namespace") or "", p["metadata"]["name"])
                              not in known], "ToBeMigrated", f"labelled {MIGRATE_LABEL}=true; deadline {deadline}")
        ctx.record_step(FlowStep.MIGRATE, "Succeeded" if not left else "Running",
                        f"{len(left)} pods to migrate by {deadline}")
        if marked:
            return act(R.MIGRATING, f"labelled {len(marked)} pods to be migrated by {deadline}")
        return done()

    def _note_pods(self, ctx: FlowCtx, pods: list[Obj], action: str, message: str) -> None:
        rows: list[Obj] = ctx.status.setdefault("pods", [])
        for p in pods:
            m = p["metadata"]
            row = next((r for r in rows if r["namespace"] == m.get("namespace") and r["name"] == m["name"]), None)
            if row is None:
                row = {"namespace": m.get("namespace") or "", "name": m["name"]}
                rows.append(row)
            row.update(action=action, at=format_time(ctx.now), message=message[:1024])
        del rows[:-512]

    async def pods_are_drained(self, ctx: FlowCtx) -> StepResult:
        """Before the deadline: wait for the PaaS (a pod gone is migrated).  After it: evict the rest
        (PodDisruptionBudgets honoured) and delete bare pods, recording each."""
        assert ctx.spec is not None
        if not self._has(ctx, FlowStep.DRAIN) or ctx.status.get("drainedAt") or self._migration_skipped(ctx):
            return done()
        pods = self.pods.by_index("node", ctx.spec.node_name)
        left = ops.movable_pods(pods)
        self._note_migrated(ctx, left)
        if not left:
            ctx.status["drainedAt"] = format_time(ctx.now)
            ctx.condition(CT.MIGRATED, True, R.DRAINED, "no pod to move is left on the node")
            ctx.record_step(FlowStep.DRAIN, "Succeeded", "no pod to move is left on the node")
            return act(R.DRAINED, f"node {ctx.spec.node_name} drained")
        deadline = ctx.status.get("migrationDeadline")
        if deadline and ctx.now < parse_time(str(deadline)):
            wait_s = (parse_time(str(deadline)) - ctx.now).total_seconds()
            msg = f"{len(left)} pods labelled to be migrated; evicting what is left at {deadline}"
            ctx.condition(CT.MIGRATED, False, R.MIGRATING, msg)
            ctx.record_step(FlowStep.DRAIN, "Waiting", msg)
            return wait(R.MIGRATING, msg, after=min(wait_s + 0.05, self.opts.poll * 12))
        res = await ops.drain(self.client, left, ctx.flow_name)
        self._note_pods(ctx, res.evicted, "Evicted", "evicted after the migration deadline")
        self._note_pods(ctx, res.deleted, "Deleted", "a bare pod no controller recreates: deleted")
        for p in res.deleted:
            ctx.warning(R.POD_DELETED, f"deleted bare pod {p['metadata'].get('namespace')}/{p['metadata']['name']} "
                                       f"from node {ctx.spec.node_name}: no controller recreates it and it was "
                                       "not migrated by the deadline")
        if res.blocked:
            names = ", ".join(f"{p['metadata'].get('namespace')}/{p['metadata']['name']}" for p, _ in res.blocked)
            msg = f"eviction refused by a PodDisruptionBudget for {names}; retrying"
            ctx.condition(CT.MIGRATED, False, R.DISRUPTION_BUDGET, msg)
            ctx.record_step(FlowStep.DRAIN, "Waiting", msg)
            return wait(R.DISRUPTION_BUDGET, msg, after=self.opts.poll)
        msg = f"evicted {len(res.evicted)} and deleted {len(res.deleted)} pods"
        ctx.condition(CT.MIGRATED, False, R.EVICTING, msg)
        ctx.record_step(FlowStep.DRAIN, "Running", msg)
        return wait(R.EVICTING, msg, after=self.opts.poll)

    def _note_migrated(self, ctx: FlowCtx, left: list[Obj]) -> None:
        still = {(p["metadata"].get("namespace") or "", p["metadata"]["name"]) for p in left}
        for row in ctx.status.get("pods") or []:
            if row.get("action") == "ToBeMigrated" and (row["namespace"], row["name"]) not in still:
                row.update(action="Migrated", at=format_time(ctx.now), message="gone from the node")

    # ------------------------------------------------------------------------------ repair and verify
    def _attempt_id(self, ctx: FlowCtx) -> str:
        n = len(ctx.status.get("history") or []) + 1
        return f"{(ctx.obj['metadata'].get('uid') or ctx.flow_name)[:13]}-{n}"

    async def node_is_repaired(self, ctx: FlowCtx) -> StepResult:
        """The current flow's repair, once per attempt: permit, intent on record, driver call (idempotent by
        request id), and its outcome; a failure or timeout escalates."""
        assert ctx.spec is not None and ctx.tpl is not None and ctx.policy is not None
        if not self._has(ctx, FlowStep.REPAIR):
            return done()
        st, tpl = ctx.status, ctx.tpl
        rep: Obj | None = st.get("repair")
        current = rep is not None and rep.get("flow") == st["currentFlow"] and rep.get("attempt") == st["attempt"] \
            and not rep.get("outcome")
        if not current:
            return await self._start_repair(ctx)
        assert rep is not None
        if timed_out(str(rep.get("startedAt")), tpl.timeout, ctx.now) and not is_true(ctx.conditions, CT.VERIFIED):
            return await self._attempt_failed(ctx, "TimedOut", f"{tpl.name} not verified within {tpl.timeout}")
        if rep.get("finishedAt"):
            if self._permit_needed(tpl):
                await self._permit(ctx, _OPERATION[tpl.repair], self._intent(ctx, str(rep["requestId"])), "repair")
            return done()
        if tpl.repair == RepairAction.HARDWARE_REPAIR:
            msg = f"hardware repair ticket {(st.get('ticket') or {}).get('id')} is open: a person or the IDC " \
                  "system closes it with kokpit fault resolve"
            ctx.condition(CT.REPAIRED, False, R.TICKET_OPEN, msg)
            ctx.record_step(FlowStep.REPAIR, "Waiting", msg)
            return wait(R.TICKET_OPEN, msg, after=self._left(ctx, rep, tpl))
        if tpl.repair == RepairAction.NONE:
            rep["finishedAt"] = format_time(ctx.now)
            return done()
        return await self._poll_repair(ctx, rep)

    def _permit_needed(self, tpl: FlowTemplate) -> bool:
        return tpl.repair in _OPERATION

    def _left(self, ctx: FlowCtx, rep: Obj, tpl: FlowTemplate) -> float:
        started = parse_time(str(rep.get("startedAt")))
        return max(0.05, parse_duration(tpl.timeout) - (ctx.now - started).total_seconds() + 0.05)

    async def _start_repair(self, ctx: FlowCtx) -> StepResult:
        assert ctx.spec is not None and ctx.tpl is not None
        st, tpl = ctx.status, ctx.tpl
        rid = self._attempt_id(ctx)
        if self._permit_needed(tpl) and not await self._permit(
                ctx, _OPERATION[tpl.repair], self._intent(ctx, rid),
                f"maintenance flow {ctx.flow_name}: {tpl.repair.value} of {ctx.spec.node_name}"):
            assert ctx.risk is not None
            ctx.record_step(FlowStep.REPAIR, "Waiting", ctx.risk[1])
            return wait(ctx.risk[0], ctx.risk[1])
        rep: Obj = {"flow": tpl.name, "action": tpl.repair.value, "attempt": st["attempt"], "requestId": rid,
                    "component": ctx.spec.component, "startedAt": format_time(ctx.now)}
        st["repair"] = rep
        ctx.condition(CT.REPAIRED, False, R.REPAIRING, f"{tpl.repair.value} (attempt {st['attempt']}) started")
        ctx.condition(CT.VERIFIED, False, R.REPAIRING, "the repair has not been verified yet")
        ctx.record_step(FlowStep.REPAIR, "Running", f"{tpl.repair.value}, request {rid}")
        ctx.record_step(FlowStep.VERIFY, "Pending", "")
        ctx.status["step"] = FlowStep.REPAIR.value
        # the intent is on record before anything is asked of the node: a restart finds it and asks the
        # driver about this request id instead of starting another repair
        await self._write_status_now(ctx, {"repair": rep, "currentFlow": st["currentFlow"], "attempt": st["attempt"],
                                           "level": st.get("level", 0), "permits": st.get("permits") or []})
        if tpl.repair == RepairAction.HARDWARE_REPAIR:
            st["ticket"] = {"id": rid, "openedAt": format_time(ctx.now), "message": "waiting for a person"}
            ctx.warning(R.TICKET_OPEN, f"hardware repair of node {ctx.spec.node_name} needs a person: ticket {rid} "
                                       f"(fault {ctx.spec.fault_type}); close it with kokpit fault resolve "
                                       f"{ctx.spec.node_name} --note ...")
            return act(R.TICKET_OPEN, f"opened repair ticket {rid}", after=self._left(ctx, rep, tpl))
        if tpl.repair == RepairAction.NONE:
            return act(R.REPAIRING, "nothing to repair: waiting for the fault to clear")
        ctx.normal(R.REPAIRING, f"{tpl.repair.value} of node {ctx.spec.node_name} (attempt {st['attempt']}, "
                                f"request {rid})")
        return await self._poll_repair(ctx, rep)

    async def _poll_repair(self, ctx: FlowCtx, rep: Obj) -> StepResult:
        """Ask the driver about the repair (starting it the first time; the same request id never twice)."""
        assert ctx.spec is not None and ctx.tpl is not None
        fn = getattr(self.driver, "repair", None)
        if fn is None:
            return await self._attempt_failed(ctx, "Failed", "the node driver cannot repair nodes")
        try:
            state = await fn(ctx.spec.node_name, _DRIVER_KIND[ctx.tpl.repair], str(rep["requestId"]),
                             component=ctx.spec.component, reason=f"maintenance flow {ctx.flow_name}")
        except DriverError as e:
            if e.retryable:
                ctx.record_step(FlowStep.REPAIR, "Waiting", f"node driver: {e}")
                return wait(R.REPAIRING, f"node driver: {e}", after=self.opts.poll)
            return await self._attempt_failed(ctx, "Failed", str(e))
        rep["operationId"] = state.operation_id
        rep["message"] = state.message[:2048]
        if state.state == "Failed":
            return await self._attempt_failed(ctx, "Failed", state.message or "the repair failed")
        if state.state in ("Succeeded", "Accepted"):
            rep["finishedAt"] = state.finished_at or format_time(ctx.now)
            msg = f"{ctx.tpl.repair.value} done: {state.message}".rstrip(": ")
            ctx.condition(CT.REPAIRED, True, R.REPAIRED, msg)
            ctx.record_step(FlowStep.REPAIR, "Succeeded", msg)
            return act(R.REPAIRED, msg)
        ctx.record_step(FlowStep.REPAIR, "Running", state.message)
        return wait(R.REPAIRING, state.message or "repair running", after=min(1.0, self.opts.poll))

    def _close_attempt(self, ctx: FlowCtx, outcome: str, message: str) -> None:
        rep = ctx.status.get("repair")
        if not rep or rep.get("outcome"):
            return
        rep.update(outcome=outcome, finishedAt=rep.get("finishedAt") or format_time(ctx.now), message=message[:2048])
        hist: list[Obj] = ctx.status.setdefault("history", [])
        hist.append(dict(rep))
        del hist[:-64]

    async def _attempt_failed(self, ctx: FlowCtx, outcome: str, why: str) -> StepResult:
        assert ctx.spec is not None and ctx.policy is not None and ctx.tpl is not None
        st = ctx.status
        rep = st.get("repair") or {}
        self._close_attempt(ctx, outcome, why)
        if self._permit_needed(ctx.tpl) and rep.get("requestId"):
            gate = self.opts.permits
            if gate is not None:
                name = gate.permits.name_for(_OPERATION[ctx.tpl.repair], [ctx.spec.node_name],
                                             self._intent(ctx, str(rep["requestId"])))
                await self._release(ctx, [name], PermitOutcome.FAILED, why)
        esc = escalate(ctx.policy, ctx.tpl.name, int(st.get("attempt") or 1), int(st.get("level") or 0), why)
        ctx.record_step(FlowStep.REPAIR, "Failed", why)
        if esc.flow is None:
            ctx.condition(CT.MANUAL_REQUIRED, True, R.MANUAL_REQUIRED, esc.message)
            ctx.warning(R.MANUAL_REQUIRED, f"node {ctx.spec.node_name}: {esc.message}; the node stays isolated")
            self.metrics.manual.inc()
            return wait(R.MANUAL_REQUIRED, esc.message)
        if esc.flow != ctx.tpl.name:
            self.metrics.escalations.labels(ctx.tpl.name, esc.flow).inc()
            ctx.warning(R.ESCALATED, f"node {ctx.spec.node_name}: {esc.message}")
        else:
            ctx.warning(R.REPAIR_FAILED, f"node {ctx.spec.node_name}: {esc.message}")
        st.update(currentFlow=esc.flow, attempt=esc.attempt, level=esc.level)
        ctx.condition(CT.REPAIRED, False, R.ESCALATED if esc.flow != ctx.tpl.name else R.REPAIR_FAILED, esc.message)
        return act(R.ESCALATED, esc.message, after=0.0)

    async def node_is_verified(self, ctx: FlowCtx) -> StepResult:
        """The fault is no longer reported, the node is Ready, its components healthy, its gates hold."""
        assert ctx.spec is not None and ctx.tpl is not None
        if not self._has(ctx, FlowStep.VERIFY) or is_true(ctx.conditions, CT.VERIFIED):
            return done()
        rep = ctx.status.get("repair") or {}
        problems = self._verify_problems(ctx, rep)
        if problems:
            msg = "; ".join(problems)
            ctx.condition(CT.VERIFIED, False, R.VERIFYING, msg)
            ctx.record_step(FlowStep.VERIFY, "Running", msg)
            after = self._left(ctx, rep, ctx.tpl) if rep.get("startedAt") else self.opts.poll
            return wait(R.VERIFYING, msg, after=min(after, self.opts.poll))
        ctx.condition(CT.VERIFIED, True, R.VERIFIED, "fault gone, node Ready, components healthy, gates hold")
        ctx.record_step(FlowStep.VERIFY, "Succeeded", "fault gone, node Ready, components healthy, gates hold")
        if rep and not rep.get("outcome"):
            self._close_attempt(ctx, "Succeeded", rep.get("message") or "verified")
            if self._permit_needed(ctx.tpl) and rep.get("requestId") and self.opts.permits is not None:
                name = self.opts.permits.permits.name_for(_OPERATION[ctx.tpl.repair], [ctx.spec.node_name],
                                                          self._intent(ctx, str(rep["requestId"])))
                await self._release(ctx, [name], PermitOutcome.SUCCEEDED, "verified")
        return act(R.VERIFIED, f"node {ctx.spec.node_name} verified")

    def _verify_problems(self, ctx: FlowCtx, rep: Obj) -> list[str]:
        problems: list[str] = []
        since = rep.get("finishedAt")
        if self._has(ctx, FlowStep.REPAIR) and not since:
            return ["the repair has not finished"]
        for f in ctx.active_faults:
            st = f.get("status") or {}
            last = st.get("lastSeen")
            fresh = not since or not last or parse_time(str(last)) > parse_time(str(since))
            sources = st.get("sources") or []
            if since and sources:
                # a source that reported after the repair but has cleared since (the detector saw the stopped
                # component once more, then it ran again) is not "still reported": only live sources count
                fresh = any(not s.get("cleared") and (not s.get("lastSeen") or parse_time(str(s["lastSeen"]))
                                                      > parse_time(str(since))) for s in sources)
            quiet = since and (ctx.now - parse_time(str(since))).total_seconds() >= self.opts.verify_grace
            if fresh or not quiet:
                problems.append(f"fault {f['metadata']['name']} is still reported")
        node = ctx.node or {}
        if not is_true((node.get("status") or {}).get("conditions"), "Ready"):
            problems.append(f"node {ctx.spec.node_name if ctx.spec else ''} is not Ready")
        m = ctx.machine
        if m is not None:
            conds = (m.get("status") or {}).get("conditions")
            if not is_true(conds, "ComponentsReady"):
                problems.append("the Machine's components are not ready")
            if condition_status(m, "NodeHealthy") == "False":
                problems.append("a component fails its health check")
            if (m.get("spec") or {}).get("readinessGates") and not is_true(conds, "ReadinessGatesMet"):
                problems.append("a readiness gate does not hold")
        return problems

    async def node_is_restored(self, ctx: FlowCtx) -> StepResult:
        """Uncordon, untaint, release the permits, resolve the NodeFaults: the node is back."""
        assert ctx.spec is not None
        if ctx.node is not None:
            await ops.give_back(self.client, ctx.node, ctx.flow_name)
        await self._complete(ctx, R.COMPLETED, f"node {ctx.spec.node_name} repaired, verified and given back",
                             PermitOutcome.SUCCEEDED)
        return act(R.COMPLETED, "node given back")

    async def _complete(self, ctx: FlowCtx, reason: str, message: str, outcome: PermitOutcome) -> None:
        assert ctx.spec is not None
        if ctx.node is not None and reason != R.COMPLETED:
            await ops.give_back(self.client, ctx.node, ctx.flow_name)
        self._close_attempt(ctx, "Succeeded" if outcome == PermitOutcome.SUCCEEDED else "Superseded", message)
        await self._release(ctx, list(ctx.status.get("permits") or []), outcome, message)
        if reason != R.NODE_GONE:  # nothing was repaired: the event center invalidates a gone node's faults
            for f in ctx.faults:
                await self._resolve_fault(ctx, f, reason, message)
        ctx.status["completedAt"] = format_time(ctx.now)
        ctx.condition(CT.COMPLETED, True, reason, message)
        ctx.condition(CT.MANUAL_REQUIRED, False, reason, message) if condition_status(
            ctx.obj, CT.MANUAL_REQUIRED) == "True" else None
        ctx.record_step(FlowStep.RESTORE, "Succeeded" if reason == R.COMPLETED else "Skipped", message)
        ctx.normal(reason, message)
        created = ctx.obj["metadata"].get("creationTimestamp")
        if created and reason == R.COMPLETED:
            self.metrics.repair.observe(max(0.0, (ctx.now - parse_time(str(created))).total_seconds()))
        self.metrics.completed.labels(reason).inc()

    async def _mark_manual_required(self, ctx: FlowCtx, on: bool) -> None:
        """Level-triggered: while the flow waits for a person, every Active fault it repairs carries
        ``status.manualRequired`` (FaultSubscriptions deliver it as ``ManualRequired``: the person learns it
        without watching the cluster); once a person retried, the mark is gone again.  Read from the cache,
        so a flow that is not escalated costs no request."""
        assert ctx.spec is not None
        msg = (find_condition(ctx.conditions, CT.MANUAL_REQUIRED) or {}).get("message", "")
        for f in ctx.faults:
            st = f.get("status") or {}
            name = f["metadata"]["name"]
            if (name not in ctx.spec.faults and st.get("maintenanceFlow") != ctx.flow_name) or st.get(
                    "state") != ACTIVE:
                continue
            mark = (st.get("manualRequired") or {}).get("maintenanceFlow")
            if on and mark != ctx.flow_name:
                value: Obj | None = {"maintenanceFlow": ctx.flow_name, "since": format_time(ctx.now),
                                     "message": str(msg)[:1024]}
            elif not on and mark == ctx.flow_name:
                value = None
            else:
                continue
            try:
                await self.client.patch(NODE_FAULT, name, {"status": {"manualRequired": value}},
                                        subresource="status")
            except Exception as e:  # the fault may be gone or rewritten meanwhile: the next pass looks again
                log.info("marking NodeFault %s manualRequired=%s: %s", name, on, e)

    async def _resolve_fault(self, ctx: FlowCtx, fault: Obj, reason: str, message: str) -> None:
        """A fault this flow handled is Resolved with a resolution naming the flow (history keeps it)."""
        assert ctx.spec is not None
        st = fault.get("status") or {}
        name = fault["metadata"]["name"]
        if name not in ctx.spec.faults and st.get("maintenanceFlow") != ctx.flow_name:
            return
        if st.get("state") != ACTIVE:
            return
        # endedAt now: the event center keeps history for its retention from there (without it, from the
        # last report — a fault reported long ago was deleted the moment it was resolved)
        body = {"status": {"state": RESOLVED, "maintenanceFlow": ctx.flow_name, "endedAt": format_micro_time(ctx.now),
                           "resolution": {"by": f"maintenance-flow/{ctx.flow_name}", "at": format_time(ctx.now),
                                          "reason": reason, "note": message[:1024]}}}
        try:
            await self.client.patch(NODE_FAULT, name, body, subresource="status")
        except Exception as e:  # the fault may be gone or rewritten by the event center: nothing to resolve
            log.info("resolving NodeFault %s: %s", name, e)
