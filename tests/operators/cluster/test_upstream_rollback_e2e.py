"""A failing etcd release of an Upstream control plane is rolled back, one membership change at a time and
with quorum held, even when the cluster operator is killed with SIGKILL in the middle of the rollback (issue 18).

Real processes: the meta API server, Debian's etcd run by the local kubelet for the etcd image, and the cluster
operator as its own `kokpit cluster-operator` process (so kill -9 is the real thing).  The bad release starts
etcd with a flag etcd does not know: its first new member never becomes healthy, the release times out and
turns back; the member that was added for it is removed from etcd and its Pod deleted, and the three original
members keep serving the data throughout.  Every sample of the membership during the release, the kill, the
restart and the rollback has a healthy quorum, at most four members and never fewer than three.

Only a release that once ran healthy can be rolled back to, and an Upstream control plane is healthy only when
its API server serves.  No upstream kube-apiserver binary is installable here, so first the Cluster must say
so (its API server Pod waits with ImageNotRunnable, Ready=False naming it); then a `kube-apiserver` on the
kubelet's PATH stands in for it: `kokpit apiserver`, a real Kubernetes API server process, started with the
rendered Pod's own serving certificate, key, client CA, address and port, so the operator's probes through the
Service answer as they would from the real one (it does not use etcd: etcd is what this test is about)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.operators.cluster import CLUSTER

from ._e2e import cond, free_range, until
from ._etcd_e2e import (
    NEEDS_ETCD,
    NS,
    QuorumWatch,
    converged,
    etcd_pods,
    operator,
    roster,
    stand_in_apiserver,
    upstream_cluster,
)

pytestmark = [NEEDS_ETCD, pytest.mark.timeout(900)]


async def test_failed_etcd_release_rolls_back_one_member_at_a_time_through_a_kill_9(
        apiserver: ApiServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = free_range(40)
    versions = {"u1": [], "bad": ["--no-such-etcd-flag=1"]}
    async with upstream_cluster(apiserver, tmp_path, "rollback-e2e", versions) as (c, ctl):
        log = tmp_path / "operator.log"
        async with operator(apiserver.kubeconfig, ports, log):
            await until(lambda: converged(c, ctl, "u1"), "3 etcd members of u1 healthy over mTLS", 240)
        first = {p["metadata"]["name"] for p in await etcd_pods(c)}
        eps = await ctl.refresh()
        assert ctl.run(eps, "put", "/registry/kokpit", "survives").returncode == 0

        # the control plane's API server: after etcd; without a binary it waits, and the Cluster says why
        async with operator(apiserver.kubeconfig, ports, log):
            if not shutil.which("kube-apiserver"):
                async def says_why() -> bool:
                    ready = cond(await c.get(CLUSTER, "c1", NS), "Ready")
                    return ready.get("status") == "False" and "ImageNotRunnable" in str(ready.get("message"))
                await until(says_why, "Ready=False naming ImageNotRunnable for kube-apiserver", 120)
                assert stand_in_apiserver(tmp_path, monkeypatch)

            async def ready() -> bool:
                cl = await c.get(CLUSTER, "c1", NS)
                return cond(cl, "Ready").get("status") == "True" and \
                    cl["status"].get("lastGoodPackageVersion") == "u1"
            await until(ready, "u1 Ready once an API server serves (its last good release)", 240)

        async with QuorumWatch(c, ctl) as watch:
            async with operator(apiserver.kubeconfig, ports, log) as op:
                await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "bad"}}, NS)

                async def rolling_back() -> bool:
                    up = cond(await c.get(CLUSTER, "c1", NS), "Upgrading")
                    return up.get("reason") == "RollingBack"

                await until(rolling_back, "the bad release turned back (Upgrading=RollingBack)", 240)
                os.killpg(op.pid, signal.SIGKILL)
                await op.wait()
            # killed mid-rollback: the member added for the bad release is still provisioned
            at_kill = await roster(c)
            cl = await c.get(CLUSTER, "c1", NS)
            assert cond(cl, "Upgrading").get("reason") == "RollingBack", cl["status"]
            assert set(at_kill) - first, f"the rollback had already finished at the kill: {sorted(at_kill)}"
            async with operator(apiserver.kubeconfig, ports, log):
                await until(lambda: converged(c, ctl, "u1"), "rolled back to the three members of u1", 300)
                cl = await c.get(CLUSTER, "c1", NS)
                assert cl["status"].get("failedPackageVersion") == "bad", cl["status"]
                assert cl["status"].get("lastGoodPackageVersion") == "u1", cl["status"]
        assert {p["metadata"]["name"] for p in await etcd_pods(c)} == first  # the originals kept serving
        assert set(await roster(c)) == first
        assert max(watch.sizes) == 4 and min(watch.sizes) >= 3, watch.sizes  # surge of one, never fewer
        assert not watch.violations, watch.violations
        got = ctl.run(await ctl.refresh(), "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
