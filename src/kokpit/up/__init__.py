"""kokpit.up: the whole fleet on one machine with one command (``kokpit up``), and a look at it.

A newcomer gets a meta cluster, business clusters run Kube on Kube and simulated nodes held at their final
state, all reachable with kubectl, with nothing installed but kokpit.  This package is the top of the
layering: it starts the other parts as processes and talks to them only through their API servers.
"""

from kokpit.up._access import AccessError, DriverAccess, driver_access
from kokpit.up._defaults import (
    CLUSTER_NAMESPACE,
    CPV_NAMES,
    DEFAULT_CPV,
    MACHINE_PACKAGES,
    cluster_names,
    cpvs,
    machine_bodies,
    mpvs,
)
from kokpit.up._fleet import ClusterRow, Fleet, Snapshot, read_kubeconfig, render_text
from kokpit.up._supervisor import Child
from kokpit.up._up import (
    DATA_FORMAT,
    MAX_CLUSTERS,
    MAX_NODES,
    UpError,
    UpOptions,
    kubeconfig,
    preflight,
    run_up,
    status,
    validate,
)

__all__ = [
    "CLUSTER_NAMESPACE",
    "CPV_NAMES",
    "DATA_FORMAT",
    "DEFAULT_CPV",
    "MACHINE_PACKAGES",
    "MAX_CLUSTERS",
    "MAX_NODES",
    "AccessError",
    "Child",
    "ClusterRow",
    "DriverAccess",
    "Fleet",
    "Snapshot",
    "UpError",
    "UpOptions",
    "cluster_names",
    "cpvs",
    "driver_access",
    "kubeconfig",
    "machine_bodies",
    "mpvs",
    "preflight",
    "read_kubeconfig",
    "render_text",
    "run_up",
    "status",
    "validate",
]
