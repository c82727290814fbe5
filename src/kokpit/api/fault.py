"""NodeFault, FaultType and FaultSubscription: the event center of node fault self-recovery (issue 15).

**Where they live.** All three are *cluster-scoped kinds of the business cluster*, beside Machines and Nodes:
the agents that report faults, the detector that finds silent ones and the maintenance flows that repair them
all talk to that cluster's API server, and a fault belongs to a Node of exactly one cluster.

**FaultType** is the catalog, as data a platform team extends with ``kubectl apply``: one object per fault
type (``disk-failure``, ``kernel-deadlock``, ``kubelet-unhealthy``, ``node-unreachable``...) with its
category, severity, the name of its default maintenance flow, the TTL of a report, and the signals that mean
it (node-problem-detector's Node conditions and Event reasons).  ``kokpit.operators.faults`` installs the
defaults (:mod:`kokpit.operators.faults.catalog`) when they are missing and never overwrites a user's edit.

**NodeFault** is one fault of one node: ``spec`` is its identity (node, type, optionally component; immutable),
``status`` the observation.  Its name is deterministic (:func:`fault_name`: ``<node>.<type>`` or
``<node>.<type>.<component>``), so repeated reports of the same fault update one object: ``count``,
``lastSeen`` and ``sources`` (one entry per reporter, with provenance: who, when, how often, what it said).
A report is a heartbeat: a fault no reporter refreshed within its TTL turns ``Expired``; one every reporter
cleared turns ``Resolved``; either is kept as history for a retention period, then deleted.  A new report of
a Resolved/Expired fault opens a new *episode* on the same object (the old one moves to ``history``).

**Maintenance flows** (the ``flows`` session: ``kokpit.api.maintenance``) are named by the catalog's
``flow`` field.  The standard names (:class:`FlowName`): ``component-restart``, ``reboot``, ``reinstall``,
``hardware-repair``, and ``none`` (observe only).  A flow links itself by setting ``status.maintenanceFlow``
and resolves a fault by setting ``state: Resolved`` with a ``resolution`` (who, when, why, note).  Flows act
only on faults whose condition ``Accepted`` is True (the node exists and the type is in the catalog).

**Possibly caused by** (issue item 5): a fault on a node that a change in flight touches (a granted
risk-center Permit naming the node, a Machine upgrading a component) names that change in
``status.possiblyCausedBy``, so the change can stop and roll back instead of the node being "repaired" into
the bad version.  Rollouts read it; the fault controllers (and rollouts) fill it.

**FaultSubscription** delivers matching NodeFault state changes to an HTTP(S) webhook with retries and
backoff; the delivery state lives in its status, so a restarted deliverer neither loses nor repeats more than
the delivery in flight.  Consumers inside the cluster simply watch NodeFaults with a label selector (labels
:data:`NODE_LABEL`, :data:`TYPE_LABEL`, :data:`SEVERITY_LABEL`, :data:`STATE_LABEL`, :data:`COMPONENT_LABEL`).

Admission (OpenAPI and CEL in the generated CRDs) refuses malformed reports with a ``Status`` naming the field:
a node or type that is not a name, a source without a reporter, an unknown state or severity, a time that is
not RFC 3339, a non-http(s) webhook.  What needs a lookup is refused at write time too: the CRD declares
``spec.nodeName`` → Node and ``spec.type`` → FaultType as references (:class:`~kokpit.api.crdgen.FieldReference`)
and kokpit's API server answers a report naming a node or type that does not exist with a 422 naming the
field.  What turns wrong *later* (the Node or FaultType deleted after the fault was accepted; on a real
kube-apiserver, which ignores the annotation, everything) is decided by the event center and shown as
condition ``Accepted=False`` (reason ``UnknownFaultType`` / ``NodeNotFound``, the message naming
``spec.type`` / ``spec.nodeName``) plus a Warning Event.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from pydantic import Field, JsonValue

from kokpit.api.crdgen import FieldReference, KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.meta import Condition, ResourceModel, SpecModel, StatusModel
from kokpit.api.risk import DURATION_PATTERN, LabelSelector

__all__ = [
    "COMPONENT_LABEL",
    "FAULT_TYPE_PATTERN",
    "HISTORY_MAX",
    "MANUAL_REQUIRED_LABEL",
    "NODE_LABEL",
    "NODE_NAME_PATTERN",
    "REPORTER_PATTERN",
    "SEVERITY_LABEL",
    "SOURCES_MAX",
    "STATE_LABEL",
    "TIME_PATTERN",
    "TYPE_LABEL",
    "CauseRef",
    "DeliveryState",
    "DeliveryStatus",
    "FaultCategory",
    "FaultConditionType",
    "FaultEpisode",
    "FaultReason",
    "FaultSource",
    "FaultState",
    "FaultSubscription",
    "FaultSubscriptionSpec",
    "FaultSubscriptionStatus",
    "FaultType",
    "FaultTypeSpec",
    "FlowName",
    "ManualRequiredRecord",
    "NodeConditionSignal",
    "NodeEventSignal",
    "NodeFault",
    "NodeFaultSpec",
    "NodeFaultStatus",
    "Resolution",
    "RetryPolicy",
    "Severity",
    "SourceKind",
    "component_fault_type",
    "fault_labels",
    "fault_name",
]

# ------------------------------------------------------------------------------------------------ names
NODE_LABEL: Final = "kokpit.io/node"
TYPE_LABEL: Final = "kokpit.io/fault-type"
SEVERITY_LABEL: Final = "kokpit.io/severity"
STATE_LABEL: Final = "kokpit.io/fault-state"
COMPONENT_LABEL: Final = "kokpit.io/component"
MANUAL_REQUIRED_LABEL: Final = "kokpit.io/manual-required"
"""``"true"`` while a maintenance flow waits for a person to finish the repair of this fault's node."""

NODE_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
FAULT_TYPE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A fault type is a DNS label (it is the FaultType's name and part of a NodeFault's name)."""
REPORTER_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.:/@]*[A-Za-z0-9])?$"
"""Who reported: ``<component>/<instance>``, e.g. ``node-agent/node-1``, ``node-problem-detector/kernel-monitor``,
``fault-detector/lease``, ``simulator/node-7``."""
TIME_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
"""RFC 3339 (Time or MicroTime)."""
SOURCES_MAX: Final = 32
"""Reporters kept per fault (the oldest-refreshed is dropped beyond that)."""
HISTORY_MAX: Final = 10
"""Past episodes kept per fault."""
_LABEL_VALUE_MAX: Final = 63


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def fault_name(node: str, fault_type: str, component: str = "") -> str:
    """The deterministic name of the NodeFault for ``node`` + ``type`` (+ ``component``).

    ``<node>.<type>[.<component>]``; longer than 253 characters (a very long node name), the node part is
    shortened and a hash of the whole identity appended, so names stay unique and stable.
    """
    parts = [node, fault_type] + ([component] if component else [])
    name = ".".join(parts)
    if len(name) <= 253:
        return name
    suffix = "." + ".".join(parts[1:]) + "." + _hash(name)
    return node[: 253 - len(suffix)].rstrip(".-") + suffix


def _label_value(value: str) -> str:
    """A label value for ``value`` (node names may be longer than a label value may be: hashed then)."""
    if len(value) <= _LABEL_VALUE_MAX:
        return value
    return value[: _LABEL_VALUE_MAX - 11].rstrip(".-_") + "-" + _hash(value)


def fault_labels(node: str, fault_type: str, component: str = "", *, severity: str = "",
                 state: str = "", manual_required: bool = False) -> dict[str, str]:
    """The labels a NodeFault carries so consumers can watch with label selectors."""
    out = {NODE_LABEL: _label_value(node), TYPE_LABEL: fault_type}
    if component:
        out[COMPONENT_LABEL] = component
    if severity:
        out[SEVERITY_LABEL] = severity
    if state:
        out[STATE_LABEL] = state
    if manual_required:
        out[MANUAL_REQUIRED_LABEL] = "true"
    return out


_RUNTIMES: Final = ("containerd", "docker", "cri-o", "crio")


def component_fault_type(component: str) -> str:
    """The default catalog's type for a failing managed component (the node agent and the detector agree)."""
    if component == "kubelet":
        return "kubelet-unhealthy"
    if component in _RUNTIMES:
        return "container-runtime-unhealthy"
    return "component-unhealthy"


# ------------------------------------------------------------------------------------------------ vocabulary
class Severity(StrEnum):
    """How bad a fault is for the node's workloads (the flows may weigh it; people sort by it)."""

    CRITICAL = "Critical"  # the node cannot run workloads (unreachable, hardware failure)
    MAJOR = "Major"  # workloads are or will soon be hurt (kubelet down, read-only filesystem)
    MINOR = "Minor"  # degraded, workloads mostly fine (clock skew, disk pressure)
    INFO = "Info"  # worth recording, no action


class FaultCategory(StrEnum):
    HARDWARE = "Hardware"
    SYSTEM = "System"
    COMPONENT = "Component"
    CONNECTIVITY = "Connectivity"  # node-unreachable: nobody hears from the node
    WORKLOAD = "Workload"  # a business signal (pods failing to start on one node)


class FlowName(StrEnum):
    """The standard maintenance flows a fault type may name (defined by ``kokpit.api.maintenance``; a
    MaintenancePolicy may add more, so ``FaultType.spec.flow`` is any DNS label)."""

    COMPONENT_RESTART = "component-restart"
    REBOOT = "reboot"
    REINSTALL = "reinstall"
    HARDWARE_REPAIR = "hardware-repair"
    NONE = "none"  # record and notify only


class FaultState(StrEnum):
    """Active: reported and fresh.  Resolved: every reporter cleared it, or a flow/person resolved it.
    Expired: no report refreshed it within its TTL.  Invalid: refused by the event center (unknown type or
    node; condition Accepted says why).  Resolved, Expired and Invalid faults are history: deleted after the
    retention period; a new report reopens the fault as a new episode."""

    ACTIVE = "Active"
    RESOLVED = "Resolved"
    EXPIRED = "Expired"
    INVALID = "Invalid"


class DeliveryState(StrEnum):
    """What a FaultSubscription may ask to be told: a fault's state, or that the maintenance flow repairing
    it gave up and handed the node to a person (``ManualRequired``, while the fault is still Active)."""

    ACTIVE = "Active"
    RESOLVED = "Resolved"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    MANUAL_REQUIRED = "ManualRequired"


class SourceKind(StrEnum):
    """What kind of reporter a source is."""

    AGENT = "Agent"  # a node agent (kokpit node-agent, the simulator's hosts)
    NODE_PROBLEM_DETECTOR = "NodeProblemDetector"  # NPD's Node conditions and Events, ingested
    DETECTOR = "Detector"  # kokpit's fault detector (lease, Ready, component health, pod starts)
    PERSON = "Person"  # someone with kubectl / kokpit fault


class FaultConditionType(StrEnum):
    ACCEPTED = "Accepted"  # the node exists and the type is in the catalog
    CAUSE_SUSPECTED = "CauseSuspected"  # a change in flight touches the node (possiblyCausedBy)


class FaultReason:
    """Reasons of NodeFault conditions and Events (CamelCase, stable: tools match on them)."""

    ACCEPTED: Final = "Accepted"
    UNKNOWN_FAULT_TYPE: Final = "UnknownFaultType"
    NODE_NOT_FOUND: Final = "NodeNotFound"
    COMPONENT_REQUIRED: Final = "ComponentRequired"
    REPORTED: Final = "FaultReported"  # Event: a new fault or a new episode
    EXPIRED: Final = "FaultExpired"  # Event: no report within the TTL
    RESOLVED: Final = "FaultResolved"  # Event
    CLEARED: Final = "ReportCleared"  # resolution.reason: every reporter cleared it
    CHANGE_IN_FLIGHT: Final = "ChangeInFlight"
    NO_CHANGE_IN_FLIGHT: Final = "NoChangeInFlight"
    # FaultSubscription
    DELIVERING: Final = "Delivering"
    DELIVERY_FAILING: Final = "DeliveryFailing"
    DELIVERY_GAVE_UP: Final = "DeliveryGaveUp"


def _cel(s: str) -> str:
    return s.replace("\\", "\\\\")


_Time = Annotated[str, Field(max_length=40, pattern=TIME_PATTERN)]
_Reporter = Annotated[str, Field(min_length=1, max_length=253, pattern=REPORTER_PATTERN)]


# ------------------------------------------------------------------------------------------------ FaultType
class NodeConditionSignal(SpecModel):
    """A Node condition meaning this fault while it has ``status`` (node-problem-detector's permanent
    problems: ``KernelDeadlock``, ``ReadonlyFilesystem``, ``FrequentKubeletRestart``...)."""

    type: str = Field(min_length=1, max_length=316, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")
    status: Annotated[str, Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})] = "True"
    component: str = Field(default="", max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                           description="The component the fault is about (per-component types).")


class NodeEventSignal(SpecModel):
    """An Event on a Node meaning this fault (node-problem-detector's temporary problems: reason
    ``KernelOops`` from source ``kernel-monitor``...).  An empty ``source`` matches any reporting
    component."""

    reason: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    source: str = Field(default="", max_length=253)
    component: str = Field(default="", max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                           description="The component the fault is about (per-component types).")


class FaultTypeSpec(SpecModel):
    category: FaultCategory
    severity: Severity
    flow: str = Field(max_length=63, pattern=FAULT_TYPE_PATTERN,
                      description="The default maintenance flow (component-restart, reboot, reinstall, "
                                  "hardware-repair, none, or a MaintenancePolicy's own).")
    description: str = Field(default="", max_length=1024)
    ttl: str = Field(default="5m", pattern=DURATION_PATTERN, max_length=32,
                     description="A report not refreshed within this long expires (reports are heartbeats).")
    per_component: bool = Field(default=False, description="One fault per component (spec.component is "
                                                            "required and part of the name).")
    node_conditions: list[NodeConditionSignal] = Field(
        default_factory=list, json_schema_extra=list_map("type"),
        description="Node conditions (e.g. from node-problem-detector) that report this fault.")
    node_events: list[NodeEventSignal] = Field(
        default_factory=list, json_schema_extra=list_map("reason", "source"),
        description="Events on a Node (e.g. from node-problem-detector) that report this fault.")


class FaultTypeStatus(StatusModel):
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class FaultType(ResourceModel):
    """One entry of the fault catalog (cluster-scoped; the name is the type, e.g. ``kernel-deadlock``)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="FaultType", plural="faulttypes", scope="Cluster",
        singular="faulttype", short_names=("ft",),
        printer_columns=(
            PrinterColumn("Category", ".spec.category"),
            PrinterColumn("Severity", ".spec.severity"),
            PrinterColumn("Flow", ".spec.flow"),
            PrinterColumn("TTL", ".spec.ttl"),
            PrinterColumn("Description", ".spec.description", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: FaultTypeSpec
    status: FaultTypeStatus = Field(default_factory=FaultTypeStatus)


# ------------------------------------------------------------------------------------------------ NodeFault
class NodeFaultSpec(SpecModel):
    """The identity of the fault: which node, which type, which component (immutable)."""

    node_name: str = Field(min_length=1, max_length=253, pattern=NODE_NAME_PATTERN)
    type: str = Field(min_length=1, max_length=63, pattern=FAULT_TYPE_PATTERN,
                      description="A FaultType's name.")
    component: str = Field(default="", max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                           description="For per-component types: which managed component.")


_SPEC_RULES: Final[list[JsonValue]] = [
    {"rule": "self == oldSelf", "message": "spec is immutable (node, type and component name the fault)"},
]


class FaultSource(StatusModel):
    """One reporter's view of the fault: provenance kept per reporter."""

    reporter: _Reporter
    kind: SourceKind = SourceKind.AGENT
    first_seen: _Time
    last_seen: _Time
    count: int = Field(default=1, ge=1)
    reason: str = Field(default="", max_length=128)
    message: str = Field(default="", max_length=1024)
    ttl_seconds: int | None = Field(default=None, ge=1, le=31_536_000,
                                    description="This reporter's heartbeat TTL (default: the type's ttl).")
    cleared: bool = Field(default=False, description="The reporter says the fault is gone.")
    cleared_at: _Time | None = None


class CauseRef(StatusModel):
    """A change in flight that touches the node (the risk-center Permit that allowed it, or a Rollout)."""

    kind: Annotated[str, Field(json_schema_extra={"enum": ["Permit", "Rollout", "Machine"]})]
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(default="", max_length=63)
    cluster: str = Field(default="", max_length=253, description="Where the referenced object lives "
                                                                  "(meta: the Cluster's namespace).")
    operation: str = Field(default="", max_length=63, description="e.g. component-upgrade, node-reboot.")
    holder: str = Field(default="", max_length=253)
    detail: str = Field(default="", max_length=512, description="e.g. kubelet 1.31.2 → 1.31.3.")
    since: _Time | None = None


class Resolution(StatusModel):
    """Who ended an episode and why (a reporter clearing it, a flow, or a person with a note)."""

    by: str = Field(min_length=1, max_length=253)
    at: _Time
    reason: str = Field(default="", max_length=128)
    note: str = Field(default="", max_length=1024)


class ManualRequiredRecord(StatusModel):
    """Set on every fault a maintenance flow repairs when the flow gives up (``ManualRequired``): a person
    must finish it (``kokpit fault resolve|retry``).  Subscriptions are told (state ``ManualRequired``); a
    retry clears it, a new episode starts without it."""

    maintenance_flow: str = Field(min_length=1, max_length=253)
    since: _Time
    message: str = Field(default="", max_length=1024)


class FaultEpisode(StatusModel):
    """A past episode of the fault, kept in ``history``."""

    first_seen: _Time
    last_seen: _Time
    count: int = Field(default=1, ge=0)
    state: FaultState
    ended_at: _Time | None = None
    maintenance_flow: str = ""
    resolution: Resolution | None = None


class NodeFaultStatus(StatusModel):
    state: FaultState | None = Field(default=None, description="Active, Resolved, Expired or Invalid.")
    severity: Severity | None = Field(default=None, description="From the catalog when accepted.")
    category: FaultCategory | None = None
    flow: str = Field(default="", max_length=63, description="The catalog's default maintenance flow.")
    count: int = Field(default=0, ge=0, description="Reports in this episode (all reporters).")
    first_seen: _Time | None = None
    last_seen: _Time | None = None
    expires_at: _Time | None = Field(default=None, description="Expires unless a report refreshes it.")
    reporter: str = Field(default="", max_length=253, description="The last reporter (a column).")
    message: str = Field(default="", max_length=1024, description="The last report's message.")
    sources: list[FaultSource] = Field(default_factory=list, max_length=SOURCES_MAX,
                                       json_schema_extra=list_map("reporter"))
    possibly_caused_by: list[CauseRef] = Field(default_factory=list, max_length=32,
                                               json_schema_extra=list_map("kind", "namespace", "name"))
    maintenance_flow: str = Field(default="", max_length=253,
                                  description="The MaintenanceFlow handling this episode (set by the flow).")
    resolution: Resolution | None = None
    manual_required: ManualRequiredRecord | None = Field(
        default=None, description="The maintenance flow gave up: a person must finish the repair.")
    history: list[FaultEpisode] = Field(default_factory=list, max_length=HISTORY_MAX)
    observed_episode: str = Field(default="", max_length=40, description="The event center's bookmark: the "
                                  "firstSeen of the episode it announced (Events, webhooks).")
    ended_at: _Time | None = Field(default=None, description="When the episode ended (Resolved/Expired/"
                                                              "Invalid); retention counts from here.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class NodeFault(ResourceModel):
    """One fault of one node (cluster-scoped, business cluster, named by :func:`fault_name`)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="NodeFault", plural="nodefaults", scope="Cluster",
        singular="nodefault", short_names=("nf",),
        printer_columns=(
            PrinterColumn("Node", ".spec.nodeName"),
            PrinterColumn("Type", ".spec.type"),
            PrinterColumn("Severity", ".status.severity"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Count", ".status.count", "integer"),
            PrinterColumn("First Seen", ".status.firstSeen", "date"),
            PrinterColumn("Last Seen", ".status.lastSeen", "date"),
            PrinterColumn("Source", ".status.reporter"),
            PrinterColumn("Component", ".spec.component", priority=1),
            PrinterColumn("Flow", ".status.maintenanceFlow", priority=1),
            PrinterColumn("Message", ".status.message", priority=1),
        ),
        references=(FieldReference(".spec.nodeName", "nodes", kind="Node"),
                    FieldReference(".spec.type", "faulttypes", GROUP, "FaultType")),
        selectable_fields=(".spec.nodeName", ".spec.type", ".spec.component", ".status.state",
                           ".status.severity", ".status.category", ".status.maintenanceFlow"),
    )

    spec: Annotated[NodeFaultSpec, Field(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})]
    status: NodeFaultStatus = Field(default_factory=NodeFaultStatus)


# ------------------------------------------------------------------------------------------------ subscription
class RetryPolicy(SpecModel):
    """Exponential backoff between attempts; after ``maxAttempts`` the delivery is given up (recorded)."""

    max_attempts: int = Field(default=10, ge=1, le=1000)
    initial_backoff_seconds: float = Field(default=1.0, gt=0, le=3600)
    max_backoff_seconds: float = Field(default=300.0, gt=0, le=86_400)


_URL_PATTERN: Final = r"^https?://[^\s/?#]+(/[^\s]*)?$"


class FaultSubscriptionSpec(SpecModel):
    url: str = Field(max_length=2048, pattern=_URL_PATTERN,
                     description="The webhook: http(s)://host[:port]/path; receives a JSON POST per change.")
    selector: LabelSelector | None = Field(default=None, description="NodeFaults by their labels (node, "
                                                                      "fault-type, severity, fault-state).")
    types: list[Annotated[str, Field(max_length=63, pattern=FAULT_TYPE_PATTERN)]] = Field(
        default_factory=list, json_schema_extra=list_set(), description="Only these fault types (empty: all).")
    min_severity: Severity | None = Field(default=None, description="Only this severe or worse.")
    states: list[DeliveryState] = Field(
        default_factory=lambda: [DeliveryState.ACTIVE, DeliveryState.RESOLVED, DeliveryState.EXPIRED,
                                 DeliveryState.MANUAL_REQUIRED],
        json_schema_extra={**list_set(), "default": ["Active", "Resolved", "Expired", "ManualRequired"]},
        description="Which transitions are delivered (ManualRequired: a flow handed the node to a person).")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, json_schema_extra={"default": {}})
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    ca_bundle: str = Field(default="", max_length=65536, description="PEM CA(s) for an https URL (default: "
                                                                     "the system's).")
    paused: bool = False


class DeliveryStatus(StatusModel):
    """The delivery of one fault's current transition to this subscription."""

    fault: str = Field(min_length=1, max_length=253)
    event: str = Field(default="", max_length=300, description="What is delivered: <state>@<firstSeen>.")
    delivered: bool = False
    attempts: int = Field(default=0, ge=0)
    next_attempt_time: _Time | None = None
    delivered_at: _Time | None = None
    last_error: str = Field(default="", max_length=1024)
    gave_up: bool = False


class FaultSubscriptionStatus(StatusModel):
    observed_generation: int | None = None
    delivered: int = Field(default=0, ge=0, description="Deliveries acknowledged with a 2xx.")
    failed_attempts: int = Field(default=0, ge=0)
    given_up: int = Field(default=0, ge=0)
    last_delivery_time: _Time | None = None
    last_error: str = Field(default="", max_length=1024)
    deliveries: list[DeliveryStatus] = Field(default_factory=list, json_schema_extra=list_map("fault"))
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class FaultSubscription(ResourceModel):
    """A webhook that receives matching NodeFault transitions (cluster-scoped, business cluster)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="FaultSubscription", plural="faultsubscriptions", scope="Cluster",
        singular="faultsubscription", short_names=("fsub",),
        printer_columns=(
            PrinterColumn("URL", ".spec.url"),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Delivered", ".status.delivered", "integer"),
            PrinterColumn("Failed", ".status.failedAttempts", "integer"),
            PrinterColumn("Last Error", ".status.lastError", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: FaultSubscriptionSpec
    status: FaultSubscriptionStatus = Field(default_factory=FaultSubscriptionStatus)
