"""The machine operator drives a Machine on a real Debian host through ``kokpit node-agent`` over mutual TLS
(issue 19): install, upgrade, rollback, a failing install, kill -9 of the agent mid-install, uninstall —
the Machine and MachinePackageVersion objects are the same ones the simulator serves; only the Machine's
``spec.driver`` says "agent"."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, Client, Kind
from kokpit.nodes.agent import SIMULATOR, RoutedDriver
from kokpit.nodes.mtls import TLSFiles
from kokpit.operators.machine import OperatorOptions, run_operator

from .conftest import DEMO, HOLD, POSTINST_STARTED, REPOSITORY, AgentProcess, FakeHost

# the first test to run builds the cached Debian roots (mmdebstrap, a few minutes on a fresh machine)
pytestmark = pytest.mark.timeout(1200)

MACHINE = Kind("kokpit.io", "v1alpha1", "Machine", "machines", namespaced=False)
MPV = Kind("kokpit.io", "v1alpha1", "MachinePackageVersion", "machinepackageversions", namespaced=False)
NODE_NAME = "demo-node"
FAST = OperatorOptions(workers=2, fast_poll=0.2, slow_poll=1.0, retry_base=0.5, retry_cap=3.0,
                       progress_requeue=0.5, health_ttl=5.0)


def mpv(version: str, pkg: str) -> dict[str, Any]:
    return {"metadata": {"name": f"demo-{version}"}, "spec": {
        "component": "demo", "version": version,
        "package": {"type": "deb", "name": DEMO, "version": pkg, "repository": REPOSITORY},
        "install": {"method": "package", "timeoutSeconds": 300},
        "config": {"files": [{"path": "/etc/kokpit-demo/demo.conf", "content": f"version={version}\n",
                              "mode": "0600", "owner": "root:root"}],
                   "sysctl": {"net.ipv4.ip_forward": "1"}},
        "healthCheck": {"type": "command", "command": ["test", "-f", f"/usr/share/{DEMO}/version"]}}}


async def wait_for(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def component(m: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (m.get("status") or {}).get("components") or [] if c["name"] == "demo"), {})


async def test_machine_operator_drives_a_debian_host_through_the_agent(
        apiserver: ApiServerProcess, agent: AgentProcess, fake_host: FakeHost,
        driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    def dpkg() -> str:
        r = fake_host.sh(f"dpkg-query -W -f='${{db:Status-Abbrev}}|${{Version}}' {DEMO}", check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        await c.create(NODE, {"metadata": {"name": NODE_NAME}, "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}})
        for v, p in (("1.0", "1.0-1"), ("2.0", "2.0-1"), ("3.0", "3.0-1")):
            await c.create(MPV, mpv(v, p))
        # the cluster's default is the simulator (not even configured here): this Machine asks for the agent
        driver = RoutedDriver(default=SIMULATOR, tls=driver_pki[1], agent_port=agent.port)
        op = asyncio.get_running_loop().create_task(
            run_operator(apiserver.kubeconfig, driver, FAST, http_port=None, handle_signals=False))

        async def at(version: str) -> dict[str, Any] | None:
            m = await c.get(MACHINE, NODE_NAME)
            comp = component(m)
            ok = comp.get("version") == version and comp.get("installState") == "Installed" \
                and comp.get("runState") == "Running"
            return m if ok else None

        async def set_packages(pkgs: list[str]) -> None:
            await c.patch(MACHINE, NODE_NAME, {"spec": {"packages": pkgs}})

        try:
            await c.create(MACHINE, {"metadata": {"name": NODE_NAME}, "spec": {
                "nodeName": NODE_NAME, "packages": ["demo-1.0"], "driver": {"name": "agent"}}})
            await wait_for(lambda: at("1.0"), "demo 1.0 installed by the operator")
            assert dpkg() == "ii |1.0-1"
            assert fake_host.sh("cat /etc/kokpit-demo/demo.conf").stdout == "version=1.0\n"
            assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "1"

            await set_packages(["demo-2.0"])  # upgrade
            await wait_for(lambda: at("2.0"), "upgrade to 2.0")
            assert dpkg() == "ii |2.0-1"
            await set_packages(["demo-1.0"])  # rollback: pointing back at the previous version
            await wait_for(lambda: at("1.0"), "rollback to 1.0")
            assert dpkg() == "ii |1.0-1"

            await set_packages(["demo-3.0"])  # its postinst fails: Failed with dpkg's words, host on 1.0

            async def failed() -> dict[str, Any] | None:
                comp = component(await c.get(MACHINE, NODE_NAME))
                return comp if comp.get("installState") == "Failed" else None

            comp = await wait_for(failed, "demo 3.0 failing")
            assert "post-installation script subprocess returned error exit status 1" in comp["message"], comp
            assert dpkg() == "ii |1.0-1" and fake_host.sh("dpkg --audit").stdout.strip() == ""

            # kill -9 of the agent while the operator's 2.0 install is configuring; restart converges
            fake_host.sh(f"touch /{HOLD}; rm -f /{POSTINST_STARTED}")
            await set_packages(["demo-2.0"])
            await wait_for(lambda: asyncio.sleep(0, fake_host.sh(f"test -e /{POSTINST_STARTED}",
                                                                 check=False).returncode == 0),
                           "the 2.0 postinst running")
            agent.kill9()
            fake_host.sh(f"rm -f /{HOLD}")
            agent.start()
            await wait_for(lambda: at("2.0"), "2.0 after the agent's restart")
            assert dpkg() == "ii |2.0-1" and fake_host.sh("dpkg --audit").stdout.strip() == ""

            await set_packages([])  # uninstall

            async def removed() -> bool:
                return not component(await c.get(MACHINE, NODE_NAME)) and not dpkg().startswith("ii")

            await wait_for(removed, "demo uninstalled")
            assert fake_host.sh("test -e /etc/kokpit-demo/demo.conf", check=False).returncode != 0
        finally:
            op.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await op
