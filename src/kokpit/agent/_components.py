"""One managed host's components: the node driver semantics (idempotent starts, one action per component,
precise state and error text) on top of the real host.

What the agent *was asked* lives on the host, in ``/var/lib/kokpit-agent/components/<name>.json`` (the spec,
the action in flight, the last failure): that is intent, written before an action starts.  What *is* on the
host is never taken from there: versions come from dpkg/rpm or the component's version probe, config files
and sysctls are read back.  An agent killed mid-action finds the intent on restart, repairs what the package
manager left half done and runs the action again — every step is idempotent, so a finished step is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit.agent._config import AppliedConfig, ConfigApplier
from kokpit.agent._host import HostError, HostRoot, atomic_write
from kokpit.agent._packages import PackageError, PackageManager, manager_for
from kokpit.api.machine import HealthCheck, InstallMethod, InstallMethodType, PackageConfig, PackageRef
from kokpit.nodes.driver import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    InstallState,
    NodeState,
    RunState,
)

__all__ = ["ComponentHost", "Record"]

log = logging.getLogger("kokpit.agent")


class ActionFailed(Exception):
    """An action could not complete; the message is what the host said."""


@dataclass
class Record:
    """The intent the agent keeps on the host for one component (see the module docstring)."""

    spec: ComponentSpec
    action: str = ""  # ComponentAction in flight ("" = idle)
    target: str = ""  # component version of the install in flight or of the last failed one
    previous: str = ""  # component version installed when the action started
    failed: str = ""  # the last action's error ("" = it succeeded)
    applied: str = ""  # component version whose config this agent last applied
    versions: dict[str, str] = field(default_factory=dict)  # package version → component version seen
    transition: str = ""
    attempts: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({"spec": self.spec.to_dict(), "action": self.action, "target": self.target,
                             "previous": self.previous, "failed": self.failed, "applied": self.applied,
                             "versions": self.versions, "transition": self.transition,
                             "attempts": self.attempts})

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        d = orjson.loads(raw)
        return cls(spec=ComponentSpec.from_dict(d["spec"]), action=d.get("action", ""),
                   target=d.get("target", ""), previous=d.get("previous", ""), failed=d.get("failed", ""),
                   applied=d.get("applied", ""), versions=dict(d.get("versions") or {}),
                   transition=d.get("transition", ""), attempts=int(d.get("attempts", 0)))


@dataclass(frozen=True)
class _Plan:
    """A ComponentSpec checked against the API models and against this host (nothing changed yet)."""

    package: PackageRef
    install: InstallMethod
    config: PackageConfig
    health: HealthCheck
    manager: PackageManager | None


class ComponentHost:
    """The components of one host (a node), as the driver protocol sees them."""

    def __init__(self, node: str, host: HostRoot, *, clock: Clock | None = None,
                 on_change: Any = None) -> None:
        self.node = node
        self.host = host
        self.clock = clock or RealClock()
        self.records: dict[str, Record] = {}
        self.cache: dict[str, ComponentState] = {}
        self.config = ConfigApplier(host)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._start_locks: dict[str, asyncio.Lock] = {}
        self._pm_lock = asyncio.Lock()  # one package manager run per host (dpkg/rpm hold a global lock anyway)
        self._on_change = on_change
        self.faults: dict[str, str] = {}  # fault type → message, set by the fault checker
        self.actions_total: dict[tuple[str, str], int] = {}  # (action, outcome) → count, for metrics

    # ------------------------------------------------------------------ lifecycle
    @property
    def _dir(self) -> Path:
        return self.host.state_dir / "components"

    async def load(self) -> None:
        """Read the intent records, resume interrupted actions, and report what the host really has."""
        if self._dir.is_dir():
            for p in sorted(self._dir.glob("*.json")):
                try:
                    rec = Record.from_json(p.read_bytes())
                except (ValueError, KeyError, OSError) as e:
                    log.warning("%s: ignoring unreadable component record %s: %s", self.node, p, e)
                    continue
                self.records[rec.spec.name] = rec
        for name, rec in self.records.items():
            if rec.action:
                log.info("%s: resuming %s of %s %s after a restart", self.node, rec.action, name, rec.target)
                self._spawn(name)
            else:
                await self.refresh(name)

    async def close(self) -> None:
        from kokpit._lib.aio import cancel_and_wait

        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()

    def _save(self, rec: Record) -> None:
        atomic_write(self._dir / f"{rec.spec.name}.json", rec.to_json(), mode=0o600)

    def _now(self) -> str:
        return format_time(self.clock.now())

    # ------------------------------------------------------------------ checks (nothing on the host changes)
    def plan(self, spec: ComponentSpec, action: ComponentAction) -> _Plan:
        """Validate a requested component against the API's own models and against this host; raise a
        non-retryable DriverError naming the field when it cannot be done."""
        what = f"{spec.source or spec.name}"
        try:
            package = PackageRef.model_validate(spec.package)
            install = InstallMethod.model_validate(spec.install)
            config = PackageConfig.model_validate(spec.config)
            health = HealthCheck.model_validate(spec.health_check)
        except ValidationError as e:
            raise DriverError(f"{what}: invalid component spec: {_first_error(e)}", retryable=False) from None
        if action == ComponentAction.INSTALL and not spec.version:
            raise DriverError(f"{what}: version is required", retryable=False)
        manager: PackageManager | None = None
        if install.method == InstallMethodType.PACKAGE:
            try:
                manager = manager_for(str(package.type), self.host)
            except PackageError as e:
                raise DriverError(f"{what}: package.type: {e}", retryable=False) from None
            if not manager.available():
                raise DriverError(f"{what}: package.type {package.type}: this host has no "
                                  f"{'apt-get/dpkg' if package.type == 'deb' else 'dnf/rpm'}", retryable=False)
        elif install.method == InstallMethodType.SCRIPT and not (install.script and install.version_probe):
            raise DriverError(f"{what}: install.versionProbe: a script install needs install.script and "
                              "install.versionProbe", retryable=False)
        if action == ComponentAction.INSTALL:
            try:
                self.config.check(config)
            except HostError as e:
                raise DriverError(f"{what}: {e}", retryable=False) from None
        return _Plan(package, install, config, health, manager)

    # ------------------------------------------------------------------ driver protocol
    def node_state(self) -> NodeState:
        msg = "; ".join(f"{k}: {v}" for k, v in sorted(self.faults.items()))
        return NodeState(self.node, True, dict(sorted(self.cache.items())), msg)

    async def start(self, action: ComponentAction, spec: ComponentSpec) -> ComponentState:
        """Begin an action (idempotent: the same action already running or done reports its state).

        An uninstall may name only the component (the operator sends name and version): how to remove it
        comes from the agent's record of what it installed.  Concurrent requests for one component are
        decided one after the other, so two can never both start."""
        lock = self._start_locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            return await self._start(action, spec)

    async def _start(self, action: ComponentAction, spec: ComponentSpec) -> ComponentState:
        name = spec.name
        rec = self.records.get(name)
        if action == ComponentAction.UNINSTALL and rec is not None:
            spec = rec.spec
        elif action == ComponentAction.UNINSTALL and not (spec.package or spec.install or spec.config):
            return ComponentState(name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
        plan = self.plan(spec, action)
        if rec is not None and rec.action:
            same = rec.action == action and (action == ComponentAction.UNINSTALL or rec.target == spec.version)
            if same:
                return self.cache.get(name) or self._in_flight_state(rec, "")
            raise DriverError(f"{name}: busy with {rec.action} {rec.target}; one action per component at a time",
                              retryable=True)
        if action == ComponentAction.INSTALL:
            current = self.cache.get(name)
            if current is None or rec is None:
                current = await self._inspect(rec or Record(spec=spec), plan)
            if rec is not None and not rec.failed and current.install_state == InstallState.INSTALLED \
                    and current.version == spec.version and rec.spec == spec \
                    and not current.message.startswith("drift"):
                return current  # done already: changes nothing
            previous = current.version if current.install_state == InstallState.INSTALLED else ""
            rec = Record(spec=spec, action=str(action), target=spec.version, previous=previous,
                         applied=rec.applied if rec else "", versions=rec.versions if rec else {},
                         attempts=(rec.attempts if rec and rec.target == spec.version else 0) + 1)
        else:
            if rec is None:
                probe = await self._inspect(Record(spec=spec), plan)
                if probe.install_state != InstallState.INSTALLED:
                    return ComponentState(name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
                rec = Record(spec=spec)
            rec = replace(rec, action=str(action), target="",
                          previous=self.cache[name].version if name in self.cache else "", failed="")
        rec.transition = self._now()
        rec.failed = ""
        self.records[name] = rec
        self._save(rec)  # the intent is durable before we answer
        state = self._in_flight_state(rec, rec.previous)
        self.cache[name] = state
        self._spawn(name)
        return state

    def _in_flight_state(self, rec: Record, installed: str) -> ComponentState:
        if rec.action == ComponentAction.UNINSTALL:
            st, msg = InstallState.UNINSTALLING, f"uninstalling {rec.spec.name} {installed}".strip()
        elif installed:
            st, msg = InstallState.UPGRADING, f"installing {rec.spec.name} {rec.target} over {installed}"
        else:
            st, msg = InstallState.INSTALLING, f"installing {rec.spec.name} {rec.target}"
        return ComponentState(rec.spec.name, installed or rec.target, st, RunState.UNKNOWN, msg,
                              target_version=rec.target, last_transition=rec.transition)

    async def health(self, component: str) -> HealthResult:
        rec = self.records.get(component)
        if rec is None:
            return HealthResult(False, f"{component} is not installed")
        state = await self.refresh(component)
        if state.install_state != InstallState.INSTALLED:
            return HealthResult(False, state.message or f"{component} is {state.install_state}")
        if state.run_state == RunState.STOPPED:
            return HealthResult(False, state.message or f"{component} is not running")
        hc = HealthCheck.model_validate(rec.spec.health_check)
        from kokpit.agent._health import check

        return await check(self.host, component, hc)

    # ------------------------------------------------------------------ actions
    def _spawn(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is not None and not task.done():
            return
        self._tasks[name] = asyncio.get_running_loop().create_task(self._run(name), name=f"agent-{name}")

    async def _run(self, name: str) -> None:
        rec = self.records[name]
        action = rec.action
        outcome = "succeeded"
        try:
            plan = self.plan(rec.spec, ComponentAction(action))
            if action == ComponentAction.INSTALL:
                await self._install(rec, plan)
                rec.applied, rec.failed = rec.target, ""
            else:
                await self._uninstall(rec, plan)
        except (ActionFailed, PackageError, HostError, DriverError) as e:
            outcome = "failed"
            rec.failed = str(e)
            log.warning("%s: %s %s %s failed: %s", self.node, action, name, rec.target, e)
        except Exception as e:  # a bug must not leave the component "in flight" forever
            outcome = "failed"
            rec.failed = f"agent error: {type(e).__name__}: {e}"
            log.exception("%s: %s %s crashed", self.node, action, name)
        rec.action, rec.transition = "", self._now()
        self.actions_total[(action, outcome)] = self.actions_total.get((action, outcome), 0) + 1
        if action == ComponentAction.UNINSTALL and not rec.failed:
            self.records.pop(name, None)
            self.cache.pop(name, None)
            with contextlib.suppress(FileNotFoundError):
                (self._dir / f"{name}.json").unlink()
        else:
            self._save(rec)
            await self.refresh(name)
        self._tasks.pop(name, None)
        if self._on_change is not None:
            self._on_change(self.node)

    async def _install(self, rec: Record, plan: _Plan) -> None:
        spec, inst, timeout = rec.spec, plan.install, float(plan.install.timeout_seconds)
        env = {"KOKPIT_COMPONENT": spec.name, "KOKPIT_VERSION": spec.version, "KOKPIT_PREVIOUS_VERSION": rec.previous}
        if plan.manager is not None:
            async with self._pm_lock:
                await plan.manager.repair(timeout)  # finish what an interrupted run left, first
                await plan.manager.install(spec.name, plan.package.name, plan.package.version,
                                           plan.package.repository, allow_downgrade=inst.allow_downgrade,
                                           timeout=timeout, parameters=inst.parameters)
            rec.versions[plan.package.version] = spec.version
        elif inst.method == InstallMethodType.SCRIPT:
            have = await self._probe_script(inst)
            if have != spec.version:
                r = await self.host.run(["/bin/sh", "-c", inst.script or ""], timeout=timeout, env=env)
                if not r.ok:
                    raise ActionFailed(f"install script: {r.error_text()}")
                have = await self._probe_script(inst)
                if have != spec.version:
                    raise ActionFailed(f"install script succeeded but versionProbe reports {have or 'nothing'}, "
                                       f"not {spec.version}")
        await self.config.apply(spec.name, plan.config)
        if inst.service and self.host.systemd_running():
            r = await self.host.run(["systemctl", "restart", inst.service], timeout=timeout)
            if not r.ok:
                raise ActionFailed(f"systemctl restart {inst.service}: {r.error_text()}")

    async def _uninstall(self, rec: Record, plan: _Plan) -> None:
        inst, timeout = plan.install, float(plan.install.timeout_seconds)
        if inst.service and self.host.systemd_running():
            await self.host.run(["systemctl", "stop", inst.service], timeout=timeout)
        if plan.manager is not None:
            async with self._pm_lock:
                await plan.manager.repair(timeout)
                await plan.manager.remove(plan.package.name, timeout)
        elif inst.method == InstallMethodType.SCRIPT and await self._probe_script(inst):
            env = {"KOKPIT_COMPONENT": rec.spec.name, "KOKPIT_VERSION": rec.spec.version}
            if inst.uninstall_script:
                r = await self.host.run(["/bin/sh", "-c", inst.uninstall_script], timeout=timeout, env=env)
                if not r.ok:
                    raise ActionFailed(f"uninstall script: {r.error_text()}")
            left = await self._probe_script(inst)
            if left:
                raise ActionFailed(f"after uninstall, versionProbe still reports {left}"
                                   + ("" if inst.uninstall_script else " (no install.uninstallScript)"))
        await self.config.remove(rec.spec.name, plan.config)

    async def _probe_script(self, inst: InstallMethod) -> str:
        r = await self.host.run(["/bin/sh", "-c", inst.version_probe or "false"],
                                timeout=float(min(inst.timeout_seconds, 120)))
        return r.stdout.strip().splitlines()[0].strip() if r.ok and r.stdout.strip() else ""

    # ------------------------------------------------------------------ observation
    async def refresh(self, name: str) -> ComponentState:
        """Look at the host again for one component (what state reports come from)."""
        rec = self.records.get(name)
        if rec is None:
            self.cache.pop(name, None)
            return ComponentState(name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
        if rec.action:
            return self.cache.get(name) or self._in_flight_state(rec, rec.previous)
        try:
            plan = self.plan(rec.spec, ComponentAction.UNINSTALL)
            state = await self._inspect(rec, plan)
        except DriverError as e:
            state = ComponentState(name, "", InstallState.FAILED, RunState.UNKNOWN, str(e),
                                   last_transition=rec.transition)
        self.cache[name] = state
        return state

    async def refresh_all(self) -> None:
        for name in list(self.records):
            await self.refresh(name)

    async def _installed_version(self, rec: Record, plan: _Plan) -> tuple[str, str]:
        """(component version on the host, problem) — from the host, never from the record's memory."""
        if plan.manager is not None:
            probe = await plan.manager.probe(plan.package.name)
            if not probe.version:
                return "", probe.broken
            if probe.version == plan.package.version:
                return rec.spec.version, probe.broken
            return rec.versions.get(probe.version, probe.version), probe.broken
        if plan.install.method == InstallMethodType.SCRIPT:
            return await self._probe_script(plan.install), ""
        # config-only: installed when this agent applied it and the host still has it
        return (rec.applied if rec.applied else ""), ""

    async def _inspect(self, rec: Record, plan: _Plan) -> ComponentState:
        name = rec.spec.name
        version, broken = await self._installed_version(rec, plan)
        applied: AppliedConfig = await self.config.observe(name, plan.config)
        if rec.failed:
            return ComponentState(name, version or rec.target, InstallState.FAILED,
                                  RunState.RUNNING if version else RunState.STOPPED, rec.failed,
                                  target_version=rec.target, last_transition=rec.transition)
        if broken:
            return ComponentState(name, version, InstallState.FAILED, RunState.UNKNOWN, broken,
                                  target_version=rec.target, last_transition=rec.transition)
        if not version:
            return ComponentState(name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed",
                                  last_transition=rec.transition)
        run, msg = RunState.RUNNING, applied.summary()
        if version == rec.spec.version and applied.drift:
            msg = f"drift: {applied.drift}"
        service = plan.install.service
        if service and self.host.systemd_running():
            r = await self.host.run(["systemctl", "is-active", service], timeout=30)
            if r.stdout.strip() != "active":
                run, msg = RunState.STOPPED, f"{service} is {r.stdout.strip() or 'not active'}"
        return ComponentState(name, version, InstallState.INSTALLED, run, msg, last_transition=rec.transition)

    def details(self, name: str) -> dict[str, Any]:
        """The agent's own view of one component for people (GET .../components/NAME): record and config."""
        rec = self.records.get(name)
        if rec is None:
            raise KeyError(name)
        state = self.cache.get(name)
        return {"state": state.to_dict() if state else None, "spec": rec.spec.to_dict(), "action": rec.action,
                "target": rec.target, "failed": rec.failed, "applied": rec.applied,
                "config": self.config.last.get(name, AppliedConfig()).to_dict()}


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", e))


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
