"""The child processes `kokpit up` runs: each in its own process group, restarted with backoff when it
exits on its own, and ended as a group so nothing it started outlives `kokpit up`.

A process group per child matters because the kubelet's Pods and the operators' helpers are grandchildren:
signalling the group reaches them even when the child itself is wedged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Child", "kill_group"]

log = logging.getLogger("kokpit.up")


def kill_group(pid: int, sig: int) -> bool:
    """Signal a process group; False when it is gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Child:
    """One supervised process; output goes to ``log_file``; ``on_restart`` hears about unexpected exits."""

    def __init__(self, name: str, argv: list[str], log_file: Path, *,
                 on_exit: Callable[[str, int, float], None] | None = None,
                 on_spawn: Callable[[str, int], None] | None = None,
                 backoff_base: float = 1.0, backoff_cap: float = 30.0, stable_after: float = 60.0) -> None:
        self.name = name
        self.argv = argv
        self.log_file = log_file
        self.on_exit = on_exit
        self.on_spawn = on_spawn
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stable_after = stable_after
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")  # a local file: opening it does not block in any way that matters
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        finally:
            out.close()
        if self.on_spawn is not None:
            self.on_spawn(self.name, proc.pid)
        return proc

    async def start(self) -> None:
        """Start the process now (raises if it cannot be spawned), then keep it running."""
        self.proc = await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _supervise(self) -> None:
        delay = self.backoff_base
        while True:
            assert self.proc is not None
            started = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            # the group may still hold grandchildren (Pods): end them before the replacement starts
            if self.proc.pid is not None and kill_group(self.proc.pid, signal.SIGKILL):
                await asyncio.sleep(0.1)
            if time.monotonic() - started > self.stable_after:
                delay = self.backoff_base
            self.restarts += 1
            if self.on_exit is not None:
                self.on_exit(self.name, code, delay)
            else:
                log.warning("%s exited with code %s; restarting in %.0fs (log: %s)", self.name, code, delay,
                            self.log_file)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            delay = min(self.backoff_cap, delay * 2)
            try:
                self.proc = await self._spawn()
            except OSError as e:
                log.error("cannot restart %s: %s", self.name, e)

    async def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL whatever is left of it."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout)
        # whatever remains of the group (the child, or grandchildren that ignored SIGTERM)
        kill_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 2.0)
        deadline = time.monotonic() + 2.0
        while _group_alive(proc.pid) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the kernel)
            await asyncio.sleep(0.05)

    def tail(self, lines: int = 3) -> str:
        """The last lines of the child's log (to explain an early exit)."""
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])
