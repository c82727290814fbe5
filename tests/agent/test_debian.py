"""The node agent against a real Debian root (issue 19): apt/dpkg at exact versions from a local repository,
config files and sysctls, rollback, failure text from the package manager, kill -9 mid-install, bad input.

Everything runs for real: mmdebstrap's root, dpkg-deb's packages, apt-get in a chroot, sysctls in a private
network namespace, mutual TLS between the driver and the agent process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from kokpit.nodes import ComponentAction, ComponentSpec, ComponentState, DriverError, InstallState, RunState
from kokpit.nodes.agent import AgentDriver
from kokpit.nodes.mtls import TLSFiles

from .conftest import DEMO, HOLD, POSTINST_STARTED, REPOSITORY, AgentProcess, FakeHost

# the first test to run builds the cached Debian roots (mmdebstrap, a few minutes on a fresh machine)
pytestmark = pytest.mark.timeout(1200)

NODE = "demo-node"
SYSCTL = "net.ipv4.ip_forward"


def demo(version: str, pkg: str, *, sysctl: str = "1", extra: dict[str, Any] | None = None) -> ComponentSpec:
    return ComponentSpec(
        name="demo", version=version, source=f"demo-{version}",
        package={"type": "deb", "name": DEMO, "version": pkg, "repository": REPOSITORY},
        install={"method": "package", "timeoutSeconds": 300},
        config={"files": [{"path": "/etc/kokpit-demo/demo.conf", "content": f"version={version}\n",
                           "mode": "0640", "owner": "root:adm"}],
                "sysctl": {SYSCTL: sysctl}},
        health_check={"type": "command", "command": ["test", "-f", f"/usr/share/{DEMO}/version"]},
        **(extra or {}))


def driver_for(agent: AgentProcess, client: TLSFiles) -> AgentDriver:
    return AgentDriver(lambda node: agent.url, tls=client)


async def wait_for(driver: AgentDriver, pred: Callable[[ComponentState], bool], what: str,
                   timeout: float = 240.0, component: str = "demo") -> ComponentState:
    deadline = time.monotonic() + timeout
    last: ComponentState | None = None
    while time.monotonic() < deadline:
        st = await driver.state(NODE)
        last = st.components.get(component)
        if last is not None and pred(last):
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last state {last}")


def installed(version: str) -> Callable[[ComponentState], bool]:
    return lambda c: c.install_state == InstallState.INSTALLED and c.version == version


def _host_forward() -> str:
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read()


def dpkg_version(host: FakeHost) -> str:
    r = host.sh(f"dpkg-query -W -f='${{db:Status-Abbrev}}|${{Version}}' {DEMO}", check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


async def test_install_upgrade_rollback_uninstall(agent: AgentProcess, fake_host: FakeHost,
                                                  driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    host_forward = _host_forward()
    assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "0"
    d = driver_for(agent, driver_pki[1])
    try:
        st = await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        assert st.install_state == InstallState.INSTALLING and st.target_version == "1.0"
        st = await wait_for(d, installed("1.0"), "1.0 installed")
        assert st.run_state == RunState.RUNNING
        assert dpkg_version(fake_host) == "ii |1.0-1"
        # the config file: content, mode and owner; the sysctl: in the kernel (its netns) and persisted
        assert fake_host.sh("cat /etc/kokpit-demo/demo.conf").stdout == "version=1.0\n"
        assert fake_host.sh("stat -c '%a %U %G' /etc/kokpit-demo/demo.conf").stdout.strip() == "640 root adm"
        assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "1"
        assert SYSCTL in fake_host.sh("cat /etc/sysctl.d/90-kokpit-demo.conf").stdout
        assert f"{SYSCTL}=1" in st.message  # reported back
        assert _host_forward() == host_forward  # this machine untouched
        details = await d._client(NODE)._call("GET", f"/v1/nodes/{NODE}/components/demo", None, "details")
        cfg = details.data["config"]
        assert cfg["files"][0]["matches"] and cfg["files"][0]["mode"] == "0640"
        assert cfg["sysctl"][SYSCTL] == {"want": "1", "have": "1"}
        health = await d.health(NODE, "demo")
        assert health.healthy, health

        # idempotent: the same install again changes nothing and starts nothing
        before = fake_host.sh("stat -c %Y /var/lib/kokpit-agent/components/demo.json").stdout
        again = await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        assert again.install_state == InstallState.INSTALLED and again.version == "1.0"
        assert fake_host.sh("stat -c %Y /var/lib/kokpit-agent/components/demo.json").stdout == before

        # upgrade, then roll back (an install of the previous version: a downgrade, allowed explicitly)
        st = await d.start(NODE, ComponentAction.INSTALL, demo("2.0", "2.0-1", sysctl="0"))
        assert st.install_state == InstallState.UPGRADING
        await wait_for(d, installed("2.0"), "2.0 installed")
        assert dpkg_version(fake_host) == "ii |2.0-1"
        assert fake_host.sh("cat /etc/kokpit-demo/demo.conf").stdout == "version=2.0\n"
        assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "0"
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        await wait_for(d, installed("1.0"), "rolled back to 1.0")
        assert dpkg_version(fake_host) == "ii |1.0-1"
        assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "1"
        # a rollback refused when downgrades are not allowed: Failed with the reason, 1.0 stays
        await d.start(NODE, ComponentAction.INSTALL, demo("2.0", "2.0-1"))
        await wait_for(d, installed("2.0"), "2.0 again")
        no_down = demo("1.0", "1.0-1")
        no_down = ComponentSpec(**{**no_down.__dict__, "install": {"method": "package", "allowDowngrade": False}})
        await d.start(NODE, ComponentAction.INSTALL, no_down)
        failed = await wait_for(d, lambda c: c.install_state == InstallState.FAILED, "downgrade refused")
        assert "allowDowngrade is false" in failed.message and failed.version == "2.0"
        assert dpkg_version(fake_host) == "ii |2.0-1"

        # uninstall: package, config file and persisted sysctl gone
        st = await d.start(NODE, ComponentAction.UNINSTALL, demo("2.0", "2.0-1"))
        deadline = time.monotonic() + 240
        while "demo" in (await d.state(NODE)).components:
            assert time.monotonic() < deadline, "uninstall did not finish"
            await asyncio.sleep(0.3)
        assert dpkg_version(fake_host).startswith("rc") or dpkg_version(fake_host) == ""
        assert fake_host.sh("test -e /etc/kokpit-demo/demo.conf", check=False).returncode != 0
        assert fake_host.sh("test -e /etc/sysctl.d/90-kokpit-demo.conf", check=False).returncode != 0
        gone = await d.start(NODE, ComponentAction.UNINSTALL, demo("2.0", "2.0-1"))  # idempotent
        assert gone.install_state == InstallState.PENDING
    finally:
        await d.close()


async def test_failing_install_reports_dpkg_error_and_keeps_host_consistent(
        agent: AgentProcess, fake_host: FakeHost, driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    d = driver_for(agent, driver_pki[1])
    try:
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        await wait_for(d, installed("1.0"), "1.0 installed")
        # 3.0's postinst fails: dpkg's own words come back, and the host goes back to 1.0
        await d.start(NODE, ComponentAction.INSTALL, demo("3.0", "3.0-1"))
        st = await wait_for(d, lambda c: c.install_state == InstallState.FAILED, "3.0 failed")
        assert "post-installation script subprocess returned error exit status 1" in st.message, st.message
        assert st.target_version == "3.0"
        assert dpkg_version(fake_host) == "ii |1.0-1"
        assert fake_host.sh("dpkg --audit").stdout.strip() == ""
        # a version the repository does not have: apt's message, nothing changed
        await d.start(NODE, ComponentAction.INSTALL, demo("9.9", "9.9-1"))
        st = await wait_for(d, lambda c: c.install_state == InstallState.FAILED and c.target_version == "9.9",
                            "9.9 failed")
        assert "Version '9.9-1' for 'kokpit-demo' was not found" in st.message, st.message
        assert dpkg_version(fake_host) == "ii |1.0-1"
        # and the failure is not sticky: asking for 1.0 again reports it Installed
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        await wait_for(d, installed("1.0"), "back to 1.0")
    finally:
        await d.close()


async def test_kill9_mid_install_converges_after_restart(
        agent: AgentProcess, fake_host: FakeHost, driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    d = driver_for(agent, driver_pki[1])
    try:
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0", "1.0-1"))
        await wait_for(d, installed("1.0"), "1.0 installed")
        fake_host.sh(f"touch /{HOLD}; rm -f /{POSTINST_STARTED}")
        await d.start(NODE, ComponentAction.INSTALL, demo("2.0", "2.0-1"))
        deadline = time.monotonic() + 240
        while fake_host.sh(f"test -e /{POSTINST_STARTED}", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the 2.0 postinst never started"
            await asyncio.sleep(0.2)
        agent.kill9()  # dpkg is killed in the middle of configuring 2.0
        assert dpkg_version(fake_host).startswith(("iF", "iU", "iH")), dpkg_version(fake_host)
        assert fake_host.sh("dpkg --audit").stdout.strip() != ""
        fake_host.sh(f"rm -f /{HOLD}")
        agent.start()  # same port; it reads its intent from the host and looks at dpkg
        st = await wait_for(d, installed("2.0"), "2.0 installed after the restart")
        assert st.install_state == InstallState.INSTALLED
        assert dpkg_version(fake_host) == "ii |2.0-1"
        assert fake_host.sh("dpkg --audit").stdout.strip() == ""
        assert fake_host.sh("cat /etc/kokpit-demo/demo.conf").stdout == "version=2.0\n"
    finally:
        await d.close()


async def test_bad_input_refused_and_nothing_changed(agent: AgentProcess, fake_host: FakeHost,
                                                     driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    d = driver_for(agent, driver_pki[1])
    fake_host.sh("ln -s shadow /etc/kokpit-link")  # a config path that looks fine but is /etc/shadow
    shadow = fake_host.sh("sha256sum /etc/shadow").stdout
    bad = [
        (demo("1.0", "1.0-1", extra=None).__class__(
            name="demo", version="1.0", package={"type": "deb", "name": DEMO, "version": "1.0-1"},
            config={"sysctl": {"net.ipv4.no_such_knob": "1"}}), "no such sysctl"),
        (ComponentSpec(name="demo", version="1.0", install={"method": "config"},
                       config={"files": [{"path": "/etc/kokpit-link", "content": "root::0:0:::::\n"}]}),
         "may not replace"),
        (ComponentSpec(name="demo", version="1.0", install={"method": "config"},
                       config={"files": [{"path": "/etc/../etc/shadow", "content": "x"}]}), ".."),
        (ComponentSpec(name="demo", version="1.0", install={"method": "config"},
                       config={"files": [{"path": "/etc/demo.conf", "owner": "nobody-here"}]}),
         "does not exist"),
        (ComponentSpec(name="demo", version="1.0", package={"type": "deb", "name": "Bad_Name", "version": "1"}),
         "package.name"),
        (ComponentSpec(name="demo", version="1.0", install={"method": "script", "script": "true"}),
         "versionProbe"),
    ]
    try:
        for spec, word in bad:
            with pytest.raises(DriverError) as ei:
                await d.start(NODE, ComponentAction.INSTALL, spec)
            assert not ei.value.retryable and word in str(ei.value), (word, str(ei.value))
        assert (await d.state(NODE)).components == {}
        assert fake_host.sh("ls /var/lib/kokpit-agent/components/ 2>/dev/null || true").stdout.strip() == ""
        assert fake_host.sh("sha256sum /etc/shadow").stdout == shadow
        assert fake_host.netns_read("/proc/sys/net/ipv4/ip_forward") == "0"
    finally:
        await d.close()


async def test_script_install_with_version_probe(agent: AgentProcess, fake_host: FakeHost,
                                                 driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    def script(version: str) -> ComponentSpec:
        return ComponentSpec(name="tool", version=version, install={
            "method": "script", "timeoutSeconds": 30,
            "script": 'mkdir -p /opt/tool && echo "$KOKPIT_VERSION" > /opt/tool/VERSION',
            "uninstallScript": "rm -rf /opt/tool", "versionProbe": "cat /opt/tool/VERSION"})

    d = driver_for(agent, driver_pki[1])
    try:
        for v in ("0.1", "0.2"):
            await d.start(NODE, ComponentAction.INSTALL, script(v))
            await wait_for(d, installed(v), f"tool {v}", 60, "tool")
            assert fake_host.sh("cat /opt/tool/VERSION").stdout.strip() == v
        slow = ComponentSpec(name="slow", version="1", install={
            "method": "script", "timeoutSeconds": 1, "script": "sleep 30", "versionProbe": "false"})
        await d.start(NODE, ComponentAction.INSTALL, slow)
        c = await wait_for(d, lambda c: c.install_state == InstallState.FAILED, "slow script", 60, "slow")
        assert "timed out" in c.message
        await d.start(NODE, ComponentAction.UNINSTALL, script("0.2"))
        deadline = time.monotonic() + 60
        while "tool" in (await d.state(NODE)).components:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert fake_host.sh("test -e /opt/tool", check=False).returncode != 0
    finally:
        await d.close()
