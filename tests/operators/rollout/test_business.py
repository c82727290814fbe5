"""How the rollout controller and `kokpit rollout create` reach business clusters: through each Cluster's
``<name>-kubeconfig`` Secret (kokpit.client.read_business_kubeconfig, shared with the risk center).

A rotated kubeconfig (new credentials or endpoint) reconnects the controller's caches; `--replace` and `--add`
are checked in every business cluster the rollout names, not only the first.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.operators.rollout.conftest import CLUSTER, NS, until

from kokpit._lib.clock import FakeClock
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import SECRET, Client, KubeconfigUnavailable, read_business_kubeconfig
from kokpit.operators.machine import MPV
from kokpit.operators.rollout._fleet import Business, BusinessClusters

Obj = dict[str, Any]


@pytest.fixture
def other(tmp_path: Path) -> Iterator[ApiServerProcess]:
    """A second API server: another business cluster."""
    srv = ApiServerProcess(tmp_path / "other").start()
    try:
        yield srv
    finally:
        srv.stop()


def _secret(cluster: str, kubeconfig: Path) -> Obj:
    return {"metadata": {"name": f"{cluster}-kubeconfig", "namespace": NS},
            "data": {"value": base64.b64encode(kubeconfig.read_bytes()).decode()}}


async def _mpvs(client: Client, *names: tuple[str, str]) -> None:
    await install_crds(client)
    for name, comp in names:
        await client.create(MPV, {"metadata": {"name": name}, "spec": {"component": comp, "version": name}})


async def test_a_rotated_kubeconfig_reconnects_the_caches(apiserver: ApiServerProcess,
                                                         other: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as meta, \
            Client.from_kubeconfig(other.kubeconfig) as b2:
        await _mpvs(meta, ("kubelet-a", "kubelet"))
        await _mpvs(b2, ("kubelet-b", "kubelet"))
        with pytest.raises(KubeconfigUnavailable, match="c1-kubeconfig does not exist"):
            await read_business_kubeconfig(meta, NS, "c1")
        await meta.create(SECRET, _secret("c1", Path(apiserver.kubeconfig)))
        clock = FakeClock()
        changes: list[str] = []
        bc = BusinessClusters(meta, changes.append, recheck=30.0, clock=clock)
        try:
            async def reached() -> Business | None:
                return await bc.ensure(f"{NS}/c1", "default/r1")

            first: Business = await until(reached, "c1 reached", 30)
            assert set(first.mpv_components()) == {"kubelet-a"}
            # the Secret now points at the other server (credentials and endpoint rotated)
            await meta.patch(SECRET, "c1-kubeconfig", {"data": _secret("c1", Path(other.kubeconfig))["data"]}, NS)
            assert await bc.ensure(f"{NS}/c1", "default/r2") is first  # not read again before `recheck`
            await clock.advance(31.0)
            second: Business = await until(reached, "c1 reconnected", 30)
            assert second is not first and second.digest != first.digest
            assert set(second.mpv_components()) == {"kubelet-b"}
            assert second.users == {"default/r1", "default/r2"}  # who used it still does
            assert first.machines._task is None and first.mpvs._task is None  # the old caches were stopped
            # a Secret that breaks keeps the connection that works
            await meta.patch(SECRET, "c1-kubeconfig", {"data": {"value": base64.b64encode(b"{").decode()}}, NS)
            await clock.advance(31.0)
            assert await bc.ensure(f"{NS}/c1", "default/r1") is second
        finally:
            await bc.close()


async def test_caches_nobody_needs_linger_then_close(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as meta:
        await _mpvs(meta, ("kubelet-a", "kubelet"))
        await meta.create(SECRET, _secret("c1", Path(apiserver.kubeconfig)))
        bc = BusinessClusters(meta, lambda _k: None, linger=1.0)
        try:
            async def reached() -> Business | None:
                return await bc.ensure(f"{NS}/c1", "default/r1")

            first: Business = await until(reached, "c1 reached", 30)
            await bc.release("default/r1", set())
            assert bc.get(f"{NS}/c1") is first  # still open: the next wave finds it warm
            assert await bc.ensure(f"{NS}/c1", "default/r2") is first
            await asyncio.sleep(1.5)
            assert bc.get(f"{NS}/c1") is first  # asked for again before the linger ran out: kept
            await bc.release("default/r2", set())
            await until(lambda: _true(bc.get(f"{NS}/c1") is None and first.machines._task is None),
                        "closed once nobody needed it", 10)
        finally:
            await bc.close()


async def _true(v: bool) -> bool:
    return v


def _create(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kokpit", "rollout", "create", "kb", "--kubeconfig", kubeconfig,
                           "--dry-run", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": ""})


async def test_create_checks_the_package_change_in_every_named_cluster(apiserver: ApiServerProcess,
                                                                      other: ApiServerProcess) -> None:
    kc = str(apiserver.kubeconfig)
    async with Client.from_kubeconfig(apiserver.kubeconfig) as meta, \
            Client.from_kubeconfig(other.kubeconfig) as b2:
        await _mpvs(meta, ("kubelet-1.30", "kubelet"), ("kubelet-1.31", "kubelet"), ("log-agent-1", "log-agent"))
        await _mpvs(b2, ("kubelet-1.30", "kubelet"))  # the second cluster lacks the new version
        await meta.create(SECRET, _secret("c1", Path(apiserver.kubeconfig)))
        await meta.create(SECRET, _secret("c2", Path(other.kubeconfig)))
        for c in ("c1", "c2", "c3"):
            await meta.create(CLUSTER, {"metadata": {"name": c, "namespace": NS, "labels": {"env": "prod"}},
                                        "spec": {"packageVersion": "v1"}}, NS)

        out = _create(kc, "--cluster", "c1", "--replace", "kubelet-1.30=kubelet-1.31")
        assert out.returncode == 0, out.stderr
        assert yaml.safe_load(out.stdout)["spec"]["target"]["machines"]["clusterNames"] == ["c1"]

        out = _create(kc, "--cluster", "c1", "--cluster", "c2", "--replace", "kubelet-1.30=kubelet-1.31")
        assert out.returncode != 0
        assert "MachinePackageVersion kubelet-1.31 does not exist in business cluster c2" in out.stderr

        # by selector too: c3 has no kubeconfig Secret — named, not skipped
        out = _create(kc, "--clusters", "env=prod", "--replace", "kubelet-1.30=kubelet-1.31")
        assert out.returncode != 0 and "business cluster default/c" in out.stderr

        # the same name carrying another component in another cluster
        await b2.create(MPV, {"metadata": {"name": "log-agent-1"}, "spec": {"component": "fluent", "version": "1"}})
        out = _create(kc, "--cluster", "c1", "--cluster", "c2", "--add", "log-agent-1")
        assert out.returncode != 0
        assert "log-agent-1 carries different components" in out.stderr and "c2: fluent" in out.stderr

        await b2.create(MPV, {"metadata": {"name": "kubelet-1.31"}, "spec": {"component": "kubelet",
                                                                             "version": "kubelet-1.31"}})
        out = _create(kc, "--cluster", "c1", "--cluster", "c2", "--replace", "kubelet-1.30=kubelet-1.31")
        assert out.returncode == 0, out.stderr
        machines = yaml.safe_load(out.stdout)["spec"]["target"]["machines"]
        assert machines["clusterNames"] == ["c1", "c2"]
        assert machines["packages"] == [{"component": "kubelet", "from": "kubelet-1.30", "to": "kubelet-1.31"}]
