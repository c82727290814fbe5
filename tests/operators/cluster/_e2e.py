"""Pieces the cluster e2e tests share: deadline waits, condition lookup, a free NodePort range, and the local
kubelet run in-process (ended with every process it started, whatever the test left behind)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import Client, NotFoundError
from kokpit.kubelet import Kubelet, KubeletOptions
from kokpit.operators.cluster import ClusterOperator, OperatorOptions
from kokpit.runtime import Manager

Obj = dict[str, Any]


async def until(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFoundError):
            last = await fn()
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def cond(obj: Obj, t: str) -> Obj:
    return next((dict(c) for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == t), {})


def free_range(n: int = 8) -> tuple[int, int]:
    """``n`` consecutive ports free right now (the operator picks its NodePorts among them)."""
    for _ in range(50):
        base = random.randint(43000, 48000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", p))
            return base, base + n - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def pids(data_dir: Path) -> dict[str, int]:
    """Pod name -> pid of its container, from the kubelet's state file."""
    try:
        raw = json.loads((data_dir / "kubelet-state.json").read_text())
    except FileNotFoundError:
        return {}
    return {p["name"]: c["pid"] for p in raw["pods"].values() for c in p["containers"].values()}


@contextlib.asynccontextmanager
async def local_kubelet(client: Client, data_dir: Path) -> AsyncIterator[Kubelet]:
    """The local kubelet with short backoffs, Ready; on the way out its Pods' processes are all ended."""
    kubelet = Kubelet(client, KubeletOptions(data_dir=data_dir, backoff_base=0.2, backoff_cap=1.0,
                                             sync_interval=0.1, lease_renew_interval=1.0, orphan_grace=3.0))
    task = asyncio.create_task(kubelet.run())
    try:
        await asyncio.wait_for(kubelet.wait_ready(), 20)
        yield kubelet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kubelet.close(stop_pods=True)
        for pid in pids(data_dir).values():  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def operator_stack(apiserver: ApiServerProcess, tmp: Path, opts: OperatorOptions,
                         field_manager: str = "cluster-e2e") -> AsyncIterator[Client]:
    """CRDs installed, the cluster operator with `opts` and the local kubelet running; all ended after."""
    client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager=field_manager)
    await install_crds(client)
    manager = Manager(client, http_port=None, handle_signals=False)
    ClusterOperator(manager, opts)
    try:
        async with local_kubelet(client, tmp / "kubelet"):
            mtask = asyncio.create_task(manager.run())
            try:
                await asyncio.wait_for(manager.synced.wait(), 10)
                yield client
            finally:
                manager.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(mtask, 10)
    finally:
        await client.close()
