"""The reconcile of one MaintenanceFlow: isolate, migrate, drain, repair, verify, restore — and escalate.

One level-triggered :class:`~kokpit.runtime.StepReconciler` per flow; every step is named for what it holds
true and is safe to repeat after a crash at any line.  What must survive a restart lives in the flow's
status: the escalation level and attempt, each step's times and outcome, the migration deadline, and above
all the **repair intent** — ``status.repair`` with its ``requestId`` is written to the API *before* the node
driver is called, and the driver is idempotent by that id, so a controller killed mid-reboot asks about the
same reboot after its restart instead of starting a second one.

Permits come from the risk center through :class:`kokpit.runtime.permit_gate.PermitGate` (``node-isolate``
before the cordon, ``node-drain`` before pods are marked, the repair's own operation before the repair);
they are held (renewed on every reconcile) until the node is given back, and a refusal is shown on the
``RiskPermitted`` condition with the refusing policies.

This module is the reconciler and the steps that open and close a flow; the steps between live in
:mod:`._isolate` (isolate, migrate, drain) and :mod:`._repair` (repair, escalate, verify), what they share in
:mod:`._flowbase`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from kokpit._lib.clock import format_micro_time, format_time, parse_time
from kokpit.api.maintenance import (
    FlowStep,
    HumanActionType,
    MaintenanceFlowSpec,
    RepairAction,
)
from kokpit.api.risk import PermitOutcome
from kokpit.operators.maintenance import _nodeops as ops
from kokpit.operators.maintenance._faultref import ACTIVE, NODE_FAULT, RESOLVED
from kokpit.operators.maintenance._flowbase import (
    CT,
    FLOW,
    PERSON,
    POLICY,
    FlowCtx,
    FlowOptions,
    Obj,
    R,
)
from kokpit.operators.maintenance._isolate import IsolateSteps
from kokpit.operators.maintenance._policy import condition_status, policy_spec
from kokpit.operators.maintenance._repair import RepairSteps
from kokpit.runtime import (
    InvalidSpec,
    PhaseRule,
    Request,
    Result,
    Step,
    StepResult,
    act,
    derive_phase,
    done,
    find_condition,
    is_true,
    named_steps,
    wait,
)

__all__ = ["FLOW", "NODE_FAULT", "POLICY", "FlowCtx", "FlowOptions", "FlowReconciler"]

log = logging.getLogger("kokpit.operators.maintenance")

_PHASES = (
    PhaseRule("Completed", CT.COMPLETED, ("True",)),
    PhaseRule("ManualRequired", CT.MANUAL_REQUIRED, ("True",)),
    PhaseRule("Invalid", CT.COMPLETED, ("False",), ("InvalidSpec", R.UNKNOWN_FLOW, R.NO_POLICY)),
    PhaseRule("Waiting", CT.RISK_PERMITTED, ("False",)),
    PhaseRule("Waiting", CT.ISOLATED, ("False",), (R.STORM_BREAKER_OPEN,)),
)


class FlowReconciler(IsolateSteps, RepairSteps):
    """The reconcile of one MaintenanceFlow: the skeleton's parts and the steps that open and close a flow;
    the steps between are the mixins' (:class:`IsolateSteps`, :class:`RepairSteps`)."""

    kind = FLOW
    spec_model = MaintenanceFlowSpec
    invalid_conditions = (CT.COMPLETED,)

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
