"""Process entry point of the machine operator, shared by ``kokpit machine-operator`` and tests.

Kept apart from the reconcile so the CLI, a Pod and an in-process test start the operator the same way:
client from kubeconfig, a Manager (probes and metrics), the operator wired onto it, and a clean shutdown
that closes the driver and the client.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kokpit.client import Client
from kokpit.nodes import NodeDriver
from kokpit.operators.machine.operator import MachineOperator, OperatorOptions
from kokpit.runtime import Manager
from kokpit.runtime.informer import strip_managed_fields

__all__ = ["run_operator"]

log = logging.getLogger("kokpit.operators.machine")


async def run_operator(
    kubeconfig: str | Path | None,
    driver: NodeDriver,
    options: OperatorOptions | None = None,
    *,
    http_port: int | None = 0,
    handle_signals: bool = True,
) -> None:
    """Run the machine operator until SIGTERM/SIGINT (or cancellation); closes ``driver`` at the end."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-machine-operator")
    try:
        manager = Manager(client, http_port=http_port, handle_signals=handle_signals,
                          cache_transform=strip_managed_fields)
        MachineOperator(manager, driver, options)
        log.info("machine operator starting against %s", client.server)
        await manager.run()
    finally:
        await driver.close()
        await client.close()
