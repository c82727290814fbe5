"""Process entry point of the rollout controller, shared by ``kokpit rollout-controller``, ``kokpit up`` and
tests: client from kubeconfig, a Manager (leader election on the Lease ``kokpit-rollout-controller``,
probes and HTTPS /metrics), the controller wired onto it, and a clean shutdown."""

from __future__ import annotations

import logging
from pathlib import Path

from kokpit.client import Client
from kokpit.operators.rollout._reconciler import RolloutOptions
from kokpit.operators.rollout.operator import RolloutController
from kokpit.runtime import LeaderElectionConfig, Manager
from kokpit.runtime.informer import strip_managed_fields

__all__ = ["LEASE", "run_controller"]

log = logging.getLogger("kokpit.operators.rollout")
LEASE = "kokpit-rollout-controller"


async def run_controller(kubeconfig: str | Path | None, options: RolloutOptions | None = None, *,
                         http_port: int | None = 0, http_host: str = "127.0.0.1", handle_signals: bool = True,
                         leader_election: bool = True, lease_namespace: str | None = None,
                         metrics_tokens: list[str] | None = None) -> None:
    """Run the rollout controller until SIGTERM/SIGINT (or cancellation)."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-rollout-controller")
    controller: RolloutController | None = None
    try:
        # the Lease lives in the kubeconfig's (in a Pod: its own) namespace unless told otherwise
        ns = lease_namespace or client.namespace or "default"
        le = LeaderElectionConfig(name=LEASE, namespace=ns) if leader_election else None
        manager = Manager(client, leader_election=le, http_host=http_host, http_port=http_port,
                          handle_signals=handle_signals, cache_transform=strip_managed_fields,
                          metrics_tokens=metrics_tokens)
        controller = RolloutController(manager, options)
        log.info("rollout controller starting against %s", client.server)
        await manager.run()
    finally:
        if controller is not None:
            await controller.close()
        await client.close()
