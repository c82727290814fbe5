"""kill -9 of the cluster operator in the middle of a forward etcd release of an Upstream control plane (issue
18): the operator has provisioned the surge member of the release's first step (written to its roster, the
recorded intent, before etcd hears of it) and is killed before that member is healthy and an outdated one
removed.  The restarted operator reads the roster, etcd's member list and the Pods, and finishes that very
step — the surge member it finds is the one that stays; no second member is provisioned for the same step —
then the rest of the release: exactly one new member per outdated one, every sample of the membership with a
healthy quorum, three or four members, the data kept, and the Cluster Ready on the new release.

Real processes: the meta API server, Debian's etcd for each member (run by the local kubelet), the cluster
operator as its own ``kokpit cluster-operator`` process, and a stand-in kube-apiserver (see
``stand_in_apiserver``) so the release can finish as a whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.operators.cluster import CLUSTER, VERSION_LABEL

from ._e2e import cond, free_range, until
from ._etcd_e2e import (
    NEEDS_ETCD,
    NS,
    QuorumWatch,
    converged,
    etcd_pods,
    pod_ready,
    roster,
    stand_in_apiserver,
    upstream_cluster,
)
from .test_e2e_operator_restart import operator_process

pytestmark = [NEEDS_ETCD, pytest.mark.timeout(900)]


async def test_operator_killed_mid_etcd_membership_change_finishes_the_release_without_a_second_change(
        apiserver: ApiServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = free_range(40)
    log = tmp_path / "operator.log"

    def operator() -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
        # a release timeout no healthy member misses on a loaded machine: this release must not turn back
        return operator_process(apiserver.kubeconfig, ports, log, unhealthy_timeout=90, release_timeout=150)

    stand_in_apiserver(tmp_path, monkeypatch)
    versions = {"u1": [], "u2": ["--heartbeat-interval=150"]}
    async with upstream_cluster(apiserver, tmp_path, "release-kill-e2e", versions) as (c, ctl):
        async def ready_on(version: str) -> bool:
            cl = await c.get(CLUSTER, "c1", NS)
            st = cl.get("status") or {}
            return cond(cl, "Ready").get("status") == "True" and st.get("packageVersion") == version and \
                st.get("lastGoodPackageVersion") == version and await converged(c, ctl, version)

        try:
            async with operator() as op:
                await until(lambda: ready_on("u1"), "u1 Ready: 3 etcd members and the API server", 300)
                first = set(await roster(c))
                assert ctl.run(await ctl.refresh(), "put", "/registry/kokpit", "survives").returncode == 0

                async with QuorumWatch(c, ctl) as watch:
                    await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "u2"}}, NS)

                    async def surging() -> str:
                        """The first step's surge member provisioned and its Pod not ready yet."""
                        added = set(await roster(c)) - first
                        pods = {p["metadata"]["name"]: p for p in await etcd_pods(c)}
                        return next((n for n in added if n in pods and not pod_ready(pods[n])
                                     and pods[n]["metadata"]["labels"][VERSION_LABEL] == "u2"), "")
                    surge = await until(surging, "the release's first surge member provisioned, not ready", 240)
                    os.killpg(op.pid, signal.SIGKILL)
                    assert await op.wait() == -signal.SIGKILL

                    # what the killed operator left: the step's intent in the roster, the release under way
                    at_kill = await roster(c)
                    assert surge in at_kill and len(at_kill) == 4, sorted(at_kill)
                    assert not [m for m in at_kill.values() if m.removing], at_kill
                    cl = await c.get(CLUSTER, "c1", NS)
                    assert cond(cl, "Upgrading").get("reason") == "UpgradeInProgress", cl["status"]
                    assert cl["status"].get("packageVersion") == "u1", cl["status"]

                    async with operator():
                        await until(lambda: ready_on("u2"), "the release finished by the restarted operator", 600)
                        cl = await c.get(CLUSTER, "c1", NS)
        except BaseException:
            print("---- cluster operator log ----\n" + (log.read_text() if log.exists() else "(none)"))
            raise
        final = set(await roster(c))
        assert surge in final, (surge, sorted(final))  # the step cut short was finished, not started over
        assert not final & first, (first, final)  # every member replaced
        assert watch.provisioned == first | final, sorted(watch.provisioned)  # one new member per old one
        assert max(watch.sizes) == 4 and min(watch.sizes) >= 3, watch.sizes  # one change at a time
        assert not watch.violations, watch.violations
        assert "failedPackageVersion" not in cl["status"], cl["status"]  # no spurious rollback
        members = ctl.members(await ctl.refresh())
        assert members is not None and {m["name"] for m in members} == final
        got = ctl.run(await ctl.refresh(), "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
        for p in await etcd_pods(c):
            assert "--heartbeat-interval=150" in p["spec"]["containers"][0]["command"]
