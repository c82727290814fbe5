"""Controllers: event sources → keys in a work queue → N workers calling an async ``reconcile``.

Level-triggered by construction: handlers only turn events into :class:`Request` keys (the object itself,
its controlling owner, or whatever a mapping function returns); ``reconcile`` reads current state and
decides.  Failures requeue with per-item backoff, :class:`TerminalError` stops retrying, ``Result``
asks for polling, and a reconcile that hangs is cut off by a timeout and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.runtime.informer import EventHandler, Handlers, Source
from kokpit.runtime.metrics import RuntimeMetrics
from kokpit.runtime.workqueue import RateLimiter, ShutDownError, WorkQueue

__all__ = [
    "Controller",
    "Predicate",
    "Reconciler",
    "Request",
    "Result",
    "TerminalError",
    "owner_mapper",
]

log = logging.getLogger("kokpit.runtime.controller")

Obj = dict[str, Any]


@dataclass(frozen=True, order=True)
class Request:
    """The key a reconcile works on: namespace ('' for cluster-scoped) and name."""

    namespace: str
    name: str

    @classmethod
    def for_object(cls, obj: Obj) -> Request:
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("namespace") or ""), str(meta.get("name")))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class Result:
    """What a successful reconcile wants next: nothing, a rate-limited requeue, or a requeue after a delay."""

    requeue: bool = False
    requeue_after: float | None = None


class TerminalError(Exception):
    """A reconcile error that retrying cannot fix (bad spec): logged and counted, never requeued."""


Reconciler = Callable[[Request], Awaitable[Result | None]]
Predicate = Callable[[Obj], bool]
Mapper = Callable[[Obj], Iterable[Request]]
UpdateDelay = Callable[[Obj, Obj], float]


def owner_mapper(
    owner_kind: str, owner_api_version: str | None = None, *, controller_only: bool = True
) -> Mapper:
    """Map an owned object to its owner's Request through ``ownerReferences`` (same namespace)."""

    def fn(obj: Obj) -> list[Request]:
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        out = []
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") != owner_kind:
                continue
            if owner_api_version is not None and ref.get("apiVersion") != owner_api_version:
                continue
            if controller_only and not ref.get("controller"):
                continue
            out.append(Request(ns, str(ref.get("name"))))
        return out

    return fn


class Controller:
    """A named reconcile loop: sources enqueue keys; ``workers`` tasks reconcile them one key at a time."""

    def __init__(
        self,
        name: str,
        reconcile: Reconciler,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = 60.0,
        needs_leader_election: bool = True,
        rate_limiter: RateLimiter[Request] | None = None,
        metrics: RuntimeMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.reconcile = reconcile
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self.needs_leader_election = needs_leader_election
        self.metrics = metrics if metrics is not None else RuntimeMetrics()
        self._clock: Clock = clock or RealClock()
        self._rate_limiter = rate_limiter
        self.queue: WorkQueue[Request] = self._new_queue()
        self._sources: list[Source] = []
        self._handlers: list[tuple[Source, EventHandler]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()

    def _new_queue(self) -> WorkQueue[Request]:
        return WorkQueue(self.name, rate_limiter=self._rate_limiter, clock=self._clock, metrics=self.metrics)

    # ------------------------------------------------------------------ wiring
    def watches(self, source: Source, mapper: Mapper, predicate: Predicate | None = None, *,
                update_delay: UpdateDelay | None = None) -> Controller:
        """Enqueue what ``mapper`` returns for every add/update/delete of ``source`` objects.

        ``update_delay(old, new)`` (seconds, 0 for at once) batches updates: keys enqueued with a delay
        are reconciled once for every update that arrives meanwhile, as kube's Job and EndpointSlice
        controllers batch pod updates, so an owner of thousands of pods is not re-read for every one of
        their status changes.  Adds and deletes are never delayed."""

        def enqueue(obj: Obj) -> None:
            if predicate is not None and not predicate(obj):
                return
            for req in mapper(obj):
                self.queue.add(req)

        def update(old: Obj, new: Obj) -> None:
            if predicate is not None and not (predicate(new) or predicate(old)):
                return
            delay = update_delay(old, new) if update_delay is not None else 0.0
            for req in {*mapper(old), *mapper(new)}:
                self.queue.add_after(req, delay)

        handler: EventHandler = Handlers(add=enqueue, update=update, delete=enqueue)
        source.add_event_handler(handler)
        self._sources.append(source)
        self._handlers.append((source, handler))
        return self

    def for_(self, source: Source, predicate: Predicate | None = None) -> Controller:
        """The primary kind: each object is its own key."""
        return self.watches(source, lambda o: [Request.for_object(o)], predicate)

    def owns(
        self,
        source: Source,
        owner_kind: str,
        owner_api_version: str | None = None,
        predicate: Predicate | None = None,
        *,
        update_delay: UpdateDelay | None = None,
    ) -> Controller:
        """Objects this controller creates: enqueue their controlling owner."""
        return self.watches(source, owner_mapper(owner_kind, owner_api_version), predicate,
                            update_delay=update_delay)

    # ------------------------------------------------------------------ running
    async def wait_synced(self) -> None:
        await asyncio.gather(*(s.wait_synced() for s in self._sources))

    async def run(self) -> None:
        """Wait for the sources' caches, then run the workers until cancelled (queue shut down on exit)."""
        if self.queue.shutting_down:
            # restarted (e.g. leadership regained): handlers feed ``self.queue``, so a fresh queue plus a
            # replay of every cached object makes the restart level-triggered like the first start
            self.queue = self._new_queue()
            for source, handler in self._handlers:
                for obj in source.objects():
                    handler.on_add(obj)
        await self.wait_synced()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self.workers)
        ]
        self.started.set()
        try:
            # wait, not gather: a cancelled gather waits for every worker, so one worker that swallowed its
            # cancellation (a reconcile catching CancelledError) would hang shutdown forever
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # re-raise a worker's crash
        finally:
            await self.queue.shutdown()  # first: idle workers leave get() even if they missed a cancel
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            self.started.clear()

    async def _worker(self) -> None:
        while True:
            try:
                req = await self.queue.get()
            except ShutDownError:
                return
            try:
                await self._process(req)
            finally:
                self.queue.done(req)

    async def _process(self, req: Request) -> None:
        t0 = self._clock.monotonic()
        m = self.metrics
        try:
            if self.reconcile_timeout is not None:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
                # arrives as the reconcile finishes, so a worker survived shutdown and hung the manager;
                # it also spares a task per reconcile
                async with asyncio.timeout(self.reconcile_timeout):
                    result = await self.reconcile(req)
            else:
                result = await self.reconcile(req)
        except TerminalError as e:
            m.reconcile_total.labels(self.name, "terminal_error").inc()
            m.reconcile_errors.labels(self.name).inc()
            log.error("%s: reconcile %s failed terminally: %s", self.name, req, e)
            self.queue.forget(req)
        except TimeoutError:
            m.reconcile_total.labels(self.name, "error").inc()
            m.reconcile_errors.labels(self.name).inc()
            log.error(
                "%s: reconcile %s timed out after %ss; requeued", self.name, req, self.reconcile_timeout
            )
            self.queue.add_rate_limited(req)
        except asyncio.CancelledError:
            raise
        except Exception:
            m.reconcile_total.labels(self.name, "error").inc()
            m.reconcile_errors.labels(self.name).inc()
            log.exception("%s: reconcile %s failed; requeued with backoff", self.name, req)
            self.queue.add_rate_limited(req)
        else:
            if result is not None and result.requeue_after is not None and result.requeue_after > 0:
                m.reconcile_total.labels(self.name, "requeue_after").inc()
                self.queue.forget(req)
                self.queue.add_after(req, result.requeue_after)
            elif result is not None and result.requeue:
                m.reconcile_total.labels(self.name, "requeue").inc()
                self.queue.add_rate_limited(req)
            else:
                m.reconcile_total.labels(self.name, "success").inc()
                self.queue.forget(req)
        finally:
            m.reconcile_duration.labels(self.name).observe(self._clock.monotonic() - t0)
