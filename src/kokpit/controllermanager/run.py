"""Process entry point of ``kokpit controller-manager``: one Manager (leader election on the
``kube-system/kube-controller-manager`` Lease, /healthz /readyz /metrics) running every controller."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kokpit.client import Client
from kokpit.controllermanager._pods import POD_UPDATE_BATCH_PERIOD
from kokpit.controllermanager.daemonset import DaemonSetController
from kokpit.controllermanager.deployment import DeploymentController
from kokpit.controllermanager.disruption import DisruptionController
from kokpit.controllermanager.dsreadiness import DaemonSetReadinessReporter
from kokpit.controllermanager.job import JobController
from kokpit.controllermanager.nodelifecycle import NodeLifecycleController, NodeLifecycleOptions
from kokpit.controllermanager.podgc import PodGCController, PodGCOptions
from kokpit.controllermanager.replicaset import ReplicaSetController
from kokpit.controllermanager.statefulset import StatefulSetController
from kokpit.runtime import Manager
from kokpit.runtime.component import ComponentConfig, run_component
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permits import PermitClient

__all__ = ["CONTROLLERS", "ControllerManagerOptions", "RiskAccess", "build", "run_controller_manager"]

log = logging.getLogger("kokpit.controllermanager")

CONTROLLERS: dict[str, Callable[[Manager, ControllerManagerOptions], object]] = {
    "replicaset": lambda m, o: ReplicaSetController(m, batch_period=o.pod_update_batch_period),
    "deployment": lambda m, _o: DeploymentController(m),
    "daemonset": lambda m, o: DaemonSetController(m, batch_period=o.pod_update_batch_period),
    "statefulset": lambda m, _o: StatefulSetController(m),
    "job": lambda m, o: JobController(m, batch_period=o.pod_update_batch_period),
    "disruption": lambda m, _o: DisruptionController(m),
    "nodelifecycle": lambda m, o: NodeLifecycleController(m, o.node_lifecycle),
    "daemonset-readiness": lambda m, _o: DaemonSetReadinessReporter(m),
    "podgc": lambda m, o: PodGCController(m, o.pod_gc),
}


@dataclass
class RiskAccess:
    """The meta cluster whose risk center this business cluster's controller-manager asks, as Cluster
    ``namespace/cluster`` (``--risk-kubeconfig`` or ``--risk-in-cluster``, ``--risk-cluster``,
    ``--risk-namespace``).  ``kubeconfig`` None means in-cluster config: the Pod's own ServiceAccount in the
    meta cluster, the least-privilege actor identity the cluster operator provisions (as for the machine
    operator)."""

    kubeconfig: str | Path | None
    cluster: str
    namespace: str = "default"

    def client(self) -> Client:
        if self.kubeconfig is None:
            return Client.in_cluster(field_manager="kube-controller-manager")
        return Client.from_kubeconfig(self.kubeconfig, field_manager="kube-controller-manager")


@dataclass
class ControllerManagerOptions:
    controllers: list[str] = field(default_factory=lambda: list(CONTROLLERS))
    node_lifecycle: NodeLifecycleOptions = field(default_factory=NodeLifecycleOptions)
    pod_update_batch_period: float = POD_UPDATE_BATCH_PERIOD  # --pod-update-batch-period
    pod_gc: PodGCOptions = field(default_factory=PodGCOptions)
    risk: RiskAccess | None = None  # ask the risk center before evicting (node-drain permits)


def build(manager: Manager, options: ControllerManagerOptions) -> list[object]:
    unknown = [c for c in options.controllers if c not in CONTROLLERS]
    if unknown:
        raise ValueError(f"unknown controllers {unknown}; known: {', '.join(CONTROLLERS)}")
    return [CONTROLLERS[name](manager, options) for name in options.controllers]


async def run_controller_manager(kubeconfig: str | Path | None, options: ControllerManagerOptions | None = None,
                                 config: ComponentConfig | None = None) -> None:
    """Run until SIGTERM/SIGINT or cancellation."""
    options = options or ControllerManagerOptions()
    log.info("controllers: %s", ", ".join(options.controllers))
    meta: Client | None = None
    permits: PermitClient | None = None
    if options.risk is not None:
        meta = options.risk.client()
        permits = PermitClient(meta, namespace=options.risk.namespace, cluster=options.risk.cluster,
                               holder=f"controller-manager/{options.risk.cluster}")
        options = dataclasses.replace(options, node_lifecycle=dataclasses.replace(
            options.node_lifecycle, risk=PermitGate(permits)))
    try:
        await run_component(kubeconfig, "kube-controller-manager", lambda m: build(m, options), config)
    finally:
        if permits is not None:
            await permits.close()
        if meta is not None:
            await meta.close()
