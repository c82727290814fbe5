"""The simulated hosts as fault-reporting agents: injected faults become NodeFault reports.

A real node agent reports what it sees on its host; a simulated host "sees" the faults injected into it
(``kokpit simulator fault NODE disk-failure``).  Each host's reported faults live in its durable record
(:class:`~kokpit.simulator._hosts.Host` ``reported``), and this reporter turns them into NodeFault reports
through :class:`kokpit.runtime.faultreports.FaultReporter` as reporter ``simulator/<node>``: at once when a
fault is injected, again every ``refresh`` seconds while it lasts (reports are heartbeats with a TTL of
``ttl``), and a clear when it is lifted.  After a restart one list of the NodeFaults reconciles what the API
says with what the hosts have: faults lifted while the simulator was down are cleared, the rest refreshed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kokpit._lib.aio import cancel_and_wait
from kokpit.api.fault import FaultState, SourceKind
from kokpit.client import ApiError, TransportError
from kokpit.runtime.faultreports import NODEFAULT, FaultReport, FaultReporter
from kokpit.simulator._hosts import HostBook

__all__ = ["HostFaultReporter"]

log = logging.getLogger("kokpit.simulator.faults")


def reporter_of(node: str) -> str:
    return f"simulator/{node}"


class HostFaultReporter:
    """Reports every host's injected faults as NodeFaults (see the module docstring)."""

    def __init__(self, client: Any, book: HostBook, *, ttl: int = 60, refresh: float = 20.0,
                 workers: int = 64) -> None:
        """``workers``: reports in flight at once.  Each simulated host stands for an agent of its own, so a
        storm's reports go out in parallel as they would from real hosts; a pool of 8 took a minute to report
        a 5,000-node storm at 10,000 nodes."""
        self.client = client
        self.book = book
        self.reporter = FaultReporter(client)
        self.ttl = ttl
        self.refresh = refresh
        self.workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._sent: dict[str, dict[str, float]] = {}  # node → type → monotonic time last reported
        self._tasks: list[asyncio.Task[None]] = []
        self.reports = 0
        self.errors = 0

    def host_changed(self, node: str) -> None:
        host = self.book.hosts.get(node)
        if host is None:
            return
        if host.reported or self._sent.get(node):
            self._enqueue(node)

    def _enqueue(self, node: str) -> None:
        if node not in self._queued:
            self._queued.add(node)
            self._queue.put_nowait(node)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"sim-faults-{i}") for i in range(self.workers)]
        self._tasks.append(loop.create_task(self._refresher(), name="sim-faults-refresh"))
        self._tasks.append(loop.create_task(self._resync(), name="sim-faults-resync"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _resync(self) -> None:
        """After a (re)start: clear what the API still holds from us that the hosts no longer have."""
        delay = 0.5
        while True:
            try:
                faults = (await self.client.list(NODEFAULT)).items
                break
            except (ApiError, TransportError) as e:  # the CRD may not be installed yet: look again
                log.debug("cannot list NodeFaults yet: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for f in faults:
            spec, st = f.get("spec") or {}, f.get("status") or {}
            node = str(spec.get("nodeName") or "")
            host = self.book.hosts.get(node)
            if host is None or st.get("state") != FaultState.ACTIVE:
                continue
            mine = [s for s in st.get("sources") or [] if s.get("reporter") == reporter_of(node) and not s.get("cleared")]
            if mine and str(spec.get("type")) not in host.reported:
                self._sent.setdefault(node, {})[str(spec.get("type"))] = 0.0
                self._enqueue(node)
        for node, host in self.book.hosts.items():
            if host.reported:
                self._enqueue(node)

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, self.refresh / 4))
            now = time.monotonic()
            for node, sent in list(self._sent.items()):
                if any(now - t >= self.refresh for t in sent.values()):
                    self._enqueue(node)

    async def _worker(self) -> None:
        while True:
            node = await self._queue.get()
            self._queued.discard(node)
            try:
                await self._sync(node)
            except (ApiError, TransportError, ValueError) as e:
                self.errors += 1
                log.warning("cannot report the faults of %s: %s", node, e)
                await asyncio.sleep(1.0)
                self._enqueue(node)

    async def _sync(self, node: str) -> None:
        host = self.book.hosts.get(node)
        if host is None:
            return
        sent = self._sent.setdefault(node, {})
        now = time.monotonic()
        for ftype, message in sorted(host.reported.items()):
            if ftype in sent and now - sent[ftype] < self.refresh:
                continue
            await self.reporter.report(FaultReport(node, ftype, reporter_of(node), message=message,
                                                   reason="InjectedFault", kind=SourceKind.AGENT,
                                                   ttl_seconds=self.ttl), likely_new=ftype not in sent)
            sent[ftype] = time.monotonic()
            self.reports += 1
        for ftype in [t for t in sent if t not in host.reported]:
            await self.reporter.clear(node, ftype, reporter_of(node), message="the fault was lifted")
            del sent[ftype]
        if not sent:
            self._sent.pop(node, None)
