"""kokpit.controllermanager: the business cluster's controller-manager.

Workload controllers (Deployment, ReplicaSet, DaemonSet, StatefulSet, Job), node lifecycle with
taint-based eviction, PodDisruptionBudget status and the DaemonSet readiness reporter, each level-triggered
on :mod:`kokpit.runtime`.  The cluster operator runs it from the ClusterPackageVersion like the API
server; replicas elect a leader on a Lease.
"""

from kokpit.controllermanager._common import (
    CONTROLLERREVISION,
    DAEMONSET,
    DEPLOYMENT,
    JOB,
    PDB,
    REPLICASET,
    STATEFULSET,
)
from kokpit.controllermanager.run import (
    CONTROLLERS,
    ControllerManagerOptions,
    RiskAccess,
    build,
    run_controller_manager,
)

__all__ = [
    "CONTROLLERREVISION",
    "CONTROLLERS",
    "DAEMONSET",
    "DEPLOYMENT",
    "JOB",
    "PDB",
    "REPLICASET",
    "STATEFULSET",
    "ControllerManagerOptions",
    "RiskAccess",
    "build",
    "run_controller_manager",
]
