"""Injectable time for code whose decisions depend on "now".

Leader election, work-queue delays and backoff all compare times.  Taking a :class:`Clock` instead of calling
``time`` directly lets tests drive those decisions with :class:`FakeClock` deterministically, without sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from typing import Any, Protocol

__all__ = ["Clock", "FakeClock", "RealClock", "format_micro_time", "format_time", "parse_time", "parse_time_or_none"]


class Clock(Protocol):
    """Where time comes from: a monotonic reading for intervals, a wall reading for API timestamps."""

    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The process clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance`; sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0, wall: dt.datetime | None = None) -> None:
        self._t = start
        self._start = start
        self._wall = wall or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._t

    def now(self) -> dt.datetime:
        return self._wall + dt.timedelta(seconds=self._t - self._start)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock (tests use it to know the system is idle)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passed, and let woken tasks run."""
        target = self._t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, deadline)
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._t = target
        for _ in range(5):
            await asyncio.sleep(0)


def format_time(t: dt.datetime) -> str:
    """RFC 3339 seconds precision, as metav1.Time is serialised."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(t: dt.datetime) -> str:
    """RFC 3339 with microseconds, as metav1.MicroTime (Lease renewTime) is serialised."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> dt.datetime:
    """Parse metav1.Time or MicroTime."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def parse_time_or_none(s: Any) -> dt.datetime | None:
    """A time from an object written by someone else: None when absent or not a time (never raises)."""
    try:
        return parse_time(str(s)) if s else None
    except ValueError:
        return None
