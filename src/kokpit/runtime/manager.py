"""The Manager: one process-level owner of informers, controllers, leader election and probes.

An operator's ``main`` builds a Manager, asks it for shared informers, registers controllers and calls
:meth:`Manager.run`.  The Manager waits for caches to sync before workers start, runs leader-only
controllers only while it holds the Lease, serves ``/metrics``, ``/healthz`` and ``/readyz`` on one small
HTTP port, and shuts everything down in order on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kokpit._lib.clock import Clock, RealClock
from kokpit.client import Client
from kokpit.runtime.controller import Controller, Reconciler
from kokpit.runtime.informer import InformerFactory, Transform
from kokpit.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from kokpit.runtime.metrics import RuntimeMetrics

__all__ = ["Manager", "Runnable"]

log = logging.getLogger("kokpit.runtime.manager")

Runnable = Callable[[], Coroutine[Any, Any, None]]


class Manager:
    """Runs informers, controllers and runnables; ``http_port=None`` disables the probe/metrics server."""

    def __init__(
        self,
        client: Client,
        *,
        leader_election: LeaderElectionConfig | None = None,
        http_host: str = "127.0.0.1",
        http_port: int | None = 0,
        resync_period: float | None = None,
        handle_signals: bool = True,
        clock: Clock | None = None,
        cache_transform: Transform | None = None,
    ) -> None:
        self.client = client
        self.registry = client.metrics.registry
        self.metrics = RuntimeMetrics(self.registry)
        self._clock: Clock = clock or RealClock()
        self.informers = InformerFactory(
            client, resync_period=resync_period, clock=self._clock, transform=cache_transform
        )
        self.elector = LeaderElector(client, leader_election, self._clock) if leader_election else None
        self.controllers: list[Controller] = []
        self._runnables: list[tuple[Runnable, bool]] = []
        self.http_host = http_host
        self._http_port = http_port
        self._server: asyncio.base_events.Server | None = None
        self._handle_signals = handle_signals
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.synced = asyncio.Event()

    # ------------------------------------------------------------------ building
    def controller(self, name: str, reconcile: Reconciler, **kwargs: Any) -> Controller:
        """Create and register a controller sharing this manager's metrics and clock."""
        kwargs.setdefault("metrics", self.metrics)
        kwargs.setdefault("clock", self._clock)
        c = Controller(name, reconcile, **kwargs)
        self.add_controller(c)
        return c

    def add_controller(self, controller: Controller) -> None:
        self.controllers.append(controller)

    def add_runnable(self, fn: Runnable, *, needs_leader_election: bool = False) -> None:
        self._runnables.append((fn, needs_leader_election))

    @property
    def http_port(self) -> int | None:
        if self._server is None:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector else True

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        tasks: list[asyncio.Task[None]] = []
        try:
            if self._http_port is not None:
                self._server = await asyncio.start_server(self._serve_http, self.http_host, self._http_port)
            self.informers.start()
            self.started.set()
            stop_wait = loop.create_task(self._stop.wait())
            sync_wait = loop.create_task(self.informers.wait_synced())
            await asyncio.wait({stop_wait, sync_wait}, return_when=asyncio.FIRST_COMPLETED)
            sync_wait.cancel()
            if self._stop.is_set():
                return
            self.synced.set()
            always = [c.run for c in self.controllers if not (c.needs_leader_election and self.elector)]
            always += [fn for fn, le in self._runnables if not (le and self.elector)]
            for fn in always:
                tasks.append(loop.create_task(fn()))
            if self.elector is not None:
                leader_only = [c.run for c in self.controllers if c.needs_leader_election]
                leader_only += [fn for fn, le in self._runnables if le]

                async def lead() -> None:
                    await asyncio.gather(*(fn() for fn in leader_only))
                    await asyncio.Event().wait()  # keep leading until cancelled

                tasks.append(loop.create_task(self.elector.run(lead)))
            await stop_wait
        finally:
            log.info("manager shutting down")
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.informers.stop()
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(Exception):
                    await self._server.wait_closed()
                self._server = None
            for sig in installed:
                loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ probes and metrics
    def _ready(self) -> bool:
        return self.synced.is_set() and self.informers.has_synced

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/metrics":
                code, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path in ("/healthz", "/livez"):
                code, ctype, body = 200, "text/plain", b"ok"
            elif path == "/readyz":
                ok = self._ready()
                code, ctype, body = (
                    (200 if ok else 503),
                    "text/plain",
                    (b"ok" if ok else b"caches not synced"),
                )
            else:
                code, ctype, body = 404, "text/plain", b"not found"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            head = f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
