"""The maintenance flows as an add-on of ``kokpit machine-operator`` (issue 15): same process, same node
driver, same business cluster, their own risk-center holder (``maintenance-flow/<cluster>``).

They run on a Manager of their own (own client and informers, no second HTTP endpoint: their metrics are
registered on the machine operator's ``/metrics``), so a cluster without the NodeFault or MaintenanceFlow
CRDs yet keeps its machine operator running: only the flows wait for their kinds to appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from kokpit.client import Client
from kokpit.nodes import NodeDriver
from kokpit.operators.machine.run import AddOn
from kokpit.operators.maintenance import FlowOptions, MaintenanceOperator
from kokpit.runtime import Manager
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.permits import PermitClient, PermitGate

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
        own = Manager(client, http_port=None, handle_signals=False, cache_transform=strip_managed_fields)
        MaintenanceOperator(own, driver, opts, policy=policy, registry=manager.registry)
        task = asyncio.get_running_loop().create_task(own.run(), name="maintenance-flows")

        async def close() -> None:
            own.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
            if permits is not None:
                await permits.close()
            await client.close()

        return close

    return [add]
