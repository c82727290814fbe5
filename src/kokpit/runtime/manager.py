"""The Manager: one process-level owner of informers, controllers, leader election and probes.

An operator's ``main`` builds a Manager, asks it for shared informers, registers controllers and calls
:meth:`Manager.run`.  The Manager waits for caches to sync before workers start, runs leader-only
controllers only while it holds the Lease, serves ``/metrics`` (HTTPS, bearer token:
:class:`kokpit._lib.metricsserver.MetricsServer`), ``/healthz`` and ``/readyz`` on one port, and shuts
everything down in order on SIGTERM/SIGINT.

Leader election renews its Lease over a client of its own (``Client.sibling``: same server and credentials,
two connections, no client-side rate limit): the Manager's client queues requests beyond its connection pool
and its QPS, and an operator writing in bursts (a scheduler binding a 1,000-node DaemonSet, a
controller-manager creating pods in batches of 256, a risk center answering 1,000 permits) would otherwise put
the renewal behind hundreds of writes — long enough, on a loaded machine, to lose the Lease mid-work and start
over (measured: the scheduler lost it six times in six minutes of a 1,000-node run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit._lib.metricsserver import MetricsServer
from kokpit.client import Client
from kokpit.runtime.controller import Controller, Reconciler
from kokpit.runtime.informer import InformerFactory, Transform
from kokpit.runtime.leaderelection import LeaderElectionConfig, LeaderElector, LeaseClient
from kokpit.runtime.metrics import RuntimeMetrics
from kokpit.runtime.metricsauth import DelegatedMetricsAuth

__all__ = ["Manager", "Runnable"]

log = logging.getLogger("kokpit.runtime.manager")

Runnable = Callable[[], Coroutine[Any, Any, None]]


class Manager:
    """Runs informers, controllers and runnables; ``http_port=None`` disables the probe/metrics server.

    ``metrics_tokens`` are the bearer tokens ``/metrics`` accepts (the cluster's, from a token file); an empty
    list hands every token to the API server instead (TokenReview + SubjectAccessReview on ``/metrics``:
    :mod:`kokpit.runtime.metricsauth`); None makes a random one (:attr:`metrics_tokens`), so the endpoint is
    never open.  ``lease_client`` is what leader election talks to; by default a sibling of ``client`` with
    its own connections (closed when :meth:`run` returns).
    """

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
        metrics_tokens: list[str] | None = None,
        lease_client: LeaseClient | None = None,
    ) -> None:
        self.client = client
        self.metrics_tokens = list(metrics_tokens) if metrics_tokens is not None else [secrets.token_urlsafe(32)]
        self.metrics_auth = DelegatedMetricsAuth(client) if not self.metrics_tokens else None
        self.registry = client.metrics.registry
        self.metrics = RuntimeMetrics(self.registry)
        self._clock: Clock = clock or RealClock()
        self.informers = InformerFactory(
            client, resync_period=resync_period, clock=self._clock, transform=cache_transform
        )
        self._own_lease_client: Client | None = None
        if leader_election is not None and lease_client is None:
            lease_client = self._own_lease_client = client.sibling(lean_connections=2)
        self.elector = LeaderElector(lease_client or client, leader_election, self._clock) \
            if leader_election else None
        self.controllers: list[Controller] = []
        self._runnables: list[tuple[Runnable, bool]] = []
        self.http_host = http_host
        self._http_port = http_port
        self._server: MetricsServer | None = None
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
        return self._server.port if self._server is not None else None

    @property
    def metrics_url(self) -> str:
        """``https://HOST:PORT/metrics`` once running ("" when the server is off)."""
        return self._server.url if self._server is not None else ""

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
                server = MetricsServer(self.registry, host=self.http_host, port=self._http_port,
                                       tokens=self.metrics_tokens, ready=self._ready, authorize=self.metrics_auth)
                await server.start()
                self._server = server
                log.info("metrics at %s", server.url)
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
            if self._own_lease_client is not None:
                await self._own_lease_client.close()
            if self._server is not None:
                await self._server.stop()
                self._server = None
            for sig in installed:
                loop.remove_signal_handler(sig)

    # ------------------------------------------------------------------ probes and metrics
    def _ready(self) -> bool:
        return self.synced.is_set() and self.informers.has_synced
