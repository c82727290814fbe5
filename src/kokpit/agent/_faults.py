"""Faults the agent sees on its host (disk full, read-only filesystem, a component down) and how it reports
them: as conditions on its own Node and Warning Events, the way node-problem-detector does.

This is the agent's side of fault *discovery* (the seed's "agent reports"): until the fault self-recovery
issue defines a NodeFault path, the report is the Node condition (one type per fault, True while it lasts,
False with a "...Cleared" reason after) plus an Event on every change — both readable by any detector or
person with ``kubectl describe node``.  An agent writes only its own Node's status and Events: no list, no
watch (see docs/nodes.md).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit.client import NODE, ApiError, Client, TransportError
from kokpit.nodes.driver import InstallState, RunState
from kokpit.runtime.events import EventRecorder

__all__ = ["COMPONENT_DOWN", "DISK_FULL", "FAULT_TYPES", "READONLY_FS", "FaultChecker", "NodeReporter"]

log = logging.getLogger("kokpit.agent.faults")

DISK_FULL = "DiskFull"
READONLY_FS = "ReadonlyFilesystem"  # node-problem-detector's name for the same condition
COMPONENT_DOWN = "ComponentDown"
FAULT_TYPES = (DISK_FULL, READONLY_FS, COMPONENT_DOWN)
_REASON = {DISK_FULL: "DiskFull", READONLY_FS: "FilesystemIsReadOnly", COMPONENT_DOWN: "ComponentNotRunning"}


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
