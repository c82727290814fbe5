"""The machine operator asks the risk center before it changes a component that already runs.

Upgrades, rollbacks (an upgrade to an older version) and uninstalls of a component on a node take a
``component-upgrade`` Permit for that node first (first installs on a new node disrupt nothing and do not
ask; while it waits, the node is not cordoned for the change it has not started: it runs what it ran).  The
permit is shared: the asks of concurrent reconciles for the same change go out as one partial Permit
(:class:`~kokpit.runtime.permit_gate.PermitGate` ``coalesce``), and each reconcile finds its node in it by
target and the change in its intent (``<component>=<version>``, or ``=-`` for an uninstall).  While it is
Queued or Denied the step waits and the Machine's ``RiskPermitted`` condition says why, naming the policies.
When the node reports the change done, the node's part of the permit is released with the post-check's
outcome (``status.targetOutcomes``): installed, running and healthy is Succeeded, a failed install or a
failing health check is Failed (and counts for the policies' failure breakers); the risk center frees that
node's budget at once.

Cordons of its own (a Machine that was Ready and is not) take a ``node-isolate`` Permit first (a person's
``spec.unschedulable`` does not ask: that is the person's decision; nor does holding a new node that never
was Ready unschedulable until it reaches its final state, nor the cordon of a node that is out for a granted
component upgrade: that permit covers it).  While it is Queued or Denied the Node
stays schedulable as it is and ``RiskPermitted`` says why; the permit is released Succeeded as soon as the
cordon is on (from then on the cordoned node counts against ``maxUnavailable`` by observation), and Aborted
when the node recovers before it was granted.
"""

from __future__ import annotations

from kokpit.api import MachineConditionType, MachineReason
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.nodes import InstallState, NodeState
from kokpit.operators.machine._plan import IN_FLIGHT, Step, StepKind
from kokpit.operators.machine._status import MachineCtx
from kokpit.runtime import find_condition
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permits import PermitClient, PermitView

__all__ = ["CORDON_INTENT", "admit_cordon", "admit_step", "cordoned", "machine_gate", "settle"]

CORDON_INTENT = "cordon"


def machine_gate(permits: PermitClient, *, poll: float = 5.0) -> PermitGate:
    """The machine operator's gate to the risk center: component upgrades asked per node share Permits."""
    return PermitGate(permits, poll=poll, coalesce=(OperationType.COMPONENT_UPGRADE,))


def _isolations(gate: PermitGate, node: str) -> list[PermitView]:
    return [v for v in gate.open_for(node)
            if (v.obj.get("spec") or {}).get("operation") == OperationType.NODE_ISOLATE.value]


def _intent(step: Step) -> str:
    if step.kind == StepKind.UPGRADE and step.spec is not None:
        return f"{step.component}={step.spec.version}"
    return f"{step.component}=-"


async def admit_step(gate: PermitGate, ctx: MachineCtx, step: Step) -> float | None:
    """None when the step may start now; else seconds until the operator should look again."""
    if step.kind == StepKind.INSTALL:
        return None
    # the reason names no node: the asks of one change on many nodes share Permits (PermitGate coalesce)
    adm = await gate.admit(OperationType.COMPONENT_UPGRADE, [ctx.node], _intent(step),
                           reason=f"{step.kind.lower()} {_intent(step)}")
    if adm.granted:
        return None
    ctx.risk = (adm.reason, adm.message)
    ctx.change_waits = True
    return adm.retry_after


async def admit_cordon(gate: PermitGate, ctx: MachineCtx, *, want_cordon: bool, person: bool,
                       cordoned_now: bool, was_ready: bool) -> bool:
    """Whether the operator may cordon the Node now (True also when there is nothing to ask).

    Only a node in service is isolated: one whose Machine was Ready (or whose isolation was already asked
    for).  A new node that never was Ready is held unschedulable until it reaches its final state, as the
    seed asks; that takes nothing out of service and asks nothing."""
    await gate.permits.synced()  # the open permits are the memory of an isolation asked before a restart
    if want_cordon and not person and ctx.change_waits and _only_pending(ctx):
        return False  # the change waits for its permit: the node runs what it ran, healthy; it stays as it is
    if not want_cordon or person:
        for view in _isolations(gate, ctx.node):  # recovered (or a person decides) before the cordon
            await gate.finish(view, PermitOutcome.ABORTED, f"node {ctx.node} no longer needs isolating")
        return True
    if cordoned_now:
        await cordoned(gate, ctx)  # a cordon made before a restart let go of its permit
        return True
    if not was_ready and not _isolations(gate, ctx.node):
        return True
    if any(v.grants(ctx.node) for v in gate.open_for(ctx.node)
           if (v.obj.get("spec") or {}).get("operation") == OperationType.COMPONENT_UPGRADE.value):
        return True  # the node is out for a change the risk center granted: the cordon is part of it
    adm = await gate.admit(OperationType.NODE_ISOLATE, [ctx.node], CORDON_INTENT,
                           reason=f"cordon node {ctx.node}: Machine not ready ({ctx.ready[1]})")
    if adm.granted:
        return True
    if ctx.risk is None:
        ctx.risk = (adm.reason, f"not cordoning node {ctx.node}: {adm.message}")
    return False


def _only_pending(ctx: MachineCtx) -> bool:
    """Not Ready only because a declared change has not started (nothing failed, nothing in flight)."""
    if ctx.ready[1] != MachineReason.COMPONENTS_NOT_READY:
        return False
    c = find_condition(ctx.conditions, MachineConditionType.COMPONENTS_READY) or {}
    return c.get("reason") in (MachineReason.UPGRADING, MachineReason.UNINSTALLING) and \
        not any(x.install_state in IN_FLIGHT for x in (ctx.state.components.values() if ctx.state else ()))


async def cordoned(gate: PermitGate, ctx: MachineCtx) -> None:
    """The cordon is on: the isolation is done (its effect counts as a cordoned node from now on)."""
    for view in _isolations(gate, ctx.node):
        if view.granted:
            await gate.finish(view, PermitOutcome.SUCCEEDED, f"node {ctx.node} cordoned")


async def settle(gate: PermitGate, ctx: MachineCtx, state: NodeState) -> None:
    """Release the node's granted permits whose change the node reports finished, with its outcome."""
    for view in gate.open_for(ctx.node):
        if not view.grants(ctx.node):
            continue
        comp, _, version = PermitGate.intent(view).partition("=")
        cur = state.components.get(comp)
        if version == "-":
            if cur is None:
                await gate.finish(view, PermitOutcome.SUCCEEDED, f"{comp} uninstalled from {ctx.node}",
                                  target=ctx.node)
            continue
        if cur is None or (cur.target_version or cur.version) != version:
            continue
        if cur.install_state == InstallState.FAILED:
            await gate.finish(view, PermitOutcome.FAILED, f"{comp} {version} failed on {ctx.node}: {cur.message}",
                              target=ctx.node)
            continue
        if cur.install_state != InstallState.INSTALLED or cur.version != version:
            continue
        h = ctx.health(comp)
        if h is None or h.version != version:
            continue  # the post-check has not run yet
        check = {"passed": h.healthy, "results": [{"target": ctx.node, "check": f"component/{comp}",
                                                    "passed": h.healthy, "message": h.message}]}
        if h.healthy:
            await gate.finish(view, PermitOutcome.SUCCEEDED, f"{comp} {version} healthy on {ctx.node}", check,
                              target=ctx.node)
        else:
            await gate.finish(view, PermitOutcome.FAILED, f"post-check of {comp} {version} on {ctx.node} failed: "
                              f"{h.message}", check, target=ctx.node)
