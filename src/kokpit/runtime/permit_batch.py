"""Coalesced permits: the concurrent asks of one holder go out as few Permits, like a group commit.

Why: a Permit costs the API server a create, a decision, an answer and a release.  An actor that asks per
node — the drains of a wave, the machine operator's upgrades, a benchmark's 1,000 concurrent requests —
spends most of the risk center's and the API server's time on those round trips, and with one Permit per
node the answer to the last of 1,000 concurrent asks comes after 1,000 creates.  The risk center already
decides a batch of targets per Permit (``partial``: the longest prefix that fits every budget) and frees each
target's budget as soon as the holder reports that target finished (``status.targetOutcomes``).  So the
:class:`PermitBatcher` puts every ask that arrives while its previous create is in flight into the next
Permit — no timer: a lone ask waits for nothing — and the releases likewise into one merge patch per Permit.

Each ask is answered on its own: granted when its target is among the Permit's ``grantedTargets``; asked
again in the next batch when the Permit was granted without it (the budget fitted only a prefix); withdrawn
(``Aborted`` for that target, never granted afterwards) when its caller stops waiting.

What survives a kill -9 is what the API holds: the Permits.  The batcher's bookkeeping — which caller waits
for which target of which Permit — lives in memory on purpose and needs nothing after a restart: a dead
holder stops renewing, and its Permits expire after their TTL, counting against every budget until then, as
any Permit does.  A level-triggered actor that must find its grants again after a restart keeps using
:class:`~kokpit.runtime.permits.PermitGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.client import ApiError, NotFoundError, TransportError
from kokpit.runtime.permits import FINAL, PERMIT, PermitClient, PermitDenied, PermitView

__all__ = ["Grant", "GroupCommit", "PermitBatcher"]

log = logging.getLogger("kokpit.runtime.permit_batch")

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


@dataclass(frozen=True)
class Grant:
    """One granted target of a (possibly shared) Permit; hand it back to :meth:`PermitBatcher.release`."""

    permit: str
    target: str
    operation: str


@dataclass(frozen=True)
class _AskKey:
    operation: str
    intent: str
    repair: bool
    reason: str


@dataclass
class _Open:
    """A Permit this batcher created, and which of its targets someone still waits for or holds."""

    live: set[str] = field(default_factory=set)


class PermitBatcher:
    """Asks for one target at a time, permits for many at once.  One batcher per :class:`PermitClient` (one
    holder, one Cluster)."""

    def __init__(self, permits: PermitClient, *, max_targets: int = 1000) -> None:
        self.permits = permits
        self._asks: GroupCommit[_AskKey, str, str] = GroupCommit(self._create, max_targets)
        self._releases: GroupCommit[str, tuple[str, PermitOutcome], None] = GroupCommit(self._report, max_targets)
        self._open: dict[str, _Open] = {}
        self._renewer: asyncio.Task[None] | None = None

    @property
    def creates(self) -> int:
        """Permits created so far (asks ÷ creates is how much the batching saved)."""
        return self._asks.writes

    # ------------------------------------------------------------------ the writes
    async def _create(self, key: _AskKey, targets: list[str]) -> list[str]:
        unique = list(dict.fromkeys(targets))  # a Permit's targets are a set
        view = await self.permits.request(key.operation, unique, partial=True, repair=key.repair,
                                          reason=key.reason, intent=key.intent)
        self._open.setdefault(view.name, _Open()).live.update(unique)
        self._start_renewing()
        return [view.name] * len(targets)

    async def _report(self, name: str, items: list[tuple[str, PermitOutcome]]) -> list[None]:
        outcomes = {t: o.value for t, o in items}
        with contextlib.suppress(NotFoundError):  # deleted meanwhile: nothing is held any more
            await self.permits.client.patch(PERMIT, name, {"status": {"targetOutcomes": outcomes}},
                                            self.permits.namespace, subresource="status")
        return [None] * len(items)

    # ------------------------------------------------------------------ asking and releasing
    async def acquire(self, operation: OperationType | str, target: str, *, intent: str = "",
                      repair: bool = False, reason: str = "", timeout: float | None = None) -> Grant:
        """Wait until ``target`` is granted (asking again while Permits are granted without it).  Raises
        :class:`PermitDenied` with the last answer when ``timeout`` passes or the Permit ends ungranted
        (released or expired); the target is withdrawn then."""
        op = OperationType(operation).value
        key = _AskKey(op, intent, repair, reason)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            name = await self._asks.add(key, target)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                view = await self.permits.wait(name, timeout=left, until=_answered)
            except BaseException:
                self._withdraw(name, target)
                raise
            if view.state is PermitState.GRANTED and target in view.granted_targets:
                return Grant(name, target, op)
            self._drop(name, target)  # this permit will never grant it
            if view.state in FINAL:
                raise PermitDenied(view)

    async def release(self, grant: Grant, outcome: PermitOutcome) -> None:
        """Report ``grant``'s target finished: the risk center frees its budget (Failed counts for the
        breaker); the Permit is released once every target granted by it is."""
        await self._releases.add(grant.permit, (grant.target, outcome))
        self._drop(grant.permit, grant.target)

    def _withdraw(self, name: str, target: str) -> None:
        """The caller stopped waiting: mark the target Aborted (never granted after that, or freed at once if
        the grant crossed the withdrawal) in the background."""
        self._drop(name, target)
        task = asyncio.get_running_loop().create_task(self._releases.add(name, (target, PermitOutcome.ABORTED)))
        task.add_done_callback(_log_failure)

    def _drop(self, name: str, target: str) -> None:
        o = self._open.get(name)
        if o is not None:
            o.live.discard(target)
            if not o.live:
                del self._open[name]

    # ------------------------------------------------------------------ renewing
    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="permit-batch-renew")

    async def _renew_loop(self) -> None:
        """Renew every Permit someone still waits for or holds, every third of the TTL (a waiting one too: a
        long queue must not expire it)."""
        period = max(self.permits.ttl_seconds / 3.0, 0.05)
        while self._open:
            await self.permits.clock.sleep(period)
            for name in list(self._open):
                try:
                    await self.permits.renew(name)
                except NotFoundError:
                    self._open.pop(name, None)
                except (ApiError, TransportError) as e:
                    log.warning("renewing permit %s failed: %s", name, e)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._asks.close()
        await self._releases.close()


def _answered(v: PermitView) -> bool:
    """A grant (with or without the target: the rest of a partial grant is never granted later) or the end."""
    return v.state is PermitState.GRANTED or v.state in FINAL


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("withdrawing a permit target failed: %s", task.exception())
