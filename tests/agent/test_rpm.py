"""The node agent's rpm path (issue 19) with the real rpm/dnf toolchain: Debian ships rpm, dnf and
createrepo_c, so a root with them stands in for an RPM-based host (the only package mirror here is
Debian's). Install, upgrade, rollback (dnf downgrade), a refused downgrade, a missing version reported in
dnf's words, uninstall — through the agent over mutual TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.nodes import ComponentAction, ComponentSpec, InstallState
from kokpit.nodes.agent import AgentDriver
from kokpit.nodes.mtls import TLSFiles

from .conftest import DEMO, AgentProcess, FakeHost
from .test_debian import NODE, installed, wait_for

# the first test to run builds the cached Debian roots (mmdebstrap, a few minutes on a fresh machine)
pytestmark = pytest.mark.timeout(1200)

@pytest.fixture
def rpm_agent(tmp_path: Path, rpm_rootfs: Path, rpm_repo: Path,
              driver_pki: tuple[TLSFiles, TLSFiles]) -> Iterator[tuple[FakeHost, AgentProcess]]:
    host = FakeHost(tmp_path / "host", [rpm_repo, rpm_rootfs])
    agent = AgentProcess(host, driver_pki[0].ca_file.parent, NODE, tmp_path / "agent.log")
    try:
        agent.start()
        yield host, agent
    finally:
        agent.stop()
        host.close()


def demo(version: str, **install: Any) -> ComponentSpec:
    return ComponentSpec(name="demo", version=version, source=f"demo-{version}",
                         package={"type": "rpm", "name": DEMO, "version": f"{version}-1",
                                  "repository": "file:///srv/rpm-repo"},
                         install={"method": "package", "timeoutSeconds": 300, "parameters": {"gpgcheck": "false"},
                                  **install})


async def test_rpm_install_upgrade_rollback_uninstall(rpm_agent: tuple[FakeHost, AgentProcess],
                                                      driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    host, agent = rpm_agent

    def rpm_q() -> str:
        return host.sh(f"rpm -q {DEMO}", check=False).stdout.strip()

    d = AgentDriver(lambda node: agent.url, tls=driver_pki[1])
    try:
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0"))
        await wait_for(d, installed("1.0"), "rpm 1.0 installed")
        assert rpm_q() == f"{DEMO}-1.0-1.noarch"
        assert host.sh(f"cat /usr/share/{DEMO}/version").stdout.strip() == "1.0"
        await d.start(NODE, ComponentAction.INSTALL, demo("2.0"))
        await wait_for(d, installed("2.0"), "rpm 2.0 installed")
        assert rpm_q() == f"{DEMO}-2.0-1.noarch"
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0", allowDowngrade=False))
        refused = await wait_for(d, lambda c: c.install_state == InstallState.FAILED, "downgrade refused")
        assert "allowDowngrade is false" in refused.message and rpm_q() == f"{DEMO}-2.0-1.noarch"
        await d.start(NODE, ComponentAction.INSTALL, demo("1.0"))  # the rollback: dnf downgrade
        await wait_for(d, installed("1.0"), "rolled back to rpm 1.0")
        assert rpm_q() == f"{DEMO}-1.0-1.noarch"
        await d.start(NODE, ComponentAction.INSTALL, demo("9.9"))
        missing = await wait_for(d, lambda c: c.install_state == InstallState.FAILED and c.target_version == "9.9",
                                 "9.9 failed")
        assert "Unable to find a match: kokpit-demo-9.9-1" in missing.message, missing.message
        assert rpm_q() == f"{DEMO}-1.0-1.noarch"
        await d.start(NODE, ComponentAction.UNINSTALL, ComponentSpec(name="demo", version="1.0"))
        deadline = time.monotonic() + 240
        while "demo" in (await d.state(NODE)).components:
            assert time.monotonic() < deadline, "uninstall did not finish"
            await asyncio.sleep(0.3)
        assert "is not installed" in rpm_q()
    finally:
        await d.close()
