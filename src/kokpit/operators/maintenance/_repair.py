"""The steps that repair a node and verify the repair: the current flow's repair once per attempt (permit,
intent on record, an idempotent driver call), escalation on failure or timeout, and verification that the
fault is gone and the node healthy before it is given back.
"""

from __future__ import annotations

from kokpit._lib.clock import format_time, parse_time
from kokpit.api.maintenance import (
    FlowStep,
    FlowTemplate,
    RepairAction,
    parse_duration,
)
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.nodes import DriverError, RepairKind
from kokpit.operators.maintenance._flowbase import CT, FlowBase, FlowCtx, Obj, R
from kokpit.operators.maintenance._policy import condition_status, escalate, timed_out
from kokpit.runtime import (
    StepResult,
    act,
    done,
    is_true,
    wait,
)

__all__ = ["RepairSteps"]


_OPERATION = {RepairAction.COMPONENT_RESTART: OperationType.COMPONENT_UPGRADE,
              RepairAction.REBOOT: OperationType.NODE_REBOOT, RepairAction.REINSTALL: OperationType.NODE_REINSTALL}
_DRIVER_KIND = {RepairAction.COMPONENT_RESTART: RepairKind.RESTART_COMPONENT, RepairAction.REBOOT: RepairKind.REBOOT,
                RepairAction.REINSTALL: RepairKind.REINSTALL}


class RepairSteps(FlowBase):
    """Repair (and escalate), verify."""

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
