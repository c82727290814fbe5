"""RiskPolicy, Permit and RiskLedger: the risk center's API — one persisted budget for every risky action.

Every actor that may disrupt a node or a control plane (the machine operator, the cluster operator, fault
flows, rollouts) first asks for a :class:`Permit` for one :class:`OperationType` on a batch of targets.  The
risk center answers on the Permit's status from the :class:`RiskPolicy` objects that cover the operation and
from the :class:`RiskLedger`, the single object whose resourceVersion serializes every grant (so concurrent
requests and restarts can neither overshoot nor reset a budget).  Bad policies are refused at admission:
every rule here ends up in the generated CRD as OpenAPI or CEL, with the field named in the ``Status``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, JsonValue

from kokpit.api.crdgen import KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.meta import Condition, ResourceModel, SpecModel, StatusModel

__all__ = [
    "DURATION_PATTERN",
    "PERMIT_ACTOR_POLICY",
    "PERMIT_TARGETS_MAX",
    "RISK_ACTOR_COMPONENTS",
    "SCHEDULE_PATTERN",
    "Blackout",
    "BreakerStatus",
    "BudgetStatus",
    "BuiltinMetric",
    "CheckRecord",
    "CheckResult",
    "Comparison",
    "FailureBreaker",
    "GateStatus",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LedgerEntry",
    "MetricGate",
    "OperationType",
    "Permit",
    "PermitOutcome",
    "PermitReason",
    "PermitSpec",
    "PermitState",
    "PermitStatus",
    "PolicyScope",
    "PrometheusQuery",
    "RateLimit",
    "RiskLedger",
    "RiskLedgerStatus",
    "RiskPolicy",
    "RiskPolicyConditionType",
    "RiskPolicySpec",
    "RiskPolicyStatus",
    "RiskReason",
    "TargetKind",
    "permit_actor_policy",
]


# ------------------------------------------------------------------------------------------------ vocabulary
class TargetKind(StrEnum):
    NODE = "Node"
    CLUSTER = "Cluster"


class OperationType(StrEnum):
    """Every risky operation kokpit knows, one line each.  ``node-*`` and ``component-*`` operations act on
    nodes (budgets count nodes); the others act on whole business clusters (budgets count clusters)."""

    NODE_ISOLATE = "node-isolate"  # cordon / taint
    NODE_DRAIN = "node-drain"  # evict pods
    NODE_REBOOT = "node-reboot"
    NODE_REINSTALL = "node-reinstall"  # OS reinstall
    NODE_DELETE = "node-delete"
    COMPONENT_UPGRADE = "component-upgrade"  # install/upgrade/uninstall/rollback of a node component
    CONTROL_PLANE_RELEASE = "control-plane-release"  # replace a control-plane component (release/rollback)
    CONTROL_PLANE_REPAIR = "control-plane-repair"
    CLUSTER_DELETE = "cluster-delete"

    @property
    def target_kind(self) -> TargetKind:
        return TargetKind.NODE if self.value.startswith(("node-", "component-")) else TargetKind.CLUSTER


RISK_ACTOR_COMPONENTS: Final = ("machine-operator", "kube-controller-manager")
"""The business-cluster components that ask the meta cluster's risk center as their Cluster's actor.  Each runs
as the ServiceAccount ``<cluster>-<component>`` in the Cluster's namespace (provisioned by the cluster
operator) and may only write Permits of that namespace that name that Cluster (``permit_actor_policy``)."""

PERMIT_ACTOR_POLICY: Final = "kokpit-permit-actor"


def permit_actor_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy (and its binding) that keeps the risk actors of Clusters sharing a
    namespace apart: RBAC's boundary is the namespace, so ``<cluster>-<component>`` may create, update,
    patch (spec or status) and delete only Permits whose ``spec.cluster`` is ``<cluster>`` — before and after
    the write.  Anyone else (people, the operators of the meta cluster) is not matched.  ``kokpit manifests``
    renders it for a real meta cluster; the embedded API server evaluates these very CEL expressions."""
    actors = ", ".join(f"'{a}'" for a in RISK_ACTOR_COMPONENTS)
    sa = "'system:serviceaccount:' + request.namespace + ':'"

    def own(o: str) -> str:
        return (f"{o} == null || variables.actors.exists(c, "  # spec.cluster is required by the CRD
                f"request.userInfo.username == {sa} + {o}.spec.cluster + '-' + c)")

    message = ("'a risk actor may only write Permits of its own Cluster: ' + request.userInfo.username + "
               "' may not write a Permit of Cluster ' + {o}.spec.cluster + ' (spec.cluster)'")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PERMIT_ACTOR_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["permits", "permits/status"]}]},
            "matchConditions": [{"name": "risk-actor", "expression": (
                "request.userInfo.username.startsWith('system:serviceaccount:') && "
                f"[{actors}].exists(c, request.userInfo.username.endsWith('-' + c))")}],
            "variables": [{"name": "actors", "expression": f"[{actors}]"}],
            "validations": [
                {"expression": own("object"), "messageExpression": message.format(o="object"),
                 "reason": "Forbidden"},
                {"expression": own("oldObject"), "messageExpression": message.format(o="oldObject"),
                 "reason": "Forbidden"},
            ],
        },
    }
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": PERMIT_ACTOR_POLICY},
               "spec": {"policyName": PERMIT_ACTOR_POLICY, "validationActions": ["Deny"]}}
    return [policy, binding]


# ------------------------------------------------------------------------------------------------ patterns
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go duration without sign (``30s``, ``5m``, ``1h30m``)."""

_LABEL_KEY: Final = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
_NAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _cron_field(values: str) -> str:
    item = rf"(\*|({values})(-({values}))?)(/[0-9]{{1,2}})?"
    return rf"{item}(,{item})*"


SCHEDULE_PATTERN: Final = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    + r" +".join(_cron_field(v) for v in (
        r"[0-5]?[0-9]",  # minute
        r"[01]?[0-9]|2[0-3]",  # hour
        r"0?[1-9]|[12][0-9]|3[01]",  # day of month
        r"0?[1-9]|1[0-2]",  # month
        r"[0-7]",  # day of week (0 and 7 are Sunday)
    ))
    + r")$"
)
"""Standard five-field cron (numbers, ``*``, ranges, steps, lists) or an ``@daily``-style macro."""

_INT_OR_PERCENT: Final[list[JsonValue]] = [{
    "rule": "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",
    "message": "must be a non-negative integer or a percentage between 0% and 100%",
}]

IntOrPercent = int | str
PERMIT_TARGETS_MAX: Final = 10_000


# ------------------------------------------------------------------------------------------------ selector
class LabelSelectorRequirement(SpecModel):
    key: str = Field(min_length=1, max_length=317, pattern=_LABEL_KEY)
    operator: Annotated[str, Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})]
    values: list[Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]] = Field(default_factory=list)


_REQUIREMENT_RULES: Final[list[JsonValue]] = [{
    "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
            "(!has(self.values) || size(self.values) == 0)",
    "message": "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
}]


class LabelSelector(SpecModel):
    """metav1.LabelSelector: every requirement must hold; an empty selector matches everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.all(k, k.matches('" + _LABEL_KEY.replace("\\.", "[.]") + "'))",
            "message": "every key must be a valid label key (optional DNS prefix/, then a name of at most "
                       "63 characters)"}]})
    match_expressions: list[Annotated[LabelSelectorRequirement, Field(
        json_schema_extra={"x-kubernetes-validations": _REQUIREMENT_RULES})]] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------ policy
class PolicyScope(SpecModel):
    """Where a policy applies: all clusters or the Clusters a selector picks, optionally only the nodes
    another selector picks within them.  ``perCluster`` (the default) gives every cluster its own budget;
    otherwise the whole scope shares one."""

    all_clusters: bool = Field(default=False, description="Every business cluster.")
    cluster_selector: LabelSelector | None = Field(default=None, description="Clusters by their labels.")
    node_selector: LabelSelector | None = Field(default=None, description="Only these nodes within them.")
    per_cluster: bool = Field(default=True, description="One budget per cluster (false: one for the scope).")


_SCOPE_RULES: Final[list[JsonValue]] = [{
    "rule": "(has(self.allClusters) && self.allClusters) != has(self.clusterSelector)",
    "message": "set exactly one of allClusters: true or clusterSelector",
}]


class RateLimit(SpecModel):
    count: int = Field(ge=0, description="Operations (targets) started per sliding window.")
    window: str = Field(pattern=DURATION_PATTERN, description="e.g. 1h, 30m.")


class Blackout(SpecModel):
    """A recurring time window in which the policy's operations are refused."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    schedule: str = Field(max_length=256, pattern=SCHEDULE_PATTERN, description="Cron: when a window starts.")
    duration: str = Field(pattern=DURATION_PATTERN, description="How long each window lasts.")
    time_zone: str = Field(default="UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$",
                           description="IANA time zone of the schedule, e.g. Europe/Berlin.")


class BuiltinMetric(StrEnum):
    """Metrics kokpit measures itself (no extra software): the synthetic pod prober and node health."""

    POD_CREATION_SUCCESS_RATE = "podCreationSuccessRate"  # 0..1 over the window
    POD_STARTUP_LATENCY_P99 = "podStartupLatencyP99Seconds"  # create → Running, over the window
    NODE_NOT_READY_RATIO = "nodeNotReadyRatio"  # 0..1 of the cluster's nodes, now


class Comparison(StrEnum):
    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"


class PrometheusQuery(SpecModel):
    """A PromQL instant query; ``$cluster`` and ``$namespace`` are replaced by the cluster asked about."""

    url: str = Field(max_length=2048, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]+)?(/[^\s]*)?$",
                     description="Prometheus base URL, e.g. http://prometheus:9090.")
    query: str = Field(min_length=1, max_length=4096)
    timeout_seconds: int = Field(default=5, ge=1, le=60)


class MetricGate(SpecModel):
    """A business-metric condition that must hold for new permits in the scope (a failing or unreachable
    metric denies)."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    builtin: BuiltinMetric | None = None
    prometheus: PrometheusQuery | None = None
    comparison: Comparison = Comparison.GE
    threshold: float
    window: str = Field(default="5m", pattern=DURATION_PATTERN, description="Window of a builtin metric.")
    min_samples: int = Field(default=3, ge=1, le=10_000, description="Builtin: fewer samples is failing.")


_GATE_RULES: Final[list[JsonValue]] = [{
    "rule": "has(self.builtin) != has(self.prometheus)",
    "message": "set exactly one of builtin or prometheus",
}]


class FailureBreaker(SpecModel):
    """After ``maxFailures`` failed post-checks within ``window`` (per operation type and budget scope) the
    operation type is denied until a person resets the breaker (``kokpit risk reset``)."""

    max_failures: int = Field(ge=1, le=100_000)
    window: str = Field(default="1h", pattern=DURATION_PATTERN)


class RiskPolicySpec(SpecModel):
    operations: list[OperationType] = Field(min_length=1, json_schema_extra=list_set(),
                                            description="Operation types the policy covers.")
    scope: PolicyScope = Field(json_schema_extra={"x-kubernetes-validations": _SCOPE_RULES})
    max_concurrent: IntOrPercent | None = Field(
        default=None, json_schema_extra={"x-kubernetes-validations": _INT_OR_PERCENT},
        description="Targets in flight at once: an integer or a percentage of the scope's nodes/clusters.")
    max_per_window: RateLimit | None = None
    max_unavailable: IntOrPercent | None = Field(
        default=None, json_schema_extra={"x-kubernetes-validations": _INT_OR_PERCENT},
        description="In-flight disruptions plus nodes already unhealthy or cordoned may not exceed this.")
    blackouts: list[Blackout] = Field(default_factory=list, json_schema_extra=list_map("name"))
    gates: list[Annotated[MetricGate, Field(json_schema_extra={"x-kubernetes-validations": _GATE_RULES})]] = \
        Field(default_factory=list, json_schema_extra=list_map("name"))
    failure_breaker: FailureBreaker | None = None
    paused: bool = Field(default=False, description="Refuse every covered operation (emergency stop).")


class RiskPolicyConditionType(StrEnum):
    VALID = "Valid"


class RiskReason:
    """Reasons on Permits, RiskPolicy conditions and Events (CamelCase, stable: tools match on them)."""

    GRANTED: Final = "Granted"
    MAX_CONCURRENT: Final = "MaxConcurrent"
    MAX_PER_WINDOW: Final = "MaxPerWindow"
    MAX_UNAVAILABLE: Final = "MaxUnavailable"
    BLACKOUT: Final = "Blackout"
    GATE_FAILING: Final = "GateFailing"
    BREAKER_OPEN: Final = "BreakerOpen"
    PAUSED: Final = "Paused"
    SCOPE_UNKNOWN: Final = "ScopeUnknown"  # the nodes of the cluster could not be observed
    EXPIRED: Final = "Expired"
    RELEASED: Final = "Released"
    BREAKER_TRIPPED: Final = "BreakerTripped"
    BREAKER_RESET: Final = "BreakerReset"
    INVALID_POLICY: Final = "InvalidPolicy"
    VALID: Final = "Valid"
    # the actors' conditions (Machine, Cluster) while they wait for the risk center
    RISK_DENIED: Final = "RiskDenied"
    RISK_QUEUED: Final = "RiskQueued"
    QUEUED_BEHIND: Final = "QueuedBehind"  # first come, first served: an earlier permit waits for this budget


class BudgetStatus(StatusModel):
    """One budget of a policy (per cluster, or ``*`` for the whole scope) as last decided."""

    scope: str
    in_flight: int = 0
    max_concurrent: int | None = None
    unavailable: int | None = None
    max_unavailable: int | None = None
    window_count: int | None = None
    max_per_window: int | None = None


class GateStatus(StatusModel):
    name: str
    scope: str
    passing: bool = False
    value: float | None = None
    message: str = ""
    checked_at: str | None = None


class BreakerStatus(StatusModel):
    operation: str
    scope: str
    tripped: bool = False
    failures: int = 0
    tripped_at: str | None = None
    reset_at: str | None = None
    message: str = ""


class RiskPolicyStatus(StatusModel):
    observed_generation: int | None = None
    budgets: list[BudgetStatus] = Field(default_factory=list, json_schema_extra=list_map("scope"))
    gates: list[GateStatus] = Field(default_factory=list, json_schema_extra=list_map("name", "scope"))
    breakers: list[BreakerStatus] = Field(default_factory=list,
                                          json_schema_extra=list_map("operation", "scope"))
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class RiskPolicy(ResourceModel):
    """Limits on one or more operation types in a scope (cluster-scoped).  Every matching policy must allow
    an operation; a denial names each policy that refused."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="RiskPolicy", plural="riskpolicies", scope="Cluster",
        singular="riskpolicy", short_names=("rp",),
        printer_columns=(
            PrinterColumn("Operations", ".spec.operations"),
            PrinterColumn("Concurrent", ".spec.maxConcurrent"),
            PrinterColumn("Unavailable", ".spec.maxUnavailable"),
            PrinterColumn("PerWindow", ".spec.maxPerWindow.count", "integer"),
            PrinterColumn("Paused", ".spec.paused", "boolean"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: RiskPolicySpec
    status: RiskPolicyStatus = Field(default_factory=RiskPolicyStatus)


# ------------------------------------------------------------------------------------------------ permit
class PermitState(StrEnum):
    """Granted: go; Queued: waiting for budget; Denied: refused by a blackout, gate, breaker or pause (both
    are decided again whenever that can change); Released/Expired: over, still counted in windows."""

    GRANTED = "Granted"
    QUEUED = "Queued"
    DENIED = "Denied"
    RELEASED = "Released"
    EXPIRED = "Expired"


class PermitOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # the operation or its post-check failed: counts against the failure breaker
    ABORTED = "Aborted"  # not started (pre-check failed, withdrawn): counts for nothing but the window


class CheckResult(StatusModel):
    target: str
    check: str = Field(description="e.g. NodeReady, component/kubelet, readyz, version.")
    passed: bool
    message: str = ""


class CheckRecord(StatusModel):
    """A health check of the permit's targets, recorded by the holder before or after the operation."""

    passed: bool
    checked_at: str | None = None
    results: list[CheckResult] = Field(default_factory=list)


class PermitReason(StatusModel):
    """One policy's refusal."""

    policy: str
    reason: str
    message: str = ""


class PermitSpec(SpecModel):
    """Written by the holder: what it wants to do, to what, and that it is still alive (``renewTime``)."""

    operation: OperationType
    cluster: str = Field(min_length=1, max_length=253, pattern=_NAME,
                         description="The Cluster (same namespace) the targets belong to.")
    targets: list[str] = Field(min_length=1, max_length=PERMIT_TARGETS_MAX, json_schema_extra=list_set(),
                               description="Node names (node operations) or component names (cluster ones).")
    holder: str = Field(min_length=1, max_length=253, description="Who acts, e.g. machine-operator/cluster-1.")
    ttl_seconds: int = Field(default=300, ge=1, le=86_400, description="Expires this long after renewTime.")
    renew_time: str | None = Field(default=None, description="The holder's last heartbeat (RFC 3339).")
    request_time: str | None = Field(default=None, description="When the holder asked (RFC 3339 with "
                                     "microseconds): the queue is first come, first served, and "
                                     "creationTimestamp only has seconds.")
    repair: bool = Field(default=False, description="Repairs the failure a pre-check finds (may start anyway).")
    partial: bool = Field(default=False, description="Grant the first targets that fit when not all do.")
    reason: str = Field(default="", max_length=1024, description="Why, for people.")


class PermitStatus(StatusModel):
    """``state`` and the decision fields are the risk center's; checks and ``outcome`` are the holder's."""

    state: PermitState | None = None
    reasons: list[PermitReason] = Field(default_factory=list)
    granted_targets: list[str] = Field(default_factory=list)
    target_summary: str | None = None
    decided_at: str | None = None
    granted_at: str | None = None
    expires_at: str | None = None
    retry_after: str | None = None
    released_at: str | None = None
    pre_check: CheckRecord | None = None
    post_check: CheckRecord | None = None
    outcome: PermitOutcome | None = None
    message: str = ""
    target_outcomes: dict[str, PermitOutcome] = Field(
        default_factory=dict, max_length=PERMIT_TARGETS_MAX,
        description="The holder's outcome per granted target, written as each one finishes (a merge patch "
                    "adds keys): the risk center frees those targets' budget at once, and the permit is "
                    "released when every granted target has one.  A target given one before it was granted is "
                    "withdrawn (never granted).  ``outcome`` still releases all that is left.")
    target_checks: dict[str, CheckRecord] = Field(
        default_factory=dict, max_length=PERMIT_TARGETS_MAX,
        description="The holder's post-check of each finished target (or, for one that failed without a "
                    "check, why), beside its ``targetOutcomes`` entry.")


class Permit(ResourceModel):
    """One request to run one operation type on a batch of targets of one Cluster, and its answer."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="Permit", plural="permits", scope="Namespaced",
        singular="permit", short_names=("pmt",),
        printer_columns=(
            PrinterColumn("Operation", ".spec.operation"),
            PrinterColumn("Cluster", ".spec.cluster"),
            PrinterColumn("Targets", ".status.targetSummary"),
            PrinterColumn("Holder", ".spec.holder"),
            PrinterColumn("State", ".status.state"),
            PrinterColumn("Outcome", ".status.outcome", priority=1),
            PrinterColumn("Reason", ".status.reasons[0].reason", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: PermitSpec
    status: PermitStatus = Field(default_factory=PermitStatus)


# ------------------------------------------------------------------------------------------------ ledger
class LedgerEntry(StatusModel):
    """One granted permit as the budget counts it (kept after release while a window or breaker needs it)."""

    uid: str
    namespace: str
    name: str
    operation: str
    cluster: str
    targets: list[str] = Field(default_factory=list)
    granted_at: str
    released_at: str | None = None
    outcome: str | None = None


class RiskLedgerStatus(StatusModel):
    """The grants, one compact line each in ``grants`` (``entries`` is the older, object-per-grant form: read
    when present, never written: a ledger of 1,000 objects cost the API server as much to write as 18
    ConfigMap creates — schema and managed fields per object — on every decision pass)."""

    entries: list[LedgerEntry] = Field(default_factory=list, json_schema_extra=list_map("uid"))
    grants: list[str] = Field(default_factory=list, json_schema_extra={"x-kubernetes-list-type": "atomic"},
                              description="One grant per line: uid, namespace, name, operation, cluster, "
                                          "grantedAt, releasedAt, outcome, targets (space separated, '-' for "
                                          "none, targets comma separated).")


class RiskLedger(ResourceModel):
    """The budget itself: every grant is first written here with the ledger's resourceVersion, so two
    deciders (or one restarted mid-write) can never both spend the same headroom.  Only the risk center
    writes it (cluster-scoped singleton ``default``)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="RiskLedger", plural="riskledgers", scope="Cluster",
        singular="riskledger", short_names=("rl",), status_subresource=False, required=(),
        printer_columns=(PrinterColumn("Age", ".metadata.creationTimestamp", "date"),),
    )

    status: RiskLedgerStatus = Field(default_factory=RiskLedgerStatus)
