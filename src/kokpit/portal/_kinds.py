"""The resource types the portal reads and writes, named once.

The portal may import neither operator, so it names the kinds it shows from their API models (``KIND_INFO``)
instead of importing the operators' constants.
"""

from __future__ import annotations

from typing import Any, Final

from kokpit.api import (
    Cluster,
    ClusterPackageVersion,
    Machine,
    MachinePackageVersion,
    MaintenanceFlow,
    NodeFault,
    Rollout,
)
from kokpit.client import EVENT, NODE, POD, SECRET, Kind
from kokpit.runtime.permits import PERMIT, RISK_POLICY

__all__ = [
    "CLUSTER",
    "CPV",
    "EVENT",
    "FLOW",
    "MACHINE",
    "MPV",
    "NODE",
    "NODE_FAULT",
    "PERMIT",
    "POD",
    "RISK_POLICY",
    "ROLLOUT",
    "SECRET",
    "SELF_SUBJECT_REVIEW",
    "SSAR",
    "kind_of",
]


def kind_of(model: Any) -> Kind:
    """The wire Kind of a kokpit API model class."""
    info = model.KIND_INFO
    return Kind(info.group, info.version, info.kind, info.plural, namespaced=info.namespaced)


CLUSTER: Final = kind_of(Cluster)
CPV: Final = kind_of(ClusterPackageVersion)
MACHINE: Final = kind_of(Machine)
MPV: Final = kind_of(MachinePackageVersion)
NODE_FAULT: Final = kind_of(NodeFault)  # business cluster (the event center's)
FLOW: Final = kind_of(MaintenanceFlow)  # business cluster (the maintenance flows')
ROLLOUT: Final = kind_of(Rollout)  # meta cluster (the rollout controller's)
SSAR: Final = Kind("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
                   namespaced=False)
SELF_SUBJECT_REVIEW: Final = Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                                  namespaced=False)
