"""A business control plane in one test process: the real API server (a subprocess), the simulator
playing kubelets, and the scheduler and controller-manager on their own clients and Managers, exactly as
their processes run them (leader election included)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, NODE, Client
from kokpit.controllermanager import ControllerManagerOptions, build
from kokpit.controllermanager.nodelifecycle import NodeLifecycleOptions
from kokpit.controllermanager.podgc import PodGCOptions
from kokpit.runtime import LeaderElectionConfig, Manager
from kokpit.scheduler import Scheduler
from kokpit.simulator import Simulator, SimulatorOptions

T = TypeVar("T")
_ids = itertools.count(1)


async def eventually(fn: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 20.0,
                     what: str = "condition") -> T:
    """Poll ``fn`` until ``check`` holds (deadline, never a blind sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if check(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@dataclass
class ControlPlane:
    client: Client
    sim: Simulator | None = None
    scheduler: Scheduler | None = None
    managers: list[tuple[Manager, asyncio.Task[None], Client]] = field(default_factory=list)

    restart_cm: Callable[..., Awaitable[None]] | None = None

    @property
    def nodes(self) -> list[str]:
        assert self.sim is not None and self.sim.book is not None
        return list(self.sim.book.hosts)


async def _manager(srv: ApiServerProcess, lease: str) -> tuple[Manager, Client]:
    c = Client.from_kubeconfig(srv.kubeconfig)
    le = LeaderElectionConfig(name=lease, namespace="kube-system", lease_duration=3, renew_deadline=2,
                              retry_period=0.5)
    return Manager(c, leader_election=le, http_port=None, handle_signals=False), c


@pytest.fixture
async def plane(shared_apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ControlPlane]]]:
    client = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    cp = ControlPlane(client)

    async def start(nodes: int = 3, controllers: list[str] | None = None,
                    node_lifecycle: NodeLifecycleOptions | None = None, pod_gc: PodGCOptions | None = None,
                    **sim_kw: Any) -> ControlPlane:
        prefix = f"cm{next(_ids)}-"
        cp.sim = Simulator(SimulatorOptions(nodes=nodes, name_prefix=prefix, driver_port=0, lease_period=0.5,
                                            data_dir=tmp_path / "sim", **sim_kw), client)
        await cp.sim.start()
        for other in (await client.list(NODE)).items:  # earlier tests' nodes: this cluster has only these
            if other["metadata"]["name"] not in cp.nodes:
                await client.delete(NODE, other["metadata"]["name"])
        m, c = await _manager(shared_apiserver, f"kube-scheduler-{prefix}x")
        cp.scheduler = Scheduler(m)
        cp.managers.append((m, asyncio.get_running_loop().create_task(m.run()), c))
        m2, c2 = await _manager(shared_apiserver, f"kube-controller-manager-{prefix}x")
        opts = ControllerManagerOptions()
        if controllers is not None:
            opts.controllers = controllers
        if node_lifecycle is not None:
            opts.node_lifecycle = node_lifecycle
        if pod_gc is not None:
            opts.pod_gc = pod_gc
        build(m2, opts)
        cp.managers.append((m2, asyncio.get_running_loop().create_task(m2.run()), c2))

        async def restart_cm(node_lifecycle: NodeLifecycleOptions | None = None) -> None:
            """Stop the controller-manager (all its memory goes) and start a fresh one on the same Lease
            (with other node lifecycle options, e.g. a new risk-center client, when given)."""
            if node_lifecycle is not None:
                opts.node_lifecycle = node_lifecycle
            _m_old, task_old, c_old = cp.managers.pop()
            task_old.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task_old, 10)
            await c_old.close()
            m_new, c_new = await _manager(shared_apiserver, f"kube-controller-manager-{prefix}x")
            build(m_new, opts)
            cp.managers.append((m_new, asyncio.get_running_loop().create_task(m_new.run()), c_new))

        cp.restart_cm = restart_cm
        return cp

    try:
        yield start
    finally:
        for m, task, c in cp.managers:
            m.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await c.close()
        if cp.sim is not None:
            await cp.sim.stop()
        await client.close()


@pytest.fixture
async def namespace(plane: Any, shared_apiserver: ApiServerProcess) -> AsyncIterator[str]:
    name = f"cm-ns-{next(_ids)}"
    c = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    try:
        await c.create(NAMESPACE, {"metadata": {"name": name}})
        yield name
    finally:
        await c.close()
