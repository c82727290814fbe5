"""What every step of a MaintenanceFlow's reconcile shares: the flow's context, its options, the stores, and
the helpers for permits and the flow's own status.

The steps live in modules of one job each (:mod:`._isolate`: isolate, migrate, drain; :mod:`._repair`: repair
and verify; :mod:`._flow`: the reconciler, a person's requests and the end of a flow); this base class holds
what they all read, so each of them is a mixin of it and :class:`~._flow.FlowReconciler` joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, format_time
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.maintenance import (
    FlowConditionType,
    FlowReason,
    FlowStep,
    FlowTemplate,
    MaintenanceFlowSpec,
    MaintenancePolicySpec,
)
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.client import Kind
from kokpit.operators.maintenance._faultref import ACTIVE, NODE_FAULT
from kokpit.operators.maintenance._metrics import FlowMetrics
from kokpit.runtime import (
    EventRecorder,
    ReconcileContext,
    StepReconciler,
    Store,
)
from kokpit.runtime.permit_gate import PermitGate

__all__ = ["CT", "FLOW", "NODE_FAULT", "PERSON", "POLICY", "FlowBase", "FlowCtx", "FlowOptions", "Obj", "R"]

Obj = dict[str, Any]
FLOW = Kind(GROUP, VERSION, "MaintenanceFlow", "maintenanceflows", namespaced=False)
POLICY = Kind(GROUP, VERSION, "MaintenancePolicy", "maintenancepolicies", namespaced=False)
CT = FlowConditionType
R = FlowReason
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


class FlowBase(StepReconciler[FlowCtx]):
    """The stores (informer caches; plain :class:`Store` in tests), the node driver, the options and the
    helpers every step uses."""

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

    def _close_attempt(self, ctx: FlowCtx, outcome: str, message: str) -> None:
        rep = ctx.status.get("repair")
        if not rep or rep.get("outcome"):
            return
        rep.update(outcome=outcome, finishedAt=rep.get("finishedAt") or format_time(ctx.now), message=message[:2048])
        hist: list[Obj] = ctx.status.setdefault("history", [])
        hist.append(dict(rep))
        del hist[:-64]
