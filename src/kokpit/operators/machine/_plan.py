"""The plan: from the desired components and what the node reports now, the one next step.

Level-triggered on purpose: the plan is recomputed from the node's reported state on every reconcile, and
the node's report is the truth.  A step that finished before the operator died shows up as done and is
skipped; a step that was started shows up in flight and is waited for; a step never started is still
missing and gets started.  So a restart can neither repeat nor lose a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kokpit.nodes import ComponentSpec, ComponentState, InstallState, NodeState

__all__ = ["IN_FLIGHT", "Step", "StepKind", "converged", "next_step"]

IN_FLIGHT = frozenset({InstallState.INSTALLING, InstallState.UPGRADING, InstallState.UNINSTALLING})


class StepKind(StrEnum):
    INSTALL = "Install"
    UPGRADE = "Upgrade"
    UNINSTALL = "Uninstall"
    WAIT = "Wait"  # an action is in flight on the node
    BLOCKED = "Blocked"  # the node cannot be acted on (unreachable)
    DONE = "Done"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    component: str = ""
    spec: ComponentSpec | None = None  # for install/upgrade
    current: ComponentState | None = None
    retry: bool = False  # the node reports the previous attempt Failed
    message: str = ""


def converged(cur: ComponentState | None, want: ComponentSpec) -> bool:
    """Installed at the wanted version, nothing else in flight."""
    return (cur is not None and cur.install_state == InstallState.INSTALLED and cur.version == want.version
            and (not cur.target_version or cur.target_version == want.version))


def next_step(desired: list[ComponentSpec], node: NodeState, removal: list[str]) -> Step:
    """The next action for a node. ``desired`` is in dependency order; ``removal`` lists the components
    to uninstall, dependents first."""
    if not node.reachable:
        return Step(StepKind.BLOCKED, message=node.message or "node unreachable")
    for name, flying in sorted(node.components.items()):
        if flying.install_state in IN_FLIGHT:
            target = flying.target_version or flying.version
            return Step(StepKind.WAIT, name, current=flying,
                        message=f"{flying.install_state} {name} {target}".strip())
    for want in desired:
        cur = node.components.get(want.name)
        if converged(cur, want):
            continue
        failed = cur is not None and cur.install_state == InstallState.FAILED
        upgrade = (cur is not None and bool(cur.version) and cur.version != want.version
                   and cur.install_state != InstallState.PENDING)
        if failed and cur is not None and cur.target_version and cur.target_version != want.version:
            upgrade = True  # a failed attempt at a version we no longer want: start over with ours
        kind = StepKind.UPGRADE if upgrade else StepKind.INSTALL
        return Step(kind, want.name, spec=want, current=cur, retry=failed)
    wanted = {d.name for d in desired}
    for name in removal:
        have = node.components.get(name)
        if have is not None and name not in wanted:
            return Step(StepKind.UNINSTALL, name, current=have, retry=have.install_state == InstallState.FAILED)
    return Step(StepKind.DONE)
