"""Group commit: writes of one key that arrive while that key's previous write is in flight go out together.

No timer: a lone item is written at once, and under load each write carries what queued up during the one
before it, so a burst of N concurrent items costs a handful of writes instead of N.  Used for the risk
center's Permits (many asks in one Permit, many finished targets in one status patch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")


class GroupCommit(Generic[K, I, R]):
    """Items added under one key while that key's previous write is in flight go out together in the next
    write (at most ``max_items`` a write).  ``write(key, items)`` returns one result per item, or raises: then
    every item of that write gets the exception."""

    def __init__(self, write: Callable[[K, list[I]], Awaitable[list[R]]], max_items: int = 1000) -> None:
        self._write = write
        self.max_items = max_items
        self._forming: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._flushing: dict[K, asyncio.Task[None]] = {}
        self.writes = 0  # how many writes went out (for tests and benchmarks)

    async def add(self, key: K, item: I) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._forming.setdefault(key, []).append((item, fut))
        if key not in self._flushing:
            # a task, not a direct write: every ask already runnable in this loop iteration joins the batch
            self._flushing[key] = asyncio.get_running_loop().create_task(self._flush(key))
        return await fut

    async def _flush(self, key: K) -> None:
        try:
            while self._forming.get(key):
                queued = self._forming.pop(key)
                batch, rest = queued[:self.max_items], queued[self.max_items:]
                if rest:
                    self._forming[key] = rest + self._forming.get(key, [])
                live = [(i, f) for i, f in batch if not f.done()]  # a cancelled caller is not written
                if not live:
                    continue
                self.writes += 1
                try:
                    results = await self._write(key, [i for i, _ in live])
                except Exception as e:
                    for _, f in live:
                        if not f.done():
                            f.set_exception(e)
                    continue
                except BaseException:  # closed mid-write: no caller may wait for ever
                    for _, f in live:
                        f.cancel()
                    raise
                for (_, f), r in zip(live, results, strict=True):
                    if not f.done():
                        f.set_result(r)
        finally:
            del self._flushing[key]

    async def close(self) -> None:
        for t in list(self._flushing.values()):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for items in self._forming.values():
            for _, f in items:
                f.cancel()
        self._forming.clear()
