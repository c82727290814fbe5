"""A bounded Rollout status and the RolloutTargetSets that hold every target's record.

At 10,000 Machine targets the status used to carry every target (2.4 MB measured: a real meta cluster's etcd
refuses a request over 1.5 MiB).  Now it carries counts, per-step records, history and at most 100 named
targets (trouble first); the records live in RolloutTargetSets of at most 500 targets, written only when they
change, read back by a restarted controller, guarded by resourceVersion and deleted with their Rollout.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from tests.operators.rollout.conftest import NS, ROLLOUT, until

from kokpit.api import install_crds
from kokpit.api.rollout import NAMED_TARGETS, TARGETS_PER_SET, RolloutSpec, RolloutStatus
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.cli._rollout import status_text
from kokpit.client import Client, ConflictError, NotFoundError
from kokpit.operators.rollout._reconciler import RolloutCtx
from kokpit.operators.rollout._sets import TARGET_SET, LoadedTargets, TargetSets, read_targets, set_name
from kokpit.operators.rollout._status import finish_status
from kokpit.runtime import Request

Obj = dict[str, Any]
T0 = "2026-12-07T08:00:00Z"
SPEC: Obj = {"target": {"machines": {"clusterNames": [f"cluster-{i:02d}" for i in range(10)],
                                     "packages": [{"component": "kubelet", "from": "kubelet-1.30",
                                                   "to": "kubelet-1.31"}]}},
             "strategy": {"steps": [{"canary": 1}, {"canary": "10%"}, {"canary": "50%"}, {"canary": "100%"}]}}


def _target(i: int, state: str) -> Obj:
    """A target record as the controller writes it, with every optional field a busy target can carry."""
    t: Obj = {"name": f"cluster-{i % 10:02d}/machine-{i:05d}", "node": f"machine-{i:05d}", "step": 2,
              "state": state, "previous": {"kubelet": "kubelet-1.30"}}
    if state != "Pending":
        t |= {"permit": f"{NS}/component-upgrade-cluster-{i % 10:02d}-0123456789abcdef",
              "touchedAt": T0, "changed": True}
    if state in ("Updated", "Failed"):
        t["finishedAt"] = T0
    if state == "Failed":
        t["message"] = "kubelet: install/kubelet failed 3x: " + "x" * 900
    return t


def _fleet(n: int) -> list[Obj]:
    states = ["Failed"] * 300 + ["Updating"] * 200 + ["Pending"] * 4500
    return [_target(i, states[i] if i < len(states) else "Updated") for i in range(n)]


def _ctx(targets: list[Obj]) -> RolloutCtx:
    status: Obj = {
        "revision": 11, "targetSets": -(-len(targets) // TARGETS_PER_SET), "currentStep": 2, "startedAt": T0,
        "change": "machines: kubelet-1.30 → kubelet-1.31", "changeHash": "0123456789abcdef",
        "steps": [{"index": i, "type": "canary", "startedAt": T0, "finishedAt": T0, "outcome": "Succeeded"}
                  for i in range(3)],
        "permits": [f"{NS}/component-upgrade-cluster-{c:02d}-0123456789abcdef" for c in range(10)],
        "history": [{"revision": r, "change": "machines: kubelet-1.29 → kubelet-1.30", "outcome": "Completed",
                     "startedAt": T0, "finishedAt": T0, "targets": 10_000, "updated": 10_000, "failed": 0}
                    for r in range(1, 11)],
        "conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "message": "10000 target(s)",
                        "lastTransitionTime": T0}],
    }
    obj = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout",
           "metadata": {"name": "kubelet", "namespace": NS, "uid": "u-1"}, "spec": SPEC, "status": status}
    ctx = RolloutCtx(Request(NS, "kubelet"), obj, dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC), 0.0,
                     spec=RolloutSpec.model_validate(SPEC))
    ctx.loaded = LoadedTargets(targets, [b""] * status["targetSets"])
    return ctx


def test_the_status_of_10000_targets_stays_small() -> None:
    targets = _fleet(10_000)
    assert len(orjson.dumps(targets)) > 1536 * 1024  # every record in the status would be over etcd's limit
    ctx = _ctx(targets)
    finish_status(ctx)
    size = len(orjson.dumps(ctx.obj))
    assert size < 256 * 1024, size
    st = ctx.status
    assert st["total"] == 10_000 and st["updated"] == "5000/10000"
    assert st["counts"] == {"Pending": 4500, "Updating": 200, "Updated": 5000, "Failed": 300}
    # the named ones are the trouble: 100 of the 300 failed, the first in take order; the rest counted
    assert len(st["targets"]) == NAMED_TARGETS and st["targetsOmitted"] == 10_000 - NAMED_TARGETS
    assert {t["state"] for t in st["targets"]} == {"Failed"}
    assert [t["name"] for t in st["targets"]][:2] == ["cluster-00/machine-00000", "cluster-01/machine-00001"]
    RolloutStatus.model_validate(st)  # within the schema's maxItems
    # kokpit rollout status says what is left out and where every record is
    text = status_text(ctx.obj)
    assert "Failed 300" in text and "9900 of 10000 target(s) are counted, not named" in text
    assert "kubectl get rollouttargetsets -n default -l kokpit.io/rollout-uid=u-1" in text
    # a failed rollback is named before anything else
    targets[9_999] |= {"state": "Failed", "rollbackFailed": True}
    finish_status(ctx)
    assert "cluster-09/machine-09999" in {t["name"] for t in ctx.status["targets"]}
    # each RolloutTargetSet stays far below the request limit too
    assert max(len(orjson.dumps(targets[i:i + TARGETS_PER_SET])) for i in range(0, 10_000, TARGETS_PER_SET)) \
        < 512 * 1024


def test_a_small_rollout_names_every_target() -> None:
    ctx = _ctx(_fleet(40))
    finish_status(ctx)
    assert len(ctx.status["targets"]) == 40 and ctx.status["targetsOmitted"] == 0


def test_set_names_fit() -> None:
    assert set_name("kubelet", 3, 7) == "kubelet-r3-7"
    long = set_name("a" * 253, 12, 19)
    assert len(long) <= 253 and long.endswith("-r12-19") and long != set_name("a" * 252 + "b", 12, 19)


async def test_target_sets_through_the_api_server(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        ro = await c.create(ROLLOUT, {"metadata": {"name": "kubelet", "namespace": NS}, "spec": SPEC}, NS)
        targets = _fleet(1_234)
        sets = TargetSets(c)
        n = await sets.freeze(ro, 1, targets)
        assert n == 3
        ro["status"] = {"revision": 1, "targetSets": n}
        items = sorted((await c.list(TARGET_SET, NS)).items, key=lambda s: s["spec"]["index"])
        assert [s["metadata"]["name"] for s in items] == ["kubelet-r1-0", "kubelet-r1-1", "kubelet-r1-2"]
        assert [len(s["spec"]["targets"]) for s in items] == [500, 500, 234]
        assert items[0]["metadata"]["ownerReferences"][0]["uid"] == ro["metadata"]["uid"]
        # a restarted controller (nothing cached) reads the same records, in the same order
        assert await read_targets(c, ro) == targets
        # only the set whose records changed is written
        loaded = await sets.load(ro)
        loaded.targets[600]["state"] = "Updated"
        before = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in items}
        assert await sets.save(ro, loaded) == 1
        assert await sets.save(ro, loaded) == 0
        after = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in (await c.list(TARGET_SET, NS)).items}
        assert [k for k in after if after[k] != before[k]] == ["kubelet-r1-1"]
        assert (await read_targets(c, ro))[600]["state"] == "Updated"
        # what a reconcile that wrote everything holds is handed to the next one as it is (no JSON parsed
        # again), once: records changed by a reconcile that then failed (never saved) are not reused
        sets.keep(ro, loaded)
        again = await sets.load(ro)
        assert again.targets[600] is loaded.targets[600] and again.targets == await read_targets(c, ro)
        again.targets[601]["state"] = "Failed"
        fresh = await sets.load(ro)
        assert fresh.targets[601]["state"] == "Pending" and fresh.targets[600] is not loaded.targets[600]
        # a crashed freeze is redone over what it left
        assert await TargetSets(c).freeze(ro, 1, targets) == 3
        assert (await read_targets(c, ro))[600]["state"] == "Pending"
        # a write by anyone else is never overwritten: the next save is a conflict and nothing cached is trusted
        stale = await sets.load(ro)
        other = await c.get(TARGET_SET, "kubelet-r1-0", NS)
        other["spec"]["targets"][0]["state"] = "Modified"
        await c.update(TARGET_SET, other)
        stale.targets[0]["state"] = "Updating"
        with pytest.raises(ConflictError):
            await sets.save(ro, stale)
        assert (await sets.load(ro)).targets[0]["state"] == "Modified"
        # a missing set is an error naming it, not an empty rollout
        await c.delete(TARGET_SET, "kubelet-r1-2", NS)
        with pytest.raises(RuntimeError, match="kubelet-r1-2 is missing"):
            await read_targets(c, ro)
        # the sets go with their Rollout (owner references, the garbage collector)
        await c.delete(ROLLOUT, "kubelet", NS)

        async def gone() -> bool:
            try:
                await c.get(TARGET_SET, "kubelet-r1-0", NS)
            except NotFoundError:
                return True
            return False

        await until(gone, "the RolloutTargetSets deleted with their Rollout", 60)


async def test_a_status_from_before_the_sets_is_moved_into_them(apiserver: ApiServerProcess) -> None:
    """A Rollout whose status still lists every target (written by the controller before RolloutTargetSets
    existed) is moved into sets once by its next reconcile, records unchanged, and read from them after."""
    from kokpit.operators.rollout._plan import change_hash
    from kokpit.operators.rollout._reconciler import RolloutReconciler

    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        ro = await c.create(ROLLOUT, {"metadata": {"name": "old", "namespace": NS}, "spec": SPEC}, NS)
        legacy = [_target(i, "Updated" if i < 2 else "Pending") for i in range(3)]
        spec = RolloutSpec.model_validate(SPEC)
        ro["status"] = {"revision": 4, "changeHash": change_hash(spec), "targets": legacy}
        none: Any = None  # revision_is_current reads no informer on this path
        rec = RolloutReconciler(c, none, rollouts=none, clusters=none, cpvs=none, permits=none, business=none)
        ctx = RolloutCtx(Request(NS, "old"), ro, dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC), 0.0, spec=spec)
        ctx.sets = rec.sets
        await rec.revision_is_current(ctx)
        assert ctx.status["targetSets"] == 1 and ctx.frozen and ctx.targets == legacy
        moved = await c.get(TARGET_SET, "old-r4-0", NS)
        assert moved["spec"]["targets"] == legacy and moved["spec"]["revision"] == 4
        assert await read_targets(c, ro) == legacy
