"""The reconcile of one Machine: holds its worker node at the final state the Machine declares.

One level-triggered reconcile per Machine (on :class:`kokpit.runtime.StepReconciler`) reads only informer
caches (Machine, MachinePackageVersion, Node, Condition ConfigMaps) and the poller's cached node report, and
reads top to bottom as its steps: the node's report is read, the packages resolve, the installed versions
pass their post-change checks, failures are remembered, and the next change is started.  Status is written
once (only what changed), the phase derived last from the conditions, then the Node's cordon flipped when it
must.  Retry counts and backoff deadlines live in ``status.failures``, so a restarted operator resumes the
same backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock
from kokpit.api import MachineConditionType, MachineReason, MachineSpec
from kokpit.api.machine import GROUP, VERSION
from kokpit.client import (
    NODE,
    AlreadyExistsError,
    CanCreate,
    CanGet,
    CanPatch,
    ConflictError,
    Kind,
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
from kokpit.operators.machine._plan import IN_FLIGHT, StepKind, converged, next_step
from kokpit.operators.machine._poller import NodeStatePoller
from kokpit.operators.machine._reports import OWN_TYPES, Untrusted, evaluate_gates, trusted_reports
from kokpit.operators.machine._resolve import Resolution, removal_order, resolve
from kokpit.operators.machine._risk import admit_cordon, admit_step, cordoned, settle
from kokpit.operators.machine._status import (
    Health,
    MachineCtx,
    components_ready,
    finish_status,
    machine_phase,
    node_healthy,
    node_ready,
)
from kokpit.runtime import (
    EventRecorder,
    FailureMemory,
    InvalidSpec,
    PatchHelper,
    Request,
    Result,
    Step,
    StepReconciler,
    StepResult,
    Store,
    act,
    done,
    find_condition,
    named_steps,
    remove_condition,
    stamp_phase,
    wait,
)
from kokpit.runtime.permit_gate import PermitGate

__all__ = [
    "CORDON_ANNOTATION",
    "CORDON_OWNER",
    "MACHINE",
    "MPV",
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
INSTALL = "install/"  # failure records: install/<component> (a failed install), health/<component> (a
HEALTH = "health/"  # failing health check of one version)


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
    risk: PermitGate | None = None  # ask the risk center before changing a running component (issue 14)


class OperatorClient(CanGet, CanCreate, CanPatch, Protocol):
    """What the reconcile needs of :class:`kokpit.client.Client` (a fake in unit tests)."""




def _has_health_check(spec: ComponentSpec) -> bool:
    return str(spec.health_check.get("type") or "none") != "none"


def _install_signature(cur: ComponentState) -> str:
    """One failed attempt: its target version, when it failed, and how (seen again: not counted again)."""
    return f"{cur.target_version or cur.version}|{cur.last_transition}|{cur.message}"


class MachineReconciler(StepReconciler[MachineCtx]):
    """The reconcile of one Machine; stores are informer caches (plain :class:`Store` in unit tests)."""

    kind = MACHINE
    spec_model = MachineSpec
    invalid_conditions = (CT.COMPONENTS_READY, CT.READY)  # never claims ready on a spec it cannot apply

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
        super().__init__(client, recorder, clock)
        self.client: OperatorClient = client
        self.driver = driver
        self.machines = machines
        self.mpvs = mpvs
        self.nodes = nodes
        self.configmaps = configmaps
        self.poller = poller
        self.opts = options or OperatorOptions()
        self._backoff = ExponentialBackoff(base=self.opts.retry_base, cap=self.opts.retry_cap)
        # a cache of passed health checks (a restart re-reads healthCheckedVersion from status and re-checks
        # what is stale); failing checks and failed installs are remembered in status.failures
        self._health: dict[tuple[str, str], Health] = {}
        self._remembered: dict[str, set[str]] = {}  # node -> components in the health cache
        self._event_tasks: set[asyncio.Task[Obj | None]] = set()
        self._event_slots: asyncio.Semaphore | None = None
        self._resolved: dict[tuple[tuple[str, str], ...], Resolution] = {}
        self._node_of: dict[str, str] = {}  # machine name -> node name, to untrack deleted Machines
        self.actions: list[tuple[str, str, str, str]] = []  # (node, action, component, version) started

    # ------------------------------------------------------------------------------ the skeleton's parts
    def get(self, req: Request) -> Obj | None:
        return self.machines.get_by_name(req.name)

    async def forget(self, req: Request) -> Result | None:
        node = self._node_of.pop(req.name, None)
        if node is not None and not self.machines.by_index("node", node):
            self.poller.untrack(node)
            for comp in self._remembered.pop(node, ()):  # a deleted Machine's cache goes with it
                self._health.pop((node, comp), None)
        return None

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> MachineCtx:
        ctx = MachineCtx(req, obj, now, mono, spec=spec)
        ctx.memory = FailureMemory(obj, self._backoff)
        if spec is not None:
            ctx.node = spec.node_name
            self._node_of[req.name] = ctx.node
            ctx.res = self._resolve(spec.packages)
        ctx.health = lambda comp: self._health_of(ctx, comp)
        return ctx

    def steps(self, ctx: MachineCtx) -> Sequence[Step[MachineCtx]]:
        return named_steps(
            self.node_report_is_read,
            self.packages_resolve,
            self.node_runs_the_declared_components,
        )

    def observe(self, ctx: MachineCtx) -> None:
        assert ctx.spec is not None
        conds_ok = components_ready(ctx)
        healthy = node_healthy(ctx)
        gates_ok = self._sync_gates(ctx)
        node_ok, node_reason, node_msg = node_ready(self.nodes.get_by_name(ctx.node))
        if not node_ok:
            ctx.ready = (False, node_reason, node_msg)
        elif not conds_ok:
            ctx.ready = (False, R.COMPONENTS_NOT_READY, "ComponentsReady is not True")
        elif healthy is False:
            ctx.ready = (False, R.NODE_NOT_HEALTHY, "NodeHealthy is False")
        elif not gates_ok:
            ctx.ready = (False, R.GATES_NOT_MET, "ReadinessGatesMet is not True")
        else:
            ctx.ready = (True, R.READY, "node Ready, components ready, readiness gates True")
        ctx.condition(CT.READY, *ctx.ready)
        finish_status(ctx)
        self._forget_stale_failures(ctx)
        if ctx.actions:  # one Event per reconcile, however many steps it chained
            reasons = {r for r, _ in ctx.actions}
            reason = reasons.pop() if len(reasons) == 1 else "Updating"
            ctx.normal(reason, "; ".join(m for _, m in ctx.actions))
        # a change that waits for its permit changes nothing on the node (it runs what it ran): polled as a
        # converged node until the grant wakes the Machine — 7,000 nodes waiting in a wave were otherwise
        # fetched every fast tick, a quarter of the operator's CPU
        waits = ctx.change_waits and not any(c.install_state in IN_FLIGHT for c in (
            ctx.state.components.values() if ctx.state is not None else ()))
        self.poller.track(ctx.node, active=not (conds_ok and healthy is True) and not waits)

    def phase(self, ctx: MachineCtx) -> str:
        assert ctx.spec is not None
        return machine_phase(ctx.conditions, ctx.spec.unschedulable)

    async def finish(self, ctx: MachineCtx, helper: PatchHelper) -> Result | None:
        """The skeleton's finish, with the risk center asked about a cordon of our own in between: the
        cordon is decided from the conditions ``observe`` derives, and its answer goes into RiskPermitted."""
        assert ctx.spec is not None
        was_ready = (find_condition(ctx.conditions, CT.READY) or {}).get("status") == "True"
        self.observe(ctx)
        if self.opts.risk is not None:
            node = self.nodes.get_by_name(ctx.node)
            ctx.may_cordon = await admit_cordon(
                self.opts.risk, ctx, want_cordon=ctx.spec.unschedulable or not ctx.ready[0],
                person=ctx.spec.unschedulable, was_ready=was_ready,
                cordoned_now=bool(((node or {}).get("spec") or {}).get("unschedulable")))
            if not ctx.may_cordon:
                ctx.requeue_after(self.opts.risk.poll)
        if ctx.risk is not None:
            ctx.condition(CT.RISK_PERMITTED, False, *ctx.risk)
        elif (find_condition(ctx.conditions, CT.RISK_PERMITTED) or {}).get("status") == "False":
            ctx.condition(CT.RISK_PERMITTED, True, "Permitted", "no change waits for the risk center")
        stamp_phase(ctx.obj, self.phase(ctx))
        await self._write(ctx, helper)
        await self.after(ctx)
        return ctx.result()

    async def after(self, ctx: MachineCtx) -> None:
        assert ctx.spec is not None
        if not ctx.may_cordon:
            return  # the risk center has not granted the cordon: the Node stays as it is
        done = await self._sync_cordon(ctx.obj, self.nodes.get_by_name(ctx.node),
                                       want_cordon=ctx.spec.unschedulable or not ctx.ready[0],
                                       person=ctx.spec.unschedulable, reason=ctx.ready[1])
        if done and self.opts.risk is not None and not ctx.spec.unschedulable:
            await cordoned(self.opts.risk, ctx)

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        await self._event(type_, obj, reason, message)

    # ------------------------------------------------------------------------------ steps
    async def node_report_is_read(self, ctx: MachineCtx) -> StepResult:
        """What the node runs, from the poller's cache (one batched driver call for nodes not polled yet)."""
        try:
            ctx.state = await self.poller.get(ctx.node)
        except DriverError as e:
            ctx.driver_error = str(e)
            return wait(R.DRIVER_ERROR, str(e), after=self._backoff.delay(0))
        return done()

    async def packages_resolve(self, ctx: MachineCtx) -> StepResult:
        """Every listed MachinePackageVersion exists, is valid, one per component, dependencies acyclic.

        A spec that does not resolve is the person's mistake, not the node's: the node is held exactly as it
        is (no cordon, no uninstall) and the Machine says what to fix (the skeleton's InvalidSpec path:
        ComponentsReady False with the reason, phase Invalid, a Warning Event)."""
        assert ctx.res is not None
        if not ctx.res.ok:
            raise InvalidSpec(ctx.res.reason, ctx.res.message)
        return done()

    async def node_runs_the_declared_components(self, ctx: MachineCtx) -> StepResult:
        """Take plan steps while they finish at once (zero install latency: a whole plan in one reconcile
        and one status write); stop at the first that is in flight, waiting, blocked or done."""
        assert ctx.res is not None and ctx.state is not None
        requeue: float | None = None
        try:
            for _ in range(max(1, self.opts.max_steps_per_reconcile)):
                started, requeue = await self._advance_once(ctx, ctx.res, ctx.state)
                if not started or requeue is not None:
                    break
                ctx.state = self.poller.states.get(ctx.node, ctx.state)
        except DriverError as e:
            ctx.driver_error = str(e)
            requeue = self._backoff.delay(1) if e.retryable else self.opts.slow_poll
        ctx.state = self.poller.states.get(ctx.node, ctx.state)
        if ctx.actions:
            return act(ctx.actions[-1][0], ctx.actions[-1][1], after=requeue)
        return done(after=requeue)

    # ------------------------------------------------------------------------------ planning
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

    async def _advance_once(self, ctx: MachineCtx, res: Resolution, state: NodeState) -> tuple[bool, float | None]:
        """One plan step: (whether an action was started, when to look again)."""
        node, mono = ctx.node, self.clock.monotonic()
        self._load_checked_versions(ctx)
        # after a change: every converged component passes its health check once per version
        for want in res.components:
            cur = state.components.get(want.name)
            if cur is not None and converged(cur, want):
                await self._post_check(ctx, want, cur, mono)
        # remember failures the node reports (each new one counted once, with a Warning Event); a retry in
        # flight keeps the count (else every retry would be attempt 1 and the backoff would never grow)
        assert ctx.memory is not None
        for name, cur in state.components.items():
            if cur.install_state == InstallState.FAILED:
                ctx.failures[name] = self._note_failure(ctx, cur)
            elif cur.install_state == InstallState.INSTALLED:
                ctx.memory.clear(INSTALL + name)
                ctx.failures.pop(name, None)
        if self.opts.risk is not None:
            await settle(self.opts.risk, ctx, state)
        step = next_step(res.components, state, self._removal(res, state))
        if step.kind == StepKind.DONE:
            retries = [h.retry_at - mono for c in res.components
                       if (h := ctx.health(c.name)) is not None and not h.healthy]
            return False, max(0.01, min(retries)) if retries else None
        if step.kind == StepKind.BLOCKED:
            return False, self.opts.slow_poll
        if step.kind == StepKind.WAIT:
            return False, self.opts.progress_requeue
        if step.retry:
            f = ctx.failures.get(step.component)
            # the backoff belongs to the version that failed: a spec that now wants another version (a
            # rollback after a failed upgrade) is tried at once, not after the failed version's backoff
            failed_version = f.signature.split("|", 1)[0] if f is not None else ""
            if f is not None and f.retry_in(ctx.now) > 0 and (step.spec is None or
                                                             failed_version == step.spec.version):
                return False, f.retry_in(ctx.now)
        if self.opts.risk is not None and (later := await admit_step(self.opts.risk, ctx, step)) is not None:
            return False, later
        if step.kind in (StepKind.INSTALL, StepKind.UPGRADE):
            assert step.spec is not None
            deps = res.depends_on.get(step.component, ())
            bad = await self._pre_check(ctx, res, deps, state, mono)
            if bad:
                ctx.blocked = f"not {step.kind.lower()}ing {step.component} {step.spec.version}: {bad}"
                sick = [h for d in deps if (h := ctx.health(d)) is not None and not h.healthy]
                return False, max(0.01, min((x.retry_at - mono for x in sick), default=self.opts.retry_base))
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
        ctx.memory.clear(HEALTH + step.component)
        self.poller.put_component(node, comp)
        ctx.actions.append((verb, msg))
        # done at once (the status write wakes us) or in flight (the poller wakes us; this is a safety net)
        return True, self.opts.progress_requeue if comp.install_state in IN_FLIGHT else None

    def _note_failure(self, ctx: MachineCtx, cur: ComponentState) -> Any:
        """The failure record of a component the node reports Failed; a new failure is counted (per target
        version) with a Warning Event, one seen before is not."""
        assert ctx.memory is not None
        key, sig = INSTALL + cur.name, _install_signature(cur)
        target = cur.target_version or cur.version
        f = ctx.memory.get(key)
        if f is None or f.signature != sig:
            f = ctx.memory.record(key, cur.message, ctx.now, signature=sig,
                                  restart=f is None or f.signature.split("|", 1)[0] != target)
            ctx.warning("InstallFailed", f"{cur.name} {target} failed on node {ctx.node}: "
                                         f"{cur.message or 'no message'} (attempt {f.count}; retrying with backoff)")
        return f

    def _forget_stale_failures(self, ctx: MachineCtx) -> None:
        """Records of components neither wanted nor on the node any more go (nothing will retry them)."""
        assert ctx.memory is not None and ctx.res is not None
        live = {c.name for c in ctx.res.components} | set(ctx.state.components if ctx.state else ())
        ctx.memory.clear_prefix(INSTALL, {INSTALL + c for c in live})
        ctx.memory.clear_prefix(HEALTH, {HEALTH + c for c in live})

    # ------------------------------------------------------------------------------ health checks
    def _load_checked_versions(self, ctx: MachineCtx) -> None:
        """A version that passed its post-change check before a restart is not checked again (10,000 nodes
        would mean 10,000s of health calls); the status remembers it, and pre-change checks still run."""
        for row in ctx.status.get("components") or []:
            hv = row.get("healthCheckedVersion")
            if hv and (ctx.node, row["name"]) not in self._health:
                self._health[(ctx.node, row["name"])] = Health(str(hv), True, "", float("-inf"))
                self._remembered.setdefault(ctx.node, set()).add(row["name"])

    def _health_of(self, ctx: MachineCtx, comp: str) -> Health | None:
        """The last health check of ``comp``: a failing one from status.failures, else the passed-check cache."""
        f = ctx.memory.get(HEALTH + comp) if ctx.memory is not None else None
        if f is not None:
            return Health(f.signature, False, f.message, float("-inf"), f.count, ctx.mono + f.retry_in(ctx.now))
        return self._health.get((ctx.node, comp))

    async def _run_health(self, ctx: MachineCtx, spec: ComponentSpec | None, cur: ComponentState,
                          mono: float) -> Health:
        """The component's health check through the driver; without one configured (healthCheck.type
        none) the node's report is the check — installed and running — and no call is made."""
        assert ctx.memory is not None
        comp, version, node = cur.name, cur.version, ctx.node
        prev = ctx.health(comp)
        if spec is not None and _has_health_check(spec):
            res = await self.driver.health(node, comp)
            healthy, message = res.healthy, res.message
        else:
            healthy = cur.run_state == RunState.RUNNING
            message = "running (no health check configured)" if healthy else f"{comp} is {cur.run_state}"
        if healthy:
            ctx.memory.clear(HEALTH + comp)
            h = self._health[(node, comp)] = Health(version, True, message, mono)
            self._remembered.setdefault(node, set()).add(comp)
            return h
        self._health.pop((node, comp), None)
        f = ctx.memory.record(HEALTH + comp, message or "unhealthy", ctx.now, signature=version,
                              restart=prev is None or prev.healthy or prev.version != version)
        ctx.warning("HealthCheckFailed", f"{comp} {version} on node {node}: {f.message}")
        return Health(version, False, f.message, mono, f.count, mono + f.retry_in(ctx.now))

    async def _post_check(self, ctx: MachineCtx, spec: ComponentSpec, cur: ComponentState, mono: float) -> None:
        h = ctx.health(cur.name)
        if h is not None and h.version == cur.version and (h.healthy or mono < h.retry_at):
            return
        await self._run_health(ctx, spec, cur, mono)

    async def _pre_check(self, ctx: MachineCtx, res: Resolution, deps: tuple[str, ...], state: NodeState,
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
            h = ctx.health(d)
            if h is None or h.version != cur.version or (h.healthy and mono - h.checked > self.opts.health_ttl) \
                    or (not h.healthy and mono >= h.retry_at):
                h = await self._run_health(ctx, res.spec(d), cur, mono)
            if not h.healthy:
                problems.append(f"dependency {d} failed its health check: {h.message}")
        return "; ".join(problems)

    # ------------------------------------------------------------------------------ events and gates
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

    def _sync_gates(self, ctx: MachineCtx) -> bool:
        """Condition ConfigMaps of the node synced into the Machine's conditions; ReadinessGatesMet from them."""
        assert ctx.spec is not None
        trusted = {rg.condition_type: rg.sources for rg in ctx.spec.readiness_gates if rg.sources}
        reports, untrusted = trusted_reports(self.configmaps.by_index("node", ctx.node), trusted, ctx.now)
        self._flag_untrusted(ctx, untrusted)
        conds = ctx.conditions
        for c in list(conds):
            t = str(c.get("type"))
            if t not in OWN_TYPES and t not in reports:
                remove_condition(conds, t)
        for t, r in sorted(reports.items()):
            ctx.condition(t, r.status, r.reason, r.message)
            synced = find_condition(conds, t)
            assert synced is not None
            synced["source"] = r.source
            if r.heartbeat_time:  # who last said so (source) and when (its heartbeat)
                synced["lastHeartbeatTime"] = r.heartbeat_time
            if r.expires_at is not None:  # look again when the report turns stale
                ctx.requeue_after((r.expires_at - ctx.now).total_seconds() + 0.05)
        g = evaluate_gates([rg.condition_type for rg in ctx.spec.readiness_gates], reports)
        ctx.condition(CT.READINESS_GATES_MET, g.met, g.reason, g.message)
        return g.met

    def _flag_untrusted(self, ctx: MachineCtx, untrusted: list[Untrusted]) -> None:
        """ReportsTrusted: False (and a Warning Event when the set changes) while a source a gate does not
        trust reports its condition; those reports are ignored, so they can neither cordon nor uncordon."""
        if not untrusted:  # shown once something was flagged (no extra status on every Machine of a fleet)
            if find_condition(ctx.conditions, CT.REPORTS_TRUSTED) is not None:
                ctx.condition(CT.REPORTS_TRUSTED, True, R.ALL_REPORTS_TRUSTED,
                              "every report comes from a source its readiness gate trusts")
            return
        assert ctx.spec is not None
        allowed = {rg.condition_type: rg.sources for rg in ctx.spec.readiness_gates}
        msg = "ignored: " + "; ".join(
            f"{u.report.type} from source {u.report.source} (ConfigMap {u.configmap}; trusted: "
            f"{', '.join(allowed.get(u.report.type, []))})" for u in untrusted)
        if ctx.condition(CT.REPORTS_TRUSTED, False, R.UNTRUSTED_SOURCE, msg):
            ctx.warning(R.UNTRUSTED_SOURCE, f"node {ctx.node}: {msg}")

    # ------------------------------------------------------------------------------ scheduling
    async def _sync_cordon(self, machine: Obj, node: Obj | None, *, want_cordon: bool, person: bool,
                           reason: str) -> bool:
        """Flip the Node's cordon when it must, with one Event per flip; True when it cordoned now.

        The cached Node can lag our own last write to it: the Machine's status write wakes the next reconcile
        before the Node's watch event arrives, and that reconcile would cordon (and record ``Cordoned``)
        again.  So the patch is conditional on the cached resourceVersion; a stale cache gets a 409 and the
        decision is taken again on the live Node."""
        if node is None:
            return False
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
                return False
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
            return want_cordon
        return False

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
