"""Coalesced permits against a real API server and risk center: concurrent asks of one holder go out as few
Permits, each target is answered and released on its own (its budget freed at once), a partial grant's rest
is asked again, a withdrawn target is never granted, and the limit holds throughout."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from tests.operators.risk.conftest import Center, eventually, permits, policy

from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import Client
from kokpit.operators.risk._ledger import LEDGER, entries
from kokpit.runtime.permit_batch import PermitBatcher
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permit_watch import PermitWatch
from kokpit.runtime.permits import PERMIT, PermitClient, PermitDenied

DRAIN = OperationType.NODE_DRAIN
Obj = dict[str, Any]


def _inflight(ledger: Obj) -> list[str]:
    return [t for e in entries(ledger) if not e.get("releasedAt") for t in e["targets"]]


@contextlib.asynccontextmanager
async def batching(meta: Client, apiserver: ApiServerProcess, limit: int) -> AsyncIterator[
        tuple[PermitClient, PermitBatcher]]:
    """A drain policy of maxConcurrent ``limit``, a risk center, and one holder's batcher (all ended after)."""
    await policy(meta, f"drain-{limit}", operations=["node-drain"], maxConcurrent=limit)
    center = Center(apiserver.kubeconfig).start()
    pc = permits(meta)
    batch = PermitBatcher(pc)
    try:
        yield pc, batch
    finally:
        await batch.close()
        await pc.close()
        await center.stop()


async def test_concurrent_asks_share_permits_and_release_target_by_target(
        meta: Client, apiserver: ApiServerProcess) -> None:
    async with batching(meta, apiserver, 500) as (pc, batch):
        grants = await asyncio.gather(*(batch.acquire(DRAIN, f"n{i}", timeout=60) for i in range(200)))
        assert sorted(g.target for g in grants) == sorted(f"n{i}" for i in range(200))
        created = (await meta.list(PERMIT, "default")).items
        # every ask was runnable in the same loop iteration: one create carried them all
        assert batch.creates == len(created) == 1, [p["spec"]["targets"][:3] for p in created]
        assert created[0]["spec"]["partial"] is True and len(created[0]["spec"]["targets"]) == 200
        name = grants[0].permit
        assert len(_inflight(await meta.get(LEDGER, "default"))) == 200

        # the first half finishes: their budget is free at once, while the permit still holds the rest
        await asyncio.gather(*(batch.release(g, PermitOutcome.SUCCEEDED) for g in grants[:100]))

        async def half_free() -> bool:
            return len(_inflight(await meta.get(LEDGER, "default"))) == 100

        await eventually(half_free, timeout=30, what="the released half out of the ledger's in-flight count")
        view = await pc.get(name)
        assert view.state is PermitState.GRANTED and len(view.granted_targets) == 200  # the grant stays as told
        ledger = entries(await meta.get(LEDGER, "default"))
        done = [e for e in ledger if e.get("releasedAt")]
        assert sum(len(e["targets"]) for e in done) == 100 and all(e["outcome"] == "Succeeded" for e in done)

        # one of the rest fails: the permit is released once every granted target is, and says Failed
        await asyncio.gather(*(batch.release(g, PermitOutcome.FAILED if g is grants[150] else
                                             PermitOutcome.SUCCEEDED) for g in grants[100:]))
        final = await pc.wait(name, timeout=30, until=lambda v: v.state is PermitState.RELEASED)
        assert final.status["targetOutcomes"][grants[150].target] == "Failed"
        ledger = entries(await meta.get(LEDGER, "default"))
        assert not _inflight(await meta.get(LEDGER, "default"))
        failed = [e for e in ledger if e.get("outcome") == "Failed"]
        assert [e["targets"] for e in failed] == [[grants[150].target]]  # a failure of its own for the breaker


async def test_partial_grants_are_asked_again_and_the_limit_holds(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """60 concurrent asks against maxConcurrent 5: Permits are granted a prefix, the rest asked again, targets
    freed one by one; never more than 5 in flight, and every ask is granted in the end."""
    worst = 0
    holding: set[str] = set()
    stop = asyncio.Event()
    rng = random.Random(14)

    async def sample() -> None:
        nonlocal worst
        listed = await meta.list(LEDGER)
        async for ev in meta.watch(LEDGER, resource_version=listed.resource_version, timeout_seconds=120):
            worst = max(worst, len(_inflight(ev.object)))
            if stop.is_set():
                return

    async def actor(i: int) -> None:
        await asyncio.sleep(rng.random() * 0.2)
        g = await batch.acquire(DRAIN, f"n{i}", timeout=90)
        holding.add(g.target)
        assert len(holding) <= 5, holding
        await asyncio.sleep(rng.random() * 0.05)
        holding.discard(g.target)
        await batch.release(g, PermitOutcome.SUCCEEDED)

    async with batching(meta, apiserver, 5) as (_pc, batch):
        sampler = asyncio.create_task(sample())
        try:
            await asyncio.gather(*(actor(i) for i in range(60)))
        finally:
            stop.set()
            sampler.cancel()
    assert 2 <= worst <= 5, worst  # the budget was used concurrently and never overshot
    assert batch.creates < 60  # asks were coalesced (each create covered more than one)


async def test_a_withdrawn_target_is_never_granted_and_its_permit_ends_released(
        meta: Client, apiserver: ApiServerProcess) -> None:
    async with batching(meta, apiserver, 1) as (pc, batch):
        first = await batch.acquire(DRAIN, "n1", timeout=30)
        try:
            await batch.acquire(DRAIN, "n2", timeout=1.0)
            raise AssertionError("n2 was granted past maxConcurrent 1")
        except PermitDenied as e:
            queued = e.permit
        assert queued.state is PermitState.QUEUED, queued.status

        async def withdrawn() -> bool:
            v = await pc.get(queued.name)
            return v.status.get("targetOutcomes") == {"n2": "Aborted"} and v.state is PermitState.RELEASED

        await eventually(withdrawn, timeout=30, what="n2 withdrawn and its permit Released")
        await batch.release(first, PermitOutcome.SUCCEEDED)
        await eventually(lambda: _ledger_idle(meta), timeout=30, what="n1's budget free")
        again = await pc.get(queued.name)
        assert again.granted_targets == [] and again.state is PermitState.RELEASED  # freed budget: still not n2


async def _ledger_idle(meta: Client) -> bool:
    return not _inflight(await meta.get(LEDGER, "default"))


async def test_a_gate_shares_permits_and_a_restarted_actor_finds_its_grants_by_target(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """PermitGate(coalesce=...) as a level-triggered actor uses it: 20 concurrent reconciles ask through one
    Permit; a fresh process (new client and gate, same holder) finds each node's grant by target without asking
    again, finishes nodes one by one (the budget follows), and the Permit ends Released."""
    up = OperationType.COMPONENT_UPGRADE
    await policy(meta, "upgrades", operations=["component-upgrade"], maxConcurrent=100)
    center = Center(apiserver.kubeconfig).start()
    nodes = [f"n{i}" for i in range(20)]
    first = PermitGate(permits(meta, holder="machine-operator/c1"), poll=0.2, coalesce=[up])
    try:
        await first.permits.synced()
        answers = await asyncio.gather(*(first.admit(up, [n], "kubelet=1.31") for n in nodes))
        assert {a.reason for a in answers} == {"RiskPending"} and len({a.permit for a in answers}) == 1
        # a reconcile before the watch saw the new permit does not ask a second time
        again = await first.admit(up, [nodes[0]], "kubelet=1.31")
        assert again.permit == answers[0].permit
        await eventually(lambda: _all_granted(first, up, nodes), timeout=30, what="every node granted")
        assert len((await meta.list(PERMIT, "default")).items) == 1
    finally:
        await first.close()
        await first.permits.close()  # the actor "dies": only the API remembers
    second = PermitGate(permits(meta, holder="machine-operator/c1"), poll=0.2, coalesce=[up])
    try:
        await second.permits.synced()
        answers = await asyncio.gather(*(second.admit(up, [n], "kubelet=1.31") for n in nodes))
        assert all(a.granted for a in answers) and {a.permit for a in answers} == {answers[0].permit}
        for n in nodes[:5]:
            [view] = second.open_for(n)
            await second.finish(view, PermitOutcome.SUCCEEDED, "", {"passed": True, "results": []}, target=n)
            assert second.open_for(n) == []  # finished for this node, still open for the others
        assert second.open_for(nodes[5])

        async def fifteen() -> bool:
            return len(_inflight(await meta.get(LEDGER, "default"))) == 15

        await eventually(fifteen, timeout=30, what="five nodes' budget freed")
        for n in nodes[5:]:
            [view] = second.open_for(n)
            await second.finish(view, PermitOutcome.FAILED if n == "n7" else PermitOutcome.SUCCEEDED,
                                "kubelet 1.31 failed", target=n)
        done = await second.permits.wait(answers[0].permit, timeout=30,
                                         until=lambda v: v.state is PermitState.RELEASED)
        assert done.target_outcomes["n7"] == "Failed" and len(done.target_outcomes) == 20
        assert done.status["targetChecks"]["n7"]["results"][0]["message"] == "kubelet 1.31 failed"
        assert done.status["targetChecks"]["n0"]["passed"] is True
        assert len((await meta.list(PERMIT, "default")).items) == 1  # nothing was asked twice
    finally:
        await second.close()
        await second.permits.close()
        await center.stop()


async def _all_granted(gate: PermitGate, op: OperationType, nodes: list[str]) -> bool:
    answers = [await gate.admit(op, [n], "kubelet=1.31") for n in nodes]
    return all(a.granted for a in answers)


async def test_the_permit_clients_of_many_clusters_share_one_watch(
        meta: Client, apiserver: ApiServerProcess) -> None:
    """150 Clusters' PermitClients on one API client (as the cluster operator holds them) wait through one
    watch stream — 150 streams of their own would be past the client's connection pool — and each sees only
    its own Cluster's permits, a late one included."""
    from kokpit.operators.risk import CLUSTER

    clusters = [f"w{i}" for i in range(150)]
    for name in clusters:
        await meta.create(CLUSTER, {"metadata": {"name": name, "namespace": "default"},
                                    "spec": {"packageVersion": "v1"}})
    await policy(meta, "drain", operations=["node-drain"], maxConcurrent=5)
    center = Center(apiserver.kubeconfig).start()
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="actor") as actor:
        shared = PermitWatch(actor, "default")
        pcs = [PermitClient(actor, namespace="default", cluster=c, holder="cluster-operator", shared_watch=shared)
               for c in clusters]
        try:
            views = await asyncio.gather(*(pc.request(DRAIN, ["n1"]) for pc in pcs))
            got = await asyncio.gather(*(pc.wait(v.name, timeout=60) for pc, v in zip(pcs, views, strict=True)))
            assert all(g.granted for g in got)
            assert all([p.name for p in pc.open_permits()] == [v.name] for pc, v in zip(pcs, views, strict=True))
            late = PermitClient(actor, namespace="default", cluster=clusters[7], holder="cluster-operator",
                                shared_watch=shared)
            assert await late.synced(10) and [p.name for p in late.open_permits("n1")] == [views[7].name]
            watches = sum(s.value for m in actor.metrics.requests.collect() for s in m.samples
                          if s.name.endswith("_total") and s.labels.get("verb") == "watch")
            assert watches == 1, watches  # one stream for 150 Clusters
        finally:
            for pc in pcs:
                await pc.close()
            await shared.close()
            await center.stop()
