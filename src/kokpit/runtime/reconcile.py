"""The reconcile skeleton every kokpit operator is built on (Cluster API's ``reconcilePhases``, in Python).

A reconcile of one object is always the same seven moves, so an operator only writes the parts that are its
own and a reader finds the same shape in every operator:

1. **read** the object from the informer cache (never the server: a reconcile must be cheap to repeat);
   absent → :meth:`StepReconciler.forget` (drop per-object caches) and stop;
2. **validate** the spec against its typed model; a bad spec sets the ``InvalidSpec`` condition(s), records a
   Warning Event once, writes status and stops without acting (bad input never disrupts anything);
3. run the operator's **named steps** in order.  Each step is a small idempotent function named for what
   it holds true (``api_server_runs_target_release``) and answers :func:`done` (it holds: go on),
   :func:`act` (it did not hold and the step acted to make it hold: go on, maybe poll) or :func:`wait` (it
   cannot hold yet — a reason, a message and when to look again: the steps after it do not run);
4. **observe**: derive the conditions from what the steps found (always, also after a wait);
5. derive the **phase** last, from the conditions, for people only (code never decides on it);
6. **patch status** once — only what changed — with ``observedGeneration``;
7. record the **Events** the steps queued, after the status that explains them is written.

What an operator must remember across restarts (retry counts, backoff deadlines, "failing since") lives in
the object's status through :class:`kokpit.runtime.failures.FailureMemory`, never in the reconciler; the
reconciler may only keep caches that a restart can rebuild by looking again.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from kokpit._lib.clock import Clock, RealClock
from kokpit.client import CanPatch, Kind
from kokpit.runtime.conditions import find_condition, set_object_condition
from kokpit.runtime.controller import Request, Result
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.patch import PatchHelper, reconcile_view

__all__ = [
    "INVALID_SPEC",
    "InvalidSpec",
    "Outcome",
    "PhaseRule",
    "ReconcileContext",
    "Step",
    "StepReconciler",
    "StepResult",
    "act",
    "derive_phase",
    "done",
    "named_steps",
    "run_steps",
    "spec_error",
    "stamp_phase",
    "wait",
]

log = logging.getLogger("kokpit.runtime.reconcile")

Obj = dict[str, Any]

INVALID_SPEC = "InvalidSpec"
"""The reason every operator gives a condition when its object's spec does not validate."""


class InvalidSpec(Exception):
    """Raised by a step that finds the spec cannot be acted on (a reference to a missing or invalid object):
    the skeleton treats it like a spec that does not validate."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Outcome(StrEnum):
    DONE = "Done"  # the step's statement holds; nothing was done
    ACT = "Act"  # it did not hold; the step acted (created, deleted, started something) and the next steps run
    WAIT = "Wait"  # it cannot hold yet; the steps after it do not run this time


@dataclass(frozen=True)
class StepResult:
    """What one step answered; ``requeue_after`` asks to look again after that many seconds."""

    outcome: Outcome
    reason: str = ""
    message: str = ""
    requeue_after: float | None = None


_DONE = StepResult(Outcome.DONE)


def done(*, after: float | None = None) -> StepResult:
    """The statement holds (``after``: still look again then, e.g. to re-check health)."""
    return _DONE if after is None else StepResult(Outcome.DONE, requeue_after=after)


def act(reason: str, message: str = "", *, after: float | None = None) -> StepResult:
    """The step acted to make its statement hold; ``after`` polls for the result (a watch usually wakes us)."""
    return StepResult(Outcome.ACT, reason, message, after)


def wait(reason: str, message: str = "", *, after: float | None = None) -> StepResult:
    """The statement cannot hold yet (``reason``/``message`` say why); later steps wait for it."""
    return StepResult(Outcome.WAIT, reason, message, after)


@dataclass
class ReconcileContext:
    """What one reconcile of one object carries from step to step; operators subclass it with their own
    fields (the typed spec, what a step found for the status)."""

    request: Request
    obj: Obj  # the working copy of the object: steps and observe write its status; patched once at the end
    now: dt.datetime
    mono: float
    results: dict[str, StepResult] = field(default_factory=dict)  # by step name, in the order they ran
    waiting: str | None = None  # the step that answered wait, if any
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message) to record
    requeues: list[float] = field(default_factory=list)
    # set by StepReconciler.reconcile: write the status as it stands now (see checkpoint())
    _checkpoint: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def checkpoint(self) -> None:
        """Write the status as it stands now, before the steps go on: what a step records must be durable
        before a later step acts on it (a rollout marks targets, then changes them in the same reconcile
        instead of waiting for the next one).  The status is written again at the end as usual; an exception
        in a later step keeps what was checkpointed.  Without a skeleton behind the context: nothing."""
        if self._checkpoint is not None:
            await self._checkpoint()

    @property
    def status(self) -> Obj:
        out: Obj = self.obj.setdefault("status", {})
        return out

    @property
    def conditions(self) -> list[Obj]:
        out: list[Obj] = self.status.setdefault("conditions", [])
        return out

    def condition(self, type_: str, status: str | bool, reason: str, message: str = "") -> bool:
        """Set a condition on the object (stamped with its generation); True when it changed."""
        return set_object_condition(self.obj, type_, status, reason, message, now=self.now)

    def normal(self, reason: str, message: str) -> None:
        self.events.append(("Normal", reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))

    def requeue_after(self, seconds: float | None) -> None:
        if seconds is not None:
            self.requeues.append(max(0.0, seconds))

    def result(self) -> Result | None:
        """The soonest requeue any part asked for (``None``: the next watch event is soon enough)."""
        positive = [s for s in self.requeues if s > 0]
        if positive:
            return Result(requeue_after=min(positive))
        if self.requeues:  # "now": 0 would mean "no delay" to the controller, so ask for the next instant
            return Result(requeue_after=0.01)
        return None


C = TypeVar("C", bound=ReconcileContext)
StepFn = Callable[[C], Awaitable[StepResult]]


@dataclass(frozen=True)
class Step(Generic[C]):
    """A named step; the name (what the step holds true) shows in logs and in ``ctx.results``."""

    name: str
    run: StepFn[C]


def named_steps(*runs: StepFn[C]) -> list[Step[C]]:
    """The steps that run ``runs`` in order, each named for its function: a step's function is already named
    for what it holds true, so a second spelling of the name could only drift from it."""
    return [Step(fn.__name__, fn) for fn in runs]


async def run_steps(ctx: C, steps: Iterable[Step[C]]) -> None:
    """Run ``steps`` in order until one waits; every answer is kept in ``ctx.results``."""
    for step in steps:
        res = await step.run(ctx)
        ctx.results[step.name] = res
        ctx.requeue_after(res.requeue_after)
        if res.outcome == Outcome.WAIT:
            ctx.waiting = step.name
            log.debug("%s: %s waits: %s %s", ctx.request, step.name, res.reason, res.message)
            return


def spec_error(e: ValidationError, prefix: str = "spec") -> str:
    """The first problem of a spec that does not validate, as ``spec.field.path: what is wrong``."""
    first = e.errors()[0]
    where = ".".join([prefix, *(str(x) for x in first["loc"])])
    return f"{where}: {first['msg']}"


@dataclass(frozen=True)
class PhaseRule:
    """One row of a phase table: ``phase`` when condition ``type`` has one of ``statuses`` (any when empty)
    and one of ``reasons`` (any when empty).  A missing condition never matches unless ``missing``."""

    phase: str
    type: str
    statuses: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    missing: bool = False


def derive_phase(conditions: list[Obj] | None, rules: Sequence[PhaseRule], default: str) -> str:
    """The phase of the first rule that matches the conditions (phases are for people; derive them last)."""
    for rule in rules:
        c = find_condition(conditions, rule.type)
        if c is None:
            if rule.missing:
                return rule.phase
            continue
        if rule.missing:
            continue
        if rule.statuses and c.get("status") not in rule.statuses:
            continue
        if rule.reasons and c.get("reason") not in rule.reasons:
            continue
        return rule.phase
    return default


def stamp_phase(obj: Obj, phase: str) -> None:
    """Write the phase and the generation the status was computed from."""
    status = obj.setdefault("status", {})
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is not None:
        status["observedGeneration"] = int(gen)
    status["phase"] = phase


def _newer(a: Obj, b: Obj) -> bool:
    """Whether ``a``'s resourceVersion is newer than ``b``'s.  Kubernetes calls resourceVersions opaque;
    like client-go's MutationCache this compares them as integers (etcd's revisions and kokpit's are) and
    answers False — trust the cache — when either is not one."""
    try:
        return int((a.get("metadata") or {}).get("resourceVersion") or "") > \
            int((b.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return False


def _ahead(mine: Obj, cached: Obj) -> bool:
    """Whether a kept write still stands in for the cache: the same object, newer than the cache's copy."""
    return (cached.get("metadata") or {}).get("uid") == (mine.get("metadata") or {}).get("uid") and \
        _newer(mine, cached)


class StepReconciler(Generic[C]):
    """The skeleton: subclasses say how to read, which spec model, which steps, how to observe and phase.

    ``await reconciler.reconcile(request)`` runs read → validate → steps → observe → phase → patch → events.
    Exceptions from a step propagate (the controller requeues with backoff) and nothing is written: a status
    half computed would be worse than the last complete one.
    """

    kind: Kind
    spec_model: type[BaseModel]
    invalid_conditions: tuple[str, ...] = ()  # set False with reason InvalidSpec on a bad spec
    invalid_phase = "Invalid"

    def __init__(self, client: CanPatch, recorder: EventRecorder, clock: Clock | None = None) -> None:
        self.client = client
        self.recorder = recorder
        self.clock: Clock = clock or RealClock()
        # request -> the object as this reconciler's last write returned it, while the informer cache is
        # older: the next reconcile starts from it, or it would diff its wanted status against a status
        # from before that write and skip a change (a field the last write set, now to be removed, stayed).
        # client-go's MutationCache, for the reconciler's own writes; dropped as soon as the cache caught up.
        self._written: dict[Request, Obj] = {}

    # ------------------------------------------------------------------ what an operator provides
    def get(self, req: Request) -> Obj | None:
        """The object from the informer cache."""
        raise NotImplementedError

    async def forget(self, req: Request) -> Result | None:
        """The object is gone: drop whatever per-object cache the reconciler keeps."""
        return None

    async def before(self, req: Request, raw: Obj) -> tuple[Obj | None, Result | None]:
        """Runs before the working copy is taken: deletion (teardown, finalizer removal) or adding the
        finalizer.  Return ``(raw, None)`` to go on with (possibly updated) ``raw``, or ``(None, result)``
        to stop with ``result``."""
        return raw, None

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> C:
        raise NotImplementedError

    def steps(self, ctx: C) -> Sequence[Step[C]]:
        raise NotImplementedError

    def observe(self, ctx: C) -> None:
        """Derive the conditions (and other status) from what the steps found; runs after every run."""

    def phase(self, ctx: C) -> str:
        raise NotImplementedError

    def invalid(self, ctx: ReconcileContext, reason: str, message: str) -> bool:
        """A spec that cannot be acted on: the InvalidSpec conditions; True when anything changed."""
        changed = False
        for t in self.invalid_conditions:
            changed |= ctx.condition(t, False, reason, message)
        return changed

    async def after(self, ctx: C) -> None:
        """Runs after the status is written and the Events recorded (e.g. a second object to update)."""

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Record one Event (subclasses may move this off the reconcile path)."""
        await self.recorder.event(obj, type_, reason, message)

    # ------------------------------------------------------------------ the skeleton
    async def reconcile(self, req: Request) -> Result | None:
        raw = self.get(req)
        if raw is None:
            self._written.pop(req, None)
            return await self.forget(req)
        raw = self._freshest(req, raw)
        raw, stop = await self.before(req, raw)
        if raw is None:
            return stop
        helper = PatchHelper(self.client, self.kind, reconcile_view(raw, self.kind))
        now, mono = self.clock.now(), self.clock.monotonic()
        try:
            spec = self.spec_model.model_validate(helper.obj.get("spec") or {})
        except ValidationError as e:
            return await self.reject(req, helper, INVALID_SPEC, spec_error(e), now, mono)
        ctx = self.context(req, helper.obj, spec, now, mono)

        async def checkpoint() -> None:
            await self._write(ctx, helper, events=False)

        ctx._checkpoint = checkpoint
        try:
            await run_steps(ctx, self.steps(ctx))
        except InvalidSpec as e:
            return await self.reject(req, helper, e.reason, e.message, now, mono)
        return await self.finish(ctx, helper)

    async def reject(self, req: Request, helper: PatchHelper, reason: str, message: str, now: dt.datetime,
                     mono: float) -> Result | None:
        """Bad input: say so on the conditions (a Warning Event when that is news), act on nothing."""
        ctx = ReconcileContext(req, helper.obj, now, mono)
        if self.invalid(ctx, reason, message):
            ctx.warning(reason, message)
        stamp_phase(ctx.obj, self.invalid_phase)
        await self._write(ctx, helper)
        return None

    async def finish(self, ctx: C, helper: PatchHelper) -> Result | None:
        self.observe(ctx)
        stamp_phase(ctx.obj, self.phase(ctx))
        await self._write(ctx, helper)
        await self.after(ctx)
        return ctx.result()

    def _freshest(self, req: Request, raw: Obj) -> Obj:
        """``raw`` from the cache, or what this reconciler's last write returned when that is newer."""
        mine = self._written.get(req)
        if mine is None:
            return raw
        if not _ahead(mine, raw):
            del self._written[req]  # the cache caught up (or the object was replaced)
            return raw
        return mine

    def _drop_caught_up(self, look: int = 4) -> None:
        """Forget the oldest kept writes the cache has caught up with (or whose object is gone).  Without this
        a write stays kept until its object's next reconcile — for a Machine left alone, until the next slow
        poll, so in steady state a second copy of every object the operator wrote (at 10,000 Machines the
        largest part of the operator's memory).  A few per write: the kept ones stay about those in flight."""
        for req in list(itertools.islice(self._written, look)):
            cached = self.get(req)
            if cached is not None and _ahead(self._written[req], cached):
                return  # the oldest is still ahead of the cache: so, most likely, are the newer ones
            del self._written[req]

    async def _write(self, ctx: ReconcileContext, helper: PatchHelper, *, events: bool = True) -> None:
        writes = helper.writes
        out = await helper.patch()
        if helper.writes > writes and isinstance(out, dict) and (out.get("metadata") or {}).get("resourceVersion"):
            # kept until the cache catches up (without managedFields: the cache drops them too, reconciles
            # never read them, a patch response's largest part)
            meta = out["metadata"]
            self._written.pop(ctx.request, None)  # to the end: the dict stays in the order of the writes
            self._written[ctx.request] = {**out, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
            self._drop_caught_up()
        if events:
            for type_, reason, message in ctx.events:
                await self.record(ctx.obj, type_, reason, message)
