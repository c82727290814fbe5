"""MaintenancePolicy and MaintenanceFlow: how a faulty node is isolated, drained, repaired and given back.

A :class:`MaintenancePolicy` (cluster-scoped, in the business cluster; kokpit ships ``default``) names the
flow templates — which steps, which repair, how long a repair may take, how often it is tried — the order in
which repairs escalate (component restart → reboot → reinstall → hardware ticket → a person), the time the
PaaS gets to migrate pods before they are evicted, and the fault-storm breaker.  Which template a fault
starts with comes from the fault type's catalog entry (:mod:`kokpit.api.fault`), unless the policy routes it
elsewhere.

A :class:`MaintenanceFlow` is one repair of one node, created by the flow controller when a NodeFault
appears: every step's start, end and outcome, the escalation level, the repair's intent (written before the
driver is called, so a restarted controller never reboots twice) and every human action.  People act on it
through ``spec.request`` (``kokpit fault resolve|retry``); the controller records who, when and why.

Bad templates are refused at admission (unknown step or repair, a flow the escalation or a route names but
the policy does not define, a flow repeated in the escalation — a cycle —, malformed durations), each with the
field named in the ``Status``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar, Final, Self

from pydantic import ConfigDict, Field, JsonValue, model_validator

from kokpit.api.crdgen import KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.meta import Condition, ResourceModel, SpecModel, StatusModel
from kokpit.api.risk import DURATION_PATTERN

__all__ = [
    "DEFAULT_ESCALATION",
    "DEFAULT_POLICY",
    "FLOW_FINALIZER",
    "MIGRATE_LABEL",
    "MIGRATION_DEADLINE_ANNOTATION",
    "MIGRATION_FLOW_ANNOTATION",
    "MIGRATION_REASON_ANNOTATION",
    "TAINT_KEY",
    "FaultRoute",
    "FlowConditionType",
    "FlowReason",
    "FlowStep",
    "FlowTemplate",
    "HumanAction",
    "HumanActionType",
    "HumanRequest",
    "MaintenanceFlow",
    "MaintenanceFlowSpec",
    "MaintenanceFlowStatus",
    "MaintenancePolicy",
    "MaintenancePolicySpec",
    "MaintenancePolicyStatus",
    "PodRecord",
    "RepairAction",
    "RepairAttempt",
    "StepRecord",
    "StormBreaker",
    "StormStatus",
    "TicketRecord",
    "default_policy_spec",
    "parse_duration",
]

DEFAULT_POLICY: Final = "default"
TAINT_KEY: Final = "kokpit.io/maintenance"
"""The NoSchedule taint an isolated node carries (beside ``spec.unschedulable``)."""
MIGRATE_LABEL: Final = "kokpit.io/to-be-migrated"
"""``"true"`` on every pod of a node under maintenance: the PaaS / a MigrateController moves it."""
MIGRATION_REASON_ANNOTATION: Final = "kokpit.io/migration-reason"
MIGRATION_DEADLINE_ANNOTATION: Final = "kokpit.io/migration-deadline"
MIGRATION_FLOW_ANNOTATION: Final = "kokpit.io/maintenance-flow"
FLOW_FINALIZER: Final = "kokpit.io/maintenance-flow"
_NAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_MAX_HISTORY: Final = 64

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds of a Go duration without sign (``90s``, ``5m``, ``1h30m``, ``250ms``)."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class FlowStep(StrEnum):
    """The steps a flow template may list, always run in this order (a template may leave some out)."""

    ISOLATE = "Isolate"  # permit node-isolate; cordon + taint kokpit.io/maintenance:NoSchedule
    MIGRATE = "Migrate"  # permit node-drain; label pods kokpit.io/to-be-migrated=true with a deadline
    DRAIN = "Drain"  # after the deadline: evict what is left (PDBs honoured), delete bare pods
    REPAIR = "Repair"  # permit for the repair operation; the node driver restarts / reboots / reinstalls
    VERIFY = "Verify"  # fault gone, node Ready, components healthy, readiness gates hold
    RESTORE = "Restore"  # uncordon, untaint, release permits, resolve the NodeFaults


class RepairAction(StrEnum):
    """What the Repair step does through the node driver (each asks its own risk-center operation)."""

    COMPONENT_RESTART = "ComponentRestart"  # component-upgrade permit; restart the faulty component
    REBOOT = "Reboot"  # node-reboot permit
    REINSTALL = "Reinstall"  # node-reinstall permit; the machine operator then installs every component again
    HARDWARE_REPAIR = "HardwareRepair"  # a repair ticket a person or the IDC system closes (node already drained)
    NONE = "None"  # nothing to do but wait for the fault to clear (e.g. a transient fault)


DEFAULT_ESCALATION: Final = ("component-restart", "reboot", "reinstall", "hardware-repair")


class FlowTemplate(SpecModel):
    """One kind of maintenance flow: its steps, its repair, and how long and how often to try it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(self.steps) || self.steps.exists(s, s == 'Restore')", "fieldPath": ".steps",
        "reason": "FieldValueInvalid", "message": "steps must include Restore (a flow must give the node back)"}]})

    name: str = Field(min_length=1, max_length=63, pattern=_NAME, description="e.g. reboot.")
    repair: RepairAction = Field(description="What the Repair step does.")
    steps: list[FlowStep] = Field(
        default_factory=lambda: list(FlowStep), min_length=1, max_length=6, json_schema_extra=list_set(),
        description="Steps of this flow (run in the fixed order Isolate, Migrate, Drain, Repair, Verify, Restore).")
    timeout: str = Field(default="15m", pattern=DURATION_PATTERN,
                         description="A repair attempt not verified within this counts as failed.")
    max_attempts: int = Field(default=1, ge=1, le=100, description="Attempts of this repair before escalating.")

    @model_validator(mode="after")
    def _repair_needs_its_step(self) -> Self:
        if FlowStep.RESTORE not in self.steps:
            raise ValueError("steps must include Restore (a flow must give the node back)")
        return self

    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


class FaultRoute(SpecModel):
    """Send faults of ``type`` to flow ``flow`` instead of the catalog's default."""

    type: str = Field(min_length=1, max_length=63, pattern=_NAME)
    flow: str = Field(min_length=1, max_length=63, pattern=_NAME)


class StormBreaker(SpecModel):
    """More than ``maxFaulty`` of a cluster's nodes turning faulty within ``window`` (an Active fault in the
    event center, or a flow opened) trips the breaker: no new node is isolated while it is open (flows already under way finish; the risk center's node-isolate
    budget holds as always).  It closes by itself once the share falls back (Cluster API MachineHealthCheck's
    maxUnhealthy short-circuit)."""

    max_faulty: int | str = Field(
        default="30%", json_schema_extra={"x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",
            "message": "must be a non-negative integer or a percentage between 0% and 100%"}]},
        description="Nodes (or a percentage of the cluster's nodes) turning faulty within the window "
                    "before it trips.")
    window: str = Field(default="10m", pattern=DURATION_PATTERN)

    @model_validator(mode="after")
    def _limit(self) -> Self:
        v = self.max_faulty
        if (isinstance(v, int) and v < 0) or (isinstance(v, str) and not re.fullmatch(r"(100|[1-9]?[0-9])%", v)):
            raise ValueError("maxFaulty: must be a non-negative integer or a percentage between 0% and 100%")
        return self


_POLICY_RULES: Final[list[JsonValue]] = [
    {"rule": "!has(self.escalation) || self.escalation.all(e, self.flows.exists(f, f.name == e))",
     "fieldPath": ".escalation", "reason": "FieldValueInvalid",
     "message": "every flow in the escalation must be defined in spec.flows"},
    {"rule": "!has(self.escalation) || self.escalation.all(e, self.escalation.exists_one(x, x == e))",
     "fieldPath": ".escalation", "reason": "FieldValueInvalid",
     "message": "a flow may appear only once in the escalation (a repeated flow is a cycle)"},
    {"rule": "!has(self.faultTypes) || self.faultTypes.all(r, self.flows.exists(f, f.name == r.flow))",
     "fieldPath": ".faultTypes", "reason": "FieldValueInvalid",
     "message": "every route must name a flow defined in spec.flows"},
]


class MaintenancePolicySpec(SpecModel):
    flows: list[FlowTemplate] = Field(min_length=1, max_length=32, json_schema_extra=list_map("name"))
    escalation: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ESCALATION), max_length=32,
        description="Repairs from weakest to strongest: a flow that fails escalates to the next one, the last "
                    "one to a person (ManualRequired).")
    fault_types: list[FaultRoute] = Field(default_factory=list, max_length=256, json_schema_extra=list_map("type"),
                                          description="Overrides of the fault catalog's default flow.")
    default_flow: str = Field(default="reboot", pattern=_NAME, max_length=63,
                              description="Flow for a fault type neither routed nor in the catalog.")
    migration_deadline: str = Field(default="5m", pattern=DURATION_PATTERN,
                                    description="Time the PaaS gets to migrate labelled pods before eviction.")
    storm: StormBreaker = Field(default_factory=StormBreaker)

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _POLICY_RULES})

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = {f.name for f in self.flows}
        for i, e in enumerate(self.escalation):
            if e not in names:
                raise ValueError(f"escalation[{i}]: flow {e!r} is not defined in flows")
            if self.escalation.index(e) != i:
                raise ValueError(f"escalation[{i}]: flow {e!r} appears twice (a cycle)")
        for r in self.fault_types:
            if r.flow not in names:
                raise ValueError(f"faultTypes[{r.type}]: flow {r.flow!r} is not defined in flows")
        if self.default_flow not in names:
            raise ValueError(f"defaultFlow: flow {self.default_flow!r} is not defined in flows")
        return self

    def flow(self, name: str) -> FlowTemplate | None:
        return next((f for f in self.flows if f.name == name), None)

    def next_flow(self, name: str) -> str | None:
        """The flow to escalate to from ``name`` (None: a person must finish it)."""
        if name not in self.escalation:
            return None
        i = self.escalation.index(name)
        return self.escalation[i + 1] if i + 1 < len(self.escalation) else None

    def flow_for(self, fault_type: str, catalog_flow: str = "") -> str:
        for r in self.fault_types:
            if r.type == fault_type:
                return r.flow
        if catalog_flow and self.flow(catalog_flow) is not None:
            return catalog_flow
        return self.default_flow


def default_policy_spec() -> MaintenancePolicySpec:
    """What kokpit ships as MaintenancePolicy ``default``."""
    restart_steps = [FlowStep.ISOLATE, FlowStep.REPAIR, FlowStep.VERIFY, FlowStep.RESTORE]
    return MaintenancePolicySpec(flows=[
        FlowTemplate(name="component-restart", repair=RepairAction.COMPONENT_RESTART, steps=restart_steps,
                     timeout="5m", max_attempts=2),
        FlowTemplate(name="reboot", repair=RepairAction.REBOOT, timeout="15m", max_attempts=1),
        FlowTemplate(name="reinstall", repair=RepairAction.REINSTALL, timeout="1h", max_attempts=1),
        FlowTemplate(name="hardware-repair", repair=RepairAction.HARDWARE_REPAIR, timeout="72h", max_attempts=1),
    ])


class StormStatus(StatusModel):
    open: bool = False
    faulty_nodes: int = 0
    nodes: int = 0
    limit: int = 0
    tripped_at: str | None = None
    closed_at: str | None = None
    message: str = ""


class MaintenancePolicyStatus(StatusModel):
    observed_generation: int | None = None
    storm: StormStatus = Field(default_factory=StormStatus)
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class MaintenancePolicy(ResourceModel):
    """Which fault types get which maintenance flow, and how flows run and escalate (cluster-scoped)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="MaintenancePolicy", plural="maintenancepolicies", scope="Cluster",
        singular="maintenancepolicy", short_names=("mpol",),
        printer_columns=(
            PrinterColumn("Escalation", ".spec.escalation"),
            PrinterColumn("Deadline", ".spec.migrationDeadline"),
            PrinterColumn("Storm", ".status.storm.open", "boolean"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: MaintenancePolicySpec
    status: MaintenancePolicyStatus = Field(default_factory=MaintenancePolicyStatus)


# ------------------------------------------------------------------------------------------------ flow
class HumanActionType(StrEnum):
    RESOLVE = "Resolve"  # a person repaired the node: verify, then give it back
    RETRY = "Retry"  # start automatic repair again from the first flow of the escalation


class HumanRequest(SpecModel):
    """A person's request (``kokpit fault resolve|retry``); ``id`` makes each one count once."""

    id: str = Field(min_length=1, max_length=128)
    action: HumanActionType
    user: str = Field(default="", max_length=512, description="Who asked (the API server's SelfSubjectReview).")
    note: str = Field(default="", max_length=4096)
    requested_at: str | None = None


class MaintenanceFlowSpec(SpecModel):
    node_name: str = Field(min_length=1, max_length=253, description="The node under repair.")
    fault_type: str = Field(default="", max_length=63, description="The fault type that opened the flow.")
    faults: list[str] = Field(default_factory=list, max_length=256, json_schema_extra=list_set(),
                              description="NodeFaults this flow repairs.")
    policy: str = Field(default=DEFAULT_POLICY, min_length=1, max_length=253)
    flow: str = Field(min_length=1, max_length=63, pattern=_NAME, description="The flow it started with.")
    component: str = Field(default="", max_length=63, description="The faulty component (ComponentRestart).")
    request: HumanRequest | None = None


class FlowConditionType(StrEnum):
    ISOLATED = "Isolated"
    MIGRATED = "Migrated"  # pods were labelled and are gone (migrated, evicted or deleted)
    REPAIRED = "Repaired"
    VERIFIED = "Verified"
    COMPLETED = "Completed"  # the node was given back
    MANUAL_REQUIRED = "ManualRequired"
    RISK_PERMITTED = "RiskPermitted"


class FlowReason:
    """Reasons on MaintenanceFlow conditions and Events (CamelCase, stable)."""

    ISOLATED: Final = "Isolated"
    NOT_ISOLATED: Final = "NotIsolated"
    STORM_BREAKER_OPEN: Final = "StormBreakerOpen"
    MIGRATING: Final = "WaitingForMigration"
    EVICTING: Final = "Evicting"
    DISRUPTION_BUDGET: Final = "DisruptionBudget"
    DRAINED: Final = "Drained"
    REPAIRING: Final = "Repairing"
    REPAIR_FAILED: Final = "RepairFailed"
    REPAIRED: Final = "Repaired"
    TICKET_OPEN: Final = "TicketOpen"
    VERIFYING: Final = "Verifying"
    VERIFIED: Final = "Verified"
    ESCALATED: Final = "Escalated"
    MANUAL_REQUIRED: Final = "ManualRequired"
    RESOLVED_BY_PERSON: Final = "ResolvedByPerson"
    RETRIED_BY_PERSON: Final = "RetriedByPerson"
    COMPLETED: Final = "Completed"
    RECOVERED: Final = "RecoveredWithoutRepair"
    RUNNING: Final = "Running"
    POD_DELETED: Final = "BarePodDeleted"
    POD_EVICTED: Final = "PodEvicted"
    NODE_GONE: Final = "NodeGone"
    UNKNOWN_FLOW: Final = "UnknownFlow"
    NO_POLICY: Final = "PolicyNotFound"


class StepRecord(StatusModel):
    name: FlowStep
    attempt: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str = Field(default="", description="Running, Waiting, Succeeded, Failed or Skipped.")
    message: str = Field(default="", max_length=2048)


class RepairAttempt(StatusModel):
    """One repair: the intent is written before the driver is called; ``requestId`` is the driver's
    idempotency key, so a restarted controller asks about the same repair instead of starting another."""

    flow: str
    action: RepairAction
    attempt: int = 1
    request_id: str
    operation_id: str = ""
    component: str = ""
    started_at: str
    finished_at: str | None = None
    outcome: str = Field(default="", description="'' while running; Succeeded, Failed, TimedOut, Superseded.")
    message: str = Field(default="", max_length=2048)


class PodRecord(StatusModel):
    namespace: str
    name: str
    action: str = Field(description="Evicted, Deleted (a bare pod) or Migrated (gone before the deadline).")
    at: str
    message: str = Field(default="", max_length=1024)


class HumanAction(StatusModel):
    id: str
    action: HumanActionType
    user: str = ""
    note: str = ""
    at: str


class TicketRecord(StatusModel):
    """A hardware repair ticket: closed when a person or the IDC system resolves the flow."""

    id: str
    opened_at: str
    closed_at: str | None = None
    notified: bool = False
    message: str = ""


class MaintenanceFlowStatus(StatusModel):
    observed_generation: int | None = None
    phase: str = ""
    step: str = ""
    current_flow: str = ""
    level: int = 0
    attempt: int = 0
    isolated_at: str | None = None
    migration_deadline: str | None = None
    drained_at: str | None = None
    completed_at: str | None = None
    steps: list[StepRecord] = Field(default_factory=list, max_length=6, json_schema_extra=list_map("name"))
    repair: RepairAttempt | None = None
    history: list[RepairAttempt] = Field(default_factory=list, max_length=_MAX_HISTORY)
    pods: list[PodRecord] = Field(default_factory=list, max_length=512)
    human_actions: list[HumanAction] = Field(default_factory=list, max_length=_MAX_HISTORY)
    permits: list[str] = Field(default_factory=list, json_schema_extra=list_set())
    ticket: TicketRecord | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class MaintenanceFlow(ResourceModel):
    """One repair of one node (cluster-scoped, business cluster)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="MaintenanceFlow", plural="maintenanceflows", scope="Cluster",
        singular="maintenanceflow", short_names=("mflow",),
        printer_columns=(
            PrinterColumn("Node", ".spec.nodeName"),
            PrinterColumn("Fault", ".spec.faultType"),
            PrinterColumn("Flow", ".status.currentFlow"),
            PrinterColumn("Step", ".status.step"),
            PrinterColumn("State", ".status.phase"),
            PrinterColumn("Attempt", ".status.attempt", "integer", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
        selectable_fields=(".spec.nodeName", ".spec.faultType", ".spec.flow", ".status.currentFlow",
                           ".status.step", ".status.phase"),
    )

    spec: MaintenanceFlowSpec
    status: MaintenanceFlowStatus = Field(default_factory=MaintenanceFlowStatus)

