"""A reconcile of a machine Rollout looks again only at targets whose Machine (NodeFaults, package versions) had
an event since the last reconcile that ran to its end — and at every target when it cannot tell.

At 10,000 targets looking at every touched Machine on every reconcile was a third of the controller's CPU and
kept the changes of a batch to ~200/s.  What must hold: a settled target is not looked at again until
something about it changes; a change to any one of them (a failed install, a fault on its node, a new
package version) is seen at the next reconcile; a changed but not yet reported target is not changed a second
time; another revision or direction, a reconnected cluster, or a reconcile that did not finish means looking
at everything.  Unit test: in-memory caches stand in for the informers of the business cluster.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import FakeClock, format_time
from kokpit.api.rollout import RolloutSpec
from kokpit.operators.rollout._fleet import Business
from kokpit.operators.rollout._progress import Progress
from kokpit.operators.rollout._reconciler import RolloutCtx
from kokpit.operators.rollout._sets import LoadedTargets
from kokpit.operators.rollout._targets import MachineTargets
from kokpit.runtime import Request

Obj = dict[str, Any]
NOW = dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC)
SPEC = RolloutSpec.model_validate({
    "target": {"machines": {"clusterNames": ["c1"], "packages": [
        {"component": "kubelet", "from": "kubelet-v1", "to": "kubelet-v2"}]}},
    "strategy": {"steps": [{"canary": "100%"}]}})


@dataclass
class _Store:
    objs: dict[str, Obj] = field(default_factory=dict)

    def get_by_name(self, name: str, namespace: str | None = None) -> Obj | None:
        return self.objs.get(name)

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [o for o in self.objs.values() if o["spec"].get("nodeName") == value]


@dataclass
class _Cache:
    """What the controller reads of an informer: its store, whether it synced, its objects."""

    store: _Store = field(default_factory=_Store)
    has_synced: bool = True

    def objects(self) -> list[Obj]:
        return list(self.store.objs.values())


def _machine(name: str, mpv: str, *, installed: str | None = None, state: str = "Installed") -> Obj:
    comp = {"name": "kubelet", "packageVersion": installed or mpv, "version": installed or mpv,
            "installState": state, "runState": "Running"}
    return {"metadata": {"name": name, "resourceVersion": "1", "generation": 2},
            "spec": {"packages": [mpv]}, "status": {"components": [comp], "observedGeneration": 2}}


class _Counted(MachineTargets):
    def __init__(self, b: Business) -> None:
        super().__init__(SPEC, {"c1": b})
        self.looks: Counter[str] = Counter()
        self.changes: list[str] = []

    def observe(self, target: Obj, back: bool) -> Any:
        self.looks[target["name"]] += 1
        return super().observe(target, back)

    async def change(self, target: Obj, obj: Obj, back: bool) -> None:
        self.changes.append(target["name"])


def _business() -> Business:
    mpvs = _Cache()
    for v in ("kubelet-v1", "kubelet-v2"):
        mpvs.store.objs[v] = {"metadata": {"name": v}, "spec": {"component": "kubelet", "version": v}}
    b = Business("default/c1", "digest", None, _Cache(), mpvs, faults=_Cache())  # type: ignore[arg-type]
    for i in range(10):
        b.machines.store.objs[f"m{i}"] = _machine(f"m{i}", "kubelet-v2")  # type: ignore[attr-defined]
    return b


def _ctx(targets: list[Obj], b: Business, ops: MachineTargets, direction: str = "forward") -> RolloutCtx:
    obj: Obj = {"metadata": {"name": "r", "namespace": "default", "uid": "u1"},
                "status": {"revision": 1, "targetSets": 1, "conditions": []}}
    ctx = RolloutCtx(Request("default", "r"), obj, NOW, 0.0, spec=SPEC)
    ctx.key, ctx.ops, ctx.business, ctx.direction = "default/r", ops, {"c1": b}, direction
    ctx.loaded = LoadedTargets(targets, [b""])
    return ctx


def _targets() -> list[Obj]:
    touched = format_time(NOW - dt.timedelta(seconds=10))
    out: list[Obj] = [{"name": f"c1/m{i}", "node": f"m{i}", "state": "Updated", "previous": {"kubelet": "kubelet-v1"},
                       "permit": "default/p", "touchedAt": touched, "changed": True} for i in range(8)]
    out += [{"name": f"c1/m{i}", "node": f"m{i}", "state": "Updating", "previous": {"kubelet": "kubelet-v1"},
             "permit": "default/p", "touchedAt": touched, "changed": True} for i in (8, 9)]
    return out


async def _reconcile(p: Progress, ctx: RolloutCtx) -> None:
    """The looking steps of one reconcile that runs to its end."""
    await p.targets_in_flight_are_observed(ctx)
    await p.marked_targets_run_the_change(ctx)
    p.looked_through(ctx)


async def test_settled_targets_are_not_looked_at_again_until_they_change() -> None:
    b = _business()
    # the Machines of the two in-flight targets still install v2
    for i in (8, 9):
        b.machines.store.objs[f"m{i}"] = _machine(f"m{i}", "kubelet-v2", installed="kubelet-v1")  # type: ignore
    p = Progress(None, None, FakeClock(), None)  # type: ignore[arg-type]
    targets = _targets()
    ops = _Counted(b)

    # the first reconcile of this process looks at everything touched (twice for what is in flight: once to
    # judge it, once to see whether it must still be changed)
    ctx = _ctx(targets, b, ops)
    await _reconcile(p, ctx)
    assert sum(ops.looks.values()) == 12
    res = ctx.result()
    assert res is not None and res.requeue_after is not None  # in flight: look again later

    # nothing moved: nothing is looked at, nothing changed twice, the deadline still asks to come back
    ops.looks.clear()
    ctx = _ctx(targets, b, ops)
    await _reconcile(p, ctx)
    assert sum(ops.looks.values()) == 0 and ops.changes == []
    res = ctx.result()
    assert res is not None and res.requeue_after is not None

    async def looks_after(event: Callable[[], None]) -> Counter[str]:
        event()
        ops.looks.clear()
        await _reconcile(p, _ctx(targets, b, ops))
        return ops.looks

    def machine_event(obj: Obj) -> Callable[[], None]:
        def event() -> None:
            b.machines.store.objs[obj["metadata"]["name"]] = obj  # type: ignore[attr-defined]
            b.saw_machine(obj)
        return event

    # one updated Machine fails its component: only it is looked at, and it fails
    assert await looks_after(machine_event(_machine("m3", "kubelet-v2", state="Failed"))) == Counter({"c1/m3": 1})
    assert targets[3]["state"] == "Failed"

    # one in-flight Machine reports v2: only it is looked at (judged, then seen as changed), and it is done
    assert await looks_after(machine_event(_machine("m8", "kubelet-v2"))) == Counter({"c1/m8": 1})
    assert targets[8]["state"] == "Updated"

    # a NodeFault attributed to the rollout on one node: that target is looked at, and fails
    fault = {"metadata": {"name": "f1"}, "spec": {"nodeName": "m5", "type": "KubeletDown",
                                                  "possiblyCausedBy": [{"kind": "Rollout", "name": "r"}]}}

    def fault_event() -> None:
        b.faults.store.objs["f1"] = fault  # type: ignore[union-attr]
        b.saw_fault(fault)

    assert await looks_after(fault_event) == Counter({"c1/m5": 1})
    assert targets[5]["state"] == "Failed"

    # a package version changed: everything touched is looked at again
    assert set(await looks_after(b.saw_mpv)) == {t["name"] for t in targets if t["state"] in ("Updated", "Updating")}


async def test_anything_it_cannot_vouch_for_is_looked_at() -> None:
    b = _business()
    p = Progress(None, None, FakeClock(), None)  # type: ignore[arg-type]
    targets = _targets()
    ops = _Counted(b)
    await _reconcile(p, _ctx(targets, b, ops))

    # a reconcile that did not run to its end (no looked_through) leaves the mark where it was
    b.saw_machine(b.machines.store.objs["m1"])  # type: ignore[attr-defined]
    ops.looks.clear()
    await p.targets_in_flight_are_observed(_ctx(targets, b, ops))
    assert ops.looks == Counter({"c1/m1": 1})
    ops.looks.clear()
    await _reconcile(p, _ctx(targets, b, ops))
    assert ops.looks == Counter({"c1/m1": 1})

    # another revision: everything
    ops.looks.clear()
    ctx = _ctx(targets, b, ops)
    ctx.status["revision"] = 2
    await _reconcile(p, ctx)
    assert len(ops.looks) == 10

    # a reconnected cluster (new caches): everything
    b2 = _business()
    ops2 = _Counted(b2)
    ctx = _ctx(targets, b2, ops2)
    ctx.status["revision"] = 2
    await _reconcile(p, ctx)
    assert len(ops2.looks) == 10

    # a new process (nothing remembered): everything
    ops.looks.clear()
    await _reconcile(Progress(None, None, FakeClock(), None), _ctx(targets, b, ops))  # type: ignore[arg-type]
    assert len(ops.looks) == 10


async def test_a_target_marked_again_is_changed_again() -> None:
    """A target Updated going forward and then marked RollingBack carries no `changed` from the forward
    change: its rollback is made even though its Machine did not move since."""
    b = _business()
    p = Progress(None, None, FakeClock(), None)  # type: ignore[arg-type]
    targets = _targets()[:1]
    ops = _Counted(b)
    await _reconcile(p, _ctx(targets, b, ops, direction="back"))
    await _reconcile(p, _ctx(targets, b, ops, direction="back"))
    targets[0] |= {"state": "RollingBack"}
    targets[0].pop("changed")  # what Progress._admit does when it marks
    await _reconcile(p, _ctx(targets, b, ops, direction="back"))
    assert ops.changes == ["c1/m0"]


def _rollout(conds: dict[str, str], frozen: bool = True, **spec: Any) -> Obj:
    return {"spec": spec, "status": {"targetSets": 1 if frozen else 0, "conditions": [
        {"type": t, "status": s} for t, s in conds.items()]}}


def test_only_rollouts_that_can_still_move_are_woken_by_the_fleet() -> None:
    """The fleet's churn after a wave (thousands of Machine events a second) must not keep waking Rollouts
    that are over; one not frozen yet, going forward, or rolling back (an undo too) is woken."""
    from kokpit.operators.rollout.operator import moves_with_business

    assert moves_with_business(_rollout({}, frozen=False))
    assert moves_with_business(_rollout({"Completed": "False"}))
    assert not moves_with_business(_rollout({"Completed": "True"}))
    assert moves_with_business(_rollout({"Completed": "True"}, undo=True))
    assert not moves_with_business(_rollout({"Completed": "True", "RolledBack": "True"}, undo=True))
    assert moves_with_business(_rollout({"Aborted": "True", "RolledBack": "False"}))
    assert not moves_with_business(_rollout({"Aborted": "True"}, failurePolicy={"rollback": False}))


def test_the_rollouts_own_status_writes_are_batched_and_spec_changes_are_not() -> None:
    from kokpit.operators.rollout.operator import COALESCE, _own_write_delay

    old: Obj = {"metadata": {"generation": 1, "resourceVersion": "1"}, "spec": {"paused": False},
                "status": {"currentStep": 0}}
    status_only = {**old, "metadata": {"generation": 1, "resourceVersion": "2"}, "status": {"currentStep": 1}}
    assert _own_write_delay(old, status_only) == COALESCE > 0
    paused = {**old, "metadata": {"generation": 2, "resourceVersion": "3"}, "spec": {"paused": True}}
    assert _own_write_delay(old, paused) == 0.0
    deleting = {**old, "metadata": {**old["metadata"], "deletionTimestamp": "2026-12-07T08:00:00Z"}}
    assert _own_write_delay(old, deleting) == 0.0
