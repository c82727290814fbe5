"""Rollout: a canary wave of one change over many targets — a ClusterPackageVersion over Clusters, or a package
change over the Machines of business clusters — through the risk center, with automatic rollback.

Argo Rollouts and Flagger do this for Pods; here the targets are control planes and nodes, and every batch is a
risk-center Permit (``control-plane-release`` or ``component-upgrade``).  The spec is intent a person or a tool
writes (and ``kubectl patch`` edits: ``paused``, ``promotedStep``, ``abort``, ``undo``); the status and the
Rollout's RolloutTargetSets are the rollout controller's whole memory: the targets frozen at start with each
one's previous version (recorded before the target is touched, so a rollback is exact and a restarted
controller never touches a target twice), per-step times and outcomes, counts and a bounded history of
revisions.  Conditions decide; the
``state`` column is derived from them for people.

Everything admission can know is checked here (OpenAPI and CEL in the generated CRD, the same rules as
pydantic validators for the controller and the CLI): one of clusters/machines, steps with exactly one action,
canary counts and percentages (at most 100%), non-negative pauses, steps that end at 100%, one entry per
component in a package change, no empty Cluster selector (``{}`` would select every Cluster of the namespace
by accident — as Deployment and Argo Rollouts refuse an empty selector; name the Clusters or give at least one
requirement).  A ClusterPackageVersion that does not exist is refused by kokpit's API server as a declared
reference (``FieldValueNotFound`` on ``spec.target.clusters.packageVersion``).  What only the fleet knows (a
MachinePackageVersion lives in each business cluster; a selector that selects nothing at run time) is a
``Valid=False`` condition and a Warning Event.

The status stays small whatever the number of targets (etcd refuses a request over 1.5 MiB; 10,000 targets
with their records were 2.4 MB): counts by state, per-step records and at most :data:`NAMED_TARGETS` targets
worth naming.  The per-target records the controller decides on live in :class:`RolloutTargetSet` objects
(at most :data:`TARGETS_PER_SET` targets each), owned by the Rollout.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from pydantic import Field, JsonValue, model_validator

from kokpit.api.crdgen import FieldReference, KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.machine import COMPONENT_PATTERN, GROUP, VERSION
from kokpit.api.meta import Condition, ResourceModel, SpecModel, StatusModel
from kokpit.api.risk import DURATION_PATTERN, LabelSelector

__all__ = [
    "CANARY_PATTERN",
    "NAMED_TARGETS",
    "TARGETS_PER_SET",
    "AnalysisStep",
    "ClusterTarget",
    "FailurePolicy",
    "MachineTarget",
    "PackageChange",
    "PauseStep",
    "Rollout",
    "RolloutConditionType",
    "RolloutHistoryEntry",
    "RolloutReason",
    "RolloutSpec",
    "RolloutState",
    "RolloutStatus",
    "RolloutStep",
    "RolloutTarget",
    "RolloutTargetSet",
    "RolloutTargetSetSpec",
    "StepStatus",
    "Strategy",
    "TargetOrder",
    "TargetState",
    "TargetStatus",
    "canary_size",
]

_NAME: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
NAMED_TARGETS: Final = 100
"""At most this many targets are named in a Rollout's status (failed and in flight first); the rest are counted."""
TARGETS_PER_SET: Final = 500
"""Targets per :class:`RolloutTargetSet` (a record is ~300 bytes: ~150 KB an object, far below etcd's 1.5 MiB)."""
CANARY_PATTERN: Final = r"^(100|[1-9][0-9]?)%$"
_INT_OR_PERCENT: Final[list[JsonValue]] = [{
    "rule": "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",
    "message": "must be a non-negative integer or a percentage between 0% and 100%",
}]
IntOrPercent = int | str


def _is_int_or_percent(v: int | str, *, minimum: int) -> bool:
    if isinstance(v, int):
        return v >= minimum
    return bool(re.match(r"^(100|[1-9]?[0-9])%$", v)) and int(v[:-1]) >= minimum


def canary_size(value: int | str, total: int) -> int:
    """How many of ``total`` targets a canary step covers (cumulative): a count, or a percentage rounded up
    (at least 1 when the fleet is not empty, Argo Rollouts' setWeight rounding), never more than ``total``."""
    if isinstance(value, int):
        return min(value, total)
    pct = int(value.rstrip("%"))
    return min(total, max(1 if total else 0, -(-pct * total // 100)))


# ------------------------------------------------------------------------------------------------ target
def _not_empty_rule(field: str, what: str) -> list[JsonValue]:
    return [{"rule": f"!has(self.{field}) || (has(self.{field}.matchLabels) && size(self.{field}.matchLabels) > 0)"
                     f" || (has(self.{field}.matchExpressions) && size(self.{field}.matchExpressions) > 0)",
             "message": f"an empty selector would select every {what} of the namespace: name them, or give at "
                        "least one matchLabels or matchExpressions requirement",
             "fieldPath": f".{field}", "reason": "FieldValueInvalid"}]


def _empty(sel: LabelSelector | None) -> bool:
    return sel is not None and not sel.match_labels and not sel.match_expressions


class ClusterTarget(SpecModel):
    """Clusters (in the Rollout's namespace) by name or label selector, released to one ClusterPackageVersion.
    An empty selector is refused: a release to every Cluster must say so with a requirement."""

    names: list[Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)]] = Field(
        default_factory=list, json_schema_extra=list_set(), max_length=10_000, description="Clusters by name.")
    selector: LabelSelector | None = Field(default=None, description="Clusters by their labels.")
    package_version: str = Field(min_length=1, max_length=253, pattern=_NAME,
                                 description="The ClusterPackageVersion every target Cluster is released to.")


class PackageChange(SpecModel):
    """One component's change on each target Machine: replace ``from`` by ``to``, add ``to`` (no ``from``:
    Machines without the component), or remove the component (no ``to``)."""

    component: str = Field(min_length=1, max_length=63, pattern=COMPONENT_PATTERN,
                           description="The component the MachinePackageVersions carry (spec.component).")
    from_: str | None = Field(default=None, alias="from", min_length=1, max_length=253, pattern=_NAME,
                              description="Only Machines running this MachinePackageVersion (replace/remove).")
    to: str | None = Field(default=None, min_length=1, max_length=253, pattern=_NAME,
                           description="The MachinePackageVersion to run; absent: remove the component.")


_CHANGE_RULES: Final[list[JsonValue]] = [
    {"rule": "!has(self.to) || !has(self.from) || self.to != self.from",
     "message": "from and to name the same MachinePackageVersion: nothing would change",
     "reason": "FieldValueInvalid", "fieldPath": ".to"},
]


class MachineTarget(SpecModel):
    """Machines (label selector) of business Clusters (names or label selector), and the package change."""

    cluster_names: list[Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)]] = Field(
        default_factory=list, json_schema_extra=list_set(), max_length=10_000,
        description="Business Clusters (in the Rollout's namespace) by name.")
    cluster_selector: LabelSelector | None = Field(default=None, description="Business Clusters by labels.")
    machine_selector: LabelSelector = Field(default_factory=LabelSelector, json_schema_extra={"default": {}},
                                            description="Machines by their labels (empty: every Machine).")
    packages: list[Annotated[PackageChange, Field(json_schema_extra={
        "x-kubernetes-validations": _CHANGE_RULES})]] = Field(
        min_length=1, max_length=32, json_schema_extra=list_map("component"),
        description="One change per component (a component cannot get two versions).")


_TARGET_RULES: Final[list[JsonValue]] = [
    {"rule": "has(self.clusters) != has(self.machines)", "message": "set exactly one of clusters or machines",
     "reason": "FieldValueRequired"},
    {"rule": "!has(self.clusters) || size(self.clusters.names) > 0 || has(self.clusters.selector)",
     "message": "name the Clusters (names) or select them (selector)", "fieldPath": ".clusters",
     "reason": "FieldValueRequired"},
    {"rule": "!has(self.machines) || size(self.machines.clusterNames) > 0 || has(self.machines.clusterSelector)",
     "message": "name the business Clusters (clusterNames) or select them (clusterSelector)",
     "fieldPath": ".machines", "reason": "FieldValueRequired"},
]


class RolloutTarget(SpecModel):
    clusters: ClusterTarget | None = Field(default=None, json_schema_extra={
        "x-kubernetes-validations": _not_empty_rule("selector", "Cluster")})
    machines: MachineTarget | None = Field(default=None, json_schema_extra={
        "x-kubernetes-validations": _not_empty_rule("clusterSelector", "business Cluster")})

    @model_validator(mode="after")
    def _one_kind(self) -> RolloutTarget:
        if (self.clusters is None) == (self.machines is None):
            raise ValueError("set exactly one of clusters or machines")
        if self.clusters is not None and not self.clusters.names and self.clusters.selector is None:
            raise ValueError("clusters: name the Clusters (names) or select them (selector)")
        if self.clusters is not None and _empty(self.clusters.selector):
            raise ValueError("clusters.selector: an empty selector would select every Cluster of the namespace: "
                             "name them, or give at least one requirement")
        if self.machines is not None:
            m = self.machines
            if _empty(m.cluster_selector):
                raise ValueError("machines.clusterSelector: an empty selector would select every business Cluster "
                                 "of the namespace: name them, or give at least one requirement")
            if not m.cluster_names and m.cluster_selector is None:
                raise ValueError("machines: name the business Clusters (clusterNames) or select them "
                                 "(clusterSelector)")
            seen: set[str] = set()
            for p in m.packages:
                if p.component in seen:
                    raise ValueError(f"machines.packages: component {p.component} appears twice (one change "
                                     "cannot give a component two versions)")
                seen.add(p.component)
                if p.to is not None and p.to == p.from_:
                    raise ValueError(f"machines.packages[{p.component}].to: from and to name the same "
                                     "MachinePackageVersion: nothing would change")
        return self

    @property
    def kind(self) -> str:
        return "Clusters" if self.clusters is not None else "Machines"


# ------------------------------------------------------------------------------------------------ strategy
class PauseStep(SpecModel):
    duration: str | None = Field(default=None, max_length=32, pattern=DURATION_PATTERN, json_schema_extra={
        "x-kubernetes-validations": [{"rule": "!self.startsWith('-')", "message": "a pause cannot be negative"}]},
        description="How long to pause (e.g. 10m); absent: until a person promotes the rollout.")


class AnalysisStep(SpecModel):
    """Health checks and business-metric gates for ``duration``: every target updated so far must stay
    healthy (a Cluster Available, UpToDate, not Degraded, its components healthy; a Machine Ready — node
    Ready, components running and passing their health checks, readiness gates met — and NodeHealthy; no
    fault attributed to the rollout), and no gate the risk center reads for a RiskPolicy covering the
    operation may fail in a touched cluster.  More than ``failureLimit`` failed or unhealthy targets fail the
    analysis."""

    duration: str = Field(default="0s", max_length=32, pattern=DURATION_PATTERN)
    failure_limit: int = Field(default=0, ge=0, le=100_000, description="Failed targets the analysis tolerates.")


_STEP_RULES: Final[list[JsonValue]] = [{
    "rule": "(has(self.canary) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) == 1",
    "message": "set exactly one of canary, pause or analysis", "reason": "FieldValueInvalid"}]
_CANARY_RULES: Final[list[JsonValue]] = [{
    "rule": "type(self) == int ? self >= 1 : self.matches('" + CANARY_PATTERN + "')",
    "message": "must be a count of at least 1 or a percentage between 1% and 100%"}]


class RolloutStep(SpecModel):
    """One step: ``canary`` (update targets until this many — a count or a percentage of all targets — are
    done), ``pause`` or ``analysis``."""

    canary: IntOrPercent | None = Field(default=None, json_schema_extra={"x-kubernetes-validations": _CANARY_RULES})
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None

    @model_validator(mode="after")
    def _one_action(self) -> RolloutStep:
        if sum(x is not None for x in (self.canary, self.pause, self.analysis)) != 1:
            raise ValueError("set exactly one of canary, pause or analysis")
        if self.canary is not None and not _is_int_or_percent(self.canary, minimum=1):
            raise ValueError(f"canary: {self.canary!r} must be a count of at least 1 or a percentage between "
                             "1% and 100%")
        return self


class TargetOrder(SpecModel):
    """The order targets are taken in: higher ``priorityLabel`` values first (numbers compare as numbers; a
    target without the label comes last), then round-robin across ``topologyLabel`` values so one batch
    spreads over failure domains, then by name."""

    priority_label: str | None = Field(default=None, max_length=317)
    topology_label: str | None = Field(default=None, max_length=317)


_STRATEGY_RULES: Final[list[JsonValue]] = [{
    "rule": "self.steps.exists(s, has(s.canary)) && string(self.steps.filter(s, has(s.canary))"
            "[size(self.steps.filter(s, has(s.canary))) - 1].canary) == '100%'",
    "message": "the last canary step must be 100% (every target)", "fieldPath": ".steps",
    "reason": "FieldValueInvalid"}]


class Strategy(SpecModel):
    steps: list[Annotated[RolloutStep, Field(json_schema_extra={"x-kubernetes-validations": _STEP_RULES})]] = \
        Field(min_length=1, max_length=64)
    max_unavailable: IntOrPercent = Field(default=1, json_schema_extra={"x-kubernetes-validations": _INT_OR_PERCENT},
                                          description="Targets in flight at once inside a batch (0: no limit "
                                                      "but the batch and the risk center).")
    bake_time: str = Field(default="0s", max_length=32, pattern=DURATION_PATTERN,
                           description="Wait after each canary step before the next step.")
    order: TargetOrder = Field(default_factory=TargetOrder, json_schema_extra={"default": {}})

    @model_validator(mode="after")
    def _ends_at_all(self) -> Strategy:
        canaries = [s.canary for s in self.steps if s.canary is not None]
        if not canaries or canaries[-1] != "100%":
            raise ValueError("steps: the last canary step must be 100% (every target)")
        if not _is_int_or_percent(self.max_unavailable, minimum=0):
            raise ValueError("maxUnavailable: must be a non-negative integer or a percentage between 0% and 100%")
        return self


class FailurePolicy(SpecModel):
    max_failures: IntOrPercent = Field(default=0, json_schema_extra={"x-kubernetes-validations": _INT_OR_PERCENT},
                                       description="Failed targets tolerated; one more aborts the rollout.")
    rollback: bool = Field(default=True, description="On abort, return every touched target to its previous "
                                                     "version (through the same permits).")

    @model_validator(mode="after")
    def _limit(self) -> FailurePolicy:
        if not _is_int_or_percent(self.max_failures, minimum=0):
            raise ValueError("maxFailures: must be a non-negative integer or a percentage between 0% and 100%")
        return self


class RolloutSpec(SpecModel):
    target: RolloutTarget = Field(json_schema_extra={"x-kubernetes-validations": _TARGET_RULES})
    strategy: Strategy = Field(json_schema_extra={"x-kubernetes-validations": _STRATEGY_RULES})
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, json_schema_extra={"default": {}})
    progress_deadline_seconds: int = Field(default=600, ge=1, le=86_400 * 7, description=(
        "A target not done this long after it was touched counts as failed (ProgressDeadlineExceeded)."))
    paused: bool = Field(default=False, description="Start no new target (targets in flight finish).")
    promoted_step: int = Field(default=-1, ge=-1, le=64, description=(
        "Pause steps up to this index are released (kokpit rollout promote sets the current step)."))
    abort: bool = Field(default=False, description="Stop; roll back if failurePolicy.rollback.")
    undo: bool = Field(default=False, description="Roll every touched target back to its previous version "
                                                  "(a completed or aborted rollout).")


# ------------------------------------------------------------------------------------------------ status
class TargetState(StrEnum):
    PENDING = "Pending"  # not touched yet
    UPDATING = "Updating"  # spec changed, waiting for the target to report the new version
    UPDATED = "Updated"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    MODIFIED = "Modified"  # changed by someone else during the rollout: left alone, reported


class TargetStatus(StatusModel):
    """One frozen target.  ``previous`` is recorded before the target is touched: the Cluster's
    ClusterPackageVersion, or per changed component the MachinePackageVersion it ran ("" when absent)."""

    name: str = Field(description="cluster (Clusters) or cluster/machine (Machines).")
    node: str | None = Field(default=None, description="The Machine's node (what its permits name).")
    step: int = Field(default=-1, description="The canary step that took it (-1: not yet).")
    state: TargetState = TargetState.PENDING
    previous: dict[str, str] = Field(default_factory=dict, description="packageVersion (Clusters), or "
                                     "component → MachinePackageVersion (\"\": absent) for each changed component.")
    permit: str | None = Field(default=None, description="The risk-center Permit (namespace/name) it was changed "
                                                         "under.")
    touched_at: str | None = Field(default=None, description="When it was marked for a change (forward or back).")
    changed: bool | None = Field(default=None, description="The rollout changed its spec (so another value later "
                                                           "means someone else changed it).")
    rollback_failed: bool | None = None
    finished_at: str | None = None
    message: str | None = None


class StepStatus(StatusModel):
    index: int
    type: str
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = Field(default=None, description="Succeeded, Failed, Aborted, Promoted.")
    message: str | None = None


class RolloutHistoryEntry(StatusModel):
    revision: int
    change: str
    outcome: str
    started_at: str | None = None
    finished_at: str | None = None
    targets: int = 0
    updated: int = 0
    failed: int = 0


class RolloutConditionType(StrEnum):
    VALID = "Valid"  # the references resolve and the target selects something
    PROGRESSING = "Progressing"  # steps are being worked through
    PAUSED = "Paused"  # by spec.paused, a pause step, or waiting for a promotion
    COMPLETED = "Completed"  # every target runs the new version
    ABORTED = "Aborted"  # stopped by failures or a person
    ROLLED_BACK = "RolledBack"  # every touched target is back on its previous version
    RISK_PERMITTED = "RiskPermitted"  # False while a batch waits for the risk center


class RolloutState(StrEnum):
    """For people (the STATE column); derived last from the conditions."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    INVALID = "Invalid"


class RolloutReason:
    """Reasons of Rollout conditions and Events (CamelCase, stable)."""

    VALID: Final = "Valid"
    PACKAGE_VERSION_NOT_FOUND: Final = "PackageVersionNotFound"
    COMPONENT_MISMATCH: Final = "ComponentMismatch"
    NO_TARGETS: Final = "NoTargets"
    CLUSTER_UNREACHABLE: Final = "ClusterUnreachable"
    OVERLAP: Final = "Overlap"
    STARTED: Final = "Started"
    STEP_STARTED: Final = "StepStarted"
    BATCH_IN_PROGRESS: Final = "BatchInProgress"
    BAKING: Final = "Baking"
    ANALYZING: Final = "Analyzing"
    PAUSED_BY_USER: Final = "PausedByUser"
    PAUSE_STEP: Final = "PauseStep"
    WAITING_FOR_PROMOTION: Final = "WaitingForPromotion"
    PROMOTED: Final = "Promoted"
    COMPLETED: Final = "Completed"
    NOT_COMPLETED: Final = "NotCompleted"
    FAILURE_LIMIT: Final = "FailureLimitExceeded"
    ANALYSIS_FAILED: Final = "AnalysisFailed"
    HEALTH_CHECK_FAILED: Final = "HealthCheckFailed"
    ABORTED_BY_USER: Final = "AbortedByUser"
    NOT_ABORTED: Final = "NotAborted"
    ROLLING_BACK: Final = "RollingBack"
    ROLLED_BACK: Final = "RolledBack"
    UNDO: Final = "Undo"
    NOT_ROLLED_BACK: Final = "NotRolledBack"
    TARGET_FAILED: Final = "TargetFailed"
    TARGET_MODIFIED: Final = "TargetModified"
    FAULT_ATTRIBUTED: Final = "FaultAttributed"
    PROGRESS_DEADLINE: Final = "ProgressDeadlineExceeded"
    RISK_GRANTED: Final = "Granted"
    NEW_REVISION: Final = "NewRevision"


class RolloutStatus(StatusModel):
    observed_generation: int | None = None
    phase: str | None = Field(default=None, description="The state, for people only (the STATE column: Pending, "
                              "Progressing, Paused, Completed, Aborted, RollingBack, RolledBack, Invalid); code "
                              "decides on conditions.")
    revision: int = 0
    change: str | None = Field(default=None, description="The change this revision rolls out, in words.")
    change_hash: str | None = Field(default=None, description="Identifies spec.target of this revision.")
    target_kind: str | None = None
    to_version: str | None = None
    current_step: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    updated: str | None = Field(default=None, description="updated/total, e.g. 3/10 (the UPDATED column).")
    total: int = Field(default=0, description="Targets of this revision (frozen at its start).")
    counts: dict[str, int] = Field(default_factory=dict, description="Targets by state.")
    steps: list[StepStatus] = Field(default_factory=list, json_schema_extra=list_map("index"))
    targets: list[TargetStatus] = Field(default_factory=list, json_schema_extra=list_map("name"), max_length=NAMED_TARGETS,
                                        description="The targets worth naming, at most 100: failed, rolling back, "
                                                    "updating and modified first, then the rest in the order they "
                                                    "are taken.  Every target's record is in the RolloutTargetSets.")
    targets_omitted: int = Field(default=0, description="Targets not named in targets (counted in counts).")
    target_sets: int = Field(default=0, description="RolloutTargetSets <name>-r<revision>-<i> holding this revision's "
                                                    "per-target records (0: the targets are not frozen yet).")
    permits: list[str] = Field(default_factory=list, json_schema_extra=list_set(),
                               description="Open risk-center Permits (namespace/name) the rollout holds.")
    history: list[RolloutHistoryEntry] = Field(default_factory=list, json_schema_extra=list_map("revision"))
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class Rollout(ResourceModel):
    """A canary wave of one change over Clusters or Machines (namespaced, in the meta cluster)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="Rollout", plural="rollouts", scope="Namespaced",
        singular="rollout", short_names=("kro",),
        references=(FieldReference(".spec.target.clusters.packageVersion", "clusterpackageversions", GROUP,
                                   "ClusterPackageVersion"),),
        printer_columns=(
            PrinterColumn("Target", ".status.targetKind", description="Clusters or Machines."),
            PrinterColumn("To", ".status.toVersion", description="The version rolled out."),
            PrinterColumn("Step", ".status.currentStep", "integer"),
            PrinterColumn("Updated", ".status.updated", description="updated/total targets."),
            PrinterColumn("State", ".status.phase"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: RolloutSpec
    status: RolloutStatus = Field(default_factory=RolloutStatus)


class RolloutTargetSetSpec(StatusModel):
    """A slice of one revision's frozen targets, in the order they are taken (slice ``index`` holds targets
    ``index * TARGETS_PER_SET`` onwards).  Written by the rollout controller only — before any target it
    names is touched, and again whenever a record changes — so a restarted controller knows exactly what it
    marked and changed."""

    rollout: str = Field(description="The owning Rollout's name.")
    revision: int = Field(ge=1)
    index: int = Field(ge=0)
    targets: list[TargetStatus] = Field(default_factory=list, max_length=TARGETS_PER_SET)


class RolloutTargetSet(ResourceModel):
    """Per-target progress of a Rollout (namespaced, owned by the Rollout; the garbage collector deletes it
    with its Rollout).  Keeps the Rollout's own status small: the way a Deployment's pods are counted in its
    status while each pod's state lives in its ReplicaSets and Pods."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="RolloutTargetSet", plural="rollouttargetsets", scope="Namespaced",
        singular="rollouttargetset", short_names=("krots",), status_subresource=False,
        printer_columns=(
            PrinterColumn("Rollout", ".spec.rollout"),
            PrinterColumn("Revision", ".spec.revision", "integer"),
            PrinterColumn("Index", ".spec.index", "integer"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: RolloutTargetSetSpec
