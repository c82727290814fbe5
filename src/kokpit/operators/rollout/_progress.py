"""The moving parts of a rollout: observing touched targets, changing marked ones, permits, the steps
forward and the rollback.

Every decision reads the records the previous reconcile wrote (the RolloutTargetSets, ``ctx.targets``) and
the targets' current state, so each function is safe to repeat after a crash at any line.  A target is first
*marked* (state Updating or RollingBack, with the permit that covers it and ``touchedAt``) and its spec is
changed only once that record is durable; a target whose spec already says the wanted value is never changed
again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from kokpit._lib.clock import Clock, format_time, parse_time
from kokpit.api.risk import PermitOutcome
from kokpit.api.rollout import RolloutConditionType, RolloutReason, TargetState, canary_size
from kokpit.client import ApiError, Client, ConflictError, NotFoundError, TransportError
from kokpit.operators.rollout._faults import attributed_faults
from kokpit.operators.rollout._permits import Asked, RolloutPermits
from kokpit.operators.rollout._plan import limit_of
from kokpit.operators.rollout._schedule import seconds
from kokpit.operators.rollout._targets import Mark
from kokpit.runtime import StepResult, Store, act, done, wait

if TYPE_CHECKING:
    from kokpit.operators.rollout._reconciler import RolloutCtx

__all__ = ["Progress"]

log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
CT = RolloutConditionType
R = RolloutReason
S = TargetState
# the states as plain strings: an enum member's .value is a property call, and these are compared 10,000 times
# a pass
_PENDING, _UPDATING, _UPDATED, _FAILED = S.PENDING.value, S.UPDATING.value, S.UPDATED.value, S.FAILED.value
_MODIFIED, _ROLLED_BACK, _ROLLING_BACK = S.MODIFIED.value, S.ROLLED_BACK.value, S.ROLLING_BACK.value
FINISHED = {_UPDATED, _FAILED, _MODIFIED, _ROLLED_BACK}
TOUCHED_FORWARD = {_UPDATING, _UPDATED, _FAILED}
CHANGES_PER_RECONCILE = 1000  # target spec changes written by one reconcile (the rest: the next one)
CHANGE_CONCURRENCY = 64
PERMIT_CONCURRENCY = 32  # permits asked, renewed or released at once
HEALTH_FAILED = "health check failed: "



class Progress:
    def __init__(self, client: Client, permits: Store, clock: Clock, metrics: Any,
                 policies: Store | None = None) -> None:
        self.client = client
        self.permits = RolloutPermits(client, permits, clock)
        self.metrics = metrics
        self.policies = policies  # RiskPolicies: the risk center's gate readings, for analysis steps
        # per Rollout: (revision identity, mark) of the last reconcile that ran to its end — a cache
        self._looked: dict[str, tuple[tuple[Any, ...], Mark]] = {}

    # ------------------------------------------------------------------------------ observing
    async def targets_in_flight_are_observed(self, ctx: RolloutCtx) -> StepResult:
        """Touched targets: done, failed (with the reason), changed by someone else, or past the deadline.

        A target already looked at whose Machine (NodeFaults, package versions) had no event since is not
        looked at again: the answer would be the same, only its deadline moves (10,000 Machines a reconcile
        at fleet size, most of them settled).  What was looked at is remembered in this process only, for
        the same revision and direction: a restarted controller looks at everything once."""
        assert ctx.spec is not None and ctx.ops is not None
        deadline = ctx.spec.progress_deadline_seconds
        completed = any(c.get("type") == CT.COMPLETED and c.get("status") == "True" for c in ctx.conditions)
        self._look_from(ctx, completed)
        for t in ctx.targets:
            state = t.get("state")
            back = state == _ROLLING_BACK
            if state not in (_UPDATING, _ROLLING_BACK) and not (
                    state == _UPDATED and not completed and ctx.direction == "forward"):
                continue
            if (state == _UPDATED or t.get("changed")) and not ctx.stale(t):
                if state == _UPDATED:
                    continue
                age = self._age(ctx, t)
                if age <= deadline:
                    ctx.requeue_after(min(5.0, max(0.5, deadline - age)))
                    continue
            seen = ctx.ops.observe(t, back)
            if seen.obj is not None and seen.spec_is == "other" and t.get("changed"):
                self._finish(ctx, t, S.MODIFIED, "changed by someone else during the rollout: left alone")
                ctx.warning(R.TARGET_MODIFIED, f"{t['name']} was changed by someone else during the rollout; "
                                               "the rollout leaves it alone")
                continue
            fault = attributed_faults(ctx, t) if not back else ""
            if fault:
                self._finish(ctx, t, S.FAILED, fault)
                ctx.warning(R.FAULT_ATTRIBUTED, f"{t['name']}: {fault}")
                continue
            if seen.obj is not None and seen.spec_is == "wanted" and seen.verdict.failed:
                if back:
                    t["message"] = f"rollback not healthy yet: {seen.verdict.failed}"
                else:
                    self._finish(ctx, t, S.FAILED, seen.verdict.failed)
                    ctx.warning(R.TARGET_FAILED, f"{t['name']}: {seen.verdict.failed}")
                continue
            if seen.obj is not None and seen.spec_is == "wanted" and seen.verdict.done:
                if state != _UPDATED:
                    self._finish(ctx, t, S.ROLLED_BACK if back else S.UPDATED, None)
                continue
            if state == _UPDATED:
                continue
            age = self._age(ctx, t)
            if age > deadline:
                why = seen.why or (seen.verdict.failed or "did not report the new version")
                what = "rollback" if back else "change"
                self._finish(ctx, t, S.FAILED, f"{R.PROGRESS_DEADLINE}: the {what} was not done {deadline}s after "
                                               f"it was made ({why})")
                if back:
                    t["rollbackFailed"] = True
                ctx.warning(R.PROGRESS_DEADLINE, f"{t['name']}: {t['message']}")
            elif seen.why:
                t["message"] = seen.why
            ctx.requeue_after(min(5.0, max(0.5, deadline - age)))
        return done()

    def _look_from(self, ctx: RolloutCtx, completed: bool) -> None:
        """Where this reconcile's looks start from: the mark of the last reconcile of the same revision and
        direction that ran to its end (``looked_through``), or none (look at everything)."""
        assert ctx.ops is not None
        ident = (ctx.obj["metadata"].get("uid"), ctx.status.get("revision"), ctx.direction, completed)
        prev = self._looked.get(ctx.key)
        ctx.since = prev if prev is not None and prev[0] == ident else None
        # taken before any look: an event from here on moves its target past the mark
        ctx.looking = (ident, ctx.ops.mark())

    def looked_through(self, ctx: RolloutCtx) -> None:
        """The reconcile ran to its end (its records and status are written): the next one starts from here."""
        if ctx.looking is not None:
            self._looked[ctx.key] = ctx.looking

    def forget(self, key: str) -> None:
        self._looked.pop(key, None)

    @staticmethod
    def _age(ctx: RolloutCtx, t: Obj) -> float:
        touched = t.get("touchedAt")
        return (ctx.now - parse_time(touched)).total_seconds() if touched else 0.0

    def _finish(self, ctx: RolloutCtx, t: Obj, state: TargetState, message: str | None) -> None:
        t["state"] = state.value
        t["finishedAt"] = format_time(ctx.now)
        if message:
            t["message"] = message[:1024]
        else:
            t.pop("message", None)

    # ------------------------------------------------------------------------------ changing
    async def marked_targets_run_the_change(self, ctx: RolloutCtx) -> StepResult:
        """Change every marked target whose spec is still the other version (marked in a reconcile whose status
        is already written): up to ``CHANGES_PER_RECONCILE`` of them, ``CHANGE_CONCURRENCY`` at once, so a
        batch of thousands is written in a few reconciles that each stay short."""
        assert ctx.ops is not None
        ops = ctx.ops
        todo: list[tuple[Obj, Obj, bool]] = []
        for t in ctx.targets:
            state = t.get("state")
            if state not in (_UPDATING, _ROLLING_BACK):
                continue
            if t.get("changed") and not ctx.stale(t):
                continue  # changed, and its Machine had no event since it was looked at (ours may be on its way)
            back = state == _ROLLING_BACK
            seen = ops.observe(t, back)
            if seen.obj is None or seen.spec_is == "wanted":
                if seen.obj is not None:
                    t["changed"] = True
                continue
            if seen.spec_is == "other":
                self._finish(ctx, t, S.MODIFIED, "changed by someone else before the rollout reached it: left alone")
                ctx.warning(R.TARGET_MODIFIED, f"{t['name']} no longer runs the version recorded when the rollout "
                                               "started; the rollout leaves it alone")
                continue
            todo.append((t, seen.obj, back))
        if len(todo) > CHANGES_PER_RECONCILE:
            ctx.requeue_after(0.01)  # the rest in the next reconcile, after this one's status is written
            todo = todo[:CHANGES_PER_RECONCILE]
        slots = asyncio.Semaphore(CHANGE_CONCURRENCY)

        async def change(t: Obj, obj: Obj, back: bool) -> bool:
            async with slots:
                try:
                    await ops.change(t, obj, back)
                except ConflictError:
                    ctx.requeue_after(0.2)  # it changed under us: look again
                    return False
                except NotFoundError:
                    return False
                except (ApiError, TransportError) as e:
                    t["message"] = f"cannot change the target: {e}"[:1024]
                    ctx.requeue_after(2.0)
                    return False
                t["changed"] = True
                return True

        changed = sum(await asyncio.gather(*(change(*x) for x in todo)))
        return act("Changed", f"{changed} target(s) changed") if changed else done()

    # ------------------------------------------------------------------------------ permits
    async def permits_are_settled(self, ctx: RolloutCtx) -> StepResult:
        """Renew held permits; release those whose targets are all finished."""
        keys = list(ctx.status.get("permits") or [])
        if not keys:
            return done()
        open_by_permit: dict[str, list[Obj]] = defaultdict(list)
        for t in ctx.targets:
            if t.get("permit"):
                open_by_permit[t["permit"]].append(t)
        slots = asyncio.Semaphore(PERMIT_CONCURRENCY)

        async def settle(key: str) -> bool:
            """Renew or release one permit; whether it is still held."""
            covered = open_by_permit.get(key, [])
            if not covered:  # asked for but nothing was granted under it (yet)
                return True
            async with slots:
                if all(t.get("state") in FINISHED for t in covered):
                    failed = [t["name"] for t in covered if t.get("state") == _FAILED]
                    await self.permits.release(key, PermitOutcome.FAILED if failed else PermitOutcome.SUCCEEDED,
                                               f"failed: {', '.join(failed)}" if failed else "")
                    return False
                await self.permits.renew(key, ctx.now)
                return True

        held = await asyncio.gather(*(settle(k) for k in keys))
        keep = [k for k, h in zip(keys, held, strict=True) if h]
        ctx.status["permits"] = keep
        if keep:
            ctx.requeue_after(30.0)
        return done()

    async def release_all(self, ctx: RolloutCtx, outcome: PermitOutcome, message: str) -> None:
        slots = asyncio.Semaphore(PERMIT_CONCURRENCY)

        async def release(key: str) -> None:
            async with slots:
                await self.permits.release(key, outcome, message)

        await asyncio.gather(*(release(k) for k in ctx.status.get("permits") or []))
        ctx.status["permits"] = []

    async def _admit(self, ctx: RolloutCtx, candidates: list[Obj], back: bool, step: int) -> list[Obj]:
        """Ask the risk center for ``candidates`` (one permit per cluster); mark the granted ones."""
        assert ctx.ops is not None
        groups: dict[str, list[Obj]] = defaultdict(list)
        for t in candidates:
            groups[ctx.ops.permit_scope(t)[0]].append(t)
        marked: list[Obj] = []
        waiting: list[str] = []
        denied = False
        ns = ctx.request.namespace or ""
        intent = f"rollout/{ctx.obj['metadata'].get('uid', '')}/{ctx.status.get('revision')}/" \
                 f"{'back' if back else 'forward'}"
        permits: list[str] = list(ctx.status.get("permits") or [])
        asked_keys: set[str] = set()
        slots = asyncio.Semaphore(PERMIT_CONCURRENCY)
        reason = f"{ctx.key}: {ctx.status.get('change')}"[:1024]
        op = ctx.ops.op

        async def ask(cluster: str, ts: list[Obj]) -> Asked | str:
            assert ctx.ops is not None
            scope = ["control-plane"] if op.target_kind.value == "Cluster" else \
                [ctx.ops.permit_scope(t)[1] for t in ts]
            async with slots:
                try:
                    return await self.permits.ask(op, ns, cluster, scope, holder=ctx.holder, intent=intent,
                                                  repair=back, reason=reason)
                except (ApiError, TransportError) as e:
                    return f"{cluster}: cannot ask the risk center: {e}"

        # one permit per cluster (a Cluster rollout: per target), asked at once: a batch of thousands of
        # Clusters must not wait for thousands of round trips one after the other
        order = sorted(groups.items())
        answers = await asyncio.gather(*(ask(cluster, ts) for cluster, ts in order))
        for (_, ts), asked in zip(order, answers, strict=True):
            if isinstance(asked, str):
                waiting.append(asked)
                continue
            asked_keys.add(asked.key)
            if asked.key not in permits:
                permits.append(asked.key)
            if not asked.granted:
                waiting.append(asked.waiting)
                denied |= asked.denied
                continue
            granted = set(asked.granted)
            for t in ts:
                if ctx.ops.op.target_kind.value == "Cluster" or ctx.ops.permit_scope(t)[1] in granted:
                    t["state"] = _ROLLING_BACK if back else _UPDATING
                    t["permit"] = asked.key
                    t["touchedAt"] = format_time(ctx.now)
                    t.pop("changed", None)  # this marking's change is not made yet
                    t.pop("finishedAt", None)
                    t.pop("message", None)
                    if not back:
                        t["step"] = step
                    marked.append(t)
        ctx.marked += len(marked)
        # a permit asked for an earlier set of candidates (still queued) is withdrawn
        live = {t.get("permit") for t in ctx.targets}
        for key in list(permits):
            if key not in live and key not in asked_keys:
                await self.permits.release(key, PermitOutcome.ABORTED, "withdrawn: the batch changed")
                permits.remove(key)
        ctx.status["permits"] = permits
        if waiting and not marked:
            ctx.risk = (False, "RiskDenied" if denied else "RiskQueued", "; ".join(waiting)[:2048])
            ctx.requeue_after(5.0)
        elif marked:
            ctx.risk = (True, R.RISK_GRANTED, f"{len(marked)} target(s) granted")
        return marked

    # ------------------------------------------------------------------------------ forward
    async def steps_are_worked_through(self, ctx: RolloutCtx) -> StepResult:
        assert ctx.spec is not None
        spec = ctx.spec
        total = len(ctx.targets)
        steps = ctx.status.setdefault("steps", [])
        while True:
            i = int(ctx.status.get("currentStep") or 0)
            if i >= len(spec.strategy.steps):
                if not any(c.get("type") == CT.COMPLETED and c.get("status") == "True" for c in ctx.conditions):
                    ctx.condition(CT.COMPLETED, True, R.COMPLETED, f"{total} target(s) run the new version")
                    ctx.status["finishedAt"] = format_time(ctx.now)
                    ctx.normal(R.COMPLETED, f"revision {ctx.status.get('revision')} completed: "
                                            f"{ctx.status.get('change')}")
                return done()
            step = spec.strategy.steps[i]
            rec = next((s for s in steps if s.get("index") == i), None)
            if rec is None:
                kind = "canary" if step.canary is not None else "pause" if step.pause is not None else "analysis"
                rec = {"index": i, "type": kind, "startedAt": format_time(ctx.now)}
                steps.append(rec)
            started = parse_time(rec["startedAt"])
            if step.canary is not None:
                res = await self._canary(ctx, i, canary_size(step.canary, total), rec)
            elif step.pause is not None:
                res = self._pause(ctx, i, step.pause.duration, started)
            else:
                assert step.analysis is not None
                res = self._analysis(ctx, i, step.analysis.duration, step.analysis.failure_limit, started)
            if res is not None:
                return res
            rec.setdefault("finishedAt", format_time(ctx.now))
            rec.setdefault("outcome", "Succeeded")
            if self.metrics is not None:
                self.metrics.step_done(rec)
            ctx.status["currentStep"] = i + 1

    async def _canary(self, ctx: RolloutCtx, i: int, goal: int, rec: Obj) -> StepResult | None:
        assert ctx.spec is not None
        batch = ctx.targets[:goal]
        if all(t.get("state") in FINISHED for t in batch):
            rec.setdefault("finishedAt", format_time(ctx.now))
            bake = seconds(ctx.spec.strategy.bake_time)
            left = bake - (ctx.now - parse_time(rec["finishedAt"])).total_seconds()
            if left > 0:
                ctx.waiting_for = f"baking step {i} for {left:.0f}s more"
                return wait(R.BAKING, ctx.waiting_for, after=left)
            return None
        if ctx.spec.paused:
            ctx.waiting_for = "paused by spec.paused"
            return wait(R.PAUSED_BY_USER, ctx.waiting_for)
        inflight = sum(1 for t in ctx.targets if t.get("state") == _UPDATING)
        cap = limit_of(ctx.spec.strategy.max_unavailable, len(ctx.targets))
        room = len(batch) if cap <= 0 else max(0, max(cap, 1) - inflight)
        pending = [t for t in batch if t.get("state") == _PENDING][:room]
        if pending:
            await self._admit(ctx, pending, back=False, step=i)
        left = sum(1 for t in batch if t.get("state") not in FINISHED)
        ctx.waiting_for = f"step {i}: {left} of {len(batch)} target(s) of the batch not done yet"
        return wait(R.BATCH_IN_PROGRESS, ctx.waiting_for, after=5.0)

    def _pause(self, ctx: RolloutCtx, i: int, duration: str | None, started: dt.datetime) -> StepResult | None:
        assert ctx.spec is not None
        if ctx.spec.promoted_step >= i:
            return None
        if duration is None:
            ctx.waiting_for = f"step {i}: paused until promoted (kokpit rollout promote)"
            return wait(R.WAITING_FOR_PROMOTION, ctx.waiting_for)
        left = seconds(duration) - (ctx.now - started).total_seconds()
        if left > 0:
            ctx.waiting_for = f"step {i}: pausing {left:.0f}s more"
            return wait(R.PAUSE_STEP, ctx.waiting_for, after=left)
        return None

    def _analysis(self, ctx: RolloutCtx, i: int, duration: str, limit: int, started: dt.datetime
                  ) -> StepResult | None:
        """Health checks and business metrics for ``duration``.  Every target updated so far is checked again
        on each look (a Cluster Available, UpToDate, not Degraded, its components healthy; a Machine Ready —
        node Ready, components running and passing their health checks, readiness gates met — and
        NodeHealthy; faults attributed to the rollout fail a target as soon as they appear, in any step).
        More failed or unhealthy targets than ``limit``, or a failing gate of a RiskPolicy covering the
        operation in a cluster the rollout touched, fails the analysis: the unhealthy targets are marked
        Failed with what their check said, and the rollout aborts."""
        assert ctx.ops is not None
        failed = [t["name"] for t in ctx.targets if t.get("state") == _FAILED]
        unhealthy: list[tuple[Obj, str]] = []
        for t in ctx.targets:
            if t.get("state") != _UPDATED:
                continue
            check = ctx.ops.health(t)
            if check:
                unhealthy.append((t, check))
            elif check == "" and str(t.get("message") or "").startswith(HEALTH_FAILED):
                t.pop("message", None)  # recovered: the earlier reading no longer holds
        why = ""
        if len(failed) + len(unhealthy) > limit:
            for t, check in unhealthy:
                self._finish(ctx, t, S.FAILED, HEALTH_FAILED + check)
                ctx.warning(R.HEALTH_CHECK_FAILED, f"{t['name']}: {HEALTH_FAILED}{check}")
            names = failed + [t["name"] for t, _ in unhealthy]
            why = (f"{len(names)} failed or unhealthy target(s) (failureLimit {limit}): " + ", ".join(names))[:1024]
        else:
            for t, check in unhealthy:  # tolerated (within failureLimit), but shown
                t["message"] = (HEALTH_FAILED + check)[:1024]
            gates = self.failing_gates(ctx)
            if gates:
                why = "business-metric gate(s) failing: " + "; ".join(gates)[:1024]
        if why:
            msg = f"analysis of step {i}: {why}"
            ctx.condition(CT.ABORTED, True, R.ANALYSIS_FAILED, msg)
            ctx.warning(R.ANALYSIS_FAILED, msg)
            for s in ctx.status.get("steps") or []:
                if s.get("index") == i:
                    s["finishedAt"], s["outcome"], s["message"] = format_time(ctx.now), "Failed", msg
            return act(R.ANALYSIS_FAILED, msg, after=0)
        left = seconds(duration) - (ctx.now - started).total_seconds()
        if left > 0:
            ctx.waiting_for = (f"step {i}: analysing {left:.0f}s more ({len(failed)} failed, {len(unhealthy)} "
                               "unhealthy so far)")
            return wait(R.ANALYZING, ctx.waiting_for, after=min(left, 2.0))
        return None

    def failing_gates(self, ctx: RolloutCtx) -> list[str]:
        """Gates the risk center reads as failing (RiskPolicy status.gates) for the clusters the rollout
        touched, among the policies that cover its operation."""
        if self.policies is None or ctx.ops is None:
            return []
        ns = ctx.request.namespace or ""
        touched = {f"{ns}/{ctx.ops.permit_scope(t)[0]}" for t in ctx.targets if t.get("touchedAt")}
        out = []
        for p in self.policies.list():
            if ctx.ops.op.value not in ((p.get("spec") or {}).get("operations") or []):
                continue
            for g in (p.get("status") or {}).get("gates") or []:
                if g.get("scope") in touched | {"*"} and not g.get("passing"):
                    out.append(f"{p['metadata']['name']}/{g.get('name')} in {g.get('scope')}: "
                               f"{g.get('message') or 'failing'}")
        return out

    # ------------------------------------------------------------------------------ back
    async def touched_targets_are_rolled_back(self, ctx: RolloutCtx) -> StepResult:
        todo = [t for t in ctx.targets if t.get("state") in TOUCHED_FORWARD and not t.get("rollbackFailed")]
        if todo:
            await self._admit(ctx, todo, back=True, step=-1)
        left = [t for t in ctx.targets if t.get("state") in TOUCHED_FORWARD | {_ROLLING_BACK}
                and not t.get("rollbackFailed")]
        if left:
            ctx.waiting_for = f"rolling back: {len(left)} target(s) not back yet"
            return wait(R.ROLLING_BACK, ctx.waiting_for, after=5.0)
        n = sum(1 for t in ctx.targets if t.get("state") == _ROLLED_BACK)
        stuck = [t["name"] for t in ctx.targets if t.get("rollbackFailed")]
        msg = f"{n} touched target(s) are back on their previous version"
        if stuck:
            msg += f"; {len(stuck)} could not be rolled back (see their message): {', '.join(stuck)[:512]}"
        ctx.condition(CT.ROLLED_BACK, True, R.ROLLED_BACK, msg)
        ctx.status["finishedAt"] = format_time(ctx.now)
        ctx.warning(R.ROLLED_BACK, f"rolled back {n} target(s) of revision {ctx.status.get('revision')}")
        return done()
