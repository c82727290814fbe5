"""Leader election logic with a fake Lease store and an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kokpit._lib.clock import FakeClock
from kokpit.client import LEASE, TransportError
from kokpit.runtime.leaderelection import LeaderElectionConfig, LeaderElector


def elector(client: Any, clock: FakeClock, ident: str) -> LeaderElector:
    return LeaderElector(client, LeaderElectionConfig("op", "default", identity=ident), clock)


async def test_first_candidate_creates_lease_second_waits_until_expiry(make_fake_client: Any) -> None:
    clock, client = FakeClock(), make_fake_client()
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    lease = client.objects[("leases", "default", "op")]
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"].endswith("Z") and "." in lease["spec"]["renewTime"]  # MicroTime
    assert not await b.try_acquire_or_renew()
    await clock.advance(10)
    assert await a.try_acquire_or_renew()  # renewal changes the record: b's expiry timer restarts
    await clock.advance(10)
    assert not await b.try_acquire_or_renew()
    await clock.advance(14.9)
    assert not await b.try_acquire_or_renew()  # b observed the change 14.9 s ago (< 15 s)
    await clock.advance(0.2)
    assert await b.try_acquire_or_renew()
    spec = client.objects[("leases", "default", "op")]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()  # a now sees b's fresh lease


async def test_racing_candidates_only_one_wins_by_resource_version(make_fake_client: Any) -> None:
    clock, client = FakeClock(), make_fake_client()
    await client.create(
        LEASE, {"metadata": {"name": "op", "namespace": "default"}, "spec": {"holderIdentity": "dead"}}
    )
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert not await a.try_acquire_or_renew() and not await b.try_acquire_or_renew()
    await clock.advance(16)
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]


async def test_released_lease_is_taken_immediately(make_fake_client: Any) -> None:
    clock, client = FakeClock(), make_fake_client()
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    a.is_leader = True
    await a.release()
    assert await b.try_acquire_or_renew()


async def test_run_loses_leadership_after_renew_deadline_and_stops_work(make_fake_client: Any) -> None:
    clock, client = FakeClock(), make_fake_client()
    a = elector(client, clock, "a")
    started = asyncio.Event()
    cancelled = asyncio.Event()
    stopped: list[bool] = []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    run = asyncio.create_task(a.run(work, lambda: stopped.append(True), once=True))
    await asyncio.wait_for(started.wait(), 1)
    assert a.is_leader
    await clock.advance(2)  # a renewal succeeds
    assert a.is_leader
    client.fail_next = [TransportError("down")] * 100
    for _ in range(4):
        await clock.advance(2)
        assert a.is_leader  # still within the 10 s renew deadline
    await clock.advance(2.5)
    await asyncio.wait_for(run, 1)
    assert cancelled.is_set() and stopped == [True] and not a.is_leader


def test_config_validates_ordering() -> None:
    with pytest.raises(ValueError):
        LeaderElectionConfig("x", lease_duration=5, renew_deadline=10)
