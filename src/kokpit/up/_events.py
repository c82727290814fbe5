"""Warning Events for the processes `kokpit up` supervises: a component that exits on its own (and so keeps
failing to start, or crashes) is something a person should see beside the fleet's other Events, not only a
line on `kokpit up`'s screen that scrolls away.

They are recorded on Node ``local`` — the machine `kokpit up` runs its components on, as kubelet records
what happens to a node's own daemons on the Node — with kubelet's reason for a restart loop, ``BackOff``;
repeats aggregate into one Event's count.  The meta API server cannot report its own exits; its restarts
stay on the screen and in ``logs/apiserver.log``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from kokpit._lib.aio import cancel_and_wait
from kokpit.client import Client
from kokpit.runtime import EventRecorder

__all__ = ["NODE", "ComponentEvents"]

NODE = "local"  # the local kubelet's Node: this machine


class ComponentEvents:
    """``exited(...)`` from a supervisor's callback (sync) records the Event in the background."""

    def __init__(self) -> None:
        self.recorder: EventRecorder | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def bind(self, client: Client) -> None:
        """Record through ``client`` (the meta cluster's) from now on; exits before that are not recorded."""
        self.recorder = EventRecorder(client, "kokpit-up", host=socket.gethostname())

    def exited(self, name: str, code: int, log_file: Path) -> None:
        if self.recorder is None or name == "apiserver":
            return
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
        message = f"{name} exited with code {code}; kokpit up restarts it with back-off (log: {log_file})"
        task = asyncio.get_running_loop().create_task(self.recorder.warning(node, "BackOff", message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self, timeout: float = 2.0) -> None:
        """Give Events still being recorded ``timeout`` seconds, then drop them (best effort, as Events are)."""
        self.recorder = None
        pending = list(self._pending)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            await cancel_and_wait(list(late))
