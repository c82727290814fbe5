"""The simulated machines themselves: installed components, actions in flight, injected faults, and the
durable record that lets a restarted simulator remember all of it.

Kept free of Kubernetes and HTTP so the node-driver semantics (idempotent starts, upgrade vs fresh install,
deterministic failures) can be reasoned about and tested alone.  An action's outcome is decided when it
starts (seeded, per node/component/version/attempt, so it does not depend on request order) and written
to SQLite before the driver answers; completing it is then a pure function of time, so a restart can never
forget a finished install.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.clock import format_time
from kokpit.nodes.driver import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    HealthResult,
    InstallState,
    NodeState,
    RunState,
)
from kokpit.simulator._repairs import complete_repair, start_repair

__all__ = [
    "CRITICAL_COMPONENTS",
    "FAULT_TYPES",
    "REPORTED_FAULTS",
    "Component",
    "FailRule",
    "FaultError",
    "Host",
    "HostBook",
    "HostDB",
    "UnknownNodeError",
]

log = logging.getLogger("kokpit.simulator.hosts")

REPORTED_FAULTS = ("disk-failure", "memory-ecc", "nic-down", "gpu-fault", "kernel-deadlock", "readonly-filesystem",
                   "clock-skew", "disk-pressure", "os-corrupted")
"""Fault types (of the default FaultType catalog) a simulated host *reports*, as a node agent would: they
become NodeFaults (``_faultreports``); the host otherwise keeps running."""
FAULT_TYPES = ("component-stop", "hardware", "hang", "install-failure", "pod-start-failure", "recover",
               *REPORTED_FAULTS)
# a stopped container runtime or kubelet makes the node NotReady, as on a real host
CRITICAL_COMPONENTS = ("containerd", "kubelet")
ACTION_LOG_LIMIT = 64  # entries kept per host
ALL_NODES = "*"


class UnknownNodeError(KeyError):
    """The node is not one of this simulator's hosts."""


class FaultError(ValueError):
    """A fault request that cannot apply (unknown type, missing component, ...)."""


def _wall_iso(t: float) -> str:
    return format_time(dt.datetime.fromtimestamp(t, dt.UTC))


@dataclass(frozen=True)
class FailRule:
    """Installs of ``component`` (at ``version``, or any version when empty) always fail."""

    component: str
    version: str = ""

    def matches(self, component: str, version: str) -> bool:
        return self.component == component and (not self.version or self.version == version)

    def to_dict(self) -> dict[str, str]:
        return {"component": self.component, "version": self.version}

    @classmethod
    def parse(cls, text: str) -> FailRule:
        """``component`` or ``component=version`` (the CLI's ``--fail-component``)."""
        comp, _, ver = text.partition("=")
        if not comp.strip():
            raise ValueError(f"bad failure rule {text!r}: expected COMPONENT or COMPONENT=VERSION")
        return cls(comp.strip(), ver.strip())


@dataclass
class Component:
    """One component on one host. ``installed`` is what is really on disk ("" = nothing)."""

    name: str
    installed: str = ""
    install_state: InstallState = InstallState.PENDING
    run_state: RunState = RunState.UNKNOWN
    message: str = ""
    target: str = ""  # version of the action in flight, or of the last failed install
    last_transition: str = ""
    action: str = ""  # ComponentAction in flight, "" when idle
    deadline: float = 0.0  # wall-clock epoch seconds when the action in flight completes
    fails: bool = False  # decided at start
    fail_message: str = ""
    attempts: int = 0
    source: str = ""

    def state(self) -> ComponentState:
        return ComponentState(
            name=self.name,
            version=self.installed or self.target,
            install_state=self.install_state,
            run_state=self.run_state,
            message=self.message,
            target_version=self.target if (self.action or self.install_state == InstallState.FAILED) else "",
            last_transition=self.last_transition,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name, "installed": self.installed, "installState": str(self.install_state),
            "runState": str(self.run_state), "message": self.message, "target": self.target,
            "lastTransitionTime": self.last_transition, "action": self.action, "deadline": self.deadline,
            "fails": self.fails, "failMessage": self.fail_message, "attempts": self.attempts,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Component:
        return cls(
            name=d["name"], installed=d.get("installed", ""), install_state=InstallState(d["installState"]),
            run_state=RunState(d.get("runState", "Unknown")), message=d.get("message", ""),
            target=d.get("target", ""), last_transition=d.get("lastTransitionTime", ""),
            action=d.get("action", ""), deadline=float(d.get("deadline", 0.0)), fails=bool(d.get("fails")),
            fail_message=d.get("failMessage", ""), attempts=int(d.get("attempts", 0)),
            source=d.get("source", ""),
        )


@dataclass
class Host:
    """A simulated machine: its components and the faults injected into it."""

    name: str
    index: int
    components: dict[str, Component] = field(default_factory=dict)
    hardware: str = ""  # hardware fault message; "" = healthy hardware
    hung: bool = False
    fail_rules: list[FailRule] = field(default_factory=list)
    reported: dict[str, str] = field(default_factory=dict)  # fault type → message the host's agent reports
    pods_fail: bool = False  # pods bound here fail to start (CreateContainerError): a silent, business fault
    created: str = ""
    # what the machine did (started, installed, failed, uninstalled, restarted), newest last, bounded: stored
    # in the same row as the state, so a crash can never keep one without the other (chaos checks read it
    # to prove no action was done twice)
    log: list[dict[str, str]] = field(default_factory=list)
    # repairs (simulator/_repairs.py) by requestId, oldest first; the one running, if any
    repairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    repairing: str = ""
    repair_seq: int = 0

    def record(self, event: str, component: str, version: str, at: str) -> None:
        self.log.append({"event": event, "component": component, "version": version, "at": at})
        del self.log[:-ACTION_LOG_LIMIT]

    def installed_version(self, component: str) -> str:
        c = self.components.get(component)
        return c.installed if c is not None else ""

    def readiness(self) -> tuple[bool, str, str]:
        """(ready, reason, message) as the kubelet would report it in the Ready condition."""
        if self.repairing:
            action = self.repairs.get(self.repairing, {}).get("action", "repair")
            return False, "NodeRepairing", f"the node is down for a {action}"
        if self.hardware:
            return False, "HardwareFault", self.hardware
        for name in CRITICAL_COMPONENTS:
            c = self.components.get(name)
            if c is not None and c.installed and c.run_state == RunState.STOPPED:
                return False, "KubeletNotReady", f"{name} is not running"
        return True, "KubeletReady", "kubelet is posting ready status"

    @property
    def healthy(self) -> bool:
        return not self.hung and self.readiness()[0]

    def node_state(self) -> NodeState:
        comps = {n: c.state() for n, c in sorted(self.components.items())}
        if self.hung:
            return NodeState(self.name, False, comps, "timed out waiting for the node")
        if self.repairing:
            return NodeState(self.name, False, comps, "node down for a repair")
        if self.hardware:
            return NodeState(self.name, False, comps, f"node unreachable: {self.hardware}")
        return NodeState(self.name, True, comps)

    def faults(self) -> dict[str, Any]:
        stopped = sorted(n for n, c in self.components.items() if c.installed and c.run_state == RunState.STOPPED)
        return {"hardware": self.hardware, "hung": self.hung, "stoppedComponents": stopped,
                "installFailures": [r.to_dict() for r in self.fail_rules], "reported": dict(self.reported),
                "podsFail": self.pods_fail}

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "hardware": self.hardware, "hung": self.hung,
                "failRules": [r.to_dict() for r in self.fail_rules], "created": self.created,
                "components": [c.to_record() for c in self.components.values()], "log": self.log,
                "repairs": list(self.repairs.values()), "repairing": self.repairing, "repairSeq": self.repair_seq,
                "reported": self.reported, "podsFail": self.pods_fail}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Host:
        return cls(name=d["name"], index=int(d["index"]),
                   components={c["name"]: Component.from_record(c) for c in d.get("components") or []},
                   hardware=d.get("hardware", ""), hung=bool(d.get("hung")),
                   fail_rules=[FailRule(r["component"], r.get("version", "")) for r in d.get("failRules") or []],
                   created=d.get("created", ""), log=list(d.get("log") or []),
                   repairs={r["requestId"]: r for r in d.get("repairs") or []}, repairing=d.get("repairing", ""),
                   repair_seq=int(d.get("repairSeq", 0)),
                   reported=dict(d.get("reported") or {}), pods_fail=bool(d.get("podsFail")))


class HostDB:
    """SQLite record of every host (one JSON row each) plus simulator-wide settings (global fail rules)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY, data BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def load(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        hosts = {name: orjson.loads(data) for name, data in self._db.execute("SELECT name, data FROM hosts")}
        meta = {k: orjson.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
        return hosts, meta

    def write(self, rows: list[tuple[str, bytes]], meta: list[tuple[str, bytes]]) -> None:
        """One transaction for a whole batch (group commit)."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO hosts (name, data) VALUES (?, ?)", rows)
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


class HostBook:
    """Every host of one simulator, the driver semantics over them, and batched persistence.

    Listeners are called with a node name whenever something the kubelet side reports (readiness, versions)
    or the pods depend on may have changed.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        seed: int = 0,
        install_seconds: float = 0.0,
        repair_seconds: float = 0.0,
        fail_probability: float = 0.0,
        fail_rules: Iterable[FailRule] = (),
        db: HostDB | None = None,
        wall: Callable[[], float] = time.time,
        flush_interval: float = 0.05,
    ) -> None:
        self.seed = seed
        self.install_seconds = max(0.0, install_seconds)
        self.repair_seconds = max(0.0, repair_seconds)
        self.repair_due: list[tuple[float, str, str]] = []  # (deadline, node, requestId) of running repairs
        self.fail_probability = fail_probability
        self.fail_rules: list[FailRule] = []
        self.db = db
        self._wall = wall
        self.flush_interval = flush_interval
        self.hosts: dict[str, Host] = {}
        self.listeners: list[Callable[[str], None]] = []
        # (node, type, reason, message) for what a person should see as an Event on the Node: faults
        # (Warning), recoveries (Normal), failed installs (Warning)
        self.event_listeners: list[Callable[[str, str, str, str], None]] = []
        self._deadlines: list[tuple[float, int, str, str]] = []
        self._frozen: dict[str, list[tuple[float, int, str, str]]] = {}  # due while the host was frozen
        self._seq = itertools.count()
        self._dirty: set[str] = set()
        self._meta_dirty = False
        self._waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._flush_now: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        records, meta = db.load() if db is not None else ({}, {})
        now = _wall_iso(self._wall())
        for i, name in enumerate(names, start=1):
            rec = records.get(name)
            host = Host.from_record(rec) if rec else Host(name, i, created=now)
            if not rec:
                self._dirty.add(name)
            self.hosts[name] = host
            for c in host.components.values():
                if c.action:
                    self._schedule(host.name, c)
            if host.repairing and host.repairing in host.repairs:
                heapq.heappush(self.repair_due, (float(host.repairs[host.repairing].get("deadline") or 0),
                                                 host.name, host.repairing))
        stored_rules = [FailRule(r["component"], r.get("version", "")) for r in meta.get("failRules") or []]
        for rule in [*stored_rules, *fail_rules]:
            if rule not in self.fail_rules:
                self.fail_rules.append(rule)
                self._meta_dirty = True

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the action timer and the group-commit flusher; completes actions due while we were down."""
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._timer(), name="sim-actions"),
                       loop.create_task(self._flusher(), name="sim-flush")]
        self.tick()
        await self.flush()

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._flush_once()
        if self.db is not None:
            self.db.close()

    # ------------------------------------------------------------------ lookups
    def host(self, node: str) -> Host:
        h = self.hosts.get(node)
        if h is None:
            raise UnknownNodeError(node)
        return h

    def _changed(self, node: str) -> None:
        self._dirty.add(node)
        if self._wake is not None:
            self._wake.set()
        for fn in self.listeners:
            try:
                fn(node)
            except Exception:
                log.exception("host listener failed for %s", node)

    # the hooks simulator/_repairs.py uses
    def wall(self) -> float:
        return self._wall()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def changed(self, node: str) -> None:
        self._changed(node)

    def event(self, node: str, type_: str, reason: str, message: str) -> None:
        self._event(node, type_, reason, message)

    def unfreeze(self, node: str) -> None:
        """Actions frozen by a hang or hardware fault resume (after a recovery or a reboot)."""
        for item in self._frozen.pop(node, []):
            heapq.heappush(self._deadlines, item)
        self.wake()

    def repair(self, node: str, action: str, request_id: str, component: str = "", reason: str = "") -> Any:
        """Start or look up a repair (:func:`kokpit.simulator._repairs.start_repair`)."""
        return start_repair(self, node, action, request_id, component, reason)

    def _event(self, node: str, type_: str, reason: str, message: str) -> None:
        for fn in self.event_listeners:
            try:
                fn(node, type_, reason, message)
            except Exception:
                log.exception("event listener failed for %s", node)

    # ------------------------------------------------------------------ driver semantics
    def _decide(self, host: Host, name: str, version: str, attempt: int) -> tuple[bool, str]:
        for rule in [*host.fail_rules, *self.fail_rules]:
            if rule.matches(name, version):
                what = f"{name} {version}" if version else name
                return True, f"simulated install failure: {what} is configured to fail"
        if self.fail_probability > 0:
            rng = random.Random(f"{self.seed}/{host.name}/{name}/{version}/{attempt}")
            if rng.random() < self.fail_probability:
                return True, (f"simulated install failure of {name} {version} "
                              f"(probability {self.fail_probability:g}, attempt {attempt})")
        return False, ""

    def start_action(self, node: str, action: ComponentAction, spec: ComponentSpec) -> ComponentState:
        """Begin (or confirm) an action; idempotent as the driver protocol requires."""
        host = self.host(node)
        now = self._wall()
        c = host.components.get(spec.name)
        if action == ComponentAction.INSTALL:
            if not spec.version:
                raise ValueError(f"component {spec.name!r} has no version")
            if c is not None and c.action == ComponentAction.INSTALL and c.target == spec.version:
                return c.state()  # already in flight
            if c is not None and not c.action and c.install_state == InstallState.INSTALLED \
                    and c.installed == spec.version:
                if c.run_state != RunState.RUNNING:  # reinstalling the same version restarts it
                    c.run_state, c.message, c.last_transition = RunState.RUNNING, "restarted", _wall_iso(now)
                    host.record("restarted", spec.name, spec.version, c.last_transition)
                    self._changed(node)
                return c.state()
            if c is None:
                c = Component(spec.name)
                host.components[spec.name] = c
            c.attempts += 1
            c.fails, c.fail_message = self._decide(host, spec.name, spec.version, c.attempts)
            c.action, c.target, c.source = str(ComponentAction.INSTALL), spec.version, spec.source
            c.install_state = InstallState.UPGRADING if c.installed else InstallState.INSTALLING
            verb = "upgrading" if c.installed else "installing"
            c.message = f"{verb} {spec.name} {spec.version}" + (f" from {c.installed}" if c.installed else "")
        else:
            if c is None:
                return ComponentState(spec.name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
            if c.action == ComponentAction.UNINSTALL:
                return c.state()
            if not c.installed:  # only a failed or in-flight fresh install: nothing on disk to remove
                del host.components[spec.name]
                self._changed(node)
                return ComponentState(spec.name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
            c.action, c.target, c.fails, c.fail_message = str(ComponentAction.UNINSTALL), "", False, ""
            c.install_state, c.message = InstallState.UNINSTALLING, f"uninstalling {spec.name} {c.installed}"
        c.last_transition = _wall_iso(now)
        host.record(f"{c.action}-started", spec.name, c.target or c.installed, c.last_transition)
        c.deadline = now + self.install_seconds
        if self.install_seconds <= 0 and not host.hung and not host.hardware:
            self._complete(host, c)
        else:
            self._schedule(node, c)
        self._changed(node)
        st = host.components.get(spec.name)
        if st is None:
            return ComponentState(spec.name, "", InstallState.PENDING, RunState.UNKNOWN, "not installed")
        return st.state()

    def _schedule(self, node: str, c: Component) -> None:
        heapq.heappush(self._deadlines, (c.deadline, next(self._seq), node, c.name))
        if self._wake is not None:
            self._wake.set()

    def _complete(self, host: Host, c: Component) -> None:
        now = _wall_iso(self._wall())
        if c.action == ComponentAction.UNINSTALL:
            host.components.pop(c.name, None)
            host.record("uninstalled", c.name, c.installed, now)
        elif c.fails:
            c.install_state, c.message = InstallState.FAILED, c.fail_message
            c.run_state = RunState.RUNNING if c.installed else RunState.STOPPED
            host.record("failed", c.name, c.target, now)
            self._event(host.name, "Warning", "InstallFailed", f"{c.name} {c.target}: {c.fail_message}")
        else:
            host.record("installed", c.name, c.target, now)
            c.installed, c.target = c.target, ""
            c.install_state, c.run_state, c.message = InstallState.INSTALLED, RunState.RUNNING, ""
        c.action, c.deadline, c.last_transition = "", 0.0, now

    def tick(self) -> float | None:
        """Complete every action whose time has come; returns the next deadline (wall time) if any.
        Actions on hung or hardware-faulted hosts wait (the machine is frozen) and finish after recovery."""
        now = self._wall()
        while self.repair_due and self.repair_due[0][0] <= now:
            _, node, rid = heapq.heappop(self.repair_due)
            if node in self.hosts:
                complete_repair(self, self.hosts[node], rid)
        while self._deadlines and self._deadlines[0][0] <= now:
            item = heapq.heappop(self._deadlines)
            deadline, _, node, name = item
            host = self.hosts.get(node)
            c = host.components.get(name) if host else None
            if host is None or c is None or not c.action or c.deadline != deadline:
                continue  # superseded
            if host.hung or host.hardware or host.repairing:
                self._frozen.setdefault(node, []).append(item)
                continue
            self._complete(host, c)
            self._changed(node)
        due = [d[0] for d in (self._deadlines[:1] + self.repair_due[:1])]
        return min(due) if due else None

    async def _timer(self) -> None:
        assert self._wake is not None
        while True:
            nxt = self.tick()
            self._wake.clear()
            timeout = 1.0 if nxt is None else min(1.0, max(0.0, nxt - self._wall()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: it can swallow cancellation on 3.11
                    await self._wake.wait()

    def health(self, node: str, component: str) -> HealthResult:
        c = self.host(node).components.get(component)
        if c is None:
            return HealthResult(False, f"{component} is not installed")
        if c.action:
            return HealthResult(False, c.message or f"{component} is changing")
        if c.install_state == InstallState.FAILED:
            return HealthResult(False, c.message)
        if c.run_state != RunState.RUNNING:
            return HealthResult(False, f"{component} {c.installed} is {str(c.run_state).lower()}")
        return HealthResult(True, f"{component} {c.installed} is running")

    # ------------------------------------------------------------------ faults
    def fault(self, node: str | None, kind: str, component: str = "", version: str = "") -> dict[str, Any]:
        """Inject or lift a fault; ``node`` None or ``*`` means every host (install-failure, recover)."""
        if kind not in FAULT_TYPES:
            raise FaultError(f"unknown fault type {kind!r}; expected one of {', '.join(FAULT_TYPES)}")
        everywhere = node in (None, "", ALL_NODES)
        if kind == "install-failure":
            if not component:
                raise FaultError("install-failure needs a component (and optionally a version)")
            rule = FailRule(component, version)
            if everywhere:
                if rule not in self.fail_rules:
                    self.fail_rules.append(rule)
                    self._meta_dirty = True
                    if self._wake is not None:
                        self._wake.set()
                return self.faults()
            host = self.host(str(node))
            if rule not in host.fail_rules:
                host.fail_rules.append(rule)
                self._changed(host.name)
            return {"node": host.name, **host.faults()}
        if kind == "recover":
            if everywhere:
                if self.fail_rules:
                    self.fail_rules = []
                    self._meta_dirty = True
                for h in self.hosts.values():
                    self._recover(h)
                return self.faults()
            host = self.host(str(node))
            self._recover(host)
            return {"node": host.name, **host.faults()}
        if everywhere:
            raise FaultError(f"{kind} needs a node")
        host = self.host(str(node))
        if kind == "component-stop":
            c = host.components.get(component)
            if not component or c is None or not c.installed:
                have = ", ".join(sorted(n for n, x in host.components.items() if x.installed)) or "none"
                raise FaultError(f"component-stop needs an installed component on {host.name} "
                                 f"(got {component!r}; installed: {have})")
            c.run_state, c.message = RunState.STOPPED, "stopped by fault injection"
            c.last_transition = _wall_iso(self._wall())
            self._event(host.name, "Warning", "ComponentStopped", f"{component} {c.installed} stopped (injected fault)")
        elif kind == "hardware":
            host.hardware = "simulated hardware fault"
            self._event(host.name, "Warning", "HardwareFault", f"{host.hardware} (injected): the node is unreachable")
        elif kind == "pod-start-failure":
            host.pods_fail = True
            self._event(host.name, "Warning", "FaultInjected", "pods fail to start on this host (injected)")
        elif kind in REPORTED_FAULTS:
            host.reported[kind] = f"{kind} on {host.name} (injected)"
            self._event(host.name, "Warning", "FaultInjected", f"{kind} injected: the host reports it")
        elif kind == "hang":
            host.hung = True
            self._event(host.name, "Warning", "NodeHung", "the node stopped answering (injected fault)")
        self._changed(host.name)
        return {"node": host.name, **host.faults()}

    def _recover(self, host: Host) -> None:
        changed = bool(host.hardware or host.hung or host.fail_rules or host.reported or host.pods_fail)
        host.hardware, host.hung, host.fail_rules, host.reported, host.pods_fail = "", False, [], {}, False
        self.unfreeze(host.name)
        for c in host.components.values():
            if c.installed and not c.action and c.run_state == RunState.STOPPED \
                    and c.install_state == InstallState.INSTALLED:
                c.run_state, c.message = RunState.RUNNING, ""
                c.last_transition = _wall_iso(self._wall())
                changed = True
        if changed:
            self._changed(host.name)
            self._event(host.name, "Normal", "FaultsCleared", "injected faults lifted: the node recovers")

    def faults(self) -> dict[str, Any]:
        nodes = {}
        for h in self.hosts.values():
            f = h.faults()
            if f["hardware"] or f["hung"] or f["stoppedComponents"] or f["installFailures"] or f["reported"] \
                    or f["podsFail"]:
                nodes[h.name] = f
        return {"installFailures": [r.to_dict() for r in self.fail_rules], "nodes": nodes}

    # ------------------------------------------------------------------ persistence
    async def persist(self) -> None:
        """Wait until everything changed so far is committed (group commit with concurrent callers)."""
        if self.db is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if not self._tasks:  # not started (tests, shutdown): write now
            await self._flush_once()
        elif self._flush_now is not None:
            self._flush_now.set()  # someone waits: commit now (callers arriving meanwhile share the next one)
        await fut

    async def flush(self) -> None:
        await self._flush_once()

    async def _flusher(self) -> None:
        assert self._flush_now is not None
        while True:
            with contextlib.suppress(TimeoutError):  # background changes wait up to flush_interval
                async with asyncio.timeout(self.flush_interval):
                    await self._flush_now.wait()
            self._flush_now.clear()
            if self._dirty or self._meta_dirty or self._waiters:
                try:
                    await self._flush_once()
                except Exception:
                    log.exception("writing host state failed; will retry")

    async def _flush_once(self) -> None:
        waiters, self._waiters = self._waiters, []
        try:
            if self.db is not None and (self._dirty or self._meta_dirty):
                rows = [(n, orjson.dumps(self.hosts[n].to_record())) for n in self._dirty if n in self.hosts]
                meta = [("failRules", orjson.dumps([r.to_dict() for r in self.fail_rules]))] \
                    if self._meta_dirty else []
                self._dirty, self._meta_dirty = set(), False
                try:
                    await asyncio.to_thread(self.db.write, rows, meta)
                except BaseException:
                    self._dirty.update(n for n, _ in rows)
                    self._meta_dirty = self._meta_dirty or bool(meta)
                    raise
        except BaseException as e:
            for w in waiters:
                if not w.done():
                    w.set_exception(e if isinstance(e, Exception) else RuntimeError("flush cancelled"))
            raise
        for w in waiters:
            if not w.done():
                w.set_result(None)
