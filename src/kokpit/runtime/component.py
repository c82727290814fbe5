"""How a control-plane component process runs: one client, one Manager, leader election, probes, metrics.

The scheduler and the controller-manager (and any other component that is a set of controllers on a
Manager) differ only in their name, their Lease and what they wire onto the Manager; everything else —
the client's field manager and rate limits, leader election with an optional fixed identity, the
/healthz /readyz /metrics server, managed fields stripped from the cache, closing the client on exit — is
decided here once.

Leader election renews its Lease over a client of its own (the Manager's default, see
:mod:`kokpit.runtime.manager`), so a burst of binds or pod creates never queues the renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kokpit.client import Client
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.leaderelection import LeaderElectionConfig
from kokpit.runtime.manager import Manager

__all__ = ["ComponentConfig", "run_component"]

log = logging.getLogger("kokpit.runtime.component")


@dataclass
class ComponentConfig:
    """Process-level settings of a component (its command-line flags)."""

    http_host: str = "127.0.0.1"
    http_port: int | None = 0
    leader_elect: bool = True
    identity: str | None = None
    qps: float | None = None
    handle_signals: bool = True
    metrics_tokens: list[str] | None = field(default=None)


async def run_component(kubeconfig: str | Path | None, name: str, wire: Callable[[Manager], object],
                        config: ComponentConfig | None = None, *, lease: str | None = None,
                        lease_namespace: str = "kube-system") -> None:
    """Run ``wire``'s controllers as component ``name`` until SIGTERM/SIGINT or cancellation.

    ``name`` is the client's field manager and, unless ``lease`` says otherwise, the Lease replicas elect
    their leader on (``kube-system/<name>``, as kube-scheduler and kube-controller-manager do)."""
    config = config or ComponentConfig()
    client = Client.from_kubeconfig(kubeconfig, field_manager=name, qps=config.qps,
                                    burst=max(10, int(config.qps or 10)))
    try:
        le = None
        if config.leader_elect:
            le = LeaderElectionConfig(name=lease or name, namespace=lease_namespace)
            if config.identity:
                le.identity = config.identity
        manager = Manager(client, leader_election=le, http_host=config.http_host, http_port=config.http_port,
                          handle_signals=config.handle_signals, cache_transform=strip_managed_fields,
                          metrics_tokens=config.metrics_tokens)
        wire(manager)
        log.info("%s starting against %s", name, client.server)
        await manager.run()
    finally:
        await client.close()
