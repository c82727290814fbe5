"""GroupCommit (the batching under PermitBatcher) and the ledger's per-target release, with plain data."""

from __future__ import annotations

import asyncio

import pytest

from kokpit._lib.groupcommit import GroupCommit
from kokpit.operators.risk._ledger import split_finished


async def test_items_added_while_a_write_is_in_flight_go_out_together_next() -> None:
    writes: list[list[int]] = []
    gate = asyncio.Event()

    async def write(key: str, items: list[int]) -> list[int]:
        writes.append(list(items))
        await gate.wait()
        return [i * 10 for i in items]

    gc: GroupCommit[str, int, int] = GroupCommit(write, max_items=3)
    first = asyncio.create_task(gc.add("k", 1))
    await asyncio.sleep(0)  # the first write starts alone
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.add("k", i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert [await t for t in rest] == [20, 30, 40, 50, 60]
    assert writes == [[1], [2, 3, 4], [5, 6]]  # joined while the first was in flight, at most 3 a write
    assert gc.writes == 3


async def test_a_failed_write_fails_each_of_its_items_and_a_cancelled_one_is_not_written() -> None:
    seen: list[list[str]] = []

    async def write(key: str, items: list[str]) -> list[None]:
        seen.append(list(items))
        if "bad" in items:
            raise RuntimeError("refused")
        return [None] * len(items)

    gc: GroupCommit[str, str, None] = GroupCommit(write)
    a = asyncio.create_task(gc.add("k", "bad"))
    b = asyncio.create_task(gc.add("k", "other"))
    c = asyncio.create_task(gc.add("k", "gone"))
    await asyncio.sleep(0)
    c.cancel()
    with pytest.raises(RuntimeError):
        await a
    with pytest.raises(RuntimeError):
        await b
    assert seen == [["bad", "other"]]


def test_targets_finished_one_by_one_leave_the_entry_with_their_own_outcome() -> None:
    e = {"uid": "u", "namespace": "ns", "name": "p", "operation": "node-drain", "cluster": "c",
         "targets": ["a", "b", "c", "d"], "grantedAt": "2026-12-07T00:00:00.000000Z"}
    assert split_finished(e, {}, 1.0) == [] and split_finished(e, {"x": "Succeeded"}, 1.0) == []
    *done, rest = split_finished(e, {"a": "Succeeded", "c": "Failed", "x": "Failed"}, 1.0)
    assert [(d["uid"], d["targets"], d["outcome"]) for d in done] == [("u~a", ["a"], "Succeeded"),
                                                                       ("u~c", ["c"], "Failed")]
    assert all(d["releasedAt"] for d in done)
    assert rest["uid"] == "u" and rest["targets"] == ["b", "d"] and "releasedAt" not in rest
    *done, last = split_finished(rest, {"a": "Succeeded", "b": "Aborted", "d": "Succeeded"}, 2.0)
    assert [(d["targets"], d["outcome"]) for d in done] == [(["b"], "Aborted")]
    assert last["uid"] == "u" and last["targets"] == ["d"] and last["outcome"] == "Succeeded" \
        and last["releasedAt"]
