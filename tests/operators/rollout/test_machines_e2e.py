"""Machine rollouts end to end: the rollout controller and the risk center as real processes, the CLI as a
process, a simulator and the machine operator holding the Machines (see conftest).

Canary then pause until promoted then everyone; a failing canary aborts and rolls back exactly what was
touched; undo of a completed rollout; a second rollout over the same Machines is queued with the reason;
kill -9 of the controller mid-batch resumes without touching a target twice; bad input is refused.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import pytest
from tests.operators.rollout.conftest import NS, ROLLOUT, Fleet, cond, until

from kokpit.client import EVENT, ApiError
from kokpit.operators.machine import MACHINE, MPV
from kokpit.operators.rollout._sets import TARGET_SET
from kokpit.runtime.permits import PERMIT

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
Obj = dict[str, Any]
OLD, NEW = "kubelet-1.30", "kubelet-1.31"


def _phase(r: Obj) -> str:
    return str((r.get("status") or {}).get("phase") or "")


def _targets(r: Obj) -> dict[str, Obj]:
    return {t["name"]: t for t in (r.get("status") or {}).get("targets") or []}


async def test_canary_pause_promote_complete_then_undo(fleet: Fleet) -> None:
    fleet.cli("rollout", "create", "kb", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "1,pause,100%", "--max-unavailable", "2")
    r = await fleet.wait_rollout("kb", lambda r: cond(r, "Paused").get("reason") == "WaitingForPromotion",
                                 "waiting for promotion after the canary")
    targets = _targets(r)
    assert len(targets) == 4 and [t["state"] for t in targets.values()].count("Updated") == 1
    canary = next(n for n, t in targets.items() if t["state"] == "Updated")
    assert targets[canary]["previous"] == {"kubelet": OLD} and targets[canary]["step"] == 0
    # exactly the canary runs the new version; nobody else was touched
    pk = await fleet.packages()
    node = canary.split("/", 1)[1]
    assert pk[node] == ["containerd-1.7", NEW]
    assert all(p == ["containerd-1.7", OLD] for n, p in pk.items() if n != node)
    assert (await fleet.kubelets())[node] == "1.31.0"
    assert _phase(r) == "Paused" and r["status"]["updated"] == "1/4" and r["status"]["currentStep"] == 1
    # the batch went through a risk-center permit, released once the canary was done
    permits = (await fleet.meta.list(PERMIT, NS)).items
    assert permits and all(p["spec"]["operation"] == "component-upgrade" for p in permits)
    assert {p["spec"]["holder"] for p in permits} == {"rollout/default/kb"}
    await until(lambda: _all_released(fleet), "the canary's permit released", 30)
    out = fleet.cli("rollout", "status", "kb", "-n", NS).stdout
    assert "State:     Paused" in out and "until promoted" in out
    # promote through the kubectl plugin (kubectl kokpit ... runs the kubectl-kokpit console script)
    fleet.cli("kokpit", "rollout", "promote", "kb", "-n", NS, exe=[_kubectl()])
    r = await fleet.wait_rollout("kb", lambda r: _phase(r) == "Completed", "completed")
    assert set((await fleet.kubelets()).values()) == {"1.31.0"}
    assert cond(r, "Completed")["status"] == "True" and r["status"]["updated"] == "4/4"
    steps = {s["index"]: s for s in r["status"]["steps"]}
    assert all(steps[i].get("finishedAt") and steps[i].get("outcome") == "Succeeded" for i in range(3))
    # undo: every touched target back on its previous version, through permits again
    fleet.cli("rollout", "undo", "kb", "-n", NS)
    r = await fleet.wait_rollout("kb", lambda r: _phase(r) == "RolledBack", "undone")
    assert set((await fleet.kubelets()).values()) == {"1.30.0"}
    assert all(p == ["containerd-1.7", OLD] for p in (await fleet.packages()).values())
    assert {t["state"] for t in _targets(r).values()} == {"RolledBack"}
    hist = fleet.cli("rollout", "history", "kb", "-n", NS).stdout
    assert "RolledBack*" in hist and f"{OLD} → {NEW}" in hist
    for n in fleet.nodes:  # one install of the new version per host, one of the old one back
        assert fleet.installs(n, "1.31.0") == 1
        assert fleet.installs(n, "1.30.0") == 2
    # a new spec.target is a new revision: the old one's summary goes to history, its RolloutTargetSets go once
    # the new revision is written, and the new one freezes its own
    await fleet.meta.patch(ROLLOUT, "kb", {"spec": {"undo": False, "target": {"machines": {"machineSelector": {
        "matchExpressions": [{"key": "kokpit.io/no-such-label", "operator": "DoesNotExist"}]}}}}}, NS)
    r = await fleet.wait_rollout("kb", lambda r: r["status"].get("revision") == 2 and _phase(r) == "Completed",
                                 "revision 2 completed", 180)
    assert {k: r["status"]["history"][-1].get(k) for k in ("revision", "outcome", "targets")} == \
        {"revision": 1, "outcome": "RolledBack", "targets": 4}
    assert r["status"]["total"] == 4 and r["status"]["targetSets"] == 1 and r["status"]["updated"] == "4/4"
    sets = {s["metadata"]["name"] for s in (await fleet.meta.list(TARGET_SET, NS)).items}
    assert sets == {"kb-r2-0"}, sets
    assert set((await fleet.kubelets()).values()) == {"1.31.0"}


async def test_failing_canary_aborts_and_rolls_back_only_what_was_touched(fleet: Fleet) -> None:
    # the first node in rollout order will fail to install the new kubelet
    first = sorted(fleet.nodes)[0]
    assert fleet.sim.book is not None
    fleet.sim.book.fault(first, "install-failure", "kubelet", "1.31.0")
    fleet.cli("rollout", "create", "bad", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "1,50%,100%")
    r = await fleet.wait_rollout("bad", lambda r: _phase(r) == "RolledBack", "aborted and rolled back", 180)
    t = _targets(r)
    assert cond(r, "Aborted")["status"] == "True" and cond(r, "Aborted")["reason"] == "FailureLimitExceeded"
    assert t[f"c1/{first}"]["state"] == "RolledBack"
    # the batch after the canary was never started: the other Machines were not touched at all
    assert all(x["state"] == "Pending" for n, x in t.items() if n != f"c1/{first}")
    assert all(p == ["containerd-1.7", OLD] for p in (await fleet.packages()).values())
    assert set((await fleet.kubelets()).values()) == {"1.30.0"}
    for n in fleet.nodes:
        if n != first:
            assert fleet.installs(n, "1.31.0") == 0
    events = await fleet.meta.list(EVENT, NS, field_selector="involvedObject.name=bad")
    reasons = {e["reason"] for e in events.items if e.get("type") == "Warning"}
    assert {"TargetFailed", "FailureLimitExceeded", "RolledBack"} <= reasons, reasons


async def test_second_rollout_over_the_same_machines_is_queued(fleet: Fleet) -> None:
    fleet.cli("rollout", "create", "one", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "1,pause,100%")
    await fleet.wait_rollout("one", lambda r: _phase(r) == "Paused", "paused after the canary")
    # the second one names the same Machines (replace kubelet 1.30 on pool a): it waits, saying why
    fleet.cli("rollout", "create", "two", "-n", NS, "--cluster", "c1", "--machines", "pool=a",
              "--replace", f"{OLD}={NEW}", "--steps", "100%")
    r = await fleet.wait_rollout("two", lambda r: cond(r, "Progressing").get("reason") == "Overlap", "queued")
    assert "default/one" in cond(r, "Progressing")["message"]
    assert not (r.get("status") or {}).get("targets")
    # nothing of "two" touched anything: still one Machine on the new version
    assert sum(p == ["containerd-1.7", NEW] for p in (await fleet.packages()).values()) == 1
    fleet.cli("rollout", "abort", "one", "-n", NS)
    await fleet.wait_rollout("one", lambda r: _phase(r) == "RolledBack", "one rolled back")
    r = await fleet.wait_rollout("two", lambda r: _phase(r) == "Completed", "two ran once one was over", 180)
    assert len(_targets(r)) == 4 and set((await fleet.kubelets()).values()) == {"1.31.0"}


async def test_a_machine_changed_by_hand_is_left_alone_and_reported(fleet: Fleet) -> None:
    fleet.cli("rollout", "create", "hand", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "1,pause,100%")
    r = await fleet.wait_rollout("hand", lambda r: _phase(r) == "Paused", "paused after the canary")
    pending = next(n for n, t in _targets(r).items() if t["state"] == "Pending").split("/", 1)[1]
    await fleet.meta.create(MPV, {
        "metadata": {"name": "kubelet-1.29"}, "spec": {"component": "kubelet", "version": "1.29.0",
                                                      "dependsOn": ["containerd"]}})
    await fleet.meta.patch(MACHINE, pending, {"spec": {"packages": ["containerd-1.7", "kubelet-1.29"]}})
    fleet.cli("rollout", "promote", "hand", "-n", NS)
    r = await fleet.wait_rollout("hand", lambda r: _phase(r) == "Completed", "completed")
    t = _targets(r)[f"c1/{pending}"]
    assert t["state"] == "Modified" and "left alone" in t["message"]
    assert (await fleet.packages())[pending] == ["containerd-1.7", "kubelet-1.29"]
    assert r["status"]["counts"] == {"Updated": 3, "Modified": 1}


async def test_kill9_mid_batch_resumes_without_touching_a_target_twice(fleet: Fleet) -> None:
    assert fleet.sim.book is not None
    fleet.sim.book.install_seconds = 2.0  # installs take long enough to be caught in the middle
    fleet.cli("rollout", "create", "k9", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "2,100%", "--max-unavailable", "2")

    def mid_batch(r: Obj) -> bool:
        return any(t["state"] == "Updating" and t.get("changed") for t in _targets(r).values())

    await fleet.wait_rollout("k9", mid_batch, "a target changed and still updating")
    fleet.procs["controller"].kill9()
    before = {n: m["metadata"]["generation"] for n, m in
              ((m["metadata"]["name"], m) for m in (await fleet.meta.list(MACHINE)).items)}
    fleet.start_controller()
    r = await fleet.wait_rollout("k9", lambda r: _phase(r) == "Completed", "completed after the restart", 180)
    assert set((await fleet.kubelets()).values()) == {"1.31.0"}
    for m in (await fleet.meta.list(MACHINE)).items:
        n = m["metadata"]["name"]
        # one spec change per Machine (created at generation 1, changed once), never twice
        assert m["metadata"]["generation"] == 2, (n, m["metadata"]["generation"], before[n])
        assert fleet.installs(n, "1.31.0") == 1, n
    assert r["status"]["updated"] == "4/4"


async def test_bad_input_is_refused_or_reported(fleet: Fleet) -> None:
    out = fleet.cli("rollout", "create", "x", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
                    "--steps", "1,50%", check=False)
    assert out.returncode != 0 and "100%" in out.stderr + out.stdout
    out = fleet.cli("rollout", "create", "x", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}=kubelet-9",
                    check=False)
    assert out.returncode != 0 and "kubelet-9 does not exist" in out.stderr + out.stdout
    out = fleet.cli("rollout", "create", "x", "-n", NS, "--cluster", "c1", "--package-version", "nope", check=False)
    assert out.returncode != 0 and "ClusterPackageVersion nope does not exist" in out.stderr + out.stdout
    out = fleet.cli("rollout", "create", "x", "-n", NS, "--clusters", "", "--replace", f"{OLD}={NEW}", check=False)
    assert out.returncode != 0 and "empty selector would select every Cluster" in out.stderr + out.stdout
    # through the API: admission names the field; nothing is created
    body = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "x", "namespace": NS},
            "spec": {"target": {"machines": {"clusterNames": ["c1"], "packages": [
                {"component": "kubelet", "from": OLD, "to": NEW}]}},
                "strategy": {"steps": [{"canary": "120%"}]}}}
    try:
        await fleet.meta.create(ROLLOUT, body, NS)
        raise AssertionError("a 120% canary was accepted")
    except ApiError as e:
        assert e.code == 422 and "spec.strategy.steps[0].canary" in e.message
    # what only the fleet knows: a missing package version, a selector that selects nothing
    body["spec"]["strategy"]["steps"] = [{"canary": "100%"}]
    body["spec"]["target"]["machines"]["packages"][0]["to"] = "kubelet-2.0"
    await fleet.meta.create(ROLLOUT, body, NS)
    r = await fleet.wait_rollout("x", lambda r: cond(r, "Valid").get("status") == "False", "invalid")
    assert cond(r, "Valid")["reason"] == "PackageVersionNotFound" and "kubelet-2.0" in cond(r, "Valid")["message"]
    assert _phase(r) == "Invalid"
    body["metadata"]["name"] = "y"
    body["spec"]["target"]["machines"]["packages"][0]["to"] = NEW
    body["spec"]["target"]["machines"]["machineSelector"] = {"matchLabels": {"pool": "nope"}}
    await fleet.meta.create(ROLLOUT, body, NS)
    r = await fleet.wait_rollout("y", lambda r: cond(r, "Valid").get("status") == "False", "selects nothing")
    assert cond(r, "Valid")["reason"] == "NoTargets" and "selects nothing" in cond(r, "Valid")["message"]
    assert _phase(r) == "Invalid" and cond(r, "Progressing")["status"] == "False"
    assert not cond(r, "Completed") and r["status"].get("total", 0) == 0  # never a silent Completed with 0 targets

    async def warned() -> bool:
        events = await fleet.meta.list(EVENT, NS, field_selector="involvedObject.name=y")
        return any(e.get("type") == "Warning" and e["reason"] == "NoTargets" for e in events.items)

    await until(warned, "a NoTargets Warning Event on the Rollout", 60)
    assert all(p == ["containerd-1.7", OLD] for p in (await fleet.packages()).values())


def _kubectl() -> str:
    path = shutil.which("kubectl", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    assert path is not None
    return path


async def _all_released(fleet: Fleet) -> bool:
    items = (await fleet.meta.list(PERMIT, NS)).items
    return bool(items) and all((p.get("status") or {}).get("state") == "Released" for p in items)
