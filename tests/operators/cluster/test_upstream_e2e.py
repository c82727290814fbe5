"""The cluster operator runs an Upstream control plane (issue 18): the etcd members of a ClusterPackageVersion
of flavor Upstream run for real (Debian's etcd-server, the local kubelet mapping the etcd image to it) with
mutual TLS, a killed member comes back with its data, a member whose Pod is deleted rejoins, and a release
replaces every member one membership change at a time (add a new member, wait until healthy, remove an old
one) while the data stays and every sample of the cluster keeps quorum.

kube-apiserver is rendered and created after etcd converged; when no upstream kube-apiserver binary is
installed on this host (the usual case: neither Debian nor PyPI ships one) its Pod waits with
ImageNotRunnable, which the test checks, and the Cluster never claims to be Ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, POD
from kokpit.operators.cluster import CLUSTER, CPV

from ._e2e import cond, pids, until
from ._etcd_e2e import ETCDCTL, NEEDS_ETCD, NS, Etcdctl, QuorumWatch, converged, cpv, etcd_pods, stack

Obj = dict[str, Any]
pytestmark = NEEDS_ETCD


async def test_upstream_etcd_runs_repairs_and_releases_one_member_at_a_time(
        apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as c:
        await c.create(NAMESPACE, {"metadata": {"name": NS}})
        await c.create(CPV, cpv("u1", []))
        await c.create(CPV, cpv("u2", ["--heartbeat-interval=150"]))
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": NS}, "spec": {"packageVersion": "u1"}}, NS)
        ctl = Etcdctl(c, tmp_path)
        await until(lambda: converged(c, ctl, "u1"), "3 etcd members of u1 healthy over mTLS", 120)
        eps = await ctl.refresh()
        assert ctl.run(eps, "put", "/registry/kokpit", "survives").returncode == 0
        # without a client certificate of the cluster's etcd CA nobody gets in
        plain = await asyncio.to_thread(subprocess.run, [ETCDCTL or "", f"--endpoints={eps[0]}", f"--cacert={ctl.dir}/etcd_ca.crt",
                                "--command-timeout=3s", "get", "/registry/kokpit"], capture_output=True, text=True,
                               timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        assert plain.returncode != 0
        first = {p["metadata"]["name"] for p in await etcd_pods(c)}

        # the API server comes after etcd; without an upstream binary here it waits, and the Cluster says so
        async def apiserver_waits() -> Obj | None:
            with contextlib.suppress(Exception):
                pod = await c.get(POD, "c1-kube-apiserver-0", NS)
                servers = next(a for a in pod["spec"]["containers"][0]["command"] if a.startswith("--etcd-servers="))
                assert set(servers.partition("=")[2].split(",")) == set(eps)
                states = (pod.get("status") or {}).get("containerStatuses") or []
                return pod if shutil.which("kube-apiserver") or any(
                    (s.get("state") or {}).get("waiting", {}).get("reason") == "ImageNotRunnable" for s in states) \
                    else None
            return None

        await until(apiserver_waits, "kube-apiserver Pod created after etcd", 60)
        cl = await c.get(CLUSTER, "c1", NS)
        rows = {r["name"]: r for r in cl["status"]["components"]}
        assert rows["etcd"]["healthy"] and rows["etcd"]["readyReplicas"] == 3
        if not shutil.which("kube-apiserver"):
            assert cond(cl, "Ready").get("status") != "True"

        # kill -9 of a member's process: the kubelet restarts it, it rejoins with its data
        victim = sorted(first)[0]
        os.killpg(pids(tmp_path / "kubelet")[victim], signal.SIGKILL)
        await until(lambda: converged(c, ctl, "u1"), "killed member back", 90)
        assert {p["metadata"]["name"] for p in await etcd_pods(c)} == first
        # a member whose Pod is deleted: the operator recreates it on its node and folder; it rejoins
        await c.delete(POD, sorted(first)[1], NS)
        await until(lambda: converged(c, ctl, "u1"), "deleted member's Pod back", 90)
        got = ctl.run(await ctl.refresh(), "get", "/registry/kokpit", "--print-value-only")
        assert got.stdout.strip() == "survives", got.stderr

        # the release: one membership change at a time, never below quorum, data kept
        async with QuorumWatch(c, ctl) as watch:
            await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "u2"}}, NS)
            await until(lambda: converged(c, ctl, "u2"), "every member replaced by one of u2", 400)
        now = {p["metadata"]["name"] for p in await etcd_pods(c)}
        assert not now & first  # every member is new (replaced, not restarted in place)
        assert max(watch.sizes) == 4 and min(watch.sizes) >= 3, watch.sizes  # one change at a time: surge of one
        assert not watch.violations, watch.violations
        eps = await ctl.refresh()
        got = ctl.run(eps, "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
        for p in await etcd_pods(c):
            assert "--heartbeat-interval=150" in p["spec"]["containers"][0]["command"]
