"""What one Machine reconcile found, and the status derived from it: conditions, component rows, phase.

The steps of :class:`kokpit.operators.machine.operator.MachineReconciler` fill a :class:`MachineCtx`; the
functions here turn it into ``ComponentsReady``, ``NodeHealthy``, ``Ready``, the component rows and the phase.
They decide nothing on the node; they only say what is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit.api import MachineConditionType, MachineReason, MachineSpec
from kokpit.api.machine import ComponentStatus
from kokpit.api.machine import InstallState as ApiInstallState
from kokpit.api.machine import RunState as ApiRunState
from kokpit.nodes import InstallState, NodeState, RunState
from kokpit.operators.machine._plan import IN_FLIGHT, converged
from kokpit.operators.machine._resolve import Resolution
from kokpit.runtime import (
    INVALID_SPEC,
    Failure,
    FailureMemory,
    PhaseRule,
    ReconcileContext,
    derive_phase,
    find_condition,
)

__all__ = ["Health", "MachineCtx", "components_ready", "finish_status", "machine_phase", "node_healthy",
           "node_ready"]

Obj = dict[str, Any]
CT = MachineConditionType
R = MachineReason


@dataclass
class Health:
    """The last health check of one component version: healthy ones are cached in memory (a restart re-reads
    ``healthCheckedVersion`` from status); failing ones come from the failure memory in status."""

    version: str
    healthy: bool
    message: str
    checked: float  # monotonic
    failures: int = 0
    retry_at: float = 0.0  # monotonic


@dataclass
class MachineCtx(ReconcileContext):
    """One reconcile of one Machine."""

    spec: MachineSpec | None = None
    node: str = ""
    res: Resolution | None = None
    state: NodeState | None = None
    memory: FailureMemory | None = None  # status.failures: install/<component>, health/<component>
    health: Callable[[str], Health | None] = lambda _: None  # component -> its last health check
    blocked: str = ""  # a pre-change health check failed
    driver_error: str = ""
    failures: dict[str, Failure] = field(default_factory=dict)  # component -> its failure record, if failing
    actions: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) of steps started
    ready: tuple[bool, str, str] = (False, R.NODE_NOT_READY, "")
    risk: tuple[str, str] | None = None  # (RiskQueued | RiskDenied | RiskPending, why) while a change waits
    may_cordon: bool = True  # False while the risk center has not granted the cordon of a NotReady node
    change_waits: bool = False  # a component change waits for its permit (the node runs what it ran)


def node_ready(node: Obj | None) -> tuple[bool, str, str]:
    if node is None:
        return False, R.NODE_NOT_FOUND, "the Node does not exist"
    c = find_condition((node.get("status") or {}).get("conditions"), "Ready")
    if c is None:
        return False, R.NODE_NOT_READY, "the Node has no Ready condition yet"
    if c.get("status") != "True":
        return False, R.NODE_NOT_READY, f"Node Ready is {c.get('status')}: {c.get('reason', '')} " \
                                        f"{c.get('message', '')}".strip()
    return True, R.READY, ""


def components_ready(ctx: MachineCtx) -> bool:
    """ComponentsReady: every wanted component installed at its version, running and healthy."""
    def setc(ok: bool | str, reason: str, msg: str) -> bool:
        ctx.condition(CT.COMPONENTS_READY, ok, reason, msg)
        return ok is True

    res, state, node = ctx.res, ctx.state, ctx.node
    assert res is not None
    if not res.ok:
        return setc(False, res.reason, res.message)
    if state is None or not state.reachable:
        # no report: keep the last known answer rather than cordon a fleet because the driver blinked
        # (a host that is really down shows in its Node's Ready condition, which Ready checks too)
        last = find_condition(ctx.conditions, CT.COMPONENTS_READY)
        if last is not None and last.get("reason") not in (R.DRIVER_ERROR, R.NODE_UNREACHABLE):
            return last.get("status") == "True"
        if state is None:
            return setc("Unknown", R.DRIVER_ERROR, f"cannot read node {node} through the driver: "
                                                   f"{ctx.driver_error}")
        return setc("Unknown", R.NODE_UNREACHABLE, f"node {node} is unreachable: {state.message}".strip())
    comps = state.components
    failed = [c for c in comps.values() if c.install_state == InstallState.FAILED]
    if failed:
        c = sorted(failed, key=lambda x: x.name)[0]
        f = ctx.failures.get(c.name)
        extra = ""
        if f is not None:
            extra = f" (attempt {f.count}; next retry in {f.retry_in(ctx.now):.0f}s)"
        return setc(False, R.INSTALL_FAILED,
                    f"{c.name} {c.target_version or c.version} failed: {c.message or 'no message'}{extra}")
    flying = sorted((c for c in comps.values() if c.install_state in IN_FLIGHT), key=lambda x: x.name)
    if flying:
        c = flying[0]
        reason = {InstallState.INSTALLING: R.INSTALLING, InstallState.UPGRADING: R.UPGRADING,
                  InstallState.UNINSTALLING: R.UNINSTALLING}[c.install_state]
        target = c.target_version or c.version
        if c.install_state == InstallState.UPGRADING and c.version and c.version != target:
            what = f"{c.version} → {target}"
        else:
            what = target
        return setc(False, reason, f"{c.install_state.lower()} {c.name} {what}")
    if ctx.blocked:
        return setc(False, R.HEALTH_CHECK_FAILED, ctx.blocked)
    pending: list[str] = []
    for want in res.components:
        cur = comps.get(want.name)
        if not converged(cur, want):
            pending.append(f"{want.name} {want.version}")
            continue
        assert cur is not None
        h = ctx.health(want.name)
        if h is not None and not h.healthy:
            return setc(False, R.HEALTH_CHECK_FAILED,
                        f"{want.name} {want.version} failed its health check: {h.message}")
        if cur.run_state != RunState.RUNNING:
            return setc(False, R.COMPONENT_NOT_RUNNING, f"{want.name} {want.version} is installed but "
                                                        f"{cur.run_state}: {cur.message}".rstrip(": "))
    if pending:
        verb = R.UPGRADING if any(comps.get(p.split()[0]) for p in pending) else R.INSTALLING
        return setc(False, verb, f"{len(pending)} of {len(res.components)} components to do: "
                                 f"{', '.join(pending)}")
    extra_installed = sorted(set(comps) - {c.name for c in res.components})
    if extra_installed:
        return setc(False, R.UNINSTALLING, f"to uninstall: {', '.join(extra_installed)}")
    return setc(True, R.ALL_COMPONENTS_READY, f"{len(res.components)} components installed, running and healthy")


def node_healthy(ctx: MachineCtx) -> bool | None:
    """NodeHealthy: True/False, or None (Unknown) when the driver has no report: that alone does not cordon."""
    def setc(ok: bool | str, reason: str, msg: str) -> bool:
        ctx.condition(CT.NODE_HEALTHY, ok, reason, msg)
        return ok is True

    state, node, res = ctx.state, ctx.node, ctx.res
    assert res is not None
    if state is None or ctx.driver_error:
        setc("Unknown", R.DRIVER_ERROR, f"node driver: {ctx.driver_error}")
        return None
    if not state.reachable:
        setc("Unknown", R.NODE_UNREACHABLE, f"node {node} is unreachable: {state.message}".strip())
        return None
    wanted = {c.name: c for c in res.components}
    for name, cur in sorted(state.components.items()):
        want = wanted.get(name)
        if want is None or not converged(cur, want):
            continue
        if cur.run_state != RunState.RUNNING:
            return setc(False, R.COMPONENT_NOT_RUNNING, f"{name} is {cur.run_state}")
        h = ctx.health(name)
        if h is not None and not h.healthy:
            return setc(False, R.HEALTH_CHECK_FAILED, f"{name} failed its health check: {h.message}")
    if ctx.blocked:
        return setc(False, R.HEALTH_CHECK_FAILED, ctx.blocked)
    return setc(True, R.NODE_HEALTHY, "node reachable and its installed components healthy")


def _component_rows(ctx: MachineCtx, res: Resolution | None) -> list[Obj]:
    rows: list[Obj] = []
    comps = ctx.state.components if ctx.state is not None else {}
    seen: set[str] = set()
    for want in res.components if res is not None else []:
        seen.add(want.name)
        cur = comps.get(want.name)
        if cur is None:
            row = ComponentStatus(name=want.name, version=want.version, package_version=want.source,
                                  message="waiting to be installed")
        else:
            msg = cur.message
            h = ctx.health(want.name)
            if h is not None and not h.healthy and h.version == cur.version:
                msg = f"health check failed: {h.message}"
            elif cur.version != want.version and cur.install_state not in IN_FLIGHT:
                msg = msg or f"to be upgraded to {want.version}"
            row = ComponentStatus(name=cur.name, version=cur.version or want.version,
                                  install_state=ApiInstallState(cur.install_state.value),
                                  run_state=ApiRunState(cur.run_state.value),
                                  message=msg, last_transition_time=cur.last_transition or None,
                                  package_version=want.source,
                                  health_checked_version=h.version if h is not None and h.healthy
                                  and h.version == cur.version else None)
        rows.append(row.to_wire())
    for name, cur in sorted(comps.items()):
        if name in seen:
            continue
        rows.append(ComponentStatus(name=cur.name, version=cur.version,
                                    install_state=ApiInstallState(cur.install_state.value),
                                    run_state=ApiRunState(cur.run_state.value),
                                    message=cur.message or "no longer listed; to be uninstalled",
                                    last_transition_time=cur.last_transition or None).to_wire())
    return rows


def finish_status(ctx: MachineCtx) -> None:
    """The component rows and ``componentsReady`` (ready/total)."""
    res, status = ctx.res, ctx.status
    assert res is not None
    status["components"] = _component_rows(ctx, res if res.ok else None)
    ok = sum(1 for r in status["components"]
             if r.get("installState") == "Installed" and r.get("runState") == "Running"
             and not str(r.get("message", "")).startswith("health check failed")
             and any(c.name == r["name"] and c.version == r.get("version") for c in res.components))
    status["componentsReady"] = f"{ok}/{len(res.components)}"


_INVALID = (R.MISSING_PACKAGE_VERSION, R.DUPLICATE_COMPONENT, R.DEPENDENCY_CYCLE, R.MISSING_DEPENDENCY,
            R.INVALID_PACKAGE_VERSION, INVALID_SPEC)
PHASES = (
    PhaseRule("Ready", CT.READY, statuses=("True",)),
    PhaseRule("Pending", CT.COMPONENTS_READY, missing=True),
    PhaseRule("Failed", CT.COMPONENTS_READY, reasons=(R.INSTALL_FAILED,)),
    PhaseRule("Installing", CT.COMPONENTS_READY, reasons=(R.INSTALLING,)),
    PhaseRule("Upgrading", CT.COMPONENTS_READY, reasons=(R.UPGRADING,)),
    PhaseRule("Uninstalling", CT.COMPONENTS_READY, reasons=(R.UNINSTALLING,)),
    PhaseRule("Invalid", CT.COMPONENTS_READY, reasons=_INVALID),
)


def machine_phase(conditions: list[Obj], cordoned_by_person: bool) -> str:
    """The phase, for people only, derived last from the conditions (a Ready Machine a person cordoned
    shows as Cordoned)."""
    phase = derive_phase(conditions, PHASES, "NotReady")
    return "Cordoned" if phase == "Ready" and cordoned_by_person else phase
