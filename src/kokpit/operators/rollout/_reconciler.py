"""The reconcile of one Rollout, on :class:`kokpit.runtime.StepReconciler`.

Its steps, each idempotent and safe to repeat after a kill -9 at any line:

1. ``revision_is_current`` — a new ``spec.target`` is a new revision: the old one goes to ``status.history``;
2. ``references_resolve`` — the ClusterPackageVersion / MachinePackageVersions exist (per business cluster,
   with the component the change names) — until the targets are frozen;
3. ``targets_are_frozen`` — the targets, in the order they will be taken, each with its previous version,
   written to RolloutTargetSets (``_sets.py``; the status only counts them and names a few) *before* any is
   touched (selectors changing later move nothing); nothing selected is an invalid spec; a target another
   active Rollout holds queues this one (``Overlap``);
4. ``control_is_applied`` — failures over the limit, ``spec.abort`` and ``spec.undo`` decide the direction
   (forward, stopped, or rolling back), remembered in the ``Aborted`` / ``RolledBack`` conditions;
5. ``targets_in_flight_are_observed`` — what each touched target reports (done, failed, a fault attributed
   to the rollout, changed by someone else, past its progress deadline);
6. ``marked_targets_run_the_change`` — a target is marked in its RolloutTargetSet first and changed only once
   that is written (a later reconcile, or the same one after a checkpoint), so a restarted controller
   never changes a target it has not recorded (and never twice: a target whose spec already says the new
   value is not touched again);
7. ``permits_are_settled`` — renew held permits, release those whose targets are all finished;
8. ``touched_targets_are_rolled_back`` or ``steps_are_worked_through`` — the direction's work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, format_time
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.risk import PermitOutcome
from kokpit.api.rollout import RolloutConditionType, RolloutReason, RolloutSpec, TargetState
from kokpit.client import Client, Kind
from kokpit.operators.rollout._fleet import Business, BusinessClusters
from kokpit.operators.rollout._plan import change_hash, change_text, limit_of, selects_cluster
from kokpit.operators.rollout._progress import Progress
from kokpit.operators.rollout._select import Selection, select_targets
from kokpit.operators.rollout._sets import LoadedTargets, TargetSets
from kokpit.operators.rollout._status import finish_status, holds_targets, rollout_state
from kokpit.operators.rollout._targets import ClusterTargets, MachineTargets, Mark, TargetKindOps
from kokpit.runtime import (
    EventRecorder,
    InvalidSpec,
    ReconcileContext,
    Request,
    Result,
    Step,
    StepReconciler,
    StepResult,
    Store,
    done,
    find_condition,
    is_true,
    named_steps,
    wait,
)

__all__ = ["ROLLOUT", "RolloutCtx", "RolloutOptions", "RolloutReconciler"]


log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
ROLLOUT = Kind(GROUP, VERSION, "Rollout", "rollouts")
CT = RolloutConditionType
R = RolloutReason
S = TargetState
HISTORY_LIMIT = 10


@dataclass
class RolloutOptions:
    workers: int = 4
    poll: float = 5.0  # look again this often while waiting for the risk center or a target
    history_limit: int = HISTORY_LIMIT


@dataclass
class RolloutCtx(ReconcileContext):
    spec: RolloutSpec | None = None
    key: str = ""
    holder: str = ""
    ops: TargetKindOps | None = None
    business: dict[str, Business] = field(default_factory=dict)
    direction: str = "forward"  # forward | stopped | back
    risk: tuple[bool, str, str] | None = None  # RiskPermitted (status, reason, message) when a permit was asked
    waiting_for: str = ""
    marked: int = 0  # targets marked (granted) in this reconcile, to be changed once that is written
    sets: TargetSets | None = None
    loaded: LoadedTargets = field(default_factory=lambda: LoadedTargets([], []))
    superseded: tuple[int, int] | None = None  # (revision, sets) to delete once the new revision is written
    # the last complete reconcile's (identity, mark), when of this revision and direction; this one's
    since: tuple[tuple[Any, ...], Mark] | None = None
    looking: tuple[tuple[Any, ...], Mark] | None = None

    def stale(self, t: Obj) -> bool:
        """Whether ``t`` must be looked at again: nothing says its caches stood still since the last look."""
        assert self.ops is not None
        return self.since is None or self.ops.changed_since(t, self.since[1])

    @property
    def targets(self) -> list[Obj]:
        """Every frozen target's record (read from the RolloutTargetSets at the start of the reconcile)."""
        return self.loaded.targets

    @property
    def frozen(self) -> bool:
        return int(self.status.get("targetSets") or 0) > 0

    async def save_targets(self) -> None:
        """Write the RolloutTargetSets whose records changed (before the status, before any target changes)."""
        if self.sets is not None and self.loaded.written:
            await self.sets.save(self.obj, self.loaded)

    async def checkpoint(self) -> None:
        await self.save_targets()
        await super().checkpoint()

    def cond(self, t: str) -> Obj | None:
        return find_condition(self.conditions, t)


class RolloutReconciler(StepReconciler[RolloutCtx]):
    """The reconcile of one Rollout; stores are informer caches of the meta cluster."""

    kind = ROLLOUT
    spec_model = RolloutSpec
    invalid_conditions = (CT.VALID,)

    def __init__(self, client: Client, recorder: EventRecorder, *, rollouts: Store, clusters: Store, cpvs: Store,
                 permits: Store, business: BusinessClusters, options: RolloutOptions | None = None,
                 clock: Clock | None = None, metrics: Any = None, policies: Store | None = None) -> None:
        super().__init__(client, recorder, clock)
        self.meta = client
        self.rollouts = rollouts
        self.clusters = clusters
        self.cpvs = cpvs
        self.business = business
        self.opts = options or RolloutOptions()
        self.progress = Progress(client, permits, self.clock, metrics, policies)
        self.metrics = metrics
        self.sets = TargetSets(client)
        self._freeze = asyncio.Lock()
        # targets frozen by this process but maybe not in the informer cache yet (a cache: a restart
        # rebuilds it from the Rollouts' status)
        self._claims: dict[str, set[str]] = {}

    # ------------------------------------------------------------------------------ the skeleton's parts
    def get(self, req: Request) -> Obj | None:
        return self.rollouts.get_by_name(req.name, req.namespace)

    async def forget(self, req: Request) -> Result | None:
        key = f"{req.namespace}/{req.name}"
        self._claims.pop(key, None)
        self.sets.forget(req.namespace or "", req.name)
        self.progress.forget(key)
        await self.business.release(key, set())
        if self.metrics is not None:
            self.metrics.forget(key)
        return None

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> RolloutCtx:
        ctx = RolloutCtx(req, obj, now, mono, spec=spec)
        ctx.key = f"{req.namespace}/{req.name}"
        ctx.holder = f"rollout/{ctx.key}"
        ctx.sets = self.sets
        return ctx

    def steps(self, ctx: RolloutCtx) -> Sequence[Step[RolloutCtx]]:
        return named_steps(
            self.revision_is_current,
            self.business_clusters_are_reached,
            self.references_resolve,
            self.targets_are_frozen,
            self.control_is_applied,
            self.progress.targets_in_flight_are_observed,
            self.progress.marked_targets_run_the_change,
            self.progress.permits_are_settled,
            self.the_direction_is_followed,
        )

    def observe(self, ctx: RolloutCtx) -> None:
        finish_status(ctx)
        if ctx.direction != "forward" or is_true(ctx.conditions, CT.COMPLETED):
            self._claims.pop(ctx.key, None)

    def phase(self, ctx: RolloutCtx) -> str:
        return rollout_state(ctx.conditions)

    async def finish(self, ctx: RolloutCtx, helper: Any) -> Result | None:
        await ctx.save_targets()  # the records first: the status only summarises them
        return await super().finish(ctx, helper)

    async def after(self, ctx: RolloutCtx) -> None:
        if ctx.superseded is not None:
            # only now that the status names the new revision: until then a crash (or the old target put
            # back) must still find the old revision's records
            await self.sets.drop(ctx.obj, *ctx.superseded)
        self.progress.looked_through(ctx)
        if ctx.frozen and ctx.loaded.written:
            self.sets.keep(ctx.obj, ctx.loaded)
        if self.metrics is not None:
            self.metrics.observe(ctx.key, ctx.obj)

    def invalid(self, ctx: ReconcileContext, reason: str, message: str) -> bool:
        changed = ctx.condition(CT.VALID, False, reason, message)
        changed |= ctx.condition(CT.PROGRESSING, False, reason, "the spec cannot be acted on")
        return changed

    # ------------------------------------------------------------------------------ steps
    async def revision_is_current(self, ctx: RolloutCtx) -> StepResult:
        """A new spec.target is a new revision: the old one's record goes to history, progress starts over."""
        assert ctx.spec is not None
        h = change_hash(ctx.spec)
        st = ctx.status
        text, to = change_text(ctx.spec)
        st["targetKind"] = ctx.spec.target.kind
        if st.get("changeHash") == h:
            if st.get("targets") and not ctx.frozen:
                # a status written before RolloutTargetSets held the records: move them there once
                st["targetSets"] = await self.sets.freeze(ctx.obj, int(st.get("revision") or 1), st["targets"])
            ctx.loaded = await self.sets.load(ctx.obj)
            return done()
        if st.get("changeHash"):
            await self.progress.release_all(ctx, PermitOutcome.ABORTED, "superseded by a new revision")
            counts = st.get("counts") or {}
            entry = {"revision": int(st.get("revision") or 0), "change": st.get("change") or "",
                     "outcome": rollout_state(ctx.conditions) if ctx.frozen or st.get("targets") else "NotStarted",
                     "startedAt": st.get("startedAt"), "finishedAt": st.get("finishedAt") or format_time(ctx.now),
                     "targets": int(st.get("total") or len(st.get("targets") or [])), "updated": int(counts.get(S.UPDATED.value) or 0),
                     "failed": int(counts.get(S.FAILED.value) or 0)}
            st["history"] = ([*(st.get("history") or []), {k: v for k, v in entry.items() if v is not None}]
                             )[-self.opts.history_limit:]
            ctx.normal(R.NEW_REVISION, f"revision {int(st.get('revision') or 0) + 1}: {text} (revision "
                                       f"{entry['revision']} ended {entry['outcome']})")
            if ctx.frozen:
                ctx.superseded = (int(st.get("revision") or 0), int(st.get("targetSets") or 0))
        for k in ("targets", "targetSets", "total", "targetsOmitted", "steps", "permits", "startedAt", "finishedAt",
                  "counts"):
            st.pop(k, None)
        st["currentStep"] = 0
        st["conditions"] = [c for c in ctx.conditions if c.get("type") == CT.VALID]
        st["revision"] = int(st.get("revision") or 0) + 1
        st["changeHash"], st["change"], st["toVersion"] = h, text, to
        self._claims.pop(ctx.key, None)
        return done()

    async def business_clusters_are_reached(self, ctx: RolloutCtx) -> StepResult:
        """Machine rollouts: a connection to each business cluster they select (or hold targets in)."""
        assert ctx.spec is not None
        m = ctx.spec.target.machines
        if m is None:
            ctx.ops = ClusterTargets(self.meta, ctx.request.namespace or "", self.clusters,
                                     ctx.spec.target.clusters.package_version if ctx.spec.target.clusters else "")
            return done()
        ns = ctx.request.namespace or ""
        if ctx.frozen:
            names = {str(t["name"]).split("/", 1)[0] for t in ctx.targets}
        else:
            names = {str(c["metadata"]["name"]) for c in self.clusters.by_namespace(ns)
                     if selects_cluster(m.cluster_names, m.cluster_selector, c)} | set(m.cluster_names)
        missing: list[str] = []
        for name in sorted(names):
            b = await self.business.ensure(f"{ns}/{name}", ctx.key)
            if b is None:
                missing.append(f"{name}: {self.business.error(f'{ns}/{name}') or 'connecting'}")
            else:
                ctx.business[name] = b
        await self.business.release(ctx.key, {f"{ns}/{n}" for n in names})
        ctx.ops = MachineTargets(ctx.spec, ctx.business)
        if missing and not ctx.frozen:
            # before the targets are frozen an unreachable cluster's Machines cannot be listed: wait (and say
            # so) rather than freeze a target list that silently skips them
            return wait(R.CLUSTER_UNREACHABLE, "cannot reach business cluster(s) " + "; ".join(missing),
                        after=self.opts.poll)
        return done()

    async def references_resolve(self, ctx: RolloutCtx) -> StepResult:
        """The package versions the change names exist (checked until the targets are frozen)."""
        assert ctx.spec is not None
        if ctx.frozen:
            return done()
        t = ctx.spec.target
        if t.clusters is not None:
            if self.cpvs.get_by_name(t.clusters.package_version) is None:
                raise InvalidSpec(R.PACKAGE_VERSION_NOT_FOUND, f"spec.target.clusters.packageVersion: "
                                  f"ClusterPackageVersion {t.clusters.package_version} does not exist")
            return done()
        assert t.machines is not None
        for cluster, b in sorted(ctx.business.items()):
            comps = b.mpv_components()
            for p in t.machines.packages:
                for fld, name in (("to", p.to), ("from", p.from_)):
                    if name is None:
                        continue
                    if name not in comps:
                        raise InvalidSpec(R.PACKAGE_VERSION_NOT_FOUND, f"spec.target.machines.packages"
                                          f"[{p.component}].{fld}: MachinePackageVersion {name} does not exist "
                                          f"in cluster {cluster}")
                    if comps[name] != p.component:
                        raise InvalidSpec(R.COMPONENT_MISMATCH, f"spec.target.machines.packages[{p.component}]"
                                          f".{fld}: MachinePackageVersion {name} in cluster {cluster} carries "
                                          f"component {comps[name]}, not {p.component}")
        return done()

    async def targets_are_frozen(self, ctx: RolloutCtx) -> StepResult:
        """The target list with each target's previous version is in RolloutTargetSets before anything is
        touched; the status says how many sets there are."""
        assert ctx.spec is not None
        if ctx.frozen:
            self._claims.setdefault(ctx.key, {t["name"] for t in ctx.targets}) if holds_targets(ctx.obj) else None
            return done()
        async with self._freeze:
            sel: Selection = select_targets(ctx.spec, ctx.request.namespace or "", self.clusters, ctx.business)
            if not sel.targets:
                raise InvalidSpec(R.NO_TARGETS, f"spec.target selects nothing: {sel.why}")
            names = {t["name"] for t in sel.targets}
            holder = await self._overlap(ctx, names)
            if holder:
                other, sample = holder
                return wait(R.OVERLAP, f"queued: {len(sample)} target(s) (e.g. {sorted(sample)[0]}) are being "
                                       f"changed by Rollout {other}; this one starts when that one is over",
                            after=self.opts.poll)
            ctx.status["targetSets"] = await self.sets.freeze(ctx.obj, int(ctx.status.get("revision") or 1),
                                                              sel.targets)
            ctx.status["total"] = len(sel.targets)
            ctx.loaded = await self.sets.load(ctx.obj)
            ctx.status["startedAt"] = format_time(ctx.now)
            ctx.status["currentStep"] = 0
            ctx.condition(CT.VALID, True, R.VALID, f"{len(sel.targets)} target(s); {sel.why}".rstrip("; "))
            ctx.normal(R.STARTED, f"revision {ctx.status.get('revision')}: {ctx.status.get('change')} over "
                                  f"{len(sel.targets)} target(s)")
            self._claims[ctx.key] = names
        # written before the next reconcile touches anything
        return wait(R.STARTED, "targets frozen", after=0)

    async def _overlap(self, ctx: RolloutCtx, names: set[str]) -> tuple[str, set[str]] | None:
        ns = ctx.request.namespace or ""
        kind = ctx.status.get("targetKind")
        for other in self.rollouts.by_namespace(ns):
            okey = f"{ns}/{other['metadata']['name']}"
            if okey == ctx.key or (other.get("status") or {}).get("targetKind") != kind:
                continue
            theirs: set[str] = set()
            if holds_targets(other):
                theirs = {t["name"] for t in (await self.sets.load(other)).targets} if \
                    (other.get("status") or {}).get("targetSets") else \
                    {t["name"] for t in (other.get("status") or {}).get("targets") or []}
            theirs |= self._claims.get(okey, set())
            both = names & theirs
            if both:
                return okey, both
        return None

    async def control_is_applied(self, ctx: RolloutCtx) -> StepResult:
        """Failures over the limit, an abort or an undo: which way the rollout goes now."""
        assert ctx.spec is not None
        spec = ctx.spec
        completed = is_true(ctx.conditions, CT.COMPLETED)
        if not is_true(ctx.conditions, CT.ABORTED) and not completed:
            failed = sum(1 for t in ctx.targets if t.get("state") == S.FAILED.value)
            limit = limit_of(spec.failure_policy.max_failures, len(ctx.targets))
            if spec.abort:
                ctx.condition(CT.ABORTED, True, R.ABORTED_BY_USER, "aborted by spec.abort")
                ctx.warning(R.ABORTED_BY_USER, "the rollout was aborted" + (
                    "; rolling back every touched target" if spec.failure_policy.rollback else ""))
            elif failed > limit:
                names = ", ".join(t["name"] for t in ctx.targets if t.get("state") == S.FAILED.value)[:512]
                msg = f"{failed} failed target(s), more than failurePolicy.maxFailures {limit}: {names}"
                ctx.condition(CT.ABORTED, True, R.FAILURE_LIMIT, msg)
                ctx.warning(R.FAILURE_LIMIT, msg + ("; rolling back" if spec.failure_policy.rollback else ""))
            elif ctx.cond(CT.ABORTED) is None:
                ctx.condition(CT.ABORTED, False, R.NOT_ABORTED, "")
        aborted = is_true(ctx.conditions, CT.ABORTED)
        if is_true(ctx.conditions, CT.ROLLED_BACK):
            ctx.direction = "stopped"
        elif (aborted and (spec.failure_policy.rollback or spec.undo)) or (completed and spec.undo):
            ctx.direction = "back"
            if not ctx.cond(CT.ROLLED_BACK) or (ctx.cond(CT.ROLLED_BACK) or {}).get("reason") != R.ROLLING_BACK:
                why = "undo of the completed rollout" if completed else "the rollout was aborted"
                ctx.condition(CT.ROLLED_BACK, False, R.ROLLING_BACK, f"rolling back ({why})")
                if self.metrics is not None:
                    self.metrics.rollback(ctx.key, automatic=not completed and not spec.abort)
        elif aborted or completed:
            ctx.direction = "stopped"
        return done()

    async def the_direction_is_followed(self, ctx: RolloutCtx) -> StepResult:
        """Work the steps forward (or roll back); targets the risk center granted here are marked, the marks
        checkpointed (durable), and only then changed — in this reconcile, not one watch event later."""
        if ctx.direction == "stopped":
            return done()
        if ctx.direction == "back":
            res = await self.progress.touched_targets_are_rolled_back(ctx)
        else:
            res = await self.progress.steps_are_worked_through(ctx)
        if ctx.marked:
            await ctx.checkpoint()
            await self.progress.marked_targets_run_the_change(ctx)
        return res


