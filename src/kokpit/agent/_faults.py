"""Faults the agent sees on its host (disk full, read-only filesystem, a component down) and how it reports
them — two ways, so both kinds of consumer work with no change:

- **to the event center** (issue 15's agent reports): one NodeFault per fault through
  :class:`kokpit.runtime.faultreports.FaultReporter`, as reporter ``node-agent/<node>`` (kind ``Agent``),
  refreshed on every look at the host (reports are heartbeats with a TTL of a few looks) and cleared when the
  fault is gone: ``DiskFull`` → ``disk-pressure``, ``ReadonlyFilesystem`` → ``readonly-filesystem``, a
  component installed but not running → ``kubelet-unhealthy`` / ``container-runtime-unhealthy`` /
  ``component-unhealthy`` for that component.  After a restart the first look clears what the agent may
  have reported before and no longer sees (by name: the names are deterministic, no list);
- **on its own Node**, the way node-problem-detector does: one condition per fault (True while it lasts,
  False with a ``No...`` reason after) and an Event on every change, for ``kubectl describe node``.

An agent writes only its own Node's status and Events and its own NodeFaults: no list, no watch (see
docs/nodes.md).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit.api.fault import SourceKind, component_fault_type
from kokpit.client import NODE, ApiError, Client, TransportError
from kokpit.nodes.driver import InstallState, RunState
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.faultreports import FaultReport, FaultReporter

__all__ = ["COMPONENT_DOWN", "DISK_FULL", "FAULT_TYPES", "READONLY_FS", "FaultChecker", "NodeFaultReporter",
           "NodeReporter", "fault_reports", "possible_reports", "reporter_of"]

log = logging.getLogger("kokpit.agent.faults")

DISK_FULL = "DiskFull"
READONLY_FS = "ReadonlyFilesystem"  # node-problem-detector's name for the same condition
COMPONENT_DOWN = "ComponentDown"
FAULT_TYPES = (DISK_FULL, READONLY_FS, COMPONENT_DOWN)
_REASON = {DISK_FULL: "DiskFull", READONLY_FS: "FilesystemIsReadOnly", COMPONENT_DOWN: "ComponentNotRunning"}
_NODE_FAULT_TYPE = {DISK_FULL: "disk-pressure", READONLY_FS: "readonly-filesystem"}
"""What the host-level faults are in the default fault catalog (``kokpit.operators.faults.catalog``)."""

FaultKey = tuple[str, str]
"""A NodeFault's identity on one node: (type, component)."""


def reporter_of(node: str) -> str:
    return f"node-agent/{node}"


@dataclass(frozen=True)
class FaultChecker:
    """Looks at one root: free space below ``min_free_percent`` or ``min_free_bytes`` is a full disk."""

    min_free_percent: float = 5.0
    min_free_bytes: int = 256 * 1024 * 1024

    def observe(self, root: str, state_dir: str, components: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            st = os.statvfs(root)
        except OSError as e:
            return {READONLY_FS: f"cannot stat {root}: {e.strerror}"}
        if st.f_blocks:
            free = st.f_bavail * st.f_frsize
            pct = 100.0 * st.f_bavail / st.f_blocks
            if pct < self.min_free_percent or free < self.min_free_bytes:
                out[DISK_FULL] = f"{root} has {free // (1024 * 1024)} MiB ({pct:.1f}%) free"
        if st.f_flag & os.ST_RDONLY:
            out[READONLY_FS] = f"{root} is mounted read-only"
        else:
            probe = os.path.join(state_dir, ".write-probe")
            try:
                os.makedirs(state_dir, exist_ok=True)
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.close(fd)
                os.unlink(probe)
            except OSError as e:
                if e.errno == errno.EROFS:
                    out[READONLY_FS] = f"{root} is read-only: {e.strerror}"
                elif e.errno == errno.ENOSPC and DISK_FULL not in out:
                    out[DISK_FULL] = f"{root}: {e.strerror}"
        down = sorted(f"{n} {c.version}" for n, c in components.items()
                      if c.install_state == InstallState.INSTALLED and c.run_state == RunState.STOPPED)
        if down:
            out[COMPONENT_DOWN] = "not running: " + ", ".join(down)
        return out


class NodeReporter:
    """Writes fault conditions onto the Node and Events about them (best effort: never raises)."""

    def __init__(self, client: Client, *, clock: Clock | None = None, host: str = "") -> None:
        self.client = client
        self.clock = clock or RealClock()
        self.recorder = EventRecorder(client, "kokpit-node-agent", host=host, clock=self.clock)
        self.reported: dict[str, dict[str, str]] = {}  # node → the faults last written

    async def report(self, node: str, faults: dict[str, str]) -> bool:
        """Make the Node's fault conditions say ``faults``; True when written (or nothing to write)."""
        before = self.reported.get(node)
        if before == faults:
            return True
        now = format_time(self.clock.now())
        conds = []
        for t in FAULT_TYPES:
            if t in faults:
                conds.append({"type": t, "status": "True", "reason": _REASON[t], "message": faults[t],
                              "lastHeartbeatTime": now, "lastTransitionTime": now})
            elif before is None or t in before:  # clear what we (may have) set
                conds.append({"type": t, "status": "False", "reason": f"No{t}",
                              "message": f"kokpit node-agent sees no {t}", "lastHeartbeatTime": now,
                              "lastTransitionTime": now})
        try:
            obj = await self.client.patch(NODE, node, {"status": {"conditions": conds}}, patch_type="strategic",
                                          subresource="status")
        except (ApiError, TransportError) as e:
            log.warning("cannot report faults of node %s: %s", node, e)
            return False
        for t, msg in faults.items():
            if (before or {}).get(t) != msg:
                await self.recorder.warning(obj, _REASON[t], msg)
        for t in (before or {}):
            if t not in faults:
                await self.recorder.normal(obj, f"No{t}", f"{t} cleared")
        self.reported[node] = dict(faults)
        return True


def fault_reports(faults: dict[str, str], components: dict[str, Any]) -> dict[FaultKey, tuple[str, str]]:
    """The NodeFaults the agent reports for what it sees: (type, component) → (reason, message)."""
    out: dict[FaultKey, tuple[str, str]] = {}
    for cond, ftype in _NODE_FAULT_TYPE.items():
        if cond in faults:
            out[(ftype, "")] = (_REASON[cond], faults[cond])
    for name, c in sorted(components.items()):
        if c.install_state == InstallState.INSTALLED and c.run_state == RunState.STOPPED:
            out[(component_fault_type(name), name)] = (_REASON[COMPONENT_DOWN], f"{name} {c.version} is not running")
    return out


def possible_reports(components: dict[str, Any]) -> set[FaultKey]:
    """Every NodeFault the agent could have reported for a host with these components."""
    return {(t, "") for t in _NODE_FAULT_TYPE.values()} | {(component_fault_type(n), n) for n in components}


class NodeFaultReporter:
    """Reports a host's faults to the event center as NodeFaults (see the module docstring); never raises."""

    def __init__(self, client: Client, *, ttl_seconds: int, clock: Clock | None = None) -> None:
        self.reporter = FaultReporter(client, clock=clock)
        self.ttl = ttl_seconds
        self.reported: dict[str, set[FaultKey]] = {}  # node → what it last reported (absent: not since start)

    async def report(self, node: str, faults: dict[FaultKey, tuple[str, str]], possible: set[FaultKey]) -> bool:
        """Report (refresh) every fault in ``faults`` and clear what was reported before and is gone; True when
        every write went through.  The first call after a start clears everything in ``possible`` not seen."""
        ok = True
        sent: set[FaultKey] = set()
        for (ftype, component), (reason, message) in sorted(faults.items()):
            try:
                await self.reporter.report(FaultReport(node, ftype, reporter_of(node), message=message[:1024],
                                                       reason=reason, component=component,
                                                       kind=SourceKind.AGENT, ttl_seconds=self.ttl))
                sent.add((ftype, component))
            except (ApiError, TransportError) as e:  # e.g. the catalog lacks the type: a 422 naming it
                ok = False
                log.warning("cannot report %s%s of node %s: %s", ftype, f"/{component}" if component else "", node, e)
        before = self.reported.get(node)
        for ftype, component in sorted((possible if before is None else before) - faults.keys()):
            try:
                await self.reporter.clear(node, ftype, reporter_of(node), message="the agent no longer sees it",
                                          component=component)
            except (ApiError, TransportError) as e:
                ok = False
                sent.add((ftype, component))  # clear it again on the next look
                log.warning("cannot clear %s of node %s: %s", ftype, node, e)
        self.reported[node] = sent
        return ok
