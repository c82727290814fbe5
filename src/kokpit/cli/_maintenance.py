"""The maintenance flows as an add-on of ``kokpit machine-operator`` (issue 15): same process, same node
driver, same business cluster, their own risk-center holder (``maintenance-flow/<cluster>``).

They run on the machine operator's Manager and share its informers (one watch of Nodes, Machines, Pods and
NodeFaults per process: a Manager of their own doubled the process's memory and decode CPU at 10,000 nodes),
writing through a client of their own (field manager ``kokpit-maintenance-flow``); their metrics are on the
machine operator's ``/metrics``.  Their kinds are installed with the others (``kokpit crds``; ``kokpit up``
installs them in every business cluster): like the fault controllers', a cluster without them holds the
process at its first cache sync until they appear.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kokpit.client import Client
from kokpit.nodes import NodeDriver
from kokpit.operators.machine.run import AddOn
from kokpit.operators.maintenance import FlowOptions, MaintenanceOperator
from kokpit.runtime import Manager
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permits import PermitClient

__all__ = ["maintenance_add_ons"]

log = logging.getLogger("kokpit.operators.maintenance")


def maintenance_add_ons(enabled: bool, *, policy: str, verify_grace: float, poll: float, risk_cluster: str,
                        risk_namespace: str) -> list[AddOn]:
    """``[add-on]`` running the flow controllers beside the machine operator, or ``[]`` when off."""
    if not enabled:
        return []

    def add(manager: Manager, driver: NodeDriver, meta: Client | None) -> Callable[[], Awaitable[None]] | None:
        permits = None
        if meta is not None:
            permits = PermitClient(meta, namespace=risk_namespace, cluster=risk_cluster,
                                   holder=f"maintenance-flow/{risk_cluster}")
        else:
            log.warning("maintenance flows run without a risk center (no --risk-kubeconfig): no permits are asked")
        opts = FlowOptions(verify_grace=verify_grace, poll=poll,
                           permits=PermitGate(permits, poll=poll) if permits is not None else None)
        client = Client(manager.client.config, field_manager="kokpit-maintenance-flow")
        MaintenanceOperator(manager, driver, opts, policy=policy, client=client)

        async def close() -> None:
            if permits is not None:
                await permits.close()
            await client.close()

        return close

    return [add]
