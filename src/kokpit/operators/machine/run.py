"""Process entry point of the machine operator, shared by ``kokpit machine-operator`` and tests.

Kept apart from the reconcile so the CLI, a Pod and an in-process test start the operator the same way:
client from kubeconfig, a Manager (probes and metrics), the operator wired onto it, and a clean shutdown
that closes the driver and the client.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from kokpit.client import Client
from kokpit.nodes import NodeDriver
from kokpit.operators.machine._risk import machine_gate
from kokpit.operators.machine.operator import MachineOperator, OperatorOptions
from kokpit.runtime import Manager
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.permits import PermitClient

__all__ = ["AddOn", "run_operator"]

AddOn = Callable[[Manager, NodeDriver, Client | None], Callable[[], Awaitable[None]] | None]
"""Another controller sharing the process (the maintenance flows): wired onto the Manager with the node
driver and the risk center's client (the meta cluster, or None); may return an async closer."""

log = logging.getLogger("kokpit.operators.machine")


async def run_operator(
    kubeconfig: str | Path | None,
    driver: NodeDriver,
    options: OperatorOptions | None = None,
    *,
    http_port: int | None = 0,
    handle_signals: bool = True,
    risk_kubeconfig: str | Path | None = None,
    risk_in_cluster: bool = False,
    risk_cluster: str = "",
    risk_namespace: str = "default",
    http_host: str = "127.0.0.1",
    metrics_tokens: list[str] | None = None,
    add_ons: Sequence[AddOn] = (),
) -> None:
    """Run the machine operator until SIGTERM/SIGINT (or cancellation); closes ``driver`` at the end.

    With ``risk_kubeconfig`` (the meta cluster, as Cluster ``risk_namespace/risk_cluster``'s actors) or
    ``risk_in_cluster`` (the meta cluster through the Pod's own ServiceAccount: the least-privilege identity
    the cluster operator provisions) every upgrade, rollback and uninstall of a running component and every
    cordon of its own first takes a risk-center Permit."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-machine-operator")
    meta: Client | None = None
    permits: PermitClient | None = None
    if risk_kubeconfig is not None or risk_in_cluster:
        meta = Client.from_kubeconfig(risk_kubeconfig, field_manager="kokpit-machine-operator") \
            if risk_kubeconfig is not None else Client.in_cluster(field_manager="kokpit-machine-operator")
        permits = PermitClient(meta, namespace=risk_namespace, cluster=risk_cluster,
                               holder=f"machine-operator/{risk_cluster}")
        options = dataclasses.replace(options or OperatorOptions(), risk=machine_gate(permits))
    try:
        manager = Manager(client, http_port=http_port, handle_signals=handle_signals,
                          cache_transform=strip_managed_fields, http_host=http_host, metrics_tokens=metrics_tokens)
        MachineOperator(manager, driver, options)
        closers = [c for add in add_ons if (c := add(manager, driver, meta)) is not None]
        log.info("machine operator starting against %s", client.server)
        try:
            await manager.run()
        finally:
            for close in closers:
                await close()
    finally:
        await driver.close()
        await client.close()
        if options is not None and options.risk is not None:
            await options.risk.close()
        if permits is not None:
            await permits.close()
        if meta is not None:
            await meta.close()
