"""Process entry point of ``kokpit scheduler``: client, Manager (leader election on the
``kube-system/kube-scheduler`` Lease, /healthz /readyz /metrics), the scheduler wired on it."""

from __future__ import annotations

import logging
from pathlib import Path

from kokpit.client import Client
from kokpit.runtime import LeaderElectionConfig, Manager
from kokpit.runtime.informer import strip_managed_fields
from kokpit.scheduler.scheduler import Scheduler, SchedulerOptions

__all__ = ["run_scheduler"]

log = logging.getLogger("kokpit.scheduler")


async def run_scheduler(kubeconfig: str | Path | None, options: SchedulerOptions | None = None, *,
                        http_host: str = "127.0.0.1", http_port: int | None = 0, leader_elect: bool = True,
                        identity: str | None = None, qps: float | None = None,
                        handle_signals: bool = True, metrics_tokens: list[str] | None = None) -> None:
    """Run until SIGTERM/SIGINT or cancellation."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kube-scheduler", qps=qps,
                                    burst=max(10, int(qps or 10)))
    try:
        le = None
        if leader_elect:
            le = LeaderElectionConfig(name="kube-scheduler", namespace="kube-system")
            if identity:
                le.identity = identity
        manager = Manager(client, leader_election=le, http_host=http_host, http_port=http_port,
                          handle_signals=handle_signals, cache_transform=strip_managed_fields,
                          metrics_tokens=metrics_tokens)
        Scheduler(manager, options)
        log.info("scheduler starting against %s", client.server)
        await manager.run()
    finally:
        await client.close()
