"""Machine and MachinePackageVersion: the declared final state of a worker node, and its building blocks.

A MachinePackageVersion says how to put one version of one component (containerd, kubelet, a kernel patch,
sysctl settings...) on a node; a Machine lists the versions one node must run plus the readiness gates other
operators report on.  The machine operator reads these models; the CRDs are generated from them
(:mod:`kokpit.api.crdgen`), and the condition types and reasons live here, beside the kind.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Final

from pydantic import Field

from kokpit.api.crdgen import PRESERVE_UNKNOWN, KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.meta import Condition, FailureRecord, ResourceModel, SpecModel, StatusModel

__all__ = [
    "COMPONENT_PATTERN",
    "GROUP",
    "VERSION",
    "ComponentStatus",
    "ConfigFile",
    "HealthCheck",
    "HealthCheckType",
    "InstallMethod",
    "InstallMethodType",
    "InstallState",
    "Machine",
    "MachineCondition",
    "MachineConditionType",
    "MachinePackageVersion",
    "MachinePackageVersionSpec",
    "MachineReason",
    "MachineSpec",
    "MachineStatus",
    "PackageConfig",
    "PackageRef",
    "PackageType",
    "ReadinessGate",
    "RunState",
]

GROUP: Final = "kokpit.io"
VERSION: Final = "v1alpha1"
COMPONENT_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


# ------------------------------------------------------------------------------------------------ enums
class InstallState(StrEnum):
    """Where a component's installation stands on the node (kokpit.nodes.driver reports these too)."""

    PENDING = "Pending"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    UPGRADING = "Upgrading"
    UNINSTALLING = "Uninstalling"
    FAILED = "Failed"


class RunState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    UNKNOWN = "Unknown"


class PackageType(StrEnum):
    RPM = "rpm"
    DEB = "deb"
    BINARY = "binary"
    NONE = "none"


class InstallMethodType(StrEnum):
    PACKAGE = "package"  # through the host's package manager
    SCRIPT = "script"  # run a script
    CONFIG = "config"  # config-only: write files / sysctl keys


class HealthCheckType(StrEnum):
    NONE = "none"
    SYSTEMD = "systemd"  # the unit is active
    COMMAND = "command"  # a command exits 0
    HTTP = "http"  # a URL answers 2xx


# ------------------------------------------------------------------------------------------------ MPV
class PackageRef(SpecModel):
    """The package that carries the component (``none`` for config-only components)."""

    type: PackageType = PackageType.NONE
    name: str = ""
    version: str = ""


class InstallMethod(SpecModel):
    """How to install: through a package manager, with a script, or config only."""

    method: InstallMethodType = InstallMethodType.PACKAGE
    package_manager: str | None = Field(default=None, description="e.g. dnf, apt; default: the host's")
    script: str | None = Field(default=None, description="Script body for method=script.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Method parameters.")


class ConfigFile(SpecModel):
    path: str = Field(min_length=1, pattern=r"^/")
    content: str = ""
    mode: str = Field(default="0644", pattern=r"^0?[0-7]{3,4}$")


class PackageConfig(SpecModel):
    """Configuration the component needs on the node: files and sysctl keys."""

    files: list[ConfigFile] = Field(default_factory=list, json_schema_extra=list_map("path"))
    sysctl: dict[str, str] = Field(default_factory=dict)


class HealthCheck(SpecModel):
    """How to tell the component works after a change."""

    type: HealthCheckType = HealthCheckType.NONE
    command: list[str] = Field(default_factory=list)
    url: str | None = None
    unit: str | None = Field(default=None, description="systemd unit for type=systemd.")
    timeout_seconds: int = Field(default=10, ge=1, le=600)


class MachinePackageVersionSpec(SpecModel):
    component: str = Field(min_length=1, max_length=63, pattern=COMPONENT_PATTERN,
                           description="Component name, e.g. containerd, kubelet, kernel-patch, sysctl.")
    version: str = Field(min_length=1, max_length=128)
    package: PackageRef = Field(default_factory=PackageRef)
    install: InstallMethod = Field(default_factory=InstallMethod)
    config: PackageConfig = Field(default_factory=PackageConfig)
    depends_on: list[str] = Field(default_factory=list, json_schema_extra=list_set(),
                                  description="Components that must be installed and running first.")
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    extra: dict[str, Any] = Field(default_factory=dict, json_schema_extra=PRESERVE_UNKNOWN,
                                  description="Free-form driver-specific settings.")


class MachinePackageVersion(ResourceModel):
    """One version of one component and how to put it on a node (cluster-scoped, immutable once used)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="MachinePackageVersion", plural="machinepackageversions",
        scope="Cluster", singular="machinepackageversion", short_names=("mpv",), status_subresource=False,
        printer_columns=(
            PrinterColumn("Component", ".spec.component"),
            PrinterColumn("Version", ".spec.version"),
            PrinterColumn("Package", ".spec.package.name", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: MachinePackageVersionSpec


# ------------------------------------------------------------------------------------------------ Machine
class MachineConditionType(StrEnum):
    """The machine operator's own conditions (synced gate conditions carry other types)."""

    COMPONENTS_READY = "ComponentsReady"
    NODE_HEALTHY = "NodeHealthy"
    READINESS_GATES_MET = "ReadinessGatesMet"
    READY = "Ready"
    RISK_PERMITTED = "RiskPermitted"  # False while a change waits for a risk-center Permit


class MachineReason:
    """Reasons of the machine operator's conditions (CamelCase, stable: tools may match on them)."""

    # ComponentsReady
    ALL_COMPONENTS_READY: Final = "AllComponentsReady"
    MISSING_PACKAGE_VERSION: Final = "MissingPackageVersion"
    DUPLICATE_COMPONENT: Final = "DuplicateComponent"
    MISSING_DEPENDENCY: Final = "MissingDependency"
    DEPENDENCY_CYCLE: Final = "DependencyCycle"
    INVALID_PACKAGE_VERSION: Final = "InvalidPackageVersion"
    INSTALLING: Final = "Installing"
    UPGRADING: Final = "Upgrading"
    UNINSTALLING: Final = "Uninstalling"
    INSTALL_FAILED: Final = "InstallFailed"
    COMPONENT_NOT_RUNNING: Final = "ComponentNotRunning"
    HEALTH_CHECK_FAILED: Final = "HealthCheckFailed"
    # NodeHealthy
    NODE_HEALTHY: Final = "NodeHealthy"
    NODE_UNREACHABLE: Final = "NodeUnreachable"
    DRIVER_ERROR: Final = "DriverError"
    # ReadinessGatesMet
    ALL_GATES_TRUE: Final = "AllGatesTrue"
    NO_GATES: Final = "NoReadinessGates"
    GATE_NOT_REPORTED: Final = "GateNotReported"
    GATE_NOT_TRUE: Final = "GateNotTrue"
    # Ready
    READY: Final = "Ready"
    NODE_NOT_FOUND: Final = "NodeNotFound"
    NODE_NOT_READY: Final = "NodeNotReady"
    COMPONENTS_NOT_READY: Final = "ComponentsNotReady"
    NODE_NOT_HEALTHY: Final = "NodeNotHealthy"
    GATES_NOT_MET: Final = "ReadinessGatesNotMet"
    # synced gate conditions
    INVALID_REPORT: Final = "InvalidReport"
    REPORTED: Final = "Reported"


class ReadinessGate(SpecModel):
    condition_type: str = Field(min_length=1, max_length=316, description="A condition that must be True.")


class MachineSpec(SpecModel):
    node_name: str = Field(min_length=1, max_length=253, pattern=_NAME_PATTERN)
    packages: list[str] = Field(default_factory=list, json_schema_extra=list_set(),
                                description="MachinePackageVersion names, at most one per component.")
    readiness_gates: list[ReadinessGate] = Field(default_factory=list,
                                                 json_schema_extra=list_map("conditionType"))
    unschedulable: bool = Field(default=False, description="A person's cordon; kokpit always respects it.")


class ComponentStatus(StatusModel):
    name: str
    version: str = ""
    install_state: InstallState = InstallState.PENDING
    run_state: RunState = RunState.UNKNOWN
    message: str = ""
    last_transition_time: str | None = None
    package_version: str | None = Field(default=None, description="The MachinePackageVersion it comes from.")
    health_checked_version: str | None = Field(
        default=None, description="The installed version that passed its post-change health check.")


class MachineCondition(Condition):
    """A Machine condition; ``source`` names the reporter of a synced readiness-gate condition."""

    source: str | None = None


class MachineStatus(StatusModel):
    observed_generation: int | None = None
    phase: str | None = Field(default=None, description="For people only; code decides on conditions.")
    components_ready: str | None = Field(default=None, description="ready/total components, e.g. 3/4.")
    components: list[ComponentStatus] = Field(default_factory=list, json_schema_extra=list_map("name"))
    conditions: list[MachineCondition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    failures: list[FailureRecord] = Field(default_factory=list, json_schema_extra=list_map("name"),
                                          description="Failed installs and health checks being retried with "
                                                      "backoff (install/<component>, health/<component>).")


class Machine(ResourceModel):
    """The final state of one worker node (cluster-scoped, named like the node)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="Machine", plural="machines", scope="Cluster",
        singular="machine", short_names=("mach",),
        printer_columns=(
            PrinterColumn("Node", ".spec.nodeName"),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Components", ".status.componentsReady", description="ready/total"),
            PrinterColumn("Phase", ".status.phase", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: MachineSpec
    status: MachineStatus = Field(default_factory=MachineStatus)
