"""The steps that take a faulty node out of service: isolate it (cordon and taint under a ``node-isolate``
permit), mark its pods for migration (a ``node-drain`` permit and a deadline kept in status) and drain what
the PaaS did not move by the deadline.
"""

from __future__ import annotations

import datetime as dt

from kokpit._lib.clock import format_time, parse_time
from kokpit.api.maintenance import (
    MIGRATE_LABEL,
    TAINT_KEY,
    FlowStep,
    parse_duration,
)
from kokpit.api.risk import OperationType
from kokpit.operators.maintenance import _nodeops as ops
from kokpit.operators.maintenance._flowbase import CT, PERSON, FlowBase, FlowCtx, Obj, R
from kokpit.runtime import (
    StepResult,
    act,
    done,
    wait,
)

__all__ = ["IsolateSteps"]



class IsolateSteps(FlowBase):
    """Isolate, migrate, drain."""

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
