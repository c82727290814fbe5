"""The reconcile skeleton (read → validate → steps → observe → phase → one status patch → events) and the
failure memory kept in status, on a toy kind over the fake client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import Field

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import FakeClock
from kokpit.api.meta import SpecModel
from kokpit.client import Kind
from kokpit.runtime import (
    INVALID_SPEC,
    EventRecorder,
    FailureMemory,
    InvalidSpec,
    Outcome,
    PhaseRule,
    ReconcileContext,
    Request,
    Result,
    Step,
    StepReconciler,
    StepResult,
    act,
    derive_phase,
    done,
    find_condition,
    named_steps,
    wait,
)

Obj = dict[str, Any]
WIDGET = Kind("example.io", "v1", "Widget", "widgets")


class WidgetSpec(SpecModel):
    size: int = Field(ge=1)
    ref: str = ""


@dataclass
class WidgetCtx(ReconcileContext):
    spec: WidgetSpec | None = None
    built: bool = False
    trail: list[str] = field(default_factory=list)


class WidgetReconciler(StepReconciler[WidgetCtx]):
    """Two steps: ``parts_exist`` (acts once), ``widget_is_built`` (waits until told it may build)."""

    kind = WIDGET
    spec_model = WidgetSpec
    invalid_conditions = ("Ready",)

    def __init__(self, client: Any, clock: FakeClock) -> None:
        super().__init__(client, EventRecorder(client, "widget-operator", clock=clock), clock)
        self.cache: dict[str, Obj] = {}
        self.parts: set[str] = set()
        self.may_build = False
        self.forgotten: list[str] = []
        self.boom = False

    def get(self, req: Request) -> Obj | None:
        return self.cache.get(req.name)

    async def forget(self, req: Request) -> Result | None:
        self.forgotten.append(req.name)
        return None

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> WidgetCtx:
        return WidgetCtx(req, obj, now, mono, spec=spec)

    def steps(self, ctx: WidgetCtx) -> Sequence[Step[WidgetCtx]]:
        return named_steps(self.reference_resolves, self.parts_exist, self.widget_is_built)

    async def reference_resolves(self, ctx: WidgetCtx) -> StepResult:
        assert ctx.spec is not None
        if ctx.spec.ref == "missing":
            raise InvalidSpec("RefNotFound", "spec.ref: no such thing")
        return done()

    async def parts_exist(self, ctx: WidgetCtx) -> StepResult:
        ctx.trail.append("parts")
        if ctx.request.name in self.parts:
            return done()
        self.parts.add(ctx.request.name)
        ctx.normal("PartsCreated", "made the parts")
        return act("PartsCreated", "made the parts", after=5.0)

    async def widget_is_built(self, ctx: WidgetCtx) -> StepResult:
        ctx.trail.append("build")
        if self.boom:
            raise RuntimeError("the driver broke")
        if not self.may_build:
            return wait("NotYet", "not allowed to build yet", after=2.0)
        ctx.built = True
        return done()

    def observe(self, ctx: WidgetCtx) -> None:
        waiting = ctx.results.get(ctx.waiting or "")
        if ctx.built:
            ctx.condition("Ready", True, "Built", "built")
        else:
            ctx.condition("Ready", False, waiting.reason if waiting else "Building", waiting.message if waiting
                          else "")

    PHASES = (PhaseRule("Invalid", "Ready", reasons=(INVALID_SPEC, "RefNotFound")),
              PhaseRule("Ready", "Ready", statuses=("True",)), PhaseRule("Pending", "Ready", missing=True))

    def phase(self, ctx: WidgetCtx) -> str:
        return derive_phase(ctx.conditions, self.PHASES, "Building")


def _widget(rec: WidgetReconciler, client: Any, name: str = "w", **spec: Any) -> None:
    obj = {"apiVersion": "example.io/v1", "kind": "Widget",
           "metadata": {"name": name, "namespace": "default", "generation": 3, "resourceVersion": "1"},
           "spec": spec}
    client.objects[("widgets", "default", name)] = obj
    rec.cache[name] = obj


def _sync_cache(rec: WidgetReconciler, client: Any, name: str = "w") -> Obj:
    o: Obj = client.objects[("widgets", "default", name)]
    rec.cache[name] = o
    return o


def _writes(client: Any) -> list[tuple[str, str, str]]:
    return [c for c in client.calls if c[0] != "get"]


async def test_steps_run_in_order_status_is_patched_once_and_events_follow(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    _widget(rec, client, size=2)
    res = await rec.reconcile(Request("default", "w"))
    # act goes on to the next step, wait stops; the soonest requeue wins
    assert res == Result(requeue_after=2.0)
    obj = _sync_cache(rec, client)
    assert obj["status"]["phase"] == "Building" and obj["status"]["observedGeneration"] == 3
    ready = find_condition(obj["status"]["conditions"], "Ready")
    assert ready is not None and (ready["reason"], ready["message"]) == ("NotYet", "not allowed to build yet")
    writes = _writes(client)
    assert [w[:2] for w in writes] == [("patch:merge:status", "widgets"), ("create", "events")], writes
    # nothing changed: no write at all
    n = len(client.calls)
    assert await rec.reconcile(Request("default", "w")) == Result(requeue_after=2.0)
    assert len(_writes(client)) == len(writes) and len(client.calls) == n
    rec.may_build = True
    assert await rec.reconcile(Request("default", "w")) is None
    obj = _sync_cache(rec, client)
    assert obj["status"]["phase"] == "Ready"


async def test_a_wait_stops_the_steps_after_it(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)

    async def blocked(ctx: WidgetCtx) -> StepResult:
        return wait("Blocked", "the first step cannot hold")

    rec.steps = lambda ctx: [Step("first", blocked), Step("parts_exist", rec.parts_exist)]  # type: ignore[method-assign]
    _widget(rec, client, size=2)
    res = await rec.reconcile(Request("default", "w"))
    assert res is None and rec.parts == set()  # parts_exist never ran


async def test_bad_spec_sets_invalid_condition_warns_once_and_acts_on_nothing(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    _widget(rec, client, size=0)
    assert await rec.reconcile(Request("default", "w")) is None
    obj = _sync_cache(rec, client)
    ready = find_condition(obj["status"]["conditions"], "Ready")
    assert ready is not None and ready["reason"] == INVALID_SPEC and ready["message"].startswith("spec.size: ")
    assert obj["status"]["phase"] == "Invalid" and rec.parts == set()
    events = [o for k, o in client.objects.items() if k[0] == "events"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", INVALID_SPEC)]
    await rec.reconcile(Request("default", "w"))  # the same bad spec again: no second Event, no write
    assert len([k for k in client.objects if k[0] == "events"]) == 1
    assert len([c for c in client.calls if c[0].startswith("patch:merge:status")]) == 1


async def test_a_step_can_reject_the_spec(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    _widget(rec, client, size=1, ref="missing")
    assert await rec.reconcile(Request("default", "w")) is None
    obj = _sync_cache(rec, client)
    ready = find_condition(obj["status"]["conditions"], "Ready")
    assert ready is not None and (ready["reason"], ready["message"]) == ("RefNotFound", "spec.ref: no such thing")
    assert obj["status"]["phase"] == "Invalid" and rec.parts == set()


async def test_an_exception_writes_nothing_and_propagates(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    rec.boom = True
    _widget(rec, client, size=1)
    with pytest.raises(RuntimeError, match="driver broke"):
        await rec.reconcile(Request("default", "w"))
    assert "status" not in client.objects[("widgets", "default", "w")]


async def test_a_checkpoint_makes_a_record_durable_before_the_next_step_acts(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    rec.boom = True  # widget_is_built raises after the record was checkpointed
    seen: list[Obj] = []

    async def recorded(ctx: WidgetCtx) -> StepResult:
        ctx.status["marked"] = ["part-1"]
        ctx.normal("Marked", "part-1")
        await ctx.checkpoint()
        seen.append(dict(client.objects[("widgets", "default", "w")].get("status") or {}))
        return act("Marked", "part-1")

    rec.steps = lambda ctx: [Step("recorded", recorded),  # type: ignore[method-assign]
                             Step("widget_is_built", rec.widget_is_built)]
    _widget(rec, client, size=1)
    with pytest.raises(RuntimeError, match="driver broke"):
        await rec.reconcile(Request("default", "w"))
    # written when the step asked, before the step after it ran; kept though that one raised
    assert seen and seen[0].get("marked") == ["part-1"]
    assert client.objects[("widgets", "default", "w")]["status"]["marked"] == ["part-1"]
    # the checkpoint writes status only: the Event waits for the end of a reconcile that finishes
    assert not [k for k in client.objects if k[0] == "events"]
    # a context without a skeleton behind it: checkpoint is a no-op
    await ReconcileContext(Request("default", "x"), {}, clock.now(), 0.0).checkpoint()


async def test_absent_object_is_forgotten(make_fake_client: Any) -> None:
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    assert await rec.reconcile(Request("default", "gone")) is None
    assert rec.forgotten == ["gone"] and not client.calls


def test_step_results_and_phase_table() -> None:
    assert done().outcome == Outcome.DONE and done(after=3).requeue_after == 3
    assert act("Created", "x").outcome == Outcome.ACT
    w = wait("Waiting", "why", after=1.5)
    assert (w.outcome, w.reason, w.message, w.requeue_after) == (Outcome.WAIT, "Waiting", "why", 1.5)
    rules = [PhaseRule("Failed", "Ok", reasons=("Broken",)), PhaseRule("Ready", "Ok", statuses=("True",)),
             PhaseRule("Pending", "Ok", missing=True)]
    assert derive_phase([], rules, "NotReady") == "Pending"
    assert derive_phase([{"type": "Ok", "status": "True", "reason": "Fine"}], rules, "NotReady") == "Ready"
    assert derive_phase([{"type": "Ok", "status": "False", "reason": "Broken"}], rules, "NotReady") == "Failed"
    assert derive_phase([{"type": "Ok", "status": "False", "reason": "Other"}], rules, "NotReady") == "NotReady"


def test_named_steps_are_named_for_their_functions(make_fake_client: Any) -> None:
    rec = WidgetReconciler(make_fake_client(), FakeClock())
    steps = named_steps(rec.reference_resolves, rec.parts_exist)
    assert [s.name for s in steps] == ["reference_resolves", "parts_exist"]
    assert [s.run for s in steps] == [rec.reference_resolves, rec.parts_exist]


def test_failure_memory_lives_in_status_and_survives_a_new_reader() -> None:
    clock = FakeClock()
    backoff = ExponentialBackoff(base=2.0, cap=60.0)
    obj: Obj = {"metadata": {"name": "w"}}
    mem = FailureMemory(obj, backoff)
    f1 = mem.record("install/kubelet", "not found", clock.now(), signature="a")
    assert (f1.count, f1.retry_in(clock.now())) == (1, 2.0)
    f2 = mem.record("install/kubelet", "not found", clock.now(), signature="b")
    assert (f2.count, f2.retry_in(clock.now())) == (2, 4.0) and f2.first == f1.first
    # a new reader (a restarted operator) of the same status sees the same record and deadline
    again = FailureMemory({"status": dict(obj["status"])}, backoff).get("install/kubelet")
    assert again is not None and (again.count, again.signature, again.retry_at) == (2, "b", f2.retry_at)
    assert obj["status"]["failures"][0]["nextRetryTime"].endswith("Z")
    # restart: a different thing fails now, the count starts over
    assert mem.record("install/kubelet", "other", clock.now(), restart=True).count == 1
    # "failing since" is kept, not moved, by later sightings
    s1 = mem.since("probe/apiserver", "503", clock.now())
    later = clock.now() + dt.timedelta(seconds=30)
    assert mem.since("probe/apiserver", "503", later).first == s1.first
    assert mem.get("probe/apiserver") is not None and mem.get("probe/apiserver").age(later) == 30  # type: ignore[union-attr]
    assert [f.name for f in mem.all()] == ["install/kubelet", "probe/apiserver"]
    assert mem.clear("probe/apiserver") and not mem.clear("probe/apiserver")
    mem.clear_prefix("install/")
    assert "failures" not in obj["status"]
    # a record written by hand that does not parse is no memory, not a crash
    obj["status"]["failures"] = [{"name": "x", "count": "lots"}]
    assert mem.get("x") is None


async def test_a_cache_behind_the_reconcilers_own_write_does_not_hide_a_change(make_fake_client: Any) -> None:
    """The informer cache can lag the reconciler's own last write: diffing the wanted status against that
    older status would skip a change back (Ready True was written, the cache still shows the False before it,
    now False is wanted again: nothing differs from the cache, the server keeps True).  The reconciler starts
    from what its last write returned while the cache is older."""
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    _widget(rec, client, size=2)
    await rec.reconcile(Request("default", "w"))
    stale = _sync_cache(rec, client)  # Ready False (NotYet); the cache stays here from now on
    rec.may_build = True
    await rec.reconcile(Request("default", "w"))
    server = client.objects[("widgets", "default", "w")]
    assert find_condition(server["status"]["conditions"], "Ready")["status"] == "True"
    assert rec.cache["w"] is stale
    rec.may_build = False
    await rec.reconcile(Request("default", "w"))
    server = client.objects[("widgets", "default", "w")]
    assert find_condition(server["status"]["conditions"], "Ready")["status"] == "False"
    assert server["status"]["phase"] == "Building"
    # once the cache has caught up, it is the cache again
    _sync_cache(rec, client)
    n = len(_writes(client))
    await rec.reconcile(Request("default", "w"))
    assert len(_writes(client)) == n and rec._written == {}


async def test_the_reconcilers_own_write_is_kept_without_managed_fields(make_fake_client: Any) -> None:
    """What the last write returned is kept per object until the cache catches up (for an object left alone
    after its last write, until its next reconcile): kept without managedFields, which a reconcile never
    reads (the cache drops them too), and the response itself is left as the server sent it."""
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    _widget(rec, client, size=2)
    mf = [{"manager": "widget-controller", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}]
    client.objects[("widgets", "default", "w")]["metadata"]["managedFields"] = mf
    await rec.reconcile(Request("default", "w"))
    stale = _sync_cache(rec, client)  # the cache stays here from now on
    rec.may_build = True
    await rec.reconcile(Request("default", "w"))
    kept = rec._written[Request("default", "w")]
    server = client.objects[("widgets", "default", "w")]
    assert "managedFields" not in kept["metadata"] and server["metadata"].get("managedFields") == mf
    assert kept["metadata"]["resourceVersion"] == server["metadata"]["resourceVersion"]
    assert kept["status"] == server["status"] and rec.cache["w"] is stale
    # the kept write still stands in for the lagging cache: a change back is written
    rec.may_build = False
    await rec.reconcile(Request("default", "w"))
    assert find_condition(client.objects[("widgets", "default", "w")]["status"]["conditions"],
                          "Ready")["status"] == "False"


async def test_kept_writes_the_cache_caught_up_with_are_forgotten_without_another_reconcile(
        make_fake_client: Any) -> None:
    """A kept write used to stay until its object's next reconcile: for Machines left alone after converging,
    a second copy of every Machine in steady state (the machine operator's largest memory at 10,000 nodes).
    Each write now forgets the oldest kept ones the cache has caught up with; those still ahead of it stay."""
    client, clock = make_fake_client(), FakeClock()
    rec = WidgetReconciler(client, clock)
    names = [f"w{i:02d}" for i in range(20)]
    for n in names:
        _widget(rec, client, n, size=2)
        rec.cache[n]["metadata"]["resourceVersion"] = "0"  # older than any write of the fake client
        await rec.reconcile(Request("default", n))
    assert set(rec._written) == {Request("default", n) for n in names}  # the cache has none of the writes
    for n in names[:10]:
        _sync_cache(rec, client, n)  # it caught up with the first ten
    for n in ("x0", "x1", "x2"):
        _widget(rec, client, n, size=2)
        rec.cache[n]["metadata"]["resourceVersion"] = "0"
        await rec.reconcile(Request("default", n))
    assert sorted(r.name for r in rec._written) == [*names[10:], "x0", "x1", "x2"]
    # the ones still ahead of the cache keep standing in for it
    assert rec._freshest(Request("default", "w15"), rec.cache["w15"]) is rec._written[Request("default", "w15")]
