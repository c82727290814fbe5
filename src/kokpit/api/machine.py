"""Machine and MachinePackageVersion: the declared final state of a worker node, and its building blocks.

A MachinePackageVersion says how to put one version of one component (containerd, kubelet, a kernel patch,
sysctl settings...) on a node; a Machine lists the versions one node must run plus the readiness gates other
operators report on.  The machine operator reads these models; the CRDs are generated from them
(:mod:`kokpit.api.crdgen`), and the condition types and reasons live here, beside the kind.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from pydantic import ConfigDict, Field, JsonValue, model_validator

from kokpit.api.crdgen import PRESERVE_UNKNOWN, KindInfo, PrinterColumn, list_map, list_set
from kokpit.api.meta import Condition, FailureRecord, ResourceModel, SpecModel, StatusModel

__all__ = [
    "COMPONENT_PATTERN",
    "CONFIG_DENIED",
    "CONFIG_ROOTS",
    "DEB_NAME_PATTERN",
    "DEB_VERSION_PATTERN",
    "GROUP",
    "OWNER_PATTERN",
    "RPM_NAME_PATTERN",
    "RPM_VERSION_PATTERN",
    "SYSCTL_KEY_PATTERN",
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
    "MachineDriver",
    "MachinePackageVersion",
    "MachinePackageVersionSpec",
    "MachineReason",
    "MachineSpec",
    "MachineStatus",
    "NodeDriverName",
    "PackageConfig",
    "PackageRef",
    "PackageType",
    "PackageVersionStatus",
    "ReadinessGate",
    "RunState",
    "config_path_problem",
]

GROUP: Final = "kokpit.io"
VERSION: Final = "v1alpha1"
COMPONENT_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_LABEL_VALUE: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"  # a label value (non-empty)


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
# What a package manager accepts, per package type (Debian policy 5.6.1/5.6.12; rpm's naming rules). One
# definition serves admission (CEL rules in the CRD) and the Python models (the operator and the node agent
# refuse the same input the API server does, with the same message).
DEB_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9+.-]+$"
DEB_VERSION_PATTERN: Final = r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$"
RPM_NAME_PATTERN: Final = r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$"
RPM_VERSION_PATTERN: Final = r"^([0-9]+:)?[A-Za-z0-9._+~^]+(-[A-Za-z0-9._+~^]+)?$"
SYSCTL_KEY_PATTERN: Final = r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$"
OWNER_PATTERN: Final = r"^([a-z_][a-z0-9_-]*|[0-9]+)(:([a-z_][a-z0-9_-]*|[0-9]+))?$"
CONFIG_ROOTS: Final = ("/etc/", "/opt/", "/srv/", "/usr/local/", "/var/lib/")
"""Folders config files may be written under (the agent also resolves symlinks inside its root)."""
CONFIG_DENIED: Final = ("/etc/shadow", "/etc/gshadow", "/etc/passwd", "/etc/group", "/etc/sudoers",
                        "/etc/sudoers.d/")
"""Credential files no component's config may replace, even inside an allowed root."""
_PACKAGE_PATTERNS: Final = {"deb": (DEB_NAME_PATTERN, DEB_VERSION_PATTERN),
                            "rpm": (RPM_NAME_PATTERN, RPM_VERSION_PATTERN)}


def _cel(s: str) -> str:
    return s.replace("\\", "\\\\")


def _package_rules() -> list[JsonValue]:
    rules: list[JsonValue] = []
    for kind, (name_re, version_re) in _PACKAGE_PATTERNS.items():
        rules += [
            {"rule": f"self.type != '{kind}' || has(self.name) && self.name.matches('{_cel(name_re)}')",
             "fieldPath": ".name",
             "reason": "FieldValueInvalid",
             "message": f"is not a valid {kind} package name (must match {name_re})"},
            {"rule": f"self.type != '{kind}' || has(self.version) && self.version.matches('{_cel(version_re)}')",
             "fieldPath": ".version", "reason": "FieldValueInvalid",
             "message": f"is not a valid {kind} package version (must match {version_re})"},
        ]
    rules.append({"rule": "!has(self.repository) || !self.repository.contains('\\n')",
                  "fieldPath": ".repository",
                  "reason": "FieldValueInvalid", "message": "must be one line"})
    return rules


def _config_path_rules() -> list[JsonValue]:
    roots = ", ".join(f"'{r}'" for r in CONFIG_ROOTS)
    denied = " && ".join(f"!self.startsWith('{d}')" if d.endswith("/") else f"self != '{d}'"
                         for d in CONFIG_DENIED)
    return [
        {"rule": "!self.contains('/../') && !self.endsWith('/..') && !self.contains('/./') "
                 "&& !self.contains('//') && !self.endsWith('/')",
         "message": "must be a normalized absolute file path (no '..', '.', '//' or trailing '/')"},
        {"rule": f"[{roots}].exists(r, self.startsWith(r))",
         "message": f"must be under one of {', '.join(CONFIG_ROOTS)}"},
        {"rule": denied, "message": f"may not replace {', '.join(CONFIG_DENIED)}"},
    ]


def config_path_problem(path: str) -> str:
    """Why ``path`` may not be a component's config file ("" when it may): the CEL rules' Python twin."""
    if not path.startswith("/") or "/../" in path or path.endswith("/..") or "/./" in path \
            or "//" in path or path.endswith("/") or "\x00" in path:
        return "must be a normalized absolute file path (no '..', '.', '//' or trailing '/')"
    if not any(path.startswith(r) for r in CONFIG_ROOTS):
        return f"must be under one of {', '.join(CONFIG_ROOTS)}"
    if any(path.startswith(d) if d.endswith("/") else path == d for d in CONFIG_DENIED):
        return f"may not replace {', '.join(CONFIG_DENIED)}"
    return ""


class PackageRef(SpecModel):
    """The package that carries the component (``none`` for config-only and script components)."""

    type: PackageType = PackageType.NONE
    name: str = Field(default="", max_length=253)
    version: str = Field(default="", max_length=128, description="Exact version (deb: [epoch:]upstream[-rev]).")
    repository: str = Field(default="", max_length=1024, description=(
        "Where the package comes from, one line: an apt source (`deb [trusted=yes] file:/srv/repo ./`) or a "
        "dnf baseurl; empty: the host's configured repositories."))

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _package_rules()})

    @model_validator(mode="after")
    def _valid_for_type(self) -> PackageRef:
        pats = _PACKAGE_PATTERNS.get(str(self.type))
        if pats is not None:
            if not re.match(pats[0], self.name):
                raise ValueError(f"package.name: {self.name!r} is not a valid {self.type} package name "
                                 f"(must match {pats[0]})")
            if not re.match(pats[1], self.version):
                raise ValueError(f"package.version: {self.version!r} is not a valid {self.type} package "
                                 f"version (must match {pats[1]})")
        if "\n" in self.repository:
            raise ValueError("package.repository: must be one line")
        return self


class InstallMethod(SpecModel):
    """How to install: through a package manager, with scripts, or config only.

    Scripts run with ``/bin/sh -c`` on the node (inside the agent's root), with ``KOKPIT_COMPONENT`` and
    ``KOKPIT_VERSION`` set, each bounded by ``timeoutSeconds``.  ``versionProbe`` prints the installed
    version (exit 0) or fails when nothing is installed: it is how an agent restarted mid-action finds out
    what is really on the host, so a script install without one is refused.
    """

    method: InstallMethodType = InstallMethodType.PACKAGE
    package_manager: str | None = Field(default=None, description="e.g. dnf, apt; default: the host's")
    script: str | None = Field(default=None, description="Install script for method=script.")
    uninstall_script: str | None = Field(default=None, description="Uninstall script for method=script.")
    version_probe: str | None = Field(default=None, description=(
        "Script printing the installed version (method=script; required there)."))
    timeout_seconds: int = Field(default=600, ge=1, le=7200, description="Bound on each script or package "
                                                                          "manager run.")
    service: str | None = Field(default=None, max_length=256, pattern=r"^[A-Za-z0-9:_.@-]+$", description=(
        "systemd unit restarted after a change (when systemd runs on the host) and watched for run state."))
    allow_downgrade: bool = Field(default=True, description=(
        "Installing an older version than the installed one (a rollback) passes the package manager's "
        "downgrade flag; false refuses it."))
    parameters: dict[str, str] = Field(default_factory=dict, description="Method parameters.")


class ConfigFile(SpecModel):
    path: str = Field(min_length=2, max_length=1024, pattern=r"^/",
                      json_schema_extra={"x-kubernetes-validations": _config_path_rules()})
    content: str = ""
    mode: str = Field(default="0644", pattern=r"^0?[0-7]{3,4}$")
    owner: str = Field(default="root:root", max_length=65, pattern=OWNER_PATTERN,
                       description="user[:group], names (looked up on the node) or numeric ids.")

    @model_validator(mode="after")
    def _allowed_path(self) -> ConfigFile:
        problem = config_path_problem(self.path)
        if problem:
            raise ValueError(f"config.files[{self.path}].path: {problem}")
        return self


class PackageConfig(SpecModel):
    """Configuration the component needs on the node: files and sysctl keys (applied and persisted)."""

    files: list[ConfigFile] = Field(default_factory=list, json_schema_extra=list_map("path"))
    sysctl: dict[str, str] = Field(default_factory=dict, max_length=256, json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"self.all(k, k.matches('{_cel(SYSCTL_KEY_PATTERN)}') && !k.contains('..'))",
         "message": f"sysctl keys must match {SYSCTL_KEY_PATTERN}, e.g. net.ipv4.ip_forward"},
        {"rule": "self.all(k, !self[k].contains('\\n'))", "message": "sysctl values must be one line"},
    ]})

    @model_validator(mode="after")
    def _valid_sysctl(self) -> PackageConfig:
        for k, v in self.sysctl.items():
            if not re.match(SYSCTL_KEY_PATTERN, k) or ".." in k:
                raise ValueError(f"config.sysctl[{k}]: sysctl keys must match {SYSCTL_KEY_PATTERN}, "
                                 "e.g. net.ipv4.ip_forward")
            if "\n" in v:
                raise ValueError(f"config.sysctl[{k}]: sysctl values must be one line")
        return self


class HealthCheck(SpecModel):
    """How to tell the component works after a change."""

    type: HealthCheckType = HealthCheckType.NONE
    command: list[str] = Field(default_factory=list)
    url: str | None = None
    unit: str | None = Field(default=None, description="systemd unit for type=systemd.")
    timeout_seconds: int = Field(default=10, ge=1, le=600)


_SPEC_RULES: Final[list[JsonValue]] = [
    {"rule": ("!has(self.install) || self.install.method != 'script' || (has(self.install.script) "
              "&& self.install.script != '' && has(self.install.versionProbe) && self.install.versionProbe != '')"),
     "fieldPath": ".install.versionProbe", "reason": "FieldValueRequired",
     "message": "install.method script needs install.script and install.versionProbe (how a restarted "
                "agent learns what is installed)"},
]


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

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    @model_validator(mode="after")
    def _method_fits(self) -> MachinePackageVersionSpec:
        if self.install.method == InstallMethodType.SCRIPT and not (self.install.script
                                                                     and self.install.version_probe):
            raise ValueError("install.versionProbe: install.method script needs install.script and "
                             "install.versionProbe (how a restarted agent learns what is installed)")
        return self


class PackageVersionStatus(StatusModel):
    """Written by the operator that protects a package version in use: a deletion that waits for its users
    shows condition ``Deleting`` (reason InUse) naming them."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))


class MachinePackageVersion(ResourceModel):
    """One version of one component and how to put it on a node (cluster-scoped, immutable once used)."""

    KIND_INFO: ClassVar[KindInfo] = KindInfo(
        group=GROUP, version=VERSION, kind="MachinePackageVersion", plural="machinepackageversions",
        scope="Cluster", singular="machinepackageversion", short_names=("mpv",),
        printer_columns=(
            PrinterColumn("Component", ".spec.component"),
            PrinterColumn("Version", ".spec.version"),
            PrinterColumn("Package", ".spec.package.name", priority=1),
            PrinterColumn("Deleting", '.status.conditions[?(@.type=="Deleting")].message', priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    spec: MachinePackageVersionSpec
    status: PackageVersionStatus = Field(default_factory=PackageVersionStatus)


# ------------------------------------------------------------------------------------------------ Machine
class MachineConditionType(StrEnum):
    """The machine operator's own conditions (synced gate conditions carry other types)."""

    COMPONENTS_READY = "ComponentsReady"
    NODE_HEALTHY = "NodeHealthy"
    READINESS_GATES_MET = "ReadinessGatesMet"
    REPORTS_TRUSTED = "ReportsTrusted"
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
    # ReportsTrusted
    ALL_REPORTS_TRUSTED: Final = "AllReportsTrusted"
    UNTRUSTED_SOURCE: Final = "UntrustedSource"
    # synced gate conditions
    INVALID_REPORT: Final = "InvalidReport"
    REPORTED: Final = "Reported"
    REPORT_STALE: Final = "ReportStale"  # a report with a TTL was not refreshed in time


class ReadinessGate(SpecModel):
    condition_type: str = Field(
        min_length=1, max_length=253, pattern=_LABEL_VALUE,
        description="A condition that must be True: a key of a Condition ConfigMap's data (letters, digits, "
                    "'-', '_', '.'), so a gate no report could ever satisfy is refused instead of cordoning the "
                    "node for good.")
    sources: list[Annotated[str, Field(min_length=1, max_length=63, pattern=_LABEL_VALUE)]] = Field(
        default_factory=list, json_schema_extra=list_set(), max_length=32,
        description="The condition sources (label kokpit.io/condition-source of a Condition ConfigMap) trusted "
                    "to report this condition; reports from any other source are ignored and flagged. "
                    "Empty: any source is trusted.")


class NodeDriverName(StrEnum):
    """Which node driver reaches a Machine's host (kokpit.nodes.agent.DriverRouter)."""

    SIMULATOR = "simulator"
    AGENT = "agent"


class MachineDriver(SpecModel):
    """Per-Machine choice of node driver; unset fields take the machine operator's (per cluster) defaults."""

    name: NodeDriverName | None = Field(default=None, description="simulator or agent; default: the "
                                        "operator's --driver.")
    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https://[^\s/]+(:[0-9]{1,5})?/?$",
                                 description="The node agent's URL; default https://<Node InternalIP>:"
                                             "<the operator's --agent-port>.")


class MachineSpec(SpecModel):
    node_name: str = Field(min_length=1, max_length=253, pattern=_NAME_PATTERN)
    packages: list[str] = Field(default_factory=list, json_schema_extra=list_set(),
                                description="MachinePackageVersion names, at most one per component.")
    readiness_gates: list[ReadinessGate] = Field(default_factory=list,
                                                 json_schema_extra=list_map("conditionType"))
    unschedulable: bool = Field(default=False, description="A person's cordon; kokpit always respects it.")
    driver: MachineDriver | None = Field(default=None, description="How the operator reaches this node.")


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
    """A Machine condition; a synced readiness-gate condition names its reporter (``source``) and, when the
    reporter gives one, when it last said so (``lastHeartbeatTime``)."""

    source: str | None = None
    last_heartbeat_time: str | None = None


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
