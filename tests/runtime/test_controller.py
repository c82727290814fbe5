"""Controller semantics against an in-memory source: mapping, retries, terminal errors, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kokpit.runtime.controller import Controller, Request, Result, TerminalError
from kokpit.runtime.metrics import RuntimeMetrics
from kokpit.runtime.workqueue import ItemExponentialRateLimiter


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polling a plain predicate under a deadline
            await asyncio.sleep(0.001)


def fast_limiter() -> ItemExponentialRateLimiter[Request]:
    return ItemExponentialRateLimiter(0.001, 0.01)


async def test_for_owns_watches_enqueue_the_right_keys(make_source: Any, make_obj: Any) -> None:
    seen: list[Request] = []

    async def reconcile(req: Request) -> Result:
        seen.append(req)
        return Result()

    primary, owned, other = make_source(), make_source(), make_source()
    c = Controller("c", reconcile, workers=2, metrics=RuntimeMetrics())
    c.for_(primary)
    c.owns(owned, "Cluster")
    c.watches(other, lambda o: [Request("ns", o["data"]["target"])])
    task = asyncio.create_task(c.run())
    await c.started.wait()
    primary.add(make_obj("a", "ns"))
    owned.add(
        make_obj(
            "pod-1",
            "ns",
            ownerReferences=[{"kind": "Cluster", "name": "b", "controller": True, "apiVersion": "x/v1"}],
        )
    )
    owned.add(
        make_obj("pod-2", "ns", ownerReferences=[{"kind": "Cluster", "name": "zz", "apiVersion": "x/v1"}])
    )
    other.add({**make_obj("cm", "ns"), "data": {"target": "c"}})
    await wait_for(lambda: len(seen) >= 3)
    await asyncio.sleep(0.01)
    assert sorted(seen) == [Request("ns", "a"), Request("ns", "b"), Request("ns", "c")]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_exception_requeues_with_backoff_terminal_does_not(make_source: Any, make_obj: Any) -> None:
    calls: dict[str, int] = {}

    async def reconcile(req: Request) -> Result:
        calls[req.name] = calls.get(req.name, 0) + 1
        if req.name == "flaky" and calls[req.name] < 3:
            raise RuntimeError("transient")
        if req.name == "bad":
            raise TerminalError("spec invalid")
        return Result()

    m = RuntimeMetrics()
    src = make_source()
    c = Controller("c", reconcile, metrics=m, rate_limiter=fast_limiter()).for_(src)
    task = asyncio.create_task(c.run())
    await c.started.wait()
    src.add(make_obj("flaky"))
    src.add(make_obj("bad"))
    await wait_for(lambda: calls.get("flaky") == 3)
    await asyncio.sleep(0.05)
    assert calls == {"flaky": 3, "bad": 1}
    assert m.value("kokpit_reconcile_errors_total", {"controller": "c"}) == 3
    assert m.value("kokpit_reconcile_total", {"controller": "c", "result": "terminal_error"}) == 1
    assert m.value("kokpit_reconcile_total", {"controller": "c", "result": "success"}) == 1
    assert c.queue.num_requeues(Request("default", "flaky")) == 0  # forgotten after success
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_requeue_after_and_timeout(make_source: Any, make_obj: Any) -> None:
    calls: list[str] = []
    hang = asyncio.Event()

    async def reconcile(req: Request) -> Result:
        calls.append(req.name)
        if req.name == "poll" and calls.count("poll") < 3:
            return Result(requeue_after=0.01)
        if req.name == "hang" and calls.count("hang") == 1:
            await hang.wait()
        return Result()

    src = make_source()
    c = Controller("c", reconcile, reconcile_timeout=0.05, rate_limiter=fast_limiter(), workers=2).for_(src)
    task = asyncio.create_task(c.run())
    await c.started.wait()
    src.add(make_obj("poll"))
    src.add(make_obj("hang"))
    await wait_for(lambda: calls.count("poll") == 3 and calls.count("hang") == 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_never_two_workers_on_one_key_and_latest_state_reconciled(
    make_source: Any, make_obj: Any
) -> None:
    active: set[str] = set()
    overlap: list[str] = []
    state: dict[str, int] = {}
    reconciled: dict[str, int] = {}
    src = make_source()

    async def reconcile(req: Request) -> None:
        if req.name in active:
            overlap.append(req.name)
        active.add(req.name)
        await asyncio.sleep(0.001)
        reconciled[req.name] = state[req.name]
        active.discard(req.name)

    c = Controller("c", reconcile, workers=8).for_(src)
    task = asyncio.create_task(c.run())
    await c.started.wait()
    for i in range(300):
        name = f"o{i % 7}"
        state[name] = i
        (src.update if src.items.get(f"default/{name}") else src.add)(make_obj(name, resourceVersion=str(i)))
        if i % 13 == 0:
            await asyncio.sleep(0)
    await wait_for(lambda: reconciled == state)
    assert not overlap
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_restart_replays_cached_objects(make_source: Any, make_obj: Any) -> None:
    seen: list[str] = []

    async def reconcile(req: Request) -> None:
        seen.append(req.name)

    src = make_source()
    src.items["default/x"] = make_obj("x")
    c = Controller("c", reconcile).for_(src)
    t1 = asyncio.create_task(c.run())
    await wait_for(lambda: seen == ["x"])
    t1.cancel()
    await asyncio.gather(t1, return_exceptions=True)
    t2 = asyncio.create_task(c.run())
    await wait_for(lambda: seen == ["x", "x"])
    t2.cancel()
    await asyncio.gather(t2, return_exceptions=True)


async def test_update_delay_batches_updates_but_never_adds(make_source: Any, make_obj: Any) -> None:
    """Updates the delay function defers reach reconcile once per window; adds and immediate updates at once."""
    seen: list[tuple[Request, float]] = []
    loop = asyncio.get_running_loop()

    async def reconcile(req: Request) -> Result:
        seen.append((req, loop.time()))
        return Result()

    pods = make_source()
    c = Controller("c", reconcile, metrics=RuntimeMetrics())
    c.owns(pods, "Cluster", update_delay=lambda old, new: 0.0 if new.get("urgent") else 0.3)
    task = asyncio.create_task(c.run())
    await c.started.wait()
    ref = {"ownerReferences": [{"kind": "Cluster", "name": "a", "controller": True, "apiVersion": "x/v1"}]}
    pods.add(make_obj("p", "ns", **ref))
    await wait_for(lambda: len(seen) == 1)
    t0 = loop.time()
    for i in range(5):  # five status-only updates in a row: one reconcile, after the window
        pods.update({**make_obj("p", "ns", **ref), "status": {"n": i}})
    await asyncio.sleep(0.1)
    assert len(seen) == 1
    await wait_for(lambda: len(seen) == 2)
    assert seen[1][1] - t0 >= 0.25
    await asyncio.sleep(0.4)
    assert len(seen) == 2
    pods.update({**make_obj("p", "ns", **ref), "urgent": True})  # an update that matters: at once
    await wait_for(lambda: len(seen) == 3, timeout=0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
