"""Process entry point of ``kokpit controller-manager``: one Manager (leader election on the
``kube-system/kube-controller-manager`` Lease, /healthz /readyz /metrics) running every controller."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit.client import Client
from kokpit.controllermanager.daemonset import DaemonSetController
from kokpit.controllermanager.deployment import DeploymentController
from kokpit.controllermanager.disruption import DisruptionController
from kokpit.controllermanager.dsreadiness import DaemonSetReadinessReporter
from kokpit.controllermanager.job import JobController
from kokpit.controllermanager.nodelifecycle import NodeLifecycleController, NodeLifecycleOptions
from kokpit.controllermanager.replicaset import ReplicaSetController
from kokpit.controllermanager.statefulset import StatefulSetController
from kokpit.runtime import LeaderElectionConfig, Manager
from kokpit.runtime.informer import strip_managed_fields

__all__ = ["CONTROLLERS", "ControllerManagerOptions", "build", "run_controller_manager"]

log = logging.getLogger("kokpit.controllermanager")

CONTROLLERS: dict[str, Callable[[Manager, Any], object]] = {
    "replicaset": lambda m, _o: ReplicaSetController(m),
    "deployment": lambda m, _o: DeploymentController(m),
    "daemonset": lambda m, _o: DaemonSetController(m),
    "statefulset": lambda m, _o: StatefulSetController(m),
    "job": lambda m, _o: JobController(m),
    "disruption": lambda m, _o: DisruptionController(m),
    "nodelifecycle": lambda m, o: NodeLifecycleController(m, o.node_lifecycle),
    "daemonset-readiness": lambda m, _o: DaemonSetReadinessReporter(m),
}


@dataclass
class ControllerManagerOptions:
    controllers: list[str] = field(default_factory=lambda: list(CONTROLLERS))
    node_lifecycle: NodeLifecycleOptions = field(default_factory=NodeLifecycleOptions)


def build(manager: Manager, options: ControllerManagerOptions) -> list[object]:
    unknown = [c for c in options.controllers if c not in CONTROLLERS]
    if unknown:
        raise ValueError(f"unknown controllers {unknown}; known: {', '.join(CONTROLLERS)}")
    return [CONTROLLERS[name](manager, options) for name in options.controllers]


async def run_controller_manager(kubeconfig: str | Path | None, options: ControllerManagerOptions | None = None,
                                 *, http_host: str = "127.0.0.1", http_port: int | None = 0,
                                 leader_elect: bool = True, identity: str | None = None,
                                 qps: float | None = None, handle_signals: bool = True,
                                 metrics_tokens: list[str] | None = None) -> None:
    """Run until SIGTERM/SIGINT or cancellation."""
    options = options or ControllerManagerOptions()
    client = Client.from_kubeconfig(kubeconfig, field_manager="kube-controller-manager", qps=qps,
                                    burst=max(10, int(qps or 10)))
    try:
        le = None
        if leader_elect:
            le = LeaderElectionConfig(name="kube-controller-manager", namespace="kube-system")
            if identity:
                le.identity = identity
        manager = Manager(client, leader_election=le, http_host=http_host, http_port=http_port,
                          handle_signals=handle_signals, cache_transform=strip_managed_fields,
                          metrics_tokens=metrics_tokens)
        build(manager, options)
        log.info("controller-manager starting against %s (%s)", client.server, ", ".join(options.controllers))
        await manager.run()
    finally:
        await client.close()
