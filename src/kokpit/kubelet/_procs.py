"""Local processes the kubelet started, and the state file that lets a restarted kubelet find them again.

A pid alone is not an identity (pids are reused), so every process is recorded with its start time from
``/proc/<pid>/stat`` (field 22, clock ticks since boot); a restarted kubelet adopts a recorded process only if
both still match.  A process the kubelet started itself is a ``Popen`` and its exit code is known; an adopted
one is watched through ``/proc`` (and reaped if it happens to be our child), its exit code then unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ContainerRecord", "PodRecord", "ProcessHandle", "StateFile", "process_start_time", "wait_ended"]

UNKNOWN_EXIT = 255


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such (live) process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    rest = raw[raw.rfind(")") + 2:].split()
    if rest and rest[0] in ("Z", "X"):
        return None  # a zombie has ended
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


class ProcessHandle:
    """One container process: started here (``popen``) or adopted after a kubelet restart (pid only)."""

    def __init__(self, pid: int, start_time: int | None, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.start_time = start_time
        self.popen = popen
        self._exit: int | None = None

    @classmethod
    def spawn(cls, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> ProcessHandle:
        """Start ``argv`` in a session of its own (so signals to the kubelet's group never reach it and the
        whole group can be ended), stdout and stderr appended to ``log_path``."""
        with open(log_path, "ab") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, cwd=cwd, start_new_session=True)
        return cls(p.pid, process_start_time(p.pid), p)

    @classmethod
    def adopt(cls, pid: int, start_time: int) -> ProcessHandle | None:
        """The recorded process if it still runs (same pid and same start time), else None."""
        if process_start_time(pid) != start_time:
            cls._reap(pid)
            return None
        return cls(pid, start_time)

    @staticmethod
    def _reap(pid: int) -> int | None:
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if wpid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        """The exit code once ended (negative: killed by that signal; 255 when unknown), else None."""
        if self._exit is not None:
            return self._exit
        if self.popen is not None:
            self._exit = self.popen.poll()
            return self._exit
        if process_start_time(self.pid) == self.start_time and self.start_time is not None:
            return None
        code = self._reap(self.pid)
        self._exit = code if code is not None else UNKNOWN_EXIT
        return self._exit

    def signal(self, sig: int) -> None:
        """Signal the process group (the container's whole process tree), falling back to the pid."""
        if self.poll() is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


async def wait_ended(handles: list[ProcessHandle], timeout: float, poll: float = 0.05) -> bool:
    """Wait up to ``timeout`` seconds for every process to end; True when they all did."""
    for _ in range(max(1, int(timeout / poll))):
        if all(h.poll() is not None for h in handles):
            return True
        await asyncio.sleep(poll)
    return all(h.poll() is not None for h in handles)


@dataclass
class ContainerRecord:
    pid: int
    start_time: int
    started_at: str
    restart_count: int = 0


@dataclass
class PodRecord:
    namespace: str
    name: str
    uid: str
    containers: dict[str, ContainerRecord] = field(default_factory=dict)


class StateFile:
    """``DIR/kubelet-state.json``: the processes this kubelet runs, per Pod uid, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, PodRecord]:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        out: dict[str, PodRecord] = {}
        for uid, p in (raw.get("pods") or {}).items():
            containers = {name: ContainerRecord(**c) for name, c in (p.get("containers") or {}).items()}
            out[uid] = PodRecord(p["namespace"], p["name"], uid, containers)
        return out

    def save(self, pods: dict[str, PodRecord]) -> None:
        data = {"pods": {uid: asdict(p) for uid, p in pods.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
