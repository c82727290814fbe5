"""Node drivers: how kokpit acts on a worker node (install, upgrade, uninstall components; report state).

The machine operator pushes work to nodes through this one small protocol, so nodes add no list/watch load
to the API server (the seed's scaling lesson), and a real-host driver (ssh/agent) can replace the simulator
without touching the operator.
"""

from kokpit.nodes.driver import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    InstallState,
    NodeDriver,
    NodeState,
    RepairDriver,
    RepairKind,
    RepairState,
    RunState,
)

__all__ = [
    "ComponentAction",
    "ComponentSpec",
    "ComponentState",
    "DriverError",
    "HealthResult",
    "InstallState",
    "NodeDriver",
    "NodeState",
    "RepairDriver",
    "RepairKind",
    "RepairState",
    "RunState",
]
