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
