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
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, POD, SECRET, Client
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, CPV, OperatorOptions
from kokpit.operators.cluster._etcd import read_roster
from kokpit.operators.cluster._upstream import secret_key

from ._e2e import cond, free_range, operator_stack, pids, until

Obj = dict[str, Any]
ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")
pytestmark = pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason="Debian's etcd-server and etcd-client "
                                "are needed (.ci/run installs them)")
NS = "team-up"


def stack(apiserver: ApiServerProcess, tmp: Path) -> contextlib.AbstractAsyncContextManager[Client]:
    opts = OperatorOptions(workers=2, poll=0.3, resync=1.0, unhealthy_timeout=20.0, release_timeout=60.0,
                           data_root="/clusters", port_range=free_range(40))
    return operator_stack(apiserver, tmp, opts, "upstream-e2e")


def _cpv(name: str, etcd_args: list[str]) -> Obj:
    return {"metadata": {"name": name}, "spec": {"kubernetesVersion": "v1.37.0", "flavor": "Upstream", "components": [
        {"name": "etcd", "image": "registry.k8s.io/etcd:3.5.21-0", "replicas": 3, "args": etcd_args},
        {"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.37.0"}]}}


class Etcdctl:
    """etcdctl with the client certificate the operator keeps in the Cluster's PKI Secret."""

    def __init__(self, c: Client, tmp: Path) -> None:
        self.c, self.dir = c, tmp / "etcdctl"

    async def refresh(self) -> list[str]:
        """The client URLs of the members the operator provisioned (its roster)."""
        secret = await self.c.get(SECRET, "c1-pki", NS)
        self.dir.mkdir(exist_ok=True)
        for f in ("etcd/ca.crt", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"):
            p = self.dir / f.replace("/", "_")
            p.write_bytes(base64.b64decode(secret["data"][secret_key(f)]))
            p.chmod(0o600)
        return [m.member.client_url for m in read_roster(secret).values() if not m.removing]

    def run(self, endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ETCDCTL or "etcdctl", f"--endpoints={','.join(endpoints)}",
                               f"--cacert={self.dir}/etcd_ca.crt", f"--cert={self.dir}/etcd_healthcheck-client.crt",
                               f"--key={self.dir}/etcd_healthcheck-client.key", "--command-timeout=5s", *args],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})

    def healthy(self, endpoints: list[str]) -> int:
        r = self.run(endpoints, "endpoint", "health")
        return (r.stdout + r.stderr).count("is healthy")

    def members(self, endpoints: list[str]) -> list[Obj] | None:
        r = self.run(endpoints, "member", "list", "-w", "json")
        return json.loads(r.stdout)["members"] if r.returncode == 0 else None


async def _etcd_pods(c: Client) -> list[Obj]:
    return [p for p in (await c.list(POD, NS, label_selector=f"{CLUSTER_LABEL}=c1")).items
            if p["metadata"]["labels"].get("kokpit.io/component") == "etcd"]


def _ready(p: Obj) -> bool:
    return any(x["type"] == "Ready" and x["status"] == "True" for x in (p.get("status") or {}).get("conditions") or [])


async def _converged(c: Client, ctl: Etcdctl, version: str) -> bool:
    pods = await _etcd_pods(c)
    if len(pods) != 3 or not all(_ready(p) and p["metadata"]["labels"]["kokpit.io/package-version"] == version
                                 and not p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    eps = await ctl.refresh()
    members = ctl.members(eps)
    return len(eps) == 3 and members is not None and len(members) == 3 and ctl.healthy(eps) == 3


async def test_upstream_etcd_runs_repairs_and_releases_one_member_at_a_time(
        apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as c:
        await c.create(NAMESPACE, {"metadata": {"name": NS}})
        await c.create(CPV, _cpv("u1", []))
        await c.create(CPV, _cpv("u2", ["--heartbeat-interval=150"]))
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": NS}, "spec": {"packageVersion": "u1"}}, NS)
        ctl = Etcdctl(c, tmp_path)
        await until(lambda: _converged(c, ctl, "u1"), "3 etcd members of u1 healthy over mTLS", 120)
        eps = await ctl.refresh()
        assert ctl.run(eps, "put", "/registry/kokpit", "survives").returncode == 0
        # without a client certificate of the cluster's etcd CA nobody gets in
        plain = await asyncio.to_thread(subprocess.run, [ETCDCTL or "", f"--endpoints={eps[0]}", f"--cacert={ctl.dir}/etcd_ca.crt",
                                "--command-timeout=3s", "get", "/registry/kokpit"], capture_output=True, text=True,
                               timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        assert plain.returncode != 0
        first = {p["metadata"]["name"] for p in await _etcd_pods(c)}

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
        await until(lambda: _converged(c, ctl, "u1"), "killed member back", 90)
        assert {p["metadata"]["name"] for p in await _etcd_pods(c)} == first
        # a member whose Pod is deleted: the operator recreates it on its node and folder; it rejoins
        await c.delete(POD, sorted(first)[1], NS)
        await until(lambda: _converged(c, ctl, "u1"), "deleted member's Pod back", 90)
        got = ctl.run(await ctl.refresh(), "get", "/registry/kokpit", "--print-value-only")
        assert got.stdout.strip() == "survives", got.stderr

        # the release: one membership change at a time, never below quorum, data kept
        sizes: set[int] = set()
        violations: list[str] = []
        stop = asyncio.Event()

        async def watch_quorum() -> None:
            while not stop.is_set():
                eps_now = await ctl.refresh()
                members = await asyncio.to_thread(ctl.members, eps_now)
                if members is not None:
                    sizes.add(len(members))
                    started = [m for m in members if m.get("name")]
                    healthy = await asyncio.to_thread(ctl.healthy, [u for m in started for u in m["clientURLs"]])
                    if healthy < len(members) // 2 + 1:
                        violations.append(f"{healthy} healthy of {len(members)} members")
                await asyncio.sleep(0.3)

        watcher = asyncio.create_task(watch_quorum())
        try:
            await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "u2"}}, NS)
            await until(lambda: _converged(c, ctl, "u2"), "every member replaced by one of u2", 400)
        finally:
            stop.set()
            await watcher
        now = {p["metadata"]["name"] for p in await _etcd_pods(c)}
        assert not now & first  # every member is new (replaced, not restarted in place)
        assert max(sizes) == 4 and min(sizes) >= 3, sizes  # one change at a time: surge of one, never fewer
        assert not violations, violations
        eps = await ctl.refresh()
        got = ctl.run(eps, "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
        for p in await _etcd_pods(c):
            assert "--heartbeat-interval=150" in p["spec"]["containers"][0]["command"]
