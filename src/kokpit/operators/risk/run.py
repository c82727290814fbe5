"""Process entry point of the risk center, shared by ``kokpit risk-center``, ``kokpit up`` and tests."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from kokpit.client import AlreadyExistsError, Client
from kokpit.operators.risk.center import CenterOptions, RiskCenter
from kokpit.operators.risk.defaults import default_policies
from kokpit.runtime import LeaderElectionConfig, Manager
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.permits import RISK_POLICY

__all__ = ["install_default_policies", "run_center"]

log = logging.getLogger("kokpit.operators.risk")


async def install_default_policies(client: Client) -> int:
    """Create the shipped policies that do not exist (never overwrites a person's edits); returns how many."""
    made = 0
    for body in default_policies():
        with contextlib.suppress(AlreadyExistsError):
            await client.create(RISK_POLICY, body)
            made += 1
    return made


async def run_center(kubeconfig: str | Path | None, options: CenterOptions | None = None, *,
                     http_port: int | None = 0, http_host: str = "127.0.0.1", handle_signals: bool = True,
                     leader_election: bool = True, lease_namespace: str | None = None,
                     defaults: bool = False, metrics_tokens: list[str] | None = None) -> None:
    """Run the risk center until SIGTERM/SIGINT (or cancellation); ``metrics_tokens`` are what its
    /metrics (HTTPS) accepts.  The Lease lives in ``lease_namespace``, else the client's (the Pod's)."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-risk-center")
    try:
        if defaults:
            made = await install_default_policies(client)
            if made:
                log.info("created %d default RiskPolicies", made)
        le = LeaderElectionConfig(name="kokpit-risk-center",
                                  namespace=lease_namespace or client.namespace) if leader_election else None
        manager = Manager(client, leader_election=le, http_host=http_host, http_port=http_port,
                          handle_signals=handle_signals, cache_transform=strip_managed_fields,
                          metrics_tokens=metrics_tokens)
        RiskCenter(manager, options)
        log.info("risk center starting against %s", client.server)
        await manager.run()
    finally:
        await client.close()
