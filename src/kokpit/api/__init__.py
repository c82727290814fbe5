"""kokpit.api: the typed models of every kokpit kind, and the CRDs generated from them.

Operators, the portal and the CLI read and write these models; the API server only ever sees the CRDs
(:func:`crds`), so the schema a cluster enforces is always the one the code was written against.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from kokpit.api.change import AuditRecord, ChangeOperation, ChangeRequest
from kokpit.api.cluster import (
    Cluster,
    ClusterComponentStatus,
    ClusterConditionType,
    ClusterPackageVersion,
    ClusterPackageVersionSpec,
    ClusterReason,
    ClusterSpec,
    ClusterStatus,
    ComponentTemplate,
    DeletionPolicy,
)
from kokpit.api.crdgen import KindInfo, PrinterColumn, crd_for, list_map, list_set, structural_schema
from kokpit.api.fault import FaultState, FaultSubscription, FaultType, NodeFault, Severity
from kokpit.api.machine import (
    ComponentStatus,
    InstallState,
    Machine,
    MachineCondition,
    MachineConditionType,
    MachinePackageVersion,
    MachinePackageVersionSpec,
    MachineReason,
    MachineSpec,
    MachineStatus,
    ReadinessGate,
    RunState,
)
from kokpit.api.maintenance import MaintenanceFlow, MaintenancePolicy
from kokpit.api.meta import Condition, ConditionStatus, FailureRecord, KokpitModel, ObjectMeta, ResourceModel
from kokpit.api.risk import OperationType, Permit, PermitState, RiskLedger, RiskPolicy
from kokpit.api.rollout import Rollout, RolloutSpec, RolloutTargetSet

__all__ = [
    "KINDS",
    "AuditRecord",
    "ChangeOperation",
    "ChangeRequest",
    "Cluster",
    "ClusterComponentStatus",
    "ClusterConditionType",
    "ClusterPackageVersion",
    "ClusterPackageVersionSpec",
    "ClusterReason",
    "ClusterSpec",
    "ClusterStatus",
    "ComponentStatus",
    "ComponentTemplate",
    "Condition",
    "ConditionStatus",
    "DeletionPolicy",
    "FailureRecord",
    "FaultState",
    "FaultSubscription",
    "FaultType",
    "InstallState",
    "KindInfo",
    "KokpitModel",
    "Machine",
    "MachineCondition",
    "MachineConditionType",
    "MachinePackageVersion",
    "MachinePackageVersionSpec",
    "MachineReason",
    "MachineSpec",
    "MachineStatus",
    "MaintenanceFlow",
    "MaintenancePolicy",
    "NodeFault",
    "ObjectMeta",
    "OperationType",
    "Permit",
    "PermitState",
    "PrinterColumn",
    "ReadinessGate",
    "ResourceModel",
    "RiskLedger",
    "RiskPolicy",
    "Rollout",
    "RolloutSpec",
    "RolloutTargetSet",
    "RunState",
    "Severity",
    "admission_policies",
    "crd_for",
    "crds",
    "install_crds",
    "list_map",
    "list_set",
    "structural_schema",
]

KINDS: list[type[ResourceModel]] = [MachinePackageVersion, Machine, ClusterPackageVersion, Cluster, RiskPolicy,
                                    Permit, RiskLedger, ChangeRequest, AuditRecord, Rollout, RolloutTargetSet,
                                    FaultType, NodeFault,
                                    FaultSubscription, MaintenancePolicy, MaintenanceFlow]
"""Every top-level kokpit kind with a CRD (other issues append theirs here)."""


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of every kind in :data:`KINDS`."""
    return [crd_for(k) for k in KINDS]


def admission_policies() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies (and bindings) kokpit's kinds need beyond their CRDs' own rules."""
    from kokpit.api.risk import permit_actor_policy

    return permit_actor_policy()


class _CRDClient(Protocol):
    """The part of :class:`kokpit.client.Client` :func:`install_crds` needs (kept structural so this
    package does not import the client)."""

    async def apply(self, kind: Any, obj: dict[str, Any], *, field_manager: str | None = None,
                    force: bool = True, subresource: str | None = None) -> dict[str, Any]: ...

    async def get(self, kind: Any, name: str, namespace: str | None = None, *,
                  subresource: str | None = None) -> dict[str, Any]: ...


def _established(crd: dict[str, Any]) -> bool:
    conds = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


async def install_crds(client: _CRDClient, *, timeout: float = 30.0,
                       field_manager: str = "kokpit-crds") -> list[dict[str, Any]]:
    """Server-side apply every CRD and the admission policies that go with them (``admission_policies``),
    and wait until each CRD is Established; returns the applied CRDs."""
    from kokpit.client import CRD, Kind  # imported late so kokpit.api stays importable alone

    applied = [await client.apply(CRD, c, field_manager=field_manager, force=True) for c in crds()]
    for obj in admission_policies():
        group, version = obj["apiVersion"].split("/")
        plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
                  "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[obj["kind"]]
        kind = Kind(group, version, obj["kind"], plural, namespaced=False)
        await client.apply(kind, obj, field_manager=field_manager, force=True)
    deadline = time.monotonic() + timeout
    pending = [c["metadata"]["name"] for c in applied]
    delay = 0.02
    while pending:
        pending = [n for n in pending if not _established(await client.get(CRD, n))]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout}s: {', '.join(pending)}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    return applied
