"""The machine operator: holds every worker node at the final state its Machine declares.

One level-triggered reconcile per Machine reads only informer caches (Machine, MachinePackageVersion, Node,
Condition ConfigMaps) and the poller's cached node report, takes at most one step on the node through the
node driver, and writes the Machine's status once (only what changed) plus the Node's cordon when it must
flip.  Decisions are on conditions; ``phase`` is derived last, for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock, RealClock
from kokpit.api import MachineConditionType, MachineReason, MachineSpec
from kokpit.api.machine import GROUP, VERSION, ComponentStatus
from kokpit.api.machine import InstallState as ApiInstallState
from kokpit.api.machine import RunState as ApiRunState
from kokpit.client import (
    CONFIGMAP,
    NODE,
    AlreadyExistsError,
    ApiError,
    CanCreate,
    CanGet,
    CanPatch,
    ConflictError,
    Kind,
    TransportError,
)
from kokpit.nodes import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    InstallState,
    NodeDriver,
    NodeState,
    RunState,
)
from kokpit.operators.machine._plan import IN_FLIGHT, Step, StepKind, converged, next_step
from kokpit.operators.machine._poller import NodeStatePoller
from kokpit.operators.machine._reports import NODE_LABEL, OWN_TYPES, evaluate_gates, merge_reports
from kokpit.operators.machine._resolve import Resolution, removal_order, resolve
from kokpit.runtime import (
    Controller,
    EventRecorder,
    Handlers,
    Manager,
    PatchHelper,
    Request,
    Result,
    Store,
    field_indexer,
    find_condition,
    reconcile_view,
    remove_condition,
    set_object_condition,
)
from kokpit.runtime.informer import strip_managed_fields

__all__ = [
    "CORDON_ANNOTATION",
    "MACHINE",
    "MPV",
    "MachineOperator",
    "MachineReconciler",
    "OperatorOptions",
]

log = logging.getLogger("kokpit.operators.machine")

Obj = dict[str, Any]

MACHINE = Kind(GROUP, VERSION, "Machine", "machines", namespaced=False)
MPV = Kind(GROUP, VERSION, "MachinePackageVersion", "machinepackageversions", namespaced=False)
CORDON_ANNOTATION = "kokpit.io/cordoned-by"
CORDON_OWNER = "machine-operator"
CREATED_BY_LABEL = "kokpit.io/created-by"
CT = MachineConditionType
R = MachineReason


@dataclass
class OperatorOptions:
    """Tunables; the defaults suit a real fleet, tests shorten the intervals."""

    create_machines_for_nodes: bool = False
    workers: int = 64  # reconciles wait on the network, not the CPU: many run at once
    fast_poll: float = 0.5  # nodes with work in flight
    slow_poll: float = 10.0  # every node
    batch_size: int = 1000  # nodes per driver.states call
    retry_base: float = 2.0  # first retry after a failure
    retry_cap: float = 300.0
    health_ttl: float = 30.0  # a dependency's health check is re-run before a change when older than this
    max_steps_per_reconcile: int = 16  # steps that complete at once are chained within one reconcile
    background_events: bool = True  # record Events off the reconcile path (tests turn it off)
    event_concurrency: int = 4  # Event writes in flight at once
    progress_requeue: float = 30.0  # safety net while an action is in flight (the poller wakes us first)


class OperatorClient(CanGet, CanCreate, CanPatch, Protocol):
    """What the reconcile needs of :class:`kokpit.client.Client` (a fake in unit tests)."""


# ------------------------------------------------------------------------------------------ indexes
def _machine_node(obj: Obj) -> list[str]:
    n = (obj.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


def _cm_node(obj: Obj) -> list[str]:
    n = ((obj.get("metadata") or {}).get("labels") or {}).get(NODE_LABEL)
    return [str(n)] if n else []


INDEXERS_MACHINE = {"node": _machine_node, "mpv": field_indexer("spec.packages")}
INDEXERS_MPV = {"component": field_indexer("spec.component")}
INDEXERS_CM = {"node": _cm_node}


@dataclass
class _Health:
    version: str
    healthy: bool
    message: str
    checked: float
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class _Failure:
    signature: tuple[str, ...]
    count: int
    next_retry: float
    message: str


@dataclass
class _Progress:
    """What the planning part of a reconcile found and did."""

    step: Step | None = None
    requeue: float | None = None
    blocked: str = ""  # a pre-change health check failed
    started: bool = False
    driver_error: str = ""
    failures: dict[str, _Failure] = field(default_factory=dict)
    actions: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) of steps started


def _node_ready(node: Obj | None) -> tuple[bool, str, str]:
    if node is None:
        return False, R.NODE_NOT_FOUND, "the Node does not exist"
    c = find_condition((node.get("status") or {}).get("conditions"), "Ready")
    if c is None:
        return False, R.NODE_NOT_READY, "the Node has no Ready condition yet"
    if c.get("status") != "True":
        return False, R.NODE_NOT_READY, f"Node Ready is {c.get('status')}: {c.get('reason', '')} " \
                                        f"{c.get('message', '')}".strip()
    return True, R.READY, ""


def _has_health_check(spec: ComponentSpec) -> bool:
    return str(spec.health_check.get("type") or "none") != "none"


class MachineReconciler:
    """The reconcile of one Machine; stores are informer caches (plain :class:`Store` in unit tests)."""

    def __init__(
        self,
        client: OperatorClient,
        driver: NodeDriver,
        *,
        machines: Store,
        mpvs: Store,
        nodes: Store,
        configmaps: Store,
        poller: NodeStatePoller,
        recorder: EventRecorder,
        options: OperatorOptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.driver = driver
        self.machines = machines
        self.mpvs = mpvs
        self.nodes = nodes
        self.configmaps = configmaps
        self.poller = poller
        self.recorder = recorder
        self.opts = options or OperatorOptions()
        self.clock: Clock = clock or RealClock()
        self._backoff = ExponentialBackoff(base=self.opts.retry_base, cap=self.opts.retry_cap)
        self._health: dict[tuple[str, str], _Health] = {}
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._remembered: dict[str, set[str]] = {}  # node -> components with health/failure memory
        self._event_tasks: set[asyncio.Task[Obj | None]] = set()
        self._event_slots: asyncio.Semaphore | None = None
        self._resolved: dict[tuple[tuple[str, str], ...], Resolution] = {}
        self._node_of: dict[str, str] = {}  # machine name -> node name, to untrack deleted Machines
        self.actions: list[tuple[str, str, str, str]] = []  # (node, action, component, version) started

    # ------------------------------------------------------------------------------ reconcile
    async def reconcile(self, req: Request) -> Result | None:
        raw = self.machines.get_by_name(req.name)
        if raw is None:
            node = self._node_of.pop(req.name, None)
            if node is not None and not self.machines.by_index("node", node):
                self.poller.untrack(node)
                for comp in self._remembered.pop(node, ()):  # a deleted Machine's memory goes with it
                    self._health.pop((node, comp), None)
                    self._failures.pop((node, comp), None)
            return None
        helper = PatchHelper(self.client, MACHINE, reconcile_view(raw, MACHINE))
        obj = helper.obj
        now = self.clock.now()
        try:
            spec = MachineSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            first = e.errors()[0]
            where = "spec." + ".".join(str(x) for x in first["loc"])
            set_object_condition(obj, CT.COMPONENTS_READY, False, "InvalidSpec", f"{where}: {first['msg']}",
                                 now=now)
            self._finish_status(obj, ready=False)
            await helper.patch()
            return None
        node_name = spec.node_name
        self._node_of[req.name] = node_name
        res = self._resolve(spec.packages)
        prog = _Progress()
        state: NodeState | None = None
        try:
            state = await self.poller.get(node_name)
        except DriverError as e:
            prog.driver_error = str(e)
            prog.requeue = self._backoff.delay(0)
        if state is not None and res.ok:
            try:
                prog = await self._advance(obj, node_name, res, state)
            except DriverError as e:
                prog.driver_error = str(e)
                prog.requeue = self._backoff.delay(1) if e.retryable else self.opts.slow_poll
            state = self.poller.states.get(node_name, state)

        conds_ok = self._components_conditions(obj, res, state, prog, node_name, now)
        healthy = self._node_healthy_condition(obj, res, state, prog, node_name, now)
        gates_ok = self._sync_gates(obj, spec, node_name, now)
        node_obj = self.nodes.get_by_name(node_name)
        node_ok, node_reason, node_msg = _node_ready(node_obj)
        if not node_ok:
            ready = (False, node_reason, node_msg)
        elif not conds_ok:
            ready = (False, R.COMPONENTS_NOT_READY, "ComponentsReady is not True")
        elif healthy is False:
            ready = (False, R.NODE_NOT_HEALTHY, "NodeHealthy is False")
        elif not gates_ok:
            ready = (False, R.GATES_NOT_MET, "ReadinessGatesMet is not True")
        else:
            ready = (True, R.READY, "node Ready, components ready, readiness gates True")
        set_object_condition(obj, CT.READY, ready[0], ready[1], ready[2], now=now)
        self._finish_status(obj, ready=ready[0], res=res, state=state, prog=prog, cordoned=spec.unschedulable)
        await helper.patch()
        await self._sync_cordon(obj, node_obj, want_cordon=spec.unschedulable or not ready[0],
                                person=spec.unschedulable, reason=ready[1])
        converged = conds_ok and healthy is True
        self.poller.track(node_name, active=not converged)
        if prog.requeue is not None:
            return Result(requeue_after=prog.requeue)
        return None

    def _resolve(self, packages: list[str]) -> Resolution:
        """:func:`resolve`, memoised on the packages' resourceVersions (machines of a fleet share specs)."""
        key = tuple((p, str(((self.mpvs.get_by_name(p) or {}).get("metadata") or {}).get("resourceVersion")))
                    for p in packages)
        res = self._resolved.get(key)
        if res is None:
            if len(self._resolved) > 4096:
                self._resolved.clear()
            res = self._resolved[key] = resolve(packages, self.mpvs.get_by_name)
        return res

    async def _event(self, type_: str, obj: Obj, reason: str, message: str) -> None:
        """Record an Event; in the background by default, so a reconcile never waits for one."""
        if not self.opts.background_events:
            await self.recorder.event(obj, type_, reason, message)
            return
        if len(self._event_tasks) >= 10000:  # a storm: drop rather than queue without bound (best effort)
            log.warning("dropping event %s on %s: too many pending", reason, obj["metadata"]["name"])
            return
        task = asyncio.get_running_loop().create_task(self._event_bg(obj, type_, reason, message))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _event_bg(self, obj: Obj, type_: str, reason: str, message: str) -> Obj | None:
        if self._event_slots is None:
            self._event_slots = asyncio.Semaphore(self.opts.event_concurrency)
        async with self._event_slots:  # events never crowd out the reconciles' own writes
            return await self.recorder.event(obj, type_, reason, message)

    # ------------------------------------------------------------------------------ planning
    def _removal(self, res: Resolution, state: NodeState) -> list[str]:
        wanted = {c.name for c in res.components}
        removed = sorted(n for n in state.components if n not in wanted)
        deps: dict[str, tuple[str, ...]] = {}
        for n in removed:
            ver = state.components[n].version
            for m in self.mpvs.by_index("component", n):
                s = m.get("spec") or {}
                if s.get("version") == ver:
                    deps[n] = tuple(s.get("dependsOn") or ())
                    break
        return removal_order(removed, deps)

    async def _advance(self, obj: Obj, node: str, res: Resolution, state: NodeState) -> _Progress:
        """Take steps while they finish at once (zero install latency: a whole plan in one reconcile and
        one status write); stop at the first step that is in flight, waiting, blocked or done."""
        prog = _Progress()
        actions: list[tuple[str, str]] = []
        try:
            for _ in range(max(1, self.opts.max_steps_per_reconcile)):
                prog = await self._advance_once(obj, node, res, state)
                actions += prog.actions
                if not prog.started or prog.requeue is not None:
                    break
                state = self.poller.states.get(node, state)
        finally:
            if actions:  # one Event per reconcile, however many steps it chained
                reasons = {r for r, _ in actions}
                reason = reasons.pop() if len(reasons) == 1 else "Updating"
                await self._event("Normal", obj, reason, "; ".join(m for _, m in actions))
        return prog

    async def _advance_once(self, obj: Obj, node: str, res: Resolution, state: NodeState) -> _Progress:
        prog = _Progress()
        mono = self.clock.monotonic()
        # a version that passed its post-change check before a restart is not checked again (10,000 nodes
        # would mean 10,000s of health calls); the status remembers it, and pre-change checks still run
        for row in (obj.get("status") or {}).get("components") or []:
            hv = row.get("healthCheckedVersion")
            if hv and (node, row["name"]) not in self._health:
                self._health[(node, row["name"])] = _Health(str(hv), True, "", float("-inf"))
                self._remembered.setdefault(node, set()).add(row["name"])
        # after a change: every converged component passes its health check once per version
        for want in res.components:
            cur = state.components.get(want.name)
            if cur is not None and converged(cur, want):
                await self._post_check(obj, node, want, cur, mono)
        # remember failures the node reports (each new one counted once, with a Warning Event); a retry in
        # flight keeps the count (else every retry would be attempt 1 and the backoff would never grow)
        for name, cur in state.components.items():
            if cur.install_state == InstallState.FAILED:
                prog.failures[name] = await self._note_failure(obj, node, cur, mono)
            elif cur.install_state == InstallState.INSTALLED:
                self._failures.pop((node, name), None)
        step = next_step(res.components, state, self._removal(res, state))
        prog.step = step
        if step.kind == StepKind.DONE:
            retries = [h.retry_at - mono for c in res.components
                       if (h := self._health.get((node, c.name))) is not None and not h.healthy]
            if retries:
                prog.requeue = max(0.01, min(retries))
            return prog
        if step.kind == StepKind.BLOCKED:
            prog.requeue = self.opts.slow_poll
            return prog
        if step.kind == StepKind.WAIT:
            prog.requeue = self.opts.progress_requeue
            return prog
        if step.retry:
            f = prog.failures.get(step.component)
            if f is not None and f.next_retry > mono:
                prog.requeue = f.next_retry - mono
                return prog
        if step.kind in (StepKind.INSTALL, StepKind.UPGRADE):
            assert step.spec is not None
            bad = await self._pre_check(obj, node, res, res.depends_on.get(step.component, ()), state, mono)
            if bad:
                prog.blocked = f"not {step.kind.lower()}ing {step.component} {step.spec.version}: {bad}"
                sick = [self._health[(node, d)] for d in res.depends_on.get(step.component, ())
                        if (node, d) in self._health and not self._health[(node, d)].healthy]
                prog.requeue = max(0.01, min((x.retry_at - mono for x in sick), default=self.opts.retry_base))
                return prog
            comp = await self.driver.start(node, ComponentAction.INSTALL, step.spec)
            version = step.spec.version
            verb = "Upgrading" if step.kind == StepKind.UPGRADE else "Installing"
            frm = f" from {step.current.version}" if step.current and step.current.version else ""
            msg = f"{verb.lower()} {step.component} {version}{frm} ({step.spec.source})"
        else:
            cur = step.current
            assert cur is not None
            spec = ComponentSpec(name=step.component, version=cur.version)
            comp = await self.driver.start(node, ComponentAction.UNINSTALL, spec)
            version, verb, msg = cur.version, "Uninstalling", f"uninstalling {step.component} {cur.version}"
        self.actions.append((node, str(step.kind), step.component, version))
        self._health.pop((node, step.component), None)
        self.poller.put_component(node, comp)
        prog.started = True
        # done at once (the status write wakes us) or in flight (the poller wakes us; this is a safety net)
        prog.requeue = self.opts.progress_requeue if comp.install_state in IN_FLIGHT else None
        prog.actions.append((verb, msg))
        return prog

    async def _note_failure(self, obj: Obj, node: str, cur: ComponentState, mono: float) -> _Failure:
        sig = (cur.target_version or cur.version, cur.last_transition, cur.message)
        key = (node, cur.name)
        f = self._failures.get(key)
        if f is None or f.signature != sig:
            count = (f.count if f is not None and f.signature[0] == sig[0] else 0) + 1  # per target version
            f = _Failure(sig, count, mono + self._backoff.delay(count - 1), cur.message)
            self._failures[key] = f
            self._remembered.setdefault(node, set()).add(cur.name)
            target = cur.target_version or cur.version
            await self._event("Warning", obj, "InstallFailed",
                                        f"{cur.name} {target} failed on node {node}: {cur.message or 'no message'}"
                                        f" (attempt {count}; retrying with backoff)")
        return f

    async def _run_health(self, obj: Obj, node: str, spec: ComponentSpec | None, cur: ComponentState,
                          mono: float) -> _Health:
        """The component's health check through the driver; without one configured (healthCheck.type
        none) the node's report is the check — installed and running — and no call is made."""
        comp, version = cur.name, cur.version
        prev = self._health.get((node, comp))
        if spec is not None and _has_health_check(spec):
            res = await self.driver.health(node, comp)
            healthy, message = res.healthy, res.message
        else:
            healthy = cur.run_state == RunState.RUNNING
            message = "running (no health check configured)" if healthy else f"{comp} is {cur.run_state}"
        if healthy:
            h = _Health(version, True, message, mono)
        else:
            fails = (prev.failures if prev and prev.version == version and not prev.healthy else 0) + 1
            h = _Health(version, False, message or "unhealthy", mono, fails,
                        mono + self._backoff.delay(fails - 1))
            await self._event("Warning", obj, "HealthCheckFailed", f"{comp} {version} on node {node}: {h.message}")
        self._health[(node, comp)] = h
        self._remembered.setdefault(node, set()).add(comp)
        return h

    async def _post_check(self, obj: Obj, node: str, spec: ComponentSpec, cur: ComponentState,
                          mono: float) -> None:
        h = self._health.get((node, cur.name))
        if h is not None and h.version == cur.version and (h.healthy or mono < h.retry_at):
            return
        await self._run_health(obj, node, spec, cur, mono)

    async def _pre_check(self, obj: Obj, node: str, res: Resolution, deps: tuple[str, ...], state: NodeState,
                         mono: float) -> str:
        """Dependencies must be healthy right before a change (re-checked when the last check is stale)."""
        problems: list[str] = []
        for d in deps:
            cur = state.components.get(d)
            if cur is None:
                problems.append(f"dependency {d} is not installed")
                continue
            if cur.run_state != RunState.RUNNING:
                problems.append(f"dependency {d} is {cur.run_state}")
                continue
            h = self._health.get((node, d))
            if h is None or h.version != cur.version or (h.healthy and mono - h.checked > self.opts.health_ttl) \
                    or (not h.healthy and mono >= h.retry_at):
                h = await self._run_health(obj, node, res.spec(d), cur, mono)
            if not h.healthy:
                problems.append(f"dependency {d} failed its health check: {h.message}")
        return "; ".join(problems)

    # ------------------------------------------------------------------------------ conditions
    def _components_conditions(self, obj: Obj, res: Resolution, state: NodeState | None, prog: _Progress,
                               node: str, now: Any) -> bool:
        def setc(ok: bool | str, reason: str, msg: str) -> bool:
            set_object_condition(obj, CT.COMPONENTS_READY, ok, reason, msg, now=now)
            return ok is True

        if not res.ok:
            return setc(False, res.reason, res.message)
        if state is None or not state.reachable:
            # no report: keep the last known answer rather than cordon a fleet because the driver blinked
            # (a host that is really down shows in its Node's Ready condition, which Ready checks too)
            last = find_condition((obj.get("status") or {}).get("conditions"), CT.COMPONENTS_READY)
            if last is not None and last.get("reason") not in (R.DRIVER_ERROR, R.NODE_UNREACHABLE):
                return last.get("status") == "True"
            if state is None:
                return setc("Unknown", R.DRIVER_ERROR, f"cannot read node {node} through the driver: "
                                                       f"{prog.driver_error}")
            return setc("Unknown", R.NODE_UNREACHABLE, f"node {node} is unreachable: {state.message}".strip())
        comps = state.components
        failed = [c for c in comps.values() if c.install_state == InstallState.FAILED]
        if failed:
            c = sorted(failed, key=lambda x: x.name)[0]
            f = prog.failures.get(c.name)
            extra = ""
            if f is not None:
                wait = max(0.0, f.next_retry - self.clock.monotonic())
                extra = f" (attempt {f.count}; next retry in {wait:.0f}s)"
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
        if prog.blocked:
            return setc(False, R.HEALTH_CHECK_FAILED, prog.blocked)
        pending: list[str] = []
        for want in res.components:
            cur = comps.get(want.name)
            if not converged(cur, want):
                pending.append(f"{want.name} {want.version}")
                continue
            assert cur is not None
            h = self._health.get((node, want.name))
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
        return setc(True, R.ALL_COMPONENTS_READY,
                    f"{len(res.components)} components installed, running and healthy")

    def _node_healthy_condition(self, obj: Obj, res: Resolution, state: NodeState | None, prog: _Progress,
                                node: str, now: Any) -> bool | None:
        """True/False, or None (Unknown) when the driver has no report: that alone does not cordon."""
        def setc(ok: bool | str, reason: str, msg: str) -> bool:
            set_object_condition(obj, CT.NODE_HEALTHY, ok, reason, msg, now=now)
            return ok is True

        if state is None or prog.driver_error:
            setc("Unknown", R.DRIVER_ERROR, f"node driver: {prog.driver_error}")
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
            h = self._health.get((node, name))
            if h is not None and not h.healthy:
                return setc(False, R.HEALTH_CHECK_FAILED, f"{name} failed its health check: {h.message}")
        if prog.blocked:
            return setc(False, R.HEALTH_CHECK_FAILED, prog.blocked)
        return setc(True, R.NODE_HEALTHY, "node reachable and its installed components healthy")

    def _sync_gates(self, obj: Obj, spec: MachineSpec, node: str, now: Any) -> bool:
        reports = merge_reports(self.configmaps.by_index("node", node))
        status = obj.setdefault("status", {})
        conds: list[Obj] = status.setdefault("conditions", [])
        for c in list(conds):
            t = str(c.get("type"))
            if t not in OWN_TYPES and t not in reports:
                remove_condition(conds, t)
        for t, r in sorted(reports.items()):
            set_object_condition(obj, t, r.status, r.reason, r.message, now=now)
            synced = find_condition(conds, t)
            assert synced is not None
            synced["source"] = r.source
        g = evaluate_gates([rg.condition_type for rg in spec.readiness_gates], reports)
        set_object_condition(obj, CT.READINESS_GATES_MET, g.met, g.reason, g.message, now=now)
        return g.met

    def _component_rows(self, res: Resolution | None, state: NodeState | None, node: str) -> list[Obj]:
        rows: list[Obj] = []
        comps = state.components if state is not None else {}
        seen: set[str] = set()
        for want in res.components if res is not None else []:
            seen.add(want.name)
            cur = comps.get(want.name)
            if cur is None:
                row = ComponentStatus(name=want.name, version=want.version, package_version=want.source,
                                      message="waiting to be installed")
            else:
                msg = cur.message
                h = self._health.get((node, want.name))
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

    def _finish_status(self, obj: Obj, *, ready: bool, res: Resolution | None = None,
                       state: NodeState | None = None, prog: _Progress | None = None,
                       cordoned: bool = False) -> None:
        status = obj.setdefault("status", {})
        node = str((obj.get("spec") or {}).get("nodeName") or "")
        if res is not None:
            status["components"] = self._component_rows(res if res.ok else None, state, node)
            ok = sum(1 for r in status["components"]
                     if r.get("installState") == "Installed" and r.get("runState") == "Running"
                     and not str(r.get("message", "")).startswith("health check failed")
                     and any(c.name == r["name"] and c.version == r.get("version") for c in res.components))
            status["componentsReady"] = f"{ok}/{len(res.components)}"
        conds = status.get("conditions") or []
        gen = (obj.get("metadata") or {}).get("generation")
        if gen is not None:
            status["observedGeneration"] = int(gen)
        # phase: for people only, derived last from the conditions
        if ready:
            phase = "Cordoned" if cordoned else "Ready"
        elif find_condition(conds, CT.COMPONENTS_READY) is None:
            phase = "Pending"
        else:
            reason = (find_condition(conds, CT.COMPONENTS_READY) or {}).get("reason")
            phase = {R.INSTALL_FAILED: "Failed", R.INSTALLING: "Installing", R.UPGRADING: "Upgrading",
                     R.UNINSTALLING: "Uninstalling", R.MISSING_PACKAGE_VERSION: "Invalid",
                     R.DUPLICATE_COMPONENT: "Invalid", R.DEPENDENCY_CYCLE: "Invalid",
                     R.MISSING_DEPENDENCY: "Invalid", R.INVALID_PACKAGE_VERSION: "Invalid",
                     "InvalidSpec": "Invalid"}.get(str(reason), "NotReady")
        status["phase"] = phase

    # ------------------------------------------------------------------------------ scheduling
    async def _sync_cordon(self, machine: Obj, node: Obj | None, *, want_cordon: bool, person: bool,
                           reason: str) -> None:
        """Flip the Node's cordon when it must, with one Event per flip.

        The cached Node can lag our own last write to it: the Machine's status write wakes the next reconcile
        before the Node's watch event arrives, and that reconcile would cordon (and record ``Cordoned``)
        again.  So the patch is conditional on the cached resourceVersion; a stale cache gets a 409 and the
        decision is taken again on the live Node."""
        if node is None:
            return
        for attempt in range(2):
            name = node["metadata"]["name"]
            unsched = bool((node.get("spec") or {}).get("unschedulable"))
            ours = ((node["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION)) == CORDON_OWNER
            if want_cordon and not unsched:
                why = "Machine spec.unschedulable is true" if person else f"Machine not ready ({reason})"
                body: Obj = {"spec": {"unschedulable": True},
                             "metadata": {"annotations": {CORDON_ANNOTATION: CORDON_OWNER}}}
                event = ("Cordoned", f"cordoned node {name}: {why}")
            elif not want_cordon and unsched and ours:
                body = {"spec": {"unschedulable": None}, "metadata": {"annotations": {CORDON_ANNOTATION: None}}}
                event = ("Uncordoned", f"node {name} is ready; made it schedulable")
            else:
                return
            rv = node["metadata"].get("resourceVersion")
            if rv:
                body["metadata"]["resourceVersion"] = rv
            try:
                await self.client.patch(NODE, name, body)
            except ConflictError:
                if attempt:
                    raise  # the Node keeps changing under us: the reconcile is retried with backoff
                node = await self.client.get(NODE, name)
                continue
            await self._event("Normal", machine, *event)
            return

    # ------------------------------------------------------------------------------ machines for nodes
    async def reconcile_node(self, req: Request) -> Result | None:
        """With --create-machines-for-nodes: a Machine for a Node that has none, adopting what it runs."""
        if not self.opts.create_machines_for_nodes:
            return None
        node = self.nodes.get_by_name(req.name)
        if node is None or self.machines.by_index("node", req.name) or self.machines.get_by_name(req.name):
            return None
        state = await self.driver.state(req.name)
        packages: list[str] = []
        for comp in sorted(state.components.values(), key=lambda c: c.name):
            match = [m for m in self.mpvs.by_index("component", comp.name)
                     if (m.get("spec") or {}).get("version") == comp.version]
            if not match:
                log.warning("not creating a Machine for node %s: it runs %s %s and no MachinePackageVersion "
                            "matches (a Machine without it would uninstall it)", req.name, comp.name,
                            comp.version)
                return Result(requeue_after=self.opts.slow_poll)
            packages.append(match[0]["metadata"]["name"])
        body = {"apiVersion": MACHINE.api_version, "kind": MACHINE.kind,
                "metadata": {"name": req.name, "labels": {CREATED_BY_LABEL: CORDON_OWNER}},
                "spec": {"nodeName": req.name, "packages": packages}}
        try:
            await self.client.create(MACHINE, body)
            log.info("created Machine %s for node %s (packages: %s)", req.name, req.name, packages)
        except AlreadyExistsError:
            pass
        return None


def slim_node(node: Obj) -> Obj:
    """A cache transform keeping what the operator reads of a Node: metadata (no managedFields), spec,
    conditions and nodeInfo; images, capacity and addresses are dropped."""
    meta = dict(node.get("metadata") or {})
    meta.pop("managedFields", None)
    status = node.get("status") or {}
    out: Obj = {"apiVersion": node.get("apiVersion", "v1"), "kind": node.get("kind", "Node"), "metadata": meta,
                "spec": node.get("spec") or {},
                "status": {k: status[k] for k in ("conditions", "nodeInfo") if k in status}}
    return out


def _node_significant(node: Obj) -> tuple[Any, ...]:
    meta = node.get("metadata") or {}
    ready = find_condition((node.get("status") or {}).get("conditions"), "Ready") or {}
    return (ready.get("status"), bool((node.get("spec") or {}).get("unschedulable")),
            (meta.get("annotations") or {}).get(CORDON_ANNOTATION), meta.get("deletionTimestamp"))


class MachineOperator:
    """Wires informers, controllers and the poller onto a :class:`Manager`; ``await op.run()``."""

    def __init__(self, manager: Manager, driver: NodeDriver, options: OperatorOptions | None = None,
                 *, clock: Clock | None = None) -> None:
        self.manager = manager
        self.driver = driver
        self.options = options or OperatorOptions()
        inf = manager.informers
        self.machine_informer = inf.informer(MACHINE)
        self.mpv_informer = inf.informer(MPV)
        self.node_informer = inf.informer(NODE)
        if self.node_informer.transform in (None, strip_managed_fields):
            self.node_informer.transform = slim_node  # 10,000 full Nodes would dominate the memory
        self.cm_informer = inf.informer(CONFIGMAP, label_selector=NODE_LABEL)
        for informer, indexers in ((self.machine_informer, INDEXERS_MACHINE), (self.mpv_informer, INDEXERS_MPV),
                                   (self.cm_informer, INDEXERS_CM)):
            for name, fn in indexers.items():
                with contextlib.suppress(ValueError):  # already added by another user of the informer
                    informer.add_indexer(name, fn)
        self.controller: Controller = manager.controller("machine", self._reconcile,
                                                         workers=self.options.workers,
                                                         needs_leader_election=False)
        self.poller = NodeStatePoller(driver, self._wake_node, fast_interval=self.options.fast_poll,
                                      slow_interval=self.options.slow_poll,
                                      batch_size=self.options.batch_size, clock=clock)
        self.recorder = EventRecorder(manager.client, "machine-operator", clock=clock)
        self.reconciler = MachineReconciler(
            manager.client, driver, machines=self.machine_informer.store, mpvs=self.mpv_informer.store,
            nodes=self.node_informer.store, configmaps=self.cm_informer.store, poller=self.poller,
            recorder=self.recorder, options=self.options, clock=clock)
        machines = self.machine_informer.store
        self.controller.for_(self.machine_informer)
        # every Machine's node is tracked from the start; its first reconcile fetches the reports of all
        # not-yet-polled nodes in one batch (NodeStatePoller.get)
        self.machine_informer.add_event_handler(Handlers(add=self._track_new))
        self.controller.watches(self.mpv_informer, lambda o: [
            Request.for_object(m) for m in machines.by_index("mpv", str(o["metadata"]["name"]))])
        self.controller.watches(self.cm_informer, lambda o: [
            Request.for_object(m) for n in _cm_node(o) for m in machines.by_index("node", n)])
        self.node_informer.add_event_handler(Handlers(
            add=lambda o: self._wake_node(o["metadata"]["name"]),
            update=lambda old, new: self._wake_node(new["metadata"]["name"])
            if _node_significant(old) != _node_significant(new) else None,
            delete=lambda o: self._wake_node(o["metadata"]["name"])))
        manager.add_runnable(self.poller.run)
        if self.options.create_machines_for_nodes:
            self.creator = manager.controller("machine-creator", self._reconcile_node, workers=1,
                                              needs_leader_election=False)
            self.creator.for_(self.node_informer)
            self.creator.watches(self.machine_informer,
                                 lambda o: [Request("", n) for n in _machine_node(o)])

    async def _reconcile(self, req: Request) -> Result | None:
        return await self.reconciler.reconcile(req)

    async def _reconcile_node(self, req: Request) -> Result | None:
        try:
            return await self.reconciler.reconcile_node(req)
        except (ApiError, TransportError, DriverError) as e:
            log.warning("machine for node %s: %s", req.name, e)
            return Result(requeue=True)

    def _track_new(self, machine: Obj) -> None:
        for node in _machine_node(machine):
            if node not in self.poller.tracked:
                # not active: nothing is in flight before its first reconcile, and fast-polling every node of
                # a backlog (10,000 Machines created at once) cost the operator and the simulator a third of
                # their CPU re-reading reports nobody was waiting for (bench/fleet.py)
                self.poller.track(node, active=False)

    def _wake_node(self, node: str) -> None:
        for m in self.machine_informer.store.by_index("node", node):
            self.controller.queue.add(Request.for_object(m))

    async def run(self) -> None:
        await self.manager.run()

    def stop(self) -> None:
        self.manager.stop()

