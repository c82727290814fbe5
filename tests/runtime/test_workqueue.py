"""Work-queue guarantees: dedupe, no key processed concurrently, no add lost, backoff grows, delays work."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kokpit._lib.clock import FakeClock
from kokpit.runtime.metrics import RuntimeMetrics
from kokpit.runtime.workqueue import (
    BucketRateLimiter,
    ItemExponentialRateLimiter,
    ShutDownError,
    WorkQueue,
    default_rate_limiter,
)


async def _scenario(adds: list[tuple[int, int]], workers: int, work_yields: int) -> None:
    q: WorkQueue[int] = WorkQueue("t")
    gen: dict[int, int] = {}
    seen: dict[int, int] = {}
    in_flight: set[int] = set()
    violations: list[int] = []

    async def worker() -> None:
        while True:
            try:
                k = await q.get()
            except ShutDownError:
                return
            if k in in_flight:
                violations.append(k)
            in_flight.add(k)
            seen[k] = gen[k]
            for _ in range((k % 3) * work_yields):
                await asyncio.sleep(0)
            in_flight.discard(k)
            q.done(k)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for key, yields in adds:
        gen[key] = gen.get(key, 0) + 1
        q.add(key)
        for _ in range(yields):
            await asyncio.sleep(0)
    for _ in range(10_000):
        if len(q) == 0 and not in_flight:
            break
        await asyncio.sleep(0)
    await q.shutdown()
    await asyncio.gather(*tasks)
    assert not violations, f"keys processed concurrently: {violations}"
    assert seen == gen, (seen, gen)


@settings(max_examples=150, deadline=None)
@given(
    adds=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=60),
    workers=st.integers(1, 4),
    work_yields=st.integers(0, 3),
)
def test_no_key_processed_concurrently_and_no_add_lost(
    adds: list[tuple[int, int]], workers: int, work_yields: int
) -> None:
    asyncio.run(_scenario(adds, workers, work_yields))


@settings(max_examples=100, deadline=None)
@given(failures=st.integers(1, 40))
def test_per_item_backoff_grows_to_cap_and_forget_resets(failures: int) -> None:
    rl: ItemExponentialRateLimiter[str] = ItemExponentialRateLimiter(0.005, 1000.0)
    delays = [rl.when("a") for _ in range(failures)]
    assert delays == [min(0.005 * 2**i, 1000.0) for i in range(failures)]
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert rl.num_requeues("a") == failures
    assert rl.when("b") == 0.005  # per item
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == 0.005


def test_token_bucket_defaults_burst_then_qps() -> None:
    clock = FakeClock()
    rl: BucketRateLimiter[int] = BucketRateLimiter(10.0, 100, clock)
    assert [rl.when(i) for i in range(100)] == [0.0] * 100
    assert rl.when(100) == pytest.approx(0.1)
    assert rl.when(101) == pytest.approx(0.2)


def test_default_limiter_takes_the_larger_delay() -> None:
    clock = FakeClock()
    rl = default_rate_limiter(clock)
    assert rl.when("x") == 0.005
    for i in range(200):  # drain the bucket
        rl.when(i)
    assert rl.when("x") > 1.0  # bucket debt dominates the per-item 10 ms


async def test_dedupe_and_readd_during_processing() -> None:
    q: WorkQueue[str] = WorkQueue("t", metrics=RuntimeMetrics())
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    a = await q.get()
    assert a == "a" and q.is_processing("a")
    q.add("a")  # while processing: not handed out again yet
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"


async def test_urgent_items_go_first_once_and_nothing_is_lost() -> None:
    q: WorkQueue[str] = WorkQueue("t", metrics=RuntimeMetrics())
    for k in ("a", "b", "c", "d"):
        q.add(k)
    q.add_urgent("c")  # already queued: moves ahead, still one item
    q.add_urgent("e")  # new
    assert len(q) == 5
    got = [await q.get() for _ in range(2)]
    assert got == ["c", "e"]
    q.add_urgent("c")  # while processing: queued again when done, like add
    assert await q.get() == "a" and await q.get() == "b"
    q.done("c")
    assert len(q) == 2
    assert sorted([await q.get(), await q.get()]) == ["c", "d"]  # c once more, then no stale copy of it
    q.done("c")
    q.done("d")
    assert len(q) == 0
    q.add("z")
    assert await q.get() == "z"


async def test_add_after_uses_clock() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("t", clock=clock)
    q.add_after("a", 5.0)
    q.add_after("a", 10.0)  # a later duplicate does not postpone
    await clock.advance(4.9)
    assert len(q) == 0
    await clock.advance(0.2)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    await clock.advance(20)
    assert len(q) == 0  # the 10 s duplicate was folded into the 5 s one
    await q.shutdown()


async def test_add_rate_limited_backs_off_per_item() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("t", clock=clock)
    for expected in (0.005, 0.01, 0.02):
        q.add_rate_limited("k")
        await clock.advance(expected * 0.9)
        assert len(q) == 0
        await clock.advance(expected * 0.2)
        assert len(q) == 1
        k = await q.get()
        q.done(k)
    q.forget("k")
    assert q.num_requeues("k") == 0
    await q.shutdown()


async def test_shutdown_wakes_workers() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()  # it is waiting: the shutdown below must be what ends it
    await q.shutdown()
    with pytest.raises(ShutDownError):
        await getter
