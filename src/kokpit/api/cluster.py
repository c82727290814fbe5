"""Cluster and ClusterPackageVersion: a business cluster's declared control plane, and its versioned recipe.

A ClusterPackageVersion (CPV) names the component images and default start arguments of one release of a
control plane; it is immutable (a CEL transition rule on ``spec``), so "the cluster runs CPV x" always means
the same thing.  A Cluster points at exactly one CPV: changing the pointer releases, pointing back rolls back.
The cluster operator reads these models; the condition types and reasons live here, beside the kinds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final

from pydantic import Field, JsonValue

from kokpit.api.crdgen import KindInfo, PrinterColumn, list_map
from kokpit.api.machine import COMPONENT_PATTERN, GROUP, VERSION, PackageVersionStatus
from kokpit.api.meta import Condition, FailureRecord, ResourceModel, SpecModel, StatusModel

__all__ = [
    "APISERVER_COMPONENT",
    "MACHINE_OPERATOR_COMPONENT",
    "SIMULATOR_COMPONENT",
    "Cluster",
    "ClusterComponentStatus",
    "ClusterConditionType",
    "ClusterPackageVersion",
    "ClusterPackageVersionSpec",
    "ClusterReason",
    "ClusterSpec",
    "ClusterStatus",
    "ComponentTemplate",
    "ControlPlane",
    "DeletionPolicy",
    "Flavor",
    "Simulation",
]

APISERVER_COMPONENT: Final = "kube-apiserver"
"""The one component every ClusterPackageVersion must carry (started first, upgraded first)."""
MACHINE_OPERATOR_COMPONENT: Final = "machine-operator"
SIMULATOR_COMPONENT: Final = "simulator"

IMMUTABLE_SPEC: Final[list[JsonValue]] = [{"rule": "self == oldSelf", "message": "spec is immutable: create a new "
                          "ClusterPackageVersion and point Clusters at it", "reason": "FieldValueForbidden"}]


# ------------------------------------------------------------------------------------------------ CPV
class ComponentTemplate(SpecModel):
    """One control-plane component of a release: which image, its default arguments, how many replicas."""

    name: str = Field(min_length=1, max_length=63, pattern=COMPONENT_PATTERN,
                      description="kube-apiserver, etcd, kube-controller-manager, kube-scheduler, "
                                  "machine-operator, simulator, ...")
    image: str = Field(min_length=1, max_length=512)
    args: list[str] = Field(default_factory=list, description="Default start arguments (the operator appends "
                                                              "the wiring: ports, data dir, certificates).")
    replicas: int = Field(default=1, ge=0, le=5, description="Replicas (kube-apiserver: "
                                                             "Cluster spec.controlPlane.replicas wins).")


class Flavor(StrEnum):
    """Whose components make the control plane: kokpit's own API server (embedded business clusters), or the
    upstream ones (etcd, kube-apiserver, kube-controller-manager, kube-scheduler from their images)."""

    KOKPIT = "Kokpit"
    UPSTREAM = "Upstream"


UPSTREAM_COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
_UPSTREAM_RULES: Final[list[JsonValue]] = [
    {"rule": "self.flavor != 'Upstream' || (self.components.exists(c, c.name == 'etcd') && "
             "self.components.exists(c, c.name == 'kube-apiserver'))",
     "message": "an Upstream control plane needs the etcd and kube-apiserver components", "reason": "FieldValueRequired",
     "fieldPath": ".components"},
    {"rule": "self.flavor != 'Upstream' || self.components.all(c, c.name in "
             + "[" + ", ".join(f"'{c}'" for c in UPSTREAM_COMPONENTS) + "])",
     "message": "an Upstream control plane's components are " + ", ".join(UPSTREAM_COMPONENTS)
                + " (no other component is known)", "reason": "FieldValueNotSupported", "fieldPath": ".components"},
]


class ClusterPackageVersionSpec(SpecModel):
    kubernetes_version: str = Field(min_length=2, max_length=64, pattern=r"^v[0-9]+\.[0-9]+\.[0-9]+.*$",
                                    description="Reported by the business API server's /version.")
    flavor: Flavor = Field(default=Flavor.KOKPIT, description="Kokpit (kokpit's API server, simulator and "
                           "machine operator) or Upstream (etcd, kube-apiserver, kube-controller-manager, "
                           "kube-scheduler from the upstream images).")
    components: list[ComponentTemplate] = Field(min_length=1, max_length=16, json_schema_extra=list_map("name"))


class ClusterPackageVersion(ResourceModel):
    """One release of a business cluster's control plane (cluster-scoped; the spec never changes)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="ClusterPackageVersion", plural="clusterpackageversions",
        scope="Cluster", singular="clusterpackageversion", short_names=("cpv",),
        printer_columns=(
            PrinterColumn("Kubernetes", ".spec.kubernetesVersion"),
            PrinterColumn("Deleting", '.status.conditions[?(@.type=="Deleting")].message', priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: ClusterPackageVersionSpec = Field(json_schema_extra={"x-kubernetes-validations": [*IMMUTABLE_SPEC,
                                                                                             *_UPSTREAM_RULES]})
    status: PackageVersionStatus = Field(default_factory=PackageVersionStatus)


# ------------------------------------------------------------------------------------------------ Cluster
class DeletionPolicy(StrEnum):
    DELETE = "Delete"  # deleting the Cluster deletes its data (PKI Secrets, API server data dir)
    RETAIN = "Retain"  # the PKI Secrets and the data dir outlive the Cluster; a new one of that name reuses them


class ControlPlane(SpecModel):
    replicas: int = Field(default=1, ge=1, le=5, description="API server replicas.")
    restarted_at: dict[str, str] = Field(
        default_factory=dict, max_length=16,
        description="Component name -> a time (RFC 3339) it was asked to restart. When an entry changes, that "
                    "component's Pods are replaced one at a time (the next once the one before is healthy), each "
                    "with a control-plane-release Permit of the risk center — as `kubectl rollout restart` sets "
                    "kubectl.kubernetes.io/restartedAt on a Pod template. The component's status row says "
                    "restartedAt once every replica runs it.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self.all(k, k.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(k) <= 63)",
             "message": "restartedAt keys are component names (kube-apiserver, kube-scheduler, ...)",
             "reason": "FieldValueInvalid"},
            {"rule": "self.all(k, self[k].matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                     "([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$'))",
             "message": "restartedAt values are RFC 3339 times (2026-12-07T08:00:00Z)", "reason": "FieldValueInvalid"},
        ]})


class Simulation(SpecModel):
    nodes: int = Field(default=0, ge=0, le=100000, description="Simulated nodes (embedded fleets).")


class ClusterSpec(SpecModel):
    package_version: str = Field(min_length=1, max_length=253, description="The ClusterPackageVersion to run.")
    control_plane: ControlPlane = Field(default_factory=ControlPlane, json_schema_extra={"default": {}})
    simulation: Simulation = Field(default_factory=Simulation, json_schema_extra={"default": {}})
    paused: bool = Field(default=False, description="Stop acting on this Cluster (status is still written).")
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE


class ClusterConditionType(StrEnum):
    """The cluster operator's conditions.  Available, UpToDate, RollingOut, Remediating and Paused are Cluster
    API v1beta2's vocabulary, so "serving" and "at the wanted version" are separate questions; Ready is True
    only when both hold and no release is in flight.  ControlPlaneReady, Upgrading and Degraded are kept for
    tools written against them."""

    AVAILABLE = "Available"  # the API server answers through the endpoint (the cluster serves)
    UP_TO_DATE = "UpToDate"  # every component runs spec.packageVersion
    ROLLING_OUT = "RollingOut"  # a release or rollback is replacing components
    REMEDIATING = "Remediating"  # a failing component is being replaced
    PAUSED = "Paused"  # spec.paused: observed, not acted on
    CONTROL_PLANE_READY = "ControlPlaneReady"
    UPGRADING = "Upgrading"
    DEGRADED = "Degraded"
    READY = "Ready"
    RISK_PERMITTED = "RiskPermitted"  # False while a release step waits for a risk-center Permit


class ClusterReason:
    """Reasons of the cluster operator's conditions (CamelCase, stable: tools may match on them)."""

    # bad input
    PACKAGE_VERSION_NOT_FOUND: Final = "PackageVersionNotFound"
    INVALID_PACKAGE_VERSION: Final = "InvalidPackageVersion"
    INVALID_SPEC: Final = "InvalidSpec"
    # ControlPlaneReady
    COMPONENTS_READY: Final = "ComponentsReady"
    API_SERVER_NOT_READY: Final = "APIServerNotReady"
    COMPONENTS_NOT_READY: Final = "ComponentsNotReady"
    PROVISIONING: Final = "Provisioning"
    # Upgrading
    UPGRADE_IN_PROGRESS: Final = "UpgradeInProgress"
    ROLLING_BACK: Final = "RollingBack"
    ROLLED_BACK: Final = "RolledBack"
    UP_TO_DATE: Final = "UpToDate"
    # Degraded
    AS_EXPECTED: Final = "AsExpected"
    COMPONENT_FAILING: Final = "ComponentFailing"
    COMPONENT_REPLACED: Final = "ComponentReplaced"
    # Available / UpToDate / RollingOut / Remediating / Paused
    AVAILABLE: Final = "Available"
    NOT_AVAILABLE: Final = "NotAvailable"
    NOT_UP_TO_DATE: Final = "NotUpToDate"
    NOT_ROLLING_OUT: Final = "NotRollingOut"
    NOT_REMEDIATING: Final = "NotRemediating"
    NOT_PAUSED: Final = "NotPaused"
    # Ready
    READY: Final = "Ready"
    NOT_READY: Final = "NotReady"
    PAUSED: Final = "Paused"
    DELETING: Final = "Deleting"
    REMOVING_DATA: Final = "RemovingData"


class ClusterComponentStatus(StatusModel):
    name: str
    version: str = Field(default="", description="The ClusterPackageVersion its Pods run.")
    replicas: int = 0
    ready_replicas: int = 0
    restarts: int = 0
    healthy: bool = False
    message: str = ""
    restarted_at: str | None = Field(default=None, description="The spec.controlPlane.restartedAt entry every "
                                     "replica runs (absent while a restart replaces them, or when none was asked).")


class ClusterStatus(StatusModel):
    observed_generation: int | None = None
    phase: str | None = Field(default=None, description="For people only; code decides on conditions.")
    endpoint: str | None = Field(default=None, description="https URL of the business API server.")
    package_version: str | None = Field(default=None, description="The ClusterPackageVersion every "
                                                                  "component runs (observed).")
    last_good_package_version: str | None = Field(default=None, description="The last ClusterPackageVersion "
                                                                            "the whole control plane was "
                                                                            "healthy on (rollback target).")
    failed_package_version: str | None = Field(default=None, description="A release that failed its "
                                                                         "post-check and was rolled back; "
                                                                         "not retried until spec changes.")
    components: list[ClusterComponentStatus] = Field(default_factory=list, json_schema_extra=list_map("name"))
    data_nodes: list[str] = Field(default_factory=list, description="Nodes whose host folders hold this "
                                  "cluster's data (where deletionPolicy Delete must remove it).")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    failures: list[FailureRecord] = Field(default_factory=list, json_schema_extra=list_map("name"),
                                          description="What keeps failing and is retried with backoff "
                                                      "(pod/<pod>: replacements; probe/apiserver: since when "
                                                      "the endpoint fails its checks).")


class Cluster(ResourceModel):
    """One business cluster whose control plane runs as Pods of the meta cluster (Kube on Kube)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="Cluster", plural="clusters", scope="Namespaced",
        singular="cluster", short_names=("kc",),
        printer_columns=(
            PrinterColumn("Wanted", ".spec.packageVersion", description="The release spec asks for."),
            PrinterColumn("Version", ".status.packageVersion", description="The release every component runs."),
            PrinterColumn("Available", '.status.conditions[?(@.type=="Available")].status'),
            PrinterColumn("UpToDate", '.status.conditions[?(@.type=="UpToDate")].status'),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Endpoint", ".status.endpoint"),
            PrinterColumn("Phase", ".status.phase", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: ClusterSpec
    status: ClusterStatus = Field(default_factory=ClusterStatus)
