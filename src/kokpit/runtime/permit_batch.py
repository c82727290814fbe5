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
:class:`~kokpit.runtime.permit_gate.PermitGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.groupcommit import GroupCommit
from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.client import ApiError, NotFoundError, TransportError
from kokpit.runtime.permits import FINAL, PermitClient, PermitDenied, PermitView, SharedAsk

__all__ = ["Grant", "PermitBatcher"]

log = logging.getLogger("kokpit.runtime.permit_batch")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Grant:
    """One granted target of a (possibly shared) Permit; hand it back to :meth:`PermitBatcher.release`."""

    permit: str
    target: str
    operation: str


@dataclass
class _Open:
    """A Permit this batcher created, and which of its targets someone still waits for or holds."""

    live: set[str] = field(default_factory=set)


class PermitBatcher:
    """Asks for one target at a time, permits for many at once.  One batcher per :class:`PermitClient` (one
    holder, one Cluster)."""

    def __init__(self, permits: PermitClient, *, max_targets: int = 1000) -> None:
        self.permits = permits
        self._asks: GroupCommit[SharedAsk, str, str] = GroupCommit(self._create, max_targets)
        self._releases: GroupCommit[str, tuple[str, PermitOutcome, Obj | None], None] = GroupCommit(
            permits.report_finished, max_targets)
        self._open: dict[str, _Open] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def creates(self) -> int:
        """Permits created so far (asks ÷ creates is how much the batching saved)."""
        return self._asks.writes

    # ------------------------------------------------------------------ the writes
    async def _create(self, ask: SharedAsk, targets: list[str]) -> list[str]:
        names = await self.permits.create_shared(ask, targets)
        if names:
            self._open.setdefault(names[0], _Open()).live.update(targets)
            self._start_renewing()
        return names

    # ------------------------------------------------------------------ asking and releasing
    async def acquire(self, operation: OperationType | str, target: str, *, intent: str = "",
                      repair: bool = False, reason: str = "", timeout: float | None = None) -> Grant:
        """Wait until ``target`` is granted (asking again while Permits are granted without it).  Raises
        :class:`PermitDenied` with the last answer when ``timeout`` passes or the Permit ends ungranted
        (released or expired); the target is withdrawn then."""
        op = OperationType(operation).value
        key = SharedAsk(op, intent, repair, reason)
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

    async def release(self, grant: Grant, outcome: PermitOutcome, post_check: Obj | None = None) -> None:
        """Report ``grant``'s target finished: the risk center frees its budget (Failed counts for the
        breaker); the Permit is released once every target granted by it is.  ``post_check`` (a CheckRecord)
        is kept on the Permit in ``targetChecks``."""
        await self._releases.add(grant.permit, (grant.target, outcome, post_check))
        self._drop(grant.permit, grant.target)

    def _withdraw(self, name: str, target: str) -> None:
        """The caller stopped waiting: mark the target Aborted (never granted after that, or freed at once if
        the grant crossed the withdrawal) in the background."""
        self._drop(name, target)
        task = asyncio.get_running_loop().create_task(self._releases.add(name, (target, PermitOutcome.ABORTED,
                                                                                  None)))
        self._background.add(task)  # held: the loop keeps only a weak reference to a task
        task.add_done_callback(self._background.discard)
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
