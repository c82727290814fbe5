"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's algorithm and defaults.

Only one replica of an operator may act; the others wait warm (caches synced) and take over when the
leader stops renewing.  Expiry is judged by the local clock from the moment this replica last *saw the
lease record change* (never by comparing wall clocks across machines), as client-go does.  Optimistic
concurrency on the Lease's resourceVersion makes two candidates racing for an expired lease safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from kokpit._lib.clock import Clock, RealClock, format_micro_time
from kokpit.client import LEASE, ApiError, Kind, NotFoundError, TransportError

__all__ = ["LeaderElectionConfig", "LeaderElector", "LeaseClient", "default_identity"]

log = logging.getLogger("kokpit.runtime.leaderelection")

Obj = dict[str, Any]


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass
class LeaderElectionConfig:
    """Lease name/namespace and timings (seconds); defaults are client-go's 15 / 10 / 2."""

    name: str
    namespace: str = "default"
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")


class LeaseClient(Protocol):
    """The part of :class:`kokpit.client.Client` leader election uses (fakes implement it in tests)."""

    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, *, subresource: str | None = None
    ) -> Obj: ...

    async def create(
        self, kind: Kind, obj: Obj, namespace: str | None = None, *, dry_run: bool = False
    ) -> Obj: ...

    async def update(self, kind: Kind, obj: Obj, *, subresource: str | None = None) -> Obj: ...


def _record(spec: Obj) -> tuple[Any, ...]:
    return (
        spec.get("holderIdentity"),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseTransitions"),
        spec.get("leaseDurationSeconds"),
    )


class LeaderElector:
    """Campaigns for a Lease; calls ``on_started_leading`` when it wins, cancels it when leadership is lost."""

    def __init__(self, client: LeaseClient, config: LeaderElectionConfig, clock: Clock | None = None) -> None:
        self.client = client
        self.config = config
        self._clock: Clock = clock or RealClock()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._lease: Obj | None = None
        self.is_leader = False
        self.leading = asyncio.Event()
        self.observed_holder: str | None = None
        self.transitions = 0  # times this elector became leader

    @property
    def identity(self) -> str:
        return self.config.identity

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the lease afterwards."""
        cfg = self.config
        now = self._clock.now()
        mono = self._clock.monotonic()
        try:
            lease = await self.client.get(LEASE, cfg.name, cfg.namespace)
        except NotFoundError:
            spec: Obj = {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": int(cfg.lease_duration),
                "acquireTime": format_micro_time(now),
                "renewTime": format_micro_time(now),
                "leaseTransitions": 0,
            }
            body = {"metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": spec}
            try:
                self._lease = await self.client.create(LEASE, body, cfg.namespace)
            except (ApiError, TransportError) as e:
                log.debug("%s: create lease failed: %s", cfg.identity, e)
                return False
            self._observe(spec, mono)
            return True
        except (ApiError, TransportError) as e:
            log.debug("%s: get lease failed: %s", cfg.identity, e)
            return False

        spec = dict(lease.get("spec") or {})
        rec = _record(spec)
        if rec != self._observed:
            self._observed = rec
            self._observed_at = mono
        holder = spec.get("holderIdentity") or ""
        self.observed_holder = holder or None
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and holder != cfg.identity and self._observed_at + duration > mono:
            return False  # someone else holds an unexpired lease
        new_spec: Obj = dict(spec)
        new_spec["holderIdentity"] = cfg.identity
        new_spec["leaseDurationSeconds"] = int(cfg.lease_duration)
        new_spec["renewTime"] = format_micro_time(now)
        if holder != cfg.identity:
            new_spec["acquireTime"] = format_micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        body = {**lease, "spec": new_spec}
        try:
            self._lease = await self.client.update(LEASE, body)
        except (ApiError, TransportError) as e:
            log.debug("%s: update lease failed: %s", cfg.identity, e)
            return False
        self._observe(new_spec, mono)
        return True

    def _observe(self, spec: Obj, mono: float) -> None:
        self._observed = _record(spec)
        self._observed_at = mono
        self.observed_holder = spec.get("holderIdentity")

    async def release(self) -> None:
        """Give the lease up so a successor need not wait for expiry."""
        if self._lease is None or not self.is_leader:
            return
        spec = dict(self._lease.get("spec") or {})
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=format_micro_time(self._clock.now()))
        with contextlib.suppress(ApiError, TransportError):
            await self.client.update(LEASE, {**self._lease, "spec": spec})

    async def _renew_until_lost(self) -> None:
        cfg = self.config
        last_ok = self._clock.monotonic()
        while True:
            await self._clock.sleep(cfg.retry_period)
            remaining = cfg.renew_deadline - (self._clock.monotonic() - last_ok)
            ok = False
            if remaining > 0:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), remaining)
                except TimeoutError:
                    ok = False
            if ok:
                last_ok = self._clock.monotonic()
            elif self._clock.monotonic() - last_ok >= cfg.renew_deadline:
                return

    async def run(
        self,
        on_started_leading: Callable[[], Coroutine[Any, Any, None]],
        on_stopped_leading: Callable[[], None] | None = None,
        *,
        once: bool = False,
    ) -> None:
        """Campaign forever (or until the first loss with ``once``); run the leader callback while leading."""
        cfg = self.config
        try:
            while True:
                while not await self.try_acquire_or_renew():
                    await self._clock.sleep(cfg.retry_period)
                self.is_leader = True
                self.transitions += 1
                self.leading.set()
                log.info("%s: became leader of %s/%s", cfg.identity, cfg.namespace, cfg.name)
                work: asyncio.Task[None] = asyncio.get_running_loop().create_task(on_started_leading())
                renew = asyncio.get_running_loop().create_task(self._renew_until_lost())
                try:
                    await asyncio.wait({work, renew}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (work, renew):
                        t.cancel()
                    for t in (work, renew):
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await t
                    self.is_leader = False
                    self.leading.clear()
                log.warning("%s: lost leadership of %s/%s", cfg.identity, cfg.namespace, cfg.name)
                if on_stopped_leading is not None:
                    on_stopped_leading()
                if once:
                    return
        except asyncio.CancelledError:
            if cfg.release_on_cancel and self._lease is not None:
                self.is_leader = True
                await self.release()
                self.is_leader = False
            raise
