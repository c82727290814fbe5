"""One simulator process: N simulated hosts behind the driver API, registered as Nodes, running pods.

Assembles the parts — host state (``_hosts``), the driver/fault HTTP server (``_http``), kubelet heartbeats
(``_heartbeats``) and pods (``_pods``) — so the CLI, tests and ``kokpit up`` start the same thing in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.metricsserver import MetricsServer
from kokpit.client import NODE, POD, Client
from kokpit.nodes.mtls import DriverServer, TLSFiles, is_wildcard, local_pki
from kokpit.runtime import EventRecorder, Handlers, InformerFactory
from kokpit.simulator._faultreports import HostFaultReporter
from kokpit.simulator._heartbeats import SIMULATED_LABEL, NodeHeartbeats
from kokpit.simulator._hosts import FailRule, HostBook, HostDB
from kokpit.simulator._http import DriverApp
from kokpit.simulator._pods import PodRunner

__all__ = ["Simulator", "SimulatorOptions", "node_names", "run"]

log = logging.getLogger("kokpit.simulator")


def node_names(prefix: str, count: int) -> list[str]:
    """``<prefix>00001`` … (five digits, more when needed)."""
    width = max(5, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


@dataclass
class SimulatorOptions:
    """Everything ``kokpit simulator`` takes on its command line."""

    kubeconfig: Path | None = None
    nodes: int = 10
    seed: int = 0
    lease_period: float = 10.0
    lease_jitter: float = 0.04
    status_report_period: float = 300.0
    data_dir: Path | None = None  # None: host state lives in memory only
    driver_host: str = "127.0.0.1"
    driver_port: int = 9740  # 0 picks a free port
    driver_advertise: str = ""  # the host in the advertised driver URL (default driver_host; never a wildcard)
    tls: TLSFiles | None = None  # the driver server's credentials; None: the simulator's own PKI
    metrics_port: int | None = None  # /metrics (HTTPS, bearer token) and probes; None: off
    metrics_host: str = "127.0.0.1"
    metrics_tokens: list[str] = field(default_factory=list)
    name_prefix: str = "sim-"
    install_seconds: float = 0.0
    repair_seconds: float = 2.0  # how long a simulated reboot / reinstall / component restart takes
    fail_probability: float = 0.0
    fail_rules: list[FailRule] = field(default_factory=list)
    hang_seconds: float = 300.0
    heartbeat_workers: int = 0  # concurrent Lease renewals; 0: scale with --nodes (8..64)
    pod_workers: int = 8
    qps: float | None = None
    fault_report_ttl: int = 60  # TTL of the NodeFault reports the hosts make for injected faults
    fault_report_refresh: float = 20.0  # how often a lasting fault is reported again (a heartbeat)


class Simulator:
    """Start with :meth:`start`, stop with :meth:`stop`; ``driver_url`` is where the node driver answers."""

    def __init__(self, opts: SimulatorOptions, client: Client | None = None) -> None:
        self.opts = opts
        self._own_client = client is None
        if client is None:
            try:
                client = Client.from_kubeconfig(opts.kubeconfig, field_manager="kokpit-simulator",
                                                qps=opts.qps, burst=max(10, int(opts.qps or 10)))
            except Exception as e:  # lightkube's ConfigError and file errors: say what to fix
                raise RuntimeError(f"cannot load kubeconfig {opts.kubeconfig or '(default)'}: {e}") from e
        self.client = client
        self.book: HostBook | None = None
        self.heartbeats: NodeHeartbeats | None = None
        self.runner: PodRunner | None = None
        self.fault_reporter: HostFaultReporter | None = None
        self.factory = InformerFactory(self.client)
        self.driver_url = ""
        self._server: DriverServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.client_tls: TLSFiles | None = None  # callers' credentials when the simulator made its own PKI
        self.metrics: MetricsServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._lock: IO[bytes] | None = None
        self._stopped = False

    def _lock_data_dir(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        f = open(data_dir / "simulator.lock", "wb")  # held for the process lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RuntimeError(f"{data_dir} is used by another running simulator") from None
        self._lock = f

    async def start(self) -> None:
        o = self.opts
        db = None
        if o.data_dir is not None:
            self._lock_data_dir(o.data_dir)
            db = HostDB(o.data_dir / "hosts.sqlite")
        self.book = book = HostBook(node_names(o.name_prefix, o.nodes), seed=o.seed,
                                    install_seconds=o.install_seconds, repair_seconds=o.repair_seconds,
                                    fail_probability=o.fail_probability,
                                    fail_rules=o.fail_rules, db=db)
        await book.start()
        # renewals are latency-bound (the server's group commit), so concurrency grows with the fleet
        workers = o.heartbeat_workers or min(64, max(8, o.nodes // 150))
        await self._serve_driver(DriverApp(book, hang_seconds=o.hang_seconds))
        self.heartbeats = NodeHeartbeats(self.client, book, seed=o.seed, lease_period=o.lease_period,
                                 lease_jitter=o.lease_jitter, status_report_period=o.status_report_period,
                                 driver_url=self.driver_url, workers=workers)
        pods = self.factory.informer(POD)
        nodes = self.factory.informer(NODE, label_selector=f"{SIMULATED_LABEL}=true")
        self.runner = PodRunner(self.client, book, pods, workers=o.pod_workers)
        book.listeners.append(self.heartbeats.host_changed)
        book.listeners.append(self.runner.host_changed)
        self.fault_reporter = HostFaultReporter(self.client, book, ttl=o.fault_report_ttl,
                                                refresh=o.fault_report_refresh)
        book.listeners.append(self.fault_reporter.host_changed)
        self.recorder = EventRecorder(self.client, "kokpit-simulator")
        self._events: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue(maxsize=10_000)
        book.event_listeners.append(self._queue_event)
        heartbeats = self.heartbeats
        nodes.add_event_handler(Handlers(add=heartbeats.node_seen, update=lambda _old, new: heartbeats.node_seen(new)))
        if o.metrics_port is not None:
            self.client.metrics.registry.register(_StatsCollector(self))
            self.metrics = MetricsServer(self.client.metrics.registry, host=o.metrics_host, port=o.metrics_port,
                                         tokens=o.metrics_tokens, ready=lambda: self.heartbeats is not None)
            try:
                await self.metrics.start()
            except OSError as e:
                raise RuntimeError(f"cannot serve metrics on {o.metrics_host}:{o.metrics_port}: {e}") from None
        secs = await self.heartbeats.register()
        log.info("registered %d nodes in %.2fs; driver at %s", len(book.hosts), secs, self.driver_url)
        self.heartbeats.start()
        self.factory.start()
        await self.fault_reporter.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.runner.controller.run(), name="sim-pods"))
        self._tasks.append(loop.create_task(self._post_events(), name="sim-events"))

    async def _serve_driver(self, app: DriverApp) -> None:
        """The driver API over mutual TLS: with the credentials given (a Pod's mounted PKI Secret), else the
        simulator's own PKI (in the data dir, or a temporary folder), whose caller side is ``client_tls``."""
        o = self.opts
        files = o.tls
        if files is None:
            if o.data_dir is not None:
                folder = o.data_dir / "pki"
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="kokpit-sim-pki-")
                folder = Path(self._tmp.name)
            hosts = ["127.0.0.1", "localhost", *([o.driver_advertise or o.driver_host])]
            files, self.client_tls = local_pki(folder, [h for h in hosts if not is_wildcard(h)])
        try:
            server = DriverServer(app, o.driver_host, o.driver_port, files, advertise=o.driver_advertise or None)
            self.driver_url = await server.start()
        except (ValueError, ssl.SSLError) as e:
            raise RuntimeError(f"cannot serve the node driver: {e}") from None
        except RuntimeError as e:
            raise RuntimeError(f"{e}; choose another --driver-port") from None
        self._server = server
        if o.data_dir is not None:
            (o.data_dir / "driver-url").write_text(self.driver_url + "\n")

    def _queue_event(self, node: str, type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # events are best effort; a flood never blocks a host
            self._events.put_nowait((node, type_, reason, message))

    async def _post_events(self) -> None:
        """Events on the Nodes, as a kubelet records them (involvedObject uid = the node name)."""
        while True:
            node, type_, reason, message = await self._events.get()
            ref = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "uid": node}}
            await self.recorder.event(ref, type_, reason, message)

    def stats(self) -> dict[str, Any]:
        k, r = self.heartbeats, self.runner
        return {
            "nodes": len(self.book.hosts) if self.book else 0,
            "registrationSeconds": round(k.registration_seconds, 3) if k else None,
            "leaseRenewals": k.lease_renewals if k else 0,
            "statusPosts": k.status_posts if k else 0,
            "errors": k.errors if k else 0,
            "podsStarted": r.started if r else 0,
            "podsFailed": r.failed if r else 0,
            "podsDeleted": r.deleted if r else 0,
        }

    async def stop(self) -> None:
        """Idempotent; flushes host state and releases the data directory."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            await self._server.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.heartbeats is not None:
            await self.heartbeats.stop()
        if self.fault_reporter is not None:
            await self.fault_reporter.stop()
        await self.factory.stop()
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.book is not None:
            await self.book.stop()
        if self._own_client:
            await self.client.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class _StatsCollector(Collector):
    """The simulator's own figures (nodes, renewals, pods, install actions) next to its client's metrics."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def collect(self) -> Iterator[Metric]:
        stats = self.sim.stats()
        names = {"nodes": ("kokpit_simulator_nodes", "Simulated hosts"),
                 "leaseRenewals": ("kokpit_simulator_lease_renewals", "Node Lease renewals so far"),
                 "statusPosts": ("kokpit_simulator_node_status_posts", "Node status writes so far"),
                 "errors": ("kokpit_simulator_errors", "Failed heartbeat or status writes so far"),
                 "podsStarted": ("kokpit_simulator_pods_started", "Pods started so far"),
                 "podsFailed": ("kokpit_simulator_pods_failed", "Pods failed so far")}
        for key, (name, doc) in names.items():
            yield GaugeMetricFamily(name, doc, value=float(stats.get(key) or 0))
        book = self.sim.book
        if book is not None:
            faulty = sum(1 for h in book.hosts.values() if h.hardware or h.hung)
            yield GaugeMetricFamily("kokpit_simulator_faulted_nodes", "Hosts with a hardware fault or hung",
                                    value=float(faulty))


async def serve(opts: SimulatorOptions) -> None:
    """Run until SIGTERM/SIGINT."""
    sim = Simulator(opts)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
        print(f"kokpit simulator: {opts.nodes} nodes registered in "
              f"{sim.heartbeats.registration_seconds if sim.heartbeats else 0:.2f}s; driver at {sim.driver_url}",
              flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def run(opts: SimulatorOptions) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(serve(opts))
