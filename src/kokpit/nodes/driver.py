"""The node driver protocol shared by the machine operator and every driver (simulator first).

Actions are asynchronous on the node: `start` returns as soon as the node accepted the action, and the
operator observes progress through `state` (polling with requeue-after, never blocking a worker for the
length of an install). Every call is idempotent: starting an action already running or already done is a
no-op that reports the current state, so an operator restarted mid-plan neither repeats nor loses a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# the states are part of the Machine API (status.components[]); drivers report in the same words
from kokpit.api.machine import InstallState, RunState

__all__ = [
    "ComponentAction",
    "ComponentSpec",
    "ComponentState",
    "DriverError",
    "HealthResult",
    "InstallState",
    "NodeDriver",
    "NodeState",
    "RepairDriver",
    "RepairKind",
    "RepairState",
    "RunState",
]


class ComponentAction(StrEnum):
    INSTALL = "install"  # also upgrade/downgrade: install a different version over the current one
    UNINSTALL = "uninstall"


@dataclass(frozen=True)
class ComponentSpec:
    """What to put on the node for one component — resolved from a MachinePackageVersion."""

    name: str  # component name, e.g. "kubelet"
    version: str
    package: dict[str, Any] = field(default_factory=dict)  # {"type": "rpm", "name": ..., "version": ...}
    install: dict[str, Any] = field(default_factory=dict)  # {"method": "package|script|config", ...}
    config: dict[str, Any] = field(default_factory=dict)  # {"files": [...], "sysctl": {...}}
    health_check: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the MachinePackageVersion name, for messages

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "package": self.package, "install": self.install,
                "config": self.config, "healthCheck": self.health_check, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentSpec:
        return cls(name=d["name"], version=d.get("version", ""), package=d.get("package") or {},
                   install=d.get("install") or {}, config=d.get("config") or {},
                   health_check=d.get("healthCheck") or {}, source=d.get("source", ""))


@dataclass(frozen=True)
class ComponentState:
    """One component as the node reports it. `version` is the installed (or being-installed) version;
    `target_version` is set while an action is in flight."""

    name: str
    version: str
    install_state: InstallState
    run_state: RunState = RunState.UNKNOWN
    message: str = ""
    target_version: str = ""
    last_transition: str = ""  # RFC 3339

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "installState": str(self.install_state),
                "runState": str(self.run_state), "message": self.message, "targetVersion": self.target_version,
                "lastTransitionTime": self.last_transition}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentState:
        return cls(name=d["name"], version=d.get("version", ""), install_state=InstallState(d["installState"]),
                   run_state=RunState(d.get("runState", "Unknown")), message=d.get("message", ""),
                   target_version=d.get("targetVersion", ""), last_transition=d.get("lastTransitionTime", ""))


@dataclass(frozen=True)
class NodeState:
    """Everything a driver knows about one node: reachable at all, and its components."""

    node: str
    reachable: bool
    components: dict[str, ComponentState] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    message: str = ""


class RepairKind(StrEnum):
    """Repairs of a whole node or one of its components (maintenance flows, issue 15)."""

    RESTART_COMPONENT = "restart-component"
    REBOOT = "reboot"
    REINSTALL = "reinstall"  # the OS: every component is gone afterwards (the machine operator reinstalls)


@dataclass(frozen=True)
class RepairState:
    """A repair as the node reports it.  ``state``: Running, Succeeded, Failed, or Accepted (a site repair
    handed to a command or webhook whose completion is only seen on the node itself)."""

    request_id: str
    action: str
    state: str
    message: str = ""
    operation_id: str = ""
    started_at: str = ""
    finished_at: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("Succeeded", "Failed")

    def to_dict(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "action": self.action, "state": self.state,
                "message": self.message, "reference": self.operation_id, "startedAt": self.started_at,
                "finishedAt": self.finished_at, "accepted": self.state != "Failed",
                "retryable": False}

    @classmethod
    def from_dict(cls, d: dict[str, Any], request_id: str = "", action: str = "") -> RepairState:
        """Also reads a node agent's site-repair answer (``accepted``, ``message``, ``reference``)."""
        state = str(d.get("state") or ("Accepted" if d.get("accepted") else "Failed"))
        return cls(request_id=str(d.get("requestId") or request_id), action=str(d.get("action") or action),
                   state=state, message=str(d.get("message") or ""), operation_id=str(d.get("reference") or ""),
                   started_at=str(d.get("startedAt") or ""), finished_at=str(d.get("finishedAt") or ""))


class DriverError(Exception):
    """The driver could not talk to the node or the node refused the action. `retryable` False means the
    request itself is wrong (unknown node, malformed spec) and retrying cannot help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class NodeDriver(Protocol):
    """Implemented by the simulator's driver client and, later, an ssh/agent driver."""

    async def state(self, node: str) -> NodeState:
        """The node's components and whether it is reachable (unreachable → reachable=False)."""
        ...

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        """Batch form of `state`, so an operator over thousands of nodes makes few calls."""
        ...

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        """Begin installing (or replacing the version of) / uninstalling a component. Idempotent."""
        ...

    async def health(self, node: str, component: str) -> HealthResult:
        """Run the component's health check on the node."""
        ...

    async def close(self) -> None:
        ...


class RepairDriver(Protocol):
    """Drivers that can repair a node (the simulator; node agents for reboot/reinstall via the site's repair
    command or webhook).  ``repair`` is idempotent by ``request_id``: asking again with the same id reports
    the repair already started (or finished) and never starts a second one — a restarted maintenance flow
    asks with the id it recorded before the first call."""

    async def repair(self, node: str, action: RepairKind, request_id: str, *, component: str = "",
                     reason: str = "") -> RepairState:
        ...
