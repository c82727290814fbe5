"""A small fleet for the rollout controller's end-to-end tests.

The meta API server (a real process) doubles as business cluster ``c1`` — its kubeconfig Secret points back
at it, as the cluster operator's would point at a business API server — with a simulator and the machine
operator (in-process: real implementations, short intervals) holding Machines at their final state.  The
rollout controller and the risk center are real processes (``kokpit rollout-controller``,
``kokpit risk-center``) that a test can kill -9 and start again; the CLI runs as a process too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.operators.cluster._e2e import cond as cond
from tests.operators.cluster._e2e import until as _until

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import SECRET, Client, Kind
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.machine import MACHINE, MPV, MachineOperator, OperatorOptions
from kokpit.runtime import Manager
from kokpit.simulator import Simulator, SimulatorOptions

Obj = dict[str, Any]
ROLLOUT = Kind("kokpit.io", "v1alpha1", "Rollout", "rollouts")
CLUSTER = Kind("kokpit.io", "v1alpha1", "Cluster", "clusters")
FAST = OperatorOptions(workers=8, fast_poll=0.05, slow_poll=0.5, retry_base=0.5, retry_cap=5.0,
                       progress_requeue=0.5, health_ttl=5.0, background_events=False)
NS = "default"


async def until(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    """Await ``fn()`` until it is truthy; fail naming ``what`` (and the last answer) after ``timeout`` (the
    cluster e2e tests' wait, with the longer default a fleet of real processes needs)."""
    return await _until(fn, what, timeout)


class Proc:
    """A kokpit command run as its own process (output in a log file), ended by the test."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        f = self.log.open("ab")
        self.p = subprocess.Popen([sys.executable, "-m", "kokpit", *self.args], stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        f.close()
        return self

    def kill9(self) -> None:
        if self.p is not None and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)

    def terminate(self) -> None:
        if self.p is not None and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        if self.p is not None and self.p.poll() is None:
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM every process at once, then wait for each (kill -9 after 10 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.stop()


@dataclass
class Fleet:
    meta: Client
    apiserver: ApiServerProcess
    sim: Simulator
    tmp: Path
    nodes: list[str]
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> str:
        return str(self.apiserver.kubeconfig)

    def start_controller(self) -> Proc:
        p = Proc(["rollout-controller", "--kubeconfig", self.kubeconfig, "--lease-namespace", NS],
                 self.tmp / "rollout-controller.log").start()
        self.procs["controller"] = p
        return p

    def start_center(self) -> Proc:
        p = Proc(["risk-center", "--kubeconfig", self.kubeconfig, "--no-leader-elect", "--gate-interval", "0.3",
                  "--probe-interval", "0.5"], self.tmp / "risk-center.log").start()
        self.procs["center"] = p
        return p

    def cli(self, *args: str, check: bool = True, exe: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """``kokpit ARGS --kubeconfig K`` (or ``exe ARGS`` with $KUBECONFIG, for kubectl)."""
        cmd = [*(exe or [sys.executable, "-m", "kokpit"]), *args]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        if exe is None:
            cmd += ["--kubeconfig", self.kubeconfig]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        if check and out.returncode != 0:
            raise AssertionError(f"{cmd} failed ({out.returncode}): {out.stdout}\n{out.stderr}")
        return out

    async def rollout(self, name: str) -> Obj:
        out: Obj = await self.meta.get(ROLLOUT, name, NS)
        return out

    async def wait_rollout(self, name: str, pred: Callable[[Obj], bool], what: str, timeout: float = 120.0) -> Obj:
        async def check() -> Obj | None:
            r = await self.rollout(name)
            return r if pred(r) else None
        try:
            out: Obj = await until(check, f"rollout {name}: {what}", timeout)
            return out
        except AssertionError as e:
            ctl = self.procs.get("controller")
            raise AssertionError(f"{e}\n--- controller log ---\n{ctl.tail() if ctl else ''}") from None

    async def packages(self) -> dict[str, list[str]]:
        return {m["metadata"]["name"]: sorted(m["spec"].get("packages") or [])
                for m in (await self.meta.list(MACHINE)).items}

    async def kubelets(self) -> dict[str, str]:
        """node -> the kubelet version it runs (Installed), "" otherwise."""
        out = {}
        for m in (await self.meta.list(MACHINE)).items:
            k = next((c for c in (m.get("status") or {}).get("components") or [] if c["name"] == "kubelet"), {})
            out[m["metadata"]["name"]] = k.get("version", "") if k.get("installState") == "Installed" and \
                k.get("runState") == "Running" else ""
        return out

    def installs(self, node: str, version: str) -> int:
        """How many times the simulated host completed an install of kubelet ``version`` (its action log)."""
        assert self.sim.book is not None
        return sum(1 for e in self.sim.book.hosts[node].log
                   if e["event"] == "installed" and e["component"] == "kubelet" and e["version"] == version)


async def make_fleet(apiserver: ApiServerProcess, tmp: Path, *, nodes: int = 4, install_seconds: float = 0.2,
                     prefix: str = "ro-") -> AsyncIterator[Fleet]:
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as meta:
        await install_crds(meta)
        raw = await asyncio.to_thread(Path(apiserver.kubeconfig).read_bytes)
        await meta.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": NS},
                                   "data": {"value": base64.b64encode(raw).decode()}})
        await meta.create(CLUSTER, {"metadata": {"name": "c1", "namespace": NS, "labels": {"env": "test"}},
                                    "spec": {"packageVersion": "v1"}})
        for name, comp, ver, deps in (("containerd-1.7", "containerd", "1.7.0", []),
                                      ("kubelet-1.30", "kubelet", "1.30.0", ["containerd"]),
                                      ("kubelet-1.31", "kubelet", "1.31.0", ["containerd"])):
            await meta.create(MPV, {"metadata": {"name": name},
                                    "spec": {"component": comp, "version": ver, "dependsOn": deps}})
        sim = Simulator(SimulatorOptions(nodes=nodes, driver_port=0, name_prefix=prefix, install_seconds=install_seconds,
                                         lease_period=2.0, data_dir=tmp / "sim"), meta)
        await sim.start()
        names = [f"{prefix}{i:05d}" for i in range(1, nodes + 1)]
        for i, n in enumerate(names):
            await meta.create(MACHINE, {"metadata": {"name": n, "labels": {"pool": "a", "zone": f"z{i % 2}"}},
                                        "spec": {"nodeName": n, "packages": ["containerd-1.7", "kubelet-1.30"]}})
        manager = Manager(meta, http_port=None, handle_signals=False)
        driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls)
        MachineOperator(manager, driver, FAST)
        task = asyncio.create_task(manager.run())
        fleet = Fleet(meta, apiserver, sim, tmp, names)
        try:
            await until(lambda: _all_at(fleet, "1.30.0"), "first installs", 90)
            fleet.start_center()
            fleet.start_controller()
            yield fleet
        finally:
            stop_all(list(fleet.procs.values()))
            manager.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await driver.close()
            await sim.stop()


async def _all_at(fleet: Fleet, version: str) -> bool:
    return set((await fleet.kubelets()).values()) == {version}


@pytest.fixture
async def fleet(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Fleet]:
    async for f in make_fleet(apiserver, tmp_path):
        yield f
