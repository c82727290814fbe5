"""ChangeRequest and AuditRecord: the portal's controlled change process and its record of who did what.

A ChangeRequest is one planned change to the fleet (release a cluster, upgrade a component on some nodes,
reboot or reinstall nodes, restart a control-plane component, create a cluster).  Its life, as conditions:
``Planned`` (the portal worked out what it touches, the batches and the risk budget it needs) → ``Approved``
(by a second person where the change policy asks for it; the author never counts) → ``Executing`` (turned
into declarative changes: a patch, a Rollout, a MaintenanceFlow — every one of which asks the risk center
like any other actor) → ``Closed`` with an outcome.  ``spec`` is the author's intent; ``status`` is written
only by the portal (its own identity), so a user cannot approve by editing the object: approving is a portal
action checked against RBAC's ``approve`` verb on ``changerequests`` (as Kubernetes' CSR approval is).

An AuditRecord is one action by a person — allowed, refused or failed — with where it came from and the
objects it created or patched.  Records are immutable (CEL) and written by the portal's identity only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final

from pydantic import Field, JsonValue

from kokpit.api.crdgen import KindInfo, PrinterColumn, list_map
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.meta import Condition, ResourceModel, SpecModel, StatusModel

__all__ = [
    "APPROVE_VERB",
    "AuditOutcome",
    "AuditRecord",
    "AuditSpec",
    "ChangeConditionType",
    "ChangeHistoryEntry",
    "ChangeOperation",
    "ChangeOutcome",
    "ChangePlan",
    "ChangeRequest",
    "ChangeRequestSpec",
    "ChangeRequestStatus",
    "ObjectRef",
]

APPROVE_VERB: Final = "approve"


class ChangeOperation(StrEnum):
    """What a ChangeRequest does (the legacy adapter's commands map onto these)."""

    CONTROL_PLANE_RELEASE = "control-plane-release"  # Cluster spec.packageVersion → version
    CONTROL_PLANE_RESTART = "control-plane-restart"  # replace the Pods of one control-plane component
    COMPONENT_UPGRADE = "component-upgrade"  # Machines' package for component → MachinePackageVersion version
    NODE_REBOOT = "node-reboot"
    NODE_REINSTALL = "node-reinstall"
    COMPONENT_RESTART = "component-restart"  # restart component on nodes (a maintenance flow per node)
    CLUSTER_CREATE = "cluster-create"


class ObjectRef(StatusModel):
    kind: str
    name: str
    namespace: str = ""
    cluster: str = Field(default="", description="The business cluster, for objects not in the meta cluster.")
    verb: str = Field(default="", description="create, patch or delete.")
    patch: str | None = Field(default=None, max_length=4096, description="For verb patch: the JSON merge patch "
                              "sent, so the record shows the translation itself.")


_RULES: Final[list[JsonValue]] = [
    {"rule": "self.operation == 'cluster-create' || size(self.cluster) > 0 || "
             "(self.operation == 'control-plane-release' && size(self.targets) > 0)", "fieldPath": ".cluster",
     "reason": "FieldValueRequired", "message": "cluster is required (the Cluster this change is for; a release "
                                                "of several Clusters names them in targets)"},
    {"rule": "!(self.operation in ['node-reboot', 'node-reinstall', 'component-restart', 'component-upgrade']) || "
             "size(self.targets) > 0",
     "fieldPath": ".targets", "reason": "FieldValueRequired",
     "message": "targets is required: the Machines (nodes) to change"},
    {"rule": "!(self.operation in ['component-upgrade', 'component-restart', 'control-plane-restart']) || "
             "size(self.component) > 0",
     "fieldPath": ".component", "reason": "FieldValueRequired", "message": "component is required"},
    {"rule": "!(self.operation in ['component-upgrade', 'control-plane-release', 'cluster-create']) || "
             "size(self.version) > 0", "fieldPath": ".version", "reason": "FieldValueRequired",
     "message": "version is required (a MachinePackageVersion for component-upgrade, a ClusterPackageVersion "
                "for a release or a new cluster)"},
]


class ChangeRequestSpec(SpecModel):
    operation: ChangeOperation
    cluster: str = Field(default="", max_length=63, description="The Cluster (same namespace); for "
                         "cluster-create the name of the new one.")
    targets: list[str] = Field(default_factory=list, max_length=10000,
                               description="Machines (node names) for node operations and component upgrades; "
                                           "Clusters for a release of several (run as a Rollout).")
    component: str = Field(default="", max_length=63, description="kubelet, containerd, kube-apiserver, ...")
    version: str = Field(default="", max_length=253, description="MachinePackageVersion (component-upgrade) or "
                         "ClusterPackageVersion (release, cluster-create) to move to.")
    nodes: int = Field(default=0, ge=0, le=100000, description="cluster-create: simulated nodes.")
    reason: str = Field(default="", max_length=1024, description="Why (shown to the approver, kept in the audit).")
    paused: bool = Field(default=False, description="Hold: no new batch is started until it is false again.")
    cancel: bool = Field(default=False, description="Abort: nothing more is started; the request closes Aborted.")


class ChangePlan(StatusModel):
    touches: list[ObjectRef] = Field(default_factory=list, description="What the change will modify.")
    batches: int = Field(default=0, description="Estimated batches under the covering risk budgets.")
    batch_size: int = 0
    budget: str = Field(default="", description="The risk-center operation type and policies it draws on.")
    summary: str = ""


class ChangeHistoryEntry(StatusModel):
    time: str
    user: str
    action: str = Field(description="planned, approved, rejected, executing, cancelled, closed, ...")
    message: str = ""


class ChangeConditionType(StrEnum):
    PLANNED = "Planned"
    APPROVED = "Approved"
    EXECUTING = "Executing"
    CLOSED = "Closed"


class ChangeOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"
    REJECTED = "Rejected"


class ChangeRequestStatus(StatusModel):
    author: str = Field(default="", description="Who asked (the API server's name for them), set by the portal.")
    approvals_required: int = 0
    approvals: list[ChangeHistoryEntry] = Field(default_factory=list)
    plan: ChangePlan = Field(default_factory=ChangePlan)
    objects: list[ObjectRef] = Field(default_factory=list, description="What the change created or patched.")
    progress: str = Field(default="", description="e.g. 3/10 targets done.")
    done: int = 0
    total: int = 0
    outcome: ChangeOutcome | None = None
    phase: str | None = Field(default=None, description="For people only; derived from the conditions.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    history: list[ChangeHistoryEntry] = Field(default_factory=list)


class ChangeRequest(ResourceModel):
    """A planned change: author, plan, approvals, what it became, its outcome."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="ChangeRequest", plural="changerequests", scope="Namespaced",
        singular="changerequest", short_names=("cr", "change"),
        printer_columns=(
            PrinterColumn("Operation", ".spec.operation"),
            PrinterColumn("Cluster", ".spec.cluster"),
            PrinterColumn("Author", ".status.author"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Progress", ".status.progress"),
            PrinterColumn("Outcome", ".status.outcome"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: ChangeRequestSpec = Field(json_schema_extra={"x-kubernetes-validations": _RULES})
    status: ChangeRequestStatus = Field(default_factory=ChangeRequestStatus)


# ------------------------------------------------------------------------------------------------ audit
class AuditOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FORBIDDEN = "Forbidden"
    REFUSED = "Refused"  # bad input, or a rule of the change process (self-approval)
    FAILED = "Failed"


class AuditSpec(SpecModel):
    time: str
    user: str = Field(max_length=512)
    groups: list[str] = Field(default_factory=list)
    source: str = Field(default="", max_length=256, description="Client address.")
    via: str = Field(default="portal", description="portal (a page), api (/api/v1), adapter (legacy command).")
    action: str = Field(max_length=256, description="e.g. changerequest.approve, risk.pause, legacy.reboot-node.")
    target: str = Field(default="", max_length=1024, description="What it was aimed at.")
    request: str = Field(default="", max_length=4096, description="The command or form as given.")
    translation: list[ObjectRef] = Field(default_factory=list, description="Objects created or patched.")
    outcome: AuditOutcome
    message: str = Field(default="", max_length=4096)


class AuditRecord(ResourceModel):
    """One action by a person, allowed or not (immutable)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="AuditRecord", plural="auditrecords", scope="Cluster",
        singular="auditrecord", short_names=("audit",), status_subresource=False,
        printer_columns=(
            PrinterColumn("Time", ".spec.time"),
            PrinterColumn("User", ".spec.user"),
            PrinterColumn("Action", ".spec.action"),
            PrinterColumn("Target", ".spec.target"),
            PrinterColumn("Outcome", ".spec.outcome"),
            PrinterColumn("From", ".spec.source", priority=1),
        ),
    )

    spec: AuditSpec = Field(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "audit records are immutable", "reason": "FieldValueForbidden"}]})
