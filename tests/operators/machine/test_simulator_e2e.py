"""End to end: embedded API server + the real node simulator + the machine operator.

Most flows run the operator in-process (an asyncio task, stopped at the end); the crash test runs it as a
``kokpit machine-operator`` subprocess and kills it with SIGKILL mid-upgrade.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, NODE, Client
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.simulator import Simulator, SimulatorOptions

from .test_operator_integration import FAST, Env, cond, running_operator, wait_for

Obj = dict[str, Any]
NODES = ["e2e-00001", "e2e-00002"]


@contextlib.asynccontextmanager
async def simulator(apiserver: ApiServerProcess, data_dir: Path, *, nodes: int = 2,
                    install_seconds: float = 0.1) -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorOptions(kubeconfig=Path(apiserver.kubeconfig), nodes=nodes, driver_port=0,
                                     name_prefix="e2e-", install_seconds=install_seconds, lease_period=2.0,
                                     data_dir=data_dir))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def _stack(env: Env) -> None:
    await env.mpv("containerd-1.7", "containerd", "1.7.0")
    await env.mpv("containerd-1.8", "containerd", "1.8.0")
    await env.mpv("kubelet-1.30", "kubelet", "1.30.0", "containerd")
    await env.mpv("kubelet-1.31", "kubelet", "1.31.0", "containerd")
    await env.mpv("sysctl-v1", "sysctl", "v1")


async def kubelet_version(client: Client, node: str) -> str:
    n = await client.get(NODE, node)
    return str(n["status"]["nodeInfo"]["kubeletVersion"])


async def test_fleet_converges_gates_upgrades_and_recovers(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with simulator(apiserver, tmp_path / "sim") as sim, \
            running_operator(apiserver, SimulatorDriver(sim.driver_url, tls=sim.client_tls), FAST) as env:
        c = env.client
        await _stack(env)
        for n in NODES:
            await env.set_machine(n, ["containerd-1.7", "kubelet-1.30", "sysctl-v1"])
        for n in NODES:
            m = await env.wait_cond(n, "Ready", "True", timeout=20)
            assert {x["installState"] for x in m["status"]["components"]} == {"Installed"}
            assert {x["runState"] for x in m["status"]["components"]} == {"Running"}
            await env.wait_schedulable(n, True)
            await wait_for(lambda n=n: _eq(kubelet_version(c, n), "v1.30.0"), f"{n} kubeletVersion v1.30.0")
        n1, n2 = NODES
        # readiness gate: no report → cordoned; True → schedulable; False → cordoned again
        await env.set_machine(n1, ["containerd-1.7", "kubelet-1.30", "sysctl-v1"], gates=["StorageReady"])
        await env.wait_schedulable(n1, False)
        cm = {"metadata": {"name": f"csi-{n1}", "namespace": "default",
                           "labels": {"kokpit.io/node": n1, "kokpit.io/condition-source": "csi"}},
              "data": {"StorageReady": "True"}}
        await c.create(CONFIGMAP, cm)
        await env.wait_schedulable(n1, True, timeout=5)
        await c.patch(CONFIGMAP, f"csi-{n1}", {"data": {"StorageReady": '{"status": "False", "reason": "NoDisk"}'}},
                      "default")
        m = await env.wait_cond(n1, "ReadinessGatesMet", "False", "GateNotTrue")
        assert "NoDisk" in cond(m, "ReadinessGatesMet")["message"]
        await env.wait_schedulable(n1, False, timeout=5)
        # swap kubelet: the node upgrades and its Node's kubeletVersion follows
        await env.set_machine(n2, ["containerd-1.7", "kubelet-1.31", "sysctl-v1"])
        await wait_for(lambda: _eq(kubelet_version(c, n2), "v1.31.0"), "kubeletVersion v1.31.0", 20)
        await env.wait_cond(n2, "Ready", "True")
        # remove a component: uninstalled
        await env.set_machine(n2, ["containerd-1.7", "kubelet-1.31"])

        async def gone() -> bool:
            m = await env.machine(n2)
            return "sysctl" not in {x["name"] for x in m["status"]["components"]} and \
                cond(m, "Ready").get("status") == "True"
        await wait_for(gone, "sysctl uninstalled")
        assert sim.book is not None and "sysctl" not in sim.book.hosts[n2].components
        # injected install failure: Failed with a message; lifted → recovers
        drv = SimulatorDriver(sim.driver_url, tls=sim.client_tls)
        try:
            await drv.fault(n2, "install-failure", "containerd", "1.8.0")
            await env.set_machine(n2, ["containerd-1.8", "kubelet-1.31"])
            m = await env.wait_cond(n2, "ComponentsReady", "False", "InstallFailed")
            comp = {x["name"]: x for x in m["status"]["components"]}["containerd"]
            assert comp["installState"] == "Failed" and "configured to fail" in comp["message"]
            await drv.fault(n2, "recover")
        finally:
            await drv.close()

        async def recovered() -> bool:
            m = await env.machine(n2)
            comps = {x["name"]: x for x in m["status"]["components"]}
            return comps["containerd"]["version"] == "1.8.0" and cond(m, "Ready").get("status") == "True"
        await wait_for(recovered, "containerd 1.8 after the failure was lifted", 20)
        await env.wait_schedulable(n2, True)


async def _eq(aw: Any, want: str) -> bool:
    return bool(await aw == want)


async def test_operator_kill9_mid_upgrade_converges_without_repeating(apiserver: ApiServerProcess,
                                                                        tmp_path: Path) -> None:
    async with simulator(apiserver, tmp_path / "sim", install_seconds=0.6) as sim:
        async with running_operator(apiserver, SimulatorDriver(sim.driver_url, tls=sim.client_tls), FAST) as env:
            await _stack(env)
            for n in NODES:
                await env.set_machine(n, ["containerd-1.7", "kubelet-1.30"])
            for n in NODES:
                await env.wait_cond(n, "Ready", "True", timeout=20)
        client = Client.from_kubeconfig(apiserver.kubeconfig)
        env = Env(client, None, None)  # type: ignore[arg-type]
        cmd = [sys.executable, "-m", "kokpit.cli.main", "machine-operator", "--kubeconfig",
               str(apiserver.kubeconfig), "--driver-url", sim.driver_url, "--fast-poll", "0.05",
               "--driver-tls-dir", str(sim.client_tls.ca_file.parent) if sim.client_tls else "",
               "--slow-poll", "0.5"]
        logs = tmp_path / "operator.log"

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(cmd, stdout=logs.open("ab"), stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})

        proc = start()
        try:
            # upgrade both components: containerd first, then kubelet; kill while containerd is upgrading
            for n in NODES:
                await env.set_machine(n, ["containerd-1.8", "kubelet-1.31"])
            await env.wait_cond(NODES[0], "ComponentsReady", "False", "Upgrading", timeout=20)
            assert sim.book is not None
            assert sim.book.hosts[NODES[0]].components["kubelet"].attempts == 1, "killed mid-plan"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            proc = start()
            for n in NODES:
                m = await env.wait_cond(n, "Ready", "True", timeout=30)
                comps = {x["name"]: x["version"] for x in m["status"]["components"]}
                assert comps == {"containerd": "1.8.0", "kubelet": "1.31.0"}
            assert sim.book is not None
            for n in NODES:
                attempts = {name: c.attempts for name, c in sim.book.hosts[n].components.items()}
                assert attempts == {"containerd": 2, "kubelet": 2}, (n, attempts, logs.read_text()[-3000:])
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            await client.close()
