"""The risk center against a real API server: limits hold under concurrent requests (even with two deciders
racing), permits and budgets survive a kill -9 of the risk center, dead holders' permits expire, breakers
trip and reset, maxUnavailable sees the business cluster's cordoned and NotReady nodes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest
from tests.operators.risk.conftest import Center, business_is_meta, eventually, permits, policy

from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NODE, Client
from kokpit.operators.risk import RESET_ANNOTATION
from kokpit.operators.risk._ledger import LEDGER, entries
from kokpit.runtime.permits import PERMIT, RISK_POLICY, PermitDenied, PreCheckFailed, node_ready_check

DRAIN = OperationType.NODE_DRAIN
Obj = dict[str, Any]


def _inflight(ledger: Obj) -> set[str]:
    return {t for e in entries(ledger) if not e.get("releasedAt")
            for t in e["targets"]}


async def test_limit_holds_under_concurrent_requests_with_two_racing_deciders(
        meta: Client, apiserver: ApiServerProcess) -> None:
    await policy(meta, "drain-3", operations=["node-drain"], maxConcurrent=3)
    # two risk centers without leader election: only the ledger's resourceVersion keeps them honest
    a, b = Center(apiserver.kubeconfig).start(), Center(apiserver.kubeconfig).start()
    pc = permits(meta)
    worst = {"ledger": 0, "granted": 0}
    holding: set[str] = set()
    stop = asyncio.Event()

    async def sample_ledger() -> None:
        listed = await meta.list(LEDGER)
        rv = listed.resource_version
        async for ev in meta.watch(LEDGER, resource_version=rv, timeout_seconds=60):
            worst["ledger"] = max(worst["ledger"], len(_inflight(ev.object)))
            if stop.is_set():
                return

    async def actor(i: int) -> None:
        await asyncio.sleep(random.random() * 0.3)
        async with pc.hold(DRAIN, [f"n{i}"], wait_timeout=60) as granted:
            holding.add(granted.name)
            worst["granted"] = max(worst["granted"], len(holding))
            await asyncio.sleep(random.random() * 0.05)
            holding.discard(granted.name)

    sampler = asyncio.create_task(sample_ledger())
    try:
        await asyncio.gather(*(actor(i) for i in range(40)))
        await eventually(lambda: _all_released(meta), timeout=60, what="every permit Released")
    finally:
        stop.set()
        await pc.close()
        await a.stop()
        await b.stop()
        sampler.cancel()
    assert worst["granted"] <= 3 and worst["ledger"] <= 3, worst
    assert worst["ledger"] >= 2  # the budget was really used concurrently
    items = (await meta.list(PERMIT, "default")).items
    assert len(items) == 40
    assert all(p["status"]["outcome"] == "Succeeded" for p in items)


async def _all_released(meta: Client) -> bool:
    items = (await meta.list(PERMIT, "default")).items
    return all(p["status"].get("state") == "Released" for p in items)


def _spawn_center(apiserver: ApiServerProcess) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", "risk-center", "--kubeconfig",
                             str(apiserver.kubeconfig), "--gate-interval", "0.2", "--no-leader-elect"],
                            stdout=subprocess.DEVNULL, stderr=open(apiserver.data_dir / "risk.log", "ab"),
                            start_new_session=True)


async def test_budget_survives_kill_9_and_dead_holders_expire(meta: Client, apiserver: ApiServerProcess) -> None:
    await policy(meta, "one-at-a-time", operations=["node-drain", "node-reboot"], maxConcurrent=1)
    proc = _spawn_center(apiserver)
    try:
        await eventually(lambda: _ledger_exists(meta), what="the risk center's first pass")
        # will never renew nor release; its TTL outlasts a restart of the risk center on a loaded machine (the
        # new process must find the budget spent, not already expired)
        dead = permits(meta, holder="dead", ttl=40)
        first = await dead.request(DRAIN, ["n1"])
        got = await dead.wait(first.name, timeout=30)
        assert got.granted and got.granted_targets == ["n1"]
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the risk center
        proc.wait(10)
        alive = permits(meta, holder="alive")
        second = await alive.request(OperationType.NODE_REBOOT, ["n2"])
        proc = _spawn_center(apiserver)  # a fresh process: nothing but the API to go on
        answer = await alive.wait(second.name, timeout=40, granted_only=False)
        assert answer.state is PermitState.QUEUED, answer.obj["status"]
        assert answer.policies == ["one-at-a-time"] and "MaxConcurrent" in answer.summary()
        # the dead holder's permit expires after its TTL, and the queued one gets the budget
        granted = await alive.wait(second.name, timeout=90)
        assert granted.granted
        expired = await dead.get(first.name)
        assert expired.state is PermitState.EXPIRED
        ev = await eventually(lambda: _events(meta, "PermitExpired"), what="PermitExpired event")
        assert ev[0]["type"] == "Warning" and ev[0]["involvedObject"]["name"] == first.name
        await alive.release(second.name, PermitOutcome.SUCCEEDED)
        done = await alive.wait(second.name, timeout=30, until=lambda v: v.state is PermitState.RELEASED)
        assert done.status["outcome"] == "Succeeded" and done.status.get("releasedAt")
        await alive.close()
        await dead.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def _ledger_exists(meta: Client) -> bool:
    return bool((await meta.list(LEDGER)).items)


async def _events(meta: Client, reason: str) -> list[Obj]:
    return [e for e in (await meta.list(EVENT)).items if e.get("reason") == reason]


async def test_breaker_trips_after_failed_post_checks_and_a_person_resets_it(
        meta: Client, apiserver: ApiServerProcess) -> None:
    await policy(meta, "careful", operations=["component-upgrade"], maxConcurrent=5,
                 failureBreaker={"maxFailures": 2, "window": "1h"})
    center = Center(apiserver.kubeconfig).start()
    pc = permits(meta)
    up = OperationType.COMPONENT_UPGRADE

    async def failing_check(targets: Any) -> Obj:
        return {"passed": False, "results": [{"target": t, "check": "component/kubelet", "passed": False,
                                              "message": "kubelet not active"} for t in targets]}

    try:
        for i in range(2):
            async with pc.hold(up, [f"n{i}"], post_check=failing_check, wait_timeout=30):
                pass
        # other clusters keep their own breaker
        c2 = permits(meta, cluster="c2")
        assert (await c2.wait((await c2.request(up, ["m1"])).name, timeout=30)).granted
        req = await pc.request(up, ["n3"])
        denied = await pc.wait(req.name, timeout=30, granted_only=False)
        assert denied.state is PermitState.DENIED, denied.obj["status"]
        assert denied.status["reasons"][0]["reason"] == "BreakerOpen"
        assert denied.policies == ["careful"]
        pol = await eventually(lambda: _tripped(meta), what="breaker in policy status")
        assert pol["failures"] == 2 and pol["scope"] == "default/c1"
        ev = await eventually(lambda: _events(meta, "BreakerTripped"), what="BreakerTripped event")
        assert ev[0]["type"] == "Warning"
        denial = await eventually(lambda: _events(meta, "PermitDenied"), what="PermitDenied event")
        assert "BreakerOpen" in denial[0]["message"]
        # a restart does not close it
        await center.stop()
        center = Center(apiserver.kubeconfig).start()
        again = await pc.request(up, ["n4"])
        assert (await pc.wait(again.name, timeout=30, granted_only=False)).state is PermitState.DENIED
        # a person resets it: both denied permits are decided again and granted
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "kokpit.cli.main", "risk", "reset",
                                                 "careful", "--kubeconfig", str(apiserver.kubeconfig)],
                                check=True, capture_output=True)
        assert (await pc.wait(req.name, timeout=30)).granted
        assert (await pc.wait(again.name, timeout=30)).granted
        await eventually(lambda: _events(meta, "BreakerReset"), what="BreakerReset event")
        p = await meta.get(RISK_POLICY, "careful")
        assert RESET_ANNOTATION in p["metadata"]["annotations"]
        await c2.close()
    finally:
        await pc.close()
        await center.stop()


async def _tripped(meta: Client) -> Obj | None:
    p = await meta.get(RISK_POLICY, "careful")
    return next((b for b in (p.get("status") or {}).get("breakers") or [] if b.get("tripped")), None)


async def test_max_unavailable_counts_cordoned_and_not_ready_nodes_and_status_shows_it(
        meta: Client, apiserver: ApiServerProcess) -> None:
    await business_is_meta(meta, apiserver, "c1", nodes=10, down=(0,), cordoned=(1,))
    await policy(meta, "isolate", operations=["node-isolate"], maxUnavailable="30%")
    center = Center(apiserver.kubeconfig).start()
    pc = permits(meta)
    iso = OperationType.NODE_ISOLATE
    try:
        first = await pc.request(iso, ["n5"])
        assert (await pc.wait(first.name, timeout=30)).granted  # 2 down + 1 = 3 = 30% of 10
        second = await pc.request(iso, ["n6"])
        queued = await pc.wait(second.name, timeout=30, granted_only=False)
        assert queued.state is PermitState.QUEUED and "3/3" in queued.summary()
        repair = await pc.request(iso, ["n0"])  # already unavailable: adds nothing
        assert (await pc.wait(repair.name, timeout=30)).granted
        st = await eventually(lambda: _budget(meta, "isolate"), what="budget in status")
        assert st["unavailable"] == 3 and st["maxUnavailable"] == 3 and st["inFlight"] == 2
        await pc.release(first.name, PermitOutcome.SUCCEEDED)
        assert (await pc.wait(second.name, timeout=30)).granted
        try:
            await pc.wait((await pc.request(iso, ["n7"])).name, timeout=1.5)
            raise AssertionError("a fourth unavailable node was granted")
        except PermitDenied as e:
            assert e.permit.state is PermitState.QUEUED
    finally:
        await pc.close()
        await center.stop()


async def _budget(meta: Client, name: str) -> Obj | None:
    p = await meta.get(RISK_POLICY, name)
    b = ((p.get("status") or {}).get("budgets") or [])
    row = next((x for x in b if x["scope"] == "default/c1"), None)
    return row if row and row.get("inFlight") == 2 else None


async def test_failed_pre_check_does_not_start_unless_it_is_the_repair(
        meta: Client, apiserver: ApiServerProcess) -> None:
    await business_is_meta(meta, apiserver, "c1", nodes=3, down=(0,))
    center = Center(apiserver.kubeconfig).start()
    pc = permits(meta)
    check = node_ready_check(meta)  # the business cluster is the meta server here
    ran: list[str] = []
    try:
        with pytest.raises(PreCheckFailed) as ei:
            async with pc.hold(OperationType.NODE_REBOOT, ["n0", "n1"], pre_check=check, wait_timeout=30):
                ran.append("reboot")
        assert ran == [] and "n0: NodeReady" in str(ei.value)
        aborted = (await meta.list(PERMIT, "default")).items[0]
        assert aborted["status"]["outcome"] == "Aborted" and aborted["status"]["preCheck"]["passed"] is False
        assert [r["passed"] for r in aborted["status"]["preCheck"]["results"]] == [False, True]
        # repairing that very failure may start anyway; the post-check is recorded on the permit
        async with pc.hold(OperationType.NODE_REBOOT, ["n0"], pre_check=check, post_check=check, repair=True,
                           wait_timeout=30) as granted:
            ran.append("repair")
            await meta.patch(NODE, "n0", {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "Repaired"}]}}, subresource="status")
        assert ran == ["repair"]
        done = await pc.wait(granted.name, timeout=30, until=lambda v: v.state is PermitState.RELEASED)
        assert done.status["outcome"] == "Succeeded" and done.status["postCheck"]["passed"] is True
    finally:
        await pc.close()
        await center.stop()


async def test_permits_are_granted_first_come_first_served_within_a_policy(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """A later, smaller request does not overtake an earlier, larger one waiting for the same budget (it is
    QueuedBehind it); another cluster's budget is not held up; as capacity frees the earlier goes first."""
    await policy(meta, "drain-2", operations=["node-drain"], maxConcurrent=2)
    center = Center(apiserver.kubeconfig).start()
    pc, other = permits(meta), permits(meta, cluster="c2")
    try:
        first = await pc.request(DRAIN, ["n1"])
        assert (await pc.wait(first.name, timeout=30)).granted
        await center.stop()  # the next requests queue up while no one decides: one pass sees them all
        big = await pc.request(DRAIN, ["n2", "n3"])
        small = await pc.request(DRAIN, ["n4"])
        elsewhere = await other.request(DRAIN, ["n4"])
        center.start()
        small_v = await pc.wait(small.name, timeout=30, granted_only=False)
        assert small_v.state is PermitState.QUEUED, small_v.status
        assert [(r["policy"], r["reason"]) for r in small_v.status["reasons"]] == [("drain-2", "QueuedBehind")]
        assert big.name in small_v.status["reasons"][0]["message"]
        big_v = await pc.wait(big.name, timeout=30, granted_only=False)
        assert big_v.state is PermitState.QUEUED and big_v.status["reasons"][0]["reason"] == "MaxConcurrent"
        assert (await other.wait(elsewhere.name, timeout=30)).granted  # c2's own budget
        await pc.release(first.name, PermitOutcome.SUCCEEDED)
        assert (await pc.wait(big.name, timeout=30)).granted  # the earlier request goes first...
        small_v = await pc.wait(small.name, timeout=30, until=lambda v: v.status["reasons"][0]["reason"]
                                == "MaxConcurrent" if v.status.get("reasons") else False)
        assert small_v.state is PermitState.QUEUED  # ...and the later one still waits, now for capacity
        await pc.release(big.name, PermitOutcome.SUCCEEDED)
        assert (await pc.wait(small.name, timeout=30)).granted
    finally:
        await pc.close()
        await other.close()
        await center.stop()


async def test_finished_permits_are_deleted_but_their_window_still_counts(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """Released permits are garbage-collected after finished_ttl, so what everyone watches stays bounded; the
    ledger keeps the grant for the policy's window, which still refuses the next one."""
    import dataclasses

    from tests.operators.risk.conftest import FAST

    await policy(meta, "one-per-hour", operations=["node-reboot"], maxPerWindow={"count": 1, "window": "1h"})
    center = Center(apiserver.kubeconfig, dataclasses.replace(FAST, finished_ttl=1.0)).start()
    pc = permits(meta)
    try:
        first = await pc.request(OperationType.NODE_REBOOT, ["n1"])
        assert (await pc.wait(first.name, timeout=30)).granted
        await pc.release(first.name, PermitOutcome.SUCCEEDED)

        async def gone() -> bool:
            return first.name not in {p["metadata"]["name"] for p in (await meta.list(PERMIT, "default")).items}

        await eventually(gone, timeout=30, what="the finished permit deleted")
        second = await pc.request(OperationType.NODE_REBOOT, ["n2"])
        answer = await pc.wait(second.name, timeout=30, granted_only=False)
        assert answer.state is PermitState.QUEUED and "MaxPerWindow" in answer.summary()
    finally:
        await pc.close()
        await center.stop()


async def test_a_starting_risk_center_answers_once_it_sees_the_nodes_instead_of_denying(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """Requests waiting when the risk center starts, under a limit that needs the cluster's Nodes, are
    Granted when the Nodes are listed — not Denied (ScopeUnknown, with a Warning Event each) a moment before."""
    await business_is_meta(meta, apiserver, "c1", nodes=20)
    await policy(meta, "unavailable", operations=["node-drain"], maxUnavailable="50%")
    pc = permits(meta)
    asked = [await pc.request(DRAIN, [f"n{i}"]) for i in range(5)]
    states: list[str] = []
    listed = await meta.list(PERMIT, "default")

    async def record() -> None:
        async for ev in meta.watch(PERMIT, "default", resource_version=listed.resource_version,
                                   timeout_seconds=60):
            if (s := (ev.object.get("status") or {}).get("state")) is not None:
                states.append(s)

    recorder = asyncio.create_task(record())
    center = Center(apiserver.kubeconfig).start()
    try:
        for v in asked:
            assert (await pc.wait(v.name, timeout=30)).granted
        assert "Denied" not in states, states
        assert not await _events(meta, "PermitDenied")
    finally:
        recorder.cancel()
        await pc.close()
        await center.stop()
