"""Ending a `kokpit up` fleet a test started, whatever state the test left it in: the `kokpit up` tests run
real fleets (an API server, kubelets, operators, business clusters as Pods), and a failed test must not
leave one running on a shared machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

__all__ = ["kill_leftovers", "procs_mentioning", "stop_fleet"]


def procs_mentioning(text: str) -> list[str]:
    """Command lines of live processes (other than this one) that mention ``text``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{d.name}: {cmd}")
    return found


def kill_leftovers(data_dir: Path) -> None:
    """SIGKILL the process group of every live process whose command line names ``data_dir``: what is left
    of a fleet whose `kokpit up` is gone (every process it starts is given its data dir)."""
    for line in procs_mentioning(str(data_dir)):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(line.split(":")[0]), signal.SIGKILL)


def stop_fleet(proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    """End a `kokpit up` (started in a session of its own) as a person would — SIGINT, 30 s to stop clean —
    then SIGKILL its session and whatever else of its fleet still runs."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    kill_leftovers(data_dir)
