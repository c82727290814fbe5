"""Fixtures for the risk center's integration tests: a real API server with the CRDs and two Clusters, and
an in-process risk center that a test can stop and start again."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, SECRET, Client
from kokpit.operators.risk import CLUSTER, CenterOptions, run_center
from kokpit.runtime.permits import RISK_POLICY, PermitClient

Obj = dict[str, Any]
FAST = CenterOptions(gate_interval=0.2, probe_interval=0.3, probe_timeout=5.0, status_interval=0.2,
                     observe_interval=0.3, resync=2.0)


async def eventually(fn: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    """Await ``fn()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Center:
    """An in-process risk center (no leader election unless asked) that can be stopped and restarted."""

    def __init__(self, kubeconfig: Path, opts: CenterOptions = FAST) -> None:
        self.kubeconfig = kubeconfig
        self.opts = opts
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Center:
        self.task = asyncio.get_running_loop().create_task(run_center(
            self.kubeconfig, self.opts, http_port=None, handle_signals=False, leader_election=False))
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest.fixture
async def meta(apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as c:
        await install_crds(c)
        for name, labels in (("c1", {"env": "prod"}), ("c2", {"env": "dev"})):
            await c.create(CLUSTER, {"metadata": {"name": name, "namespace": "default", "labels": labels},
                                     "spec": {"packageVersion": "v1"}})
        yield c


async def policy(c: Client, name: str, **spec: Any) -> Obj:
    spec.setdefault("scope", {"allClusters": True})
    out: Obj = await c.create(RISK_POLICY, {"metadata": {"name": name}, "spec": spec})
    return out


def permits(c: Client, cluster: str = "c1", holder: str = "test", ttl: int = 300) -> PermitClient:
    return PermitClient(c, namespace="default", cluster=cluster, holder=holder, ttl_seconds=ttl)


async def business_is_meta(c: Client, apiserver: ApiServerProcess, cluster: str, nodes: int,
                           down: tuple[int, ...] = (), cordoned: tuple[int, ...] = ()) -> None:
    """Make the meta server double as business cluster ``cluster``: its kubeconfig Secret points back at
    it, and it gets ``nodes`` Nodes (``down`` NotReady, ``cordoned`` unschedulable)."""
    raw = await asyncio.to_thread(Path(apiserver.kubeconfig).read_bytes)
    await c.create(SECRET, {"metadata": {"name": f"{cluster}-kubeconfig", "namespace": "default"},
                            "data": {"value": base64.b64encode(raw).decode()}})
    for i in range(nodes):
        await c.create(NODE, {"metadata": {"name": f"n{i}", "labels": {"pool": "a" if i % 2 else "b"}},
                              "spec": {"unschedulable": i in cordoned}})
        await c.patch(NODE, f"n{i}", {"status": {"conditions": [
            {"type": "Ready", "status": "False" if i in down else "True", "reason": "Test"}]}},
            subresource="status")
