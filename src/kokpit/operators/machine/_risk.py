"""The machine operator asks the risk center before it changes a component that already runs.

Upgrades, rollbacks (an upgrade to an older version) and uninstalls of a component on a node take a
``component-upgrade`` Permit for that node first (first installs on a new node disrupt nothing and do not
ask).  The permit is named after the change (``<component>=<version>``, or ``=-`` for an uninstall), so every
reconcile finds the same one; while it is Queued or Denied the step waits and the Machine's ``RiskPermitted``
condition says why, naming the policies.  When the node reports the change done, the permit is released with
the post-check's outcome: installed, running and healthy is Succeeded, a failed install or a failing health
check is Failed (and counts for the policies' failure breakers).
"""

from __future__ import annotations

from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.nodes import InstallState, NodeState
from kokpit.operators.machine._plan import Step, StepKind
from kokpit.operators.machine._status import MachineCtx
from kokpit.runtime.permits import PermitGate

__all__ = ["admit_step", "settle"]


def _intent(step: Step) -> str:
    if step.kind == StepKind.UPGRADE and step.spec is not None:
        return f"{step.component}={step.spec.version}"
    return f"{step.component}=-"


async def admit_step(gate: PermitGate, ctx: MachineCtx, step: Step) -> float | None:
    """None when the step may start now; else seconds until the operator should look again."""
    if step.kind == StepKind.INSTALL:
        return None
    adm = await gate.admit(OperationType.COMPONENT_UPGRADE, [ctx.node], _intent(step),
                           reason=f"{step.kind.lower()} {step.component} on node {ctx.node}")
    if adm.granted:
        return None
    ctx.risk = (adm.reason, adm.message)
    return adm.retry_after


async def settle(gate: PermitGate, ctx: MachineCtx, state: NodeState) -> None:
    """Release the node's granted permits whose change the node reports finished, with its outcome."""
    for view in gate.open_for(ctx.node):
        if not view.granted:
            continue
        comp, _, version = PermitGate.intent(view).partition("=")
        cur = state.components.get(comp)
        if version == "-":
            if cur is None:
                await gate.finish(view, PermitOutcome.SUCCEEDED, f"{comp} uninstalled from {ctx.node}")
            continue
        if cur is None or (cur.target_version or cur.version) != version:
            continue
        if cur.install_state == InstallState.FAILED:
            await gate.finish(view, PermitOutcome.FAILED, f"{comp} {version} failed on {ctx.node}: {cur.message}")
            continue
        if cur.install_state != InstallState.INSTALLED or cur.version != version:
            continue
        h = ctx.health(comp)
        if h is None or h.version != version:
            continue  # the post-check has not run yet
        check = {"passed": h.healthy, "results": [{"target": ctx.node, "check": f"component/{comp}",
                                                    "passed": h.healthy, "message": h.message}]}
        if h.healthy:
            await gate.finish(view, PermitOutcome.SUCCEEDED, f"{comp} {version} healthy on {ctx.node}", check)
        else:
            await gate.finish(view, PermitOutcome.FAILED, f"post-check of {comp} {version} on {ctx.node} failed: "
                              f"{h.message}", check)
