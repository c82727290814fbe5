"""Control-plane rollouts end to end: Clusters released to a ClusterPackageVersion by the real cluster operator
(``kokpit cluster-operator --trust-pod-readiness`` with ``kokpit kubelet --fake-runtime``: the real release
path — Pods replaced one at a time, status and conditions — without business API servers), the rollout
controller and the risk center as processes.

A canary cluster, a pause promoted with ``kubectl patch``, a kill -9 of the controller in the middle of the
last batch (no Cluster changed twice), undo; and a Cluster that never reaches the release (paused by a person)
failing its progress deadline, which aborts the rollout and rolls the touched Clusters back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.operators.rollout.conftest import CLUSTER, ROLLOUT, Proc, cond, stop_all, until

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import EVENT, NAMESPACE, Client, Kind
from kokpit.runtime.permits import PERMIT

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
Obj = dict[str, Any]
CPV = Kind("kokpit.io", "v1alpha1", "ClusterPackageVersion", "clusterpackageversions", namespaced=False)
NS = "fleet"
NAMES = ["ca", "cb", "cc"]


def _cpv(name: str, kube: str) -> Obj:
    image = f"kokpit:{kube}"
    return {"metadata": {"name": name}, "spec": {"kubernetesVersion": kube, "components": [
        {"name": "kube-apiserver", "image": image, "args": ["apiserver"]}]}}


class Meta:
    def __init__(self, client: Client, api: ApiServerProcess, tmp: Path) -> None:
        self.client = client
        self.api = api
        self.tmp = tmp
        self.procs: dict[str, Proc] = {}
        self.metrics_port = free_port()

    def start(self, name: str, args: list[str]) -> Proc:
        self.procs[name] = Proc(args, self.tmp / f"{name}.log").start()
        return self.procs[name]

    def start_controller(self) -> Proc:
        return self.start("controller", ["rollout-controller", "--kubeconfig", str(self.api.kubeconfig),
                                         "--lease-namespace", NS, "--metrics-port", str(self.metrics_port),
                                         "--metrics-token-file", str(self.api.data_dir / "tokens.json")])

    def start_operator(self) -> Proc:
        return self.start("operator", ["cluster-operator", "--kubeconfig", str(self.api.kubeconfig), "--data-root",
                                       str(self.tmp / "clusters"), "--port-range", "21000-21999",
                                       "--trust-pod-readiness"])

    def metrics(self, token: str | None) -> tuple[int, str]:
        """GET the controller's /metrics over HTTPS (self-signed) with ``token``."""
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(f"https://127.0.0.1:{self.metrics_port}/metrics", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), ""

    async def versions(self) -> dict[str, str]:
        out = {}
        for c in (await self.client.list(CLUSTER, NS)).items:
            ok = cond(c, "UpToDate").get("status") == "True"
            out[c["metadata"]["name"]] = (c.get("status") or {}).get("packageVersion", "") if ok else ""
        return out

    async def wait(self, name: str, phase: str, timeout: float = 180.0) -> Obj:
        async def check() -> Obj | None:
            r: Obj = await self.client.get(ROLLOUT, name, NS)
            return r if (r.get("status") or {}).get("phase") == phase else None
        try:
            out: Obj = await until(check, f"rollout {name} {phase}", timeout)
            return out
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- controller ---\n{self.procs['controller'].tail()}\n--- operator ---\n"
                                 f"{self.procs['operator'].tail()}") from None


@pytest.fixture
async def meta(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Meta]:
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as c:
        await install_crds(c)
        await c.create(NAMESPACE, {"metadata": {"name": NS}})
        await c.create(CPV, _cpv("v1", "v1.36.2"))
        await c.create(CPV, _cpv("v2", "v1.37.0"))
        m = Meta(c, apiserver, tmp_path)
        kc = str(apiserver.kubeconfig)
        try:
            m.start("kubelet", ["kubelet", "--kubeconfig", kc, "--data-dir", str(tmp_path / "kubelet"),
                                "--fake-runtime", "--port", "0"])
            m.start_operator()
            m.start("center", ["risk-center", "--kubeconfig", kc, "--no-leader-elect", "--gate-interval", "0.3"])
            for n in NAMES:
                await c.create(CLUSTER, {"metadata": {"name": n, "namespace": NS, "labels": {"tier": "web"}},
                                         "spec": {"packageVersion": "v1", "simulation": {"nodes": 0}}})
            await until(lambda: _all(m, "v1"), "the Clusters Ready on v1", 120)
            m.start_controller()
            yield m
        finally:
            stop_all(list(m.procs.values()))


async def _all(m: Meta, version: str) -> bool:
    return set((await m.versions()).values()) == {version}


def _kubectl(m: Meta, *args: str) -> str:
    exe = shutil.which("kubectl", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    assert exe is not None
    out = subprocess.run([exe, "--kubeconfig", str(m.api.kubeconfig), *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_canary_promote_kill9_mid_batch_then_undo(meta: Meta) -> None:
    c = meta.client
    await c.create(ROLLOUT, {"metadata": {"name": "cp", "namespace": NS}, "spec": {
        "target": {"clusters": {"selector": {"matchLabels": {"tier": "web"}}, "packageVersion": "v2"}},
        "strategy": {"steps": [{"canary": 1}, {"pause": {}}, {"canary": "100%"}]}}}, NS)
    r = await meta.wait("cp", "Paused")
    assert r["status"]["updated"] == "1/3" and r["status"]["targetKind"] == "Clusters"
    assert await meta.versions() == {"ca": "v2", "cb": "v1", "cc": "v1"}
    assert {(p["spec"]["operation"], p["spec"]["cluster"]) for p in (await c.list(PERMIT, NS)).items} == \
        {("control-plane-release", "ca")}
    table = _kubectl(meta, "get", "rollouts", "-n", NS)
    assert "Clusters" in table and "Paused" in table and "1/3" in table and "v2" in table
    # a second wave over a Cluster the first one holds is queued, saying by whom; it touches nothing
    await c.create(ROLLOUT, {"metadata": {"name": "cp2", "namespace": NS}, "spec": {
        "target": {"clusters": {"names": ["cb"], "packageVersion": "v2"}},
        "strategy": {"steps": [{"canary": "100%"}]}}}, NS)

    async def queued() -> Obj | None:
        r2: Obj = await c.get(ROLLOUT, "cp2", NS)
        return r2 if cond(r2, "Progressing").get("reason") == "Overlap" else None

    r2 = await until(queued, "cp2 queued behind cp", 60)
    assert "fleet/cp" in cond(r2, "Progressing")["message"] and not r2["status"].get("targets")
    await c.delete(ROLLOUT, "cp2", NS)
    assert await meta.versions() == {"ca": "v2", "cb": "v1", "cc": "v1"}
    # The cluster operator is down while the last batch starts, so the batch stays in flight however fast
    # the fake runtime releases (a poll could otherwise miss a window of a few hundred milliseconds).
    meta.procs["operator"].kill9()
    _kubectl(meta, "patch", "rollout", "cp", "-n", NS, "--type", "merge", "-p", '{"spec":{"promotedStep":1}}')

    async def mid_batch() -> bool:
        r = await c.get(ROLLOUT, "cp", NS)
        return any(t["state"] == "Updating" and t.get("changed") for t in r["status"]["targets"])

    await until(mid_batch, "the last batch in flight", 120)
    meta.procs["controller"].kill9()
    meta.start_controller()
    meta.start_operator()
    r = await meta.wait("cp", "Completed")
    assert await meta.versions() == {"ca": "v2", "cb": "v2", "cc": "v2"}
    for cl in (await c.list(CLUSTER, NS)).items:
        assert cl["metadata"]["generation"] == 2, cl["metadata"]  # one change each, never twice
    assert {t["previous"]["packageVersion"] for t in r["status"]["targets"]} == {"v1"}
    _kubectl(meta, "patch", "rollout", "cp", "-n", NS, "--type", "merge", "-p", '{"spec":{"undo":true}}')
    r = await meta.wait("cp", "RolledBack")
    assert await meta.versions() == {"ca": "v1", "cb": "v1", "cc": "v1"}
    # metrics over HTTPS to holders of the cluster's tokens only
    tokens = json.loads((meta.api.data_dir / "tokens.json").read_text())
    status, text = await asyncio.to_thread(meta.metrics, tokens["readonly"])
    assert status == 200, status
    assert 'kokpit_rollouts{state="RolledBack"} 1.0' in text
    assert 'kokpit_rollout_targets{namespace="fleet",rollout="cp",state="RolledBack"} 3.0' in text
    assert "kokpit_rollout_step_duration_seconds_count" in text and "kokpit_rollout_rollbacks_total" in text
    assert (await asyncio.to_thread(meta.metrics, None))[0] in (401, 403)


async def test_a_cluster_that_never_gets_there_fails_and_the_touched_ones_roll_back(meta: Meta) -> None:
    c = meta.client
    # a person paused cb: the cluster operator will not release it, so it misses its progress deadline
    await c.patch(CLUSTER, "cb", {"spec": {"paused": True}}, NS)
    await c.create(ROLLOUT, {"metadata": {"name": "cp", "namespace": NS}, "spec": {
        "target": {"clusters": {"names": NAMES, "packageVersion": "v2"}},
        "strategy": {"steps": [{"canary": 2}, {"canary": "100%"}], "maxUnavailable": 2},
        "progressDeadlineSeconds": 20}}, NS)
    r = await meta.wait("cp", "RolledBack", 240)
    t = {x["name"]: x for x in r["status"]["targets"]}
    events = (await c.list(EVENT, NS, field_selector="involvedObject.name=cp")).items
    deadline = [e for e in events if e["reason"] == "ProgressDeadlineExceeded"]
    assert deadline and deadline[0]["type"] == "Warning" and "cb" in deadline[0]["message"]
    assert t["cb"]["state"] in ("RolledBack", "Failed")  # a paused Cluster may not even report its rollback
    assert t["ca"]["state"] == "RolledBack" and t["cc"]["state"] == "Pending"  # the next batch never started
    assert cond(r, "Aborted")["reason"] == "FailureLimitExceeded"
    assert (await c.get(CLUSTER, "cc", NS))["metadata"]["generation"] == 1  # never touched
    assert (await meta.versions())["ca"] == "v1"
