"""Process entry point of ``kokpit node-agent``: the agent, its mutual-TLS server and its fault reporter.

Refuses to start without TLS credentials: there is no plain-HTTP mode, because the driver API installs
software as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from kokpit.agent._agent import Agent, AgentApp, AgentConfig
from kokpit.agent._faults import FaultChecker, NodeFaultReporter, NodeReporter
from kokpit.nodes.mtls import DriverServer, TLSFiles
from kokpit.nodes.repair import SiteRepair

__all__ = ["AgentOptions", "run_agent"]

log = logging.getLogger("kokpit.agent")


@dataclass
class AgentOptions:
    roots: dict[str, Path]
    tls: TLSFiles
    host: str = "127.0.0.1"
    port: int = 9750
    advertise: str | None = None
    kubeconfig: Path | None = None  # for fault reports on the Node; None: metrics and state messages only
    netns: Path | None = None
    refresh_interval: float = 30.0
    min_free_percent: float = 5.0
    min_free_bytes: int = 256 * 1024 * 1024
    repair_command: list[str] = field(default_factory=list)
    repair_webhook: str = ""
    ready_file: Path | None = None  # written with the URL once serving (tests, scripts)


async def run_agent(opts: AgentOptions, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``)."""
    opts.tls.check()
    repair = None
    if opts.repair_command or opts.repair_webhook:
        repair = SiteRepair(command=opts.repair_command or None, webhook=opts.repair_webhook or None)
    config = AgentConfig(roots=opts.roots, netns=opts.netns, refresh_interval=opts.refresh_interval,
                         fault_checker=FaultChecker(opts.min_free_percent, opts.min_free_bytes), repair=repair)
    client = None
    reporter = None
    fault_reporter = None
    if opts.kubeconfig is not None:
        from kokpit.client import Client

        client = Client.from_kubeconfig(opts.kubeconfig, field_manager="kokpit-node-agent")
        reporter = NodeReporter(client)
        # NodeFaults are heartbeats refreshed on every look at the host: a TTL of three looks (at least 60 s)
        fault_reporter = NodeFaultReporter(client, ttl_seconds=max(60, int(3 * opts.refresh_interval) + 1))
    agent = Agent(config, reporter=reporter, fault_reporter=fault_reporter)
    server = DriverServer(AgentApp(agent), opts.host, opts.port, opts.tls, advertise=opts.advertise)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
        url = await server.start()
        log.info("node agent for %d host(s) serving %s", len(agent.hosts), url)
        if opts.ready_file is not None:
            opts.ready_file.write_text(url)
        await stop.wait()
    finally:
        await server.stop()
        await agent.close()
        if client is not None:
            await client.close()
