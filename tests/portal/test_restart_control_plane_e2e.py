"""The adapter's "restart control-plane component C of cluster X", end to end through the real processes:
the meta API server, the cluster operator (``kokpit cluster-operator --ask-risk-center``) and the risk center
(``kokpit risk-center``) as processes, the local kubelet running the business API server replicas as
processes, the portal in this process.

alice asks for the restart in one runbook line; bob approves; the portal writes the Cluster's
``spec.controlPlane.restartedAt.kube-apiserver`` with bob's token; the cluster operator replaces the two API
server replicas one at a time — the second only once the first's replacement is Ready — each after a
control-plane-release Permit the risk center granted; the change closes Succeeded from the operator's own
report (its component row's restartedAt).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.operators.cluster._e2e import cond, free_range, local_kubelet, until
from tests.operators.rollout.conftest import Proc, stop_all
from tests.portal.conftest import person

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NAMESPACE, POD, Client
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, CPV
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.runtime.permits import INTENT_ANNOTATION, PERMIT

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
Obj = dict[str, Any]
NS = "default"
PODS = ("c1-kube-apiserver-0", "c1-kube-apiserver-1")


async def _apiserver_pods(meta: Client) -> dict[str, Obj]:
    pods = (await meta.list(POD, NS, label_selector=f"{CLUSTER_LABEL}=c1")).items
    return {p["metadata"]["name"]: p for p in pods if p["metadata"]["name"] in PODS}


def _ready(p: Obj | None) -> bool:
    return p is not None and not p["metadata"].get("deletionTimestamp") and cond(p, "Ready").get("status") == "True"


async def test_restart_control_plane_replaces_the_api_servers_one_at_a_time(apiserver: ApiServerProcess,
                                                                           tmp_path: Path) -> None:
    kc = str(apiserver.kubeconfig)
    lo, hi = free_range()
    async with Client.from_kubeconfig(kc, field_manager="test") as meta:
        await install_crds(meta)
        await meta.create(NAMESPACE, {"metadata": {"name": "fleet"}})  # where the test's people live
        alice, bob = await person(meta, "alice"), await person(meta, "bob")
        procs = [Proc(["cluster-operator", "--kubeconfig", kc, "--ask-risk-center", "--port-range", f"{lo}-{hi}",
                       "--data-root", "/clusters", "--workers", "4"], tmp_path / "cluster-operator.log"),
                 Proc(["risk-center", "--kubeconfig", kc, "--no-leader-elect", "--gate-interval", "0.3",
                       "--probe-interval", "0.5"], tmp_path / "risk-center.log")]
        srv = PortalServer(PortalOptions(kubeconfig=apiserver.kubeconfig, port=0, data_dir=tmp_path / "portal",
                                         extensions=default_extensions(), business_interval=0.2))
        async with local_kubelet(meta, tmp_path / "kubelet"):
            for p in procs:
                p.start()
            url = await srv.start()
            try:
                await _run(meta, url, alice, bob, procs)
            finally:
                await srv.stop()
                stop_all(procs)


async def _run(meta: Client, url: str, alice: str, bob: str, procs: list[Proc]) -> None:
    await meta.create(CPV, {"metadata": {"name": "v1"}, "spec": {"kubernetesVersion": "v1.30.7", "components": [
        {"name": "kube-apiserver", "image": "kokpit:dev", "args": ["apiserver"]}]}})
    await meta.create(CLUSTER, {"metadata": {"name": "c1"}, "spec": {"packageVersion": "v1",
                                                                     "controlPlane": {"replicas": 2}}}, NS)

    async def cluster_ready() -> Obj | None:
        c = await meta.get(CLUSTER, "c1", NS)
        return c if cond(c, "Ready").get("status") == "True" else None
    try:
        await until(cluster_ready, "Cluster c1 Ready with two API server replicas", 240)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- operator ---\n{procs[0].tail()}") from None
    before = await _apiserver_pods(meta)
    assert set(before) == set(PODS) and all(_ready(p) for p in before.values())
    old = {n: p["metadata"]["uid"] for n, p in before.items()}

    def client(token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, verify=False, timeout=60.0, headers={"Authorization": f"Bearer {token}"})
    async with client(alice) as a, client(bob) as b:
        async def planned() -> Obj | None:
            r = await a.post("/api/v1/legacy", json={
                "command": "restart control-plane component kube-apiserver of cluster c1"})
            return r.json() if r.status_code == 201 else None
        out = await until(planned, "the adapter to plan the restart (the portal reads c1 and its release)", 60)
        name = out["translation"]["changeRequest"]["name"]
        r = await b.post(f"/api/v1/changes/{NS}/{name}/approve", json={"comment": "rotate"})
        assert r.status_code == 200, r.text
        asked_at = r.json()["metadata"]["creationTimestamp"]
        assert (await meta.get(CLUSTER, "c1", NS))["spec"]["controlPlane"]["restartedAt"] == {
            "kube-apiserver": asked_at}

        # watch the replacement: when each old replica went and when its replacement was Ready
        gone: dict[str, float] = {}
        ready_new: dict[str, float] = {}
        down_at_once = 0
        deadline = time.monotonic() + 300
        while len(ready_new) < 2:
            assert time.monotonic() < deadline, (f"restart not done: gone={gone} ready={ready_new}\n"
                                                 f"--- operator ---\n{procs[0].tail()}")
            now = time.monotonic()
            pods = await _apiserver_pods(meta)
            for n in PODS:
                p = pods.get(n)
                if n not in gone and (p is None or p["metadata"]["uid"] != old[n] or p["metadata"].get(
                        "deletionTimestamp")):
                    gone[n] = now
                if p is not None and p["metadata"]["uid"] != old[n] and _ready(p) and n not in ready_new:
                    ready_new[n] = now
            down_at_once = max(down_at_once, sum(1 for n in PODS if not _ready(pods.get(n))))
            await asyncio.sleep(0.1)
        first, second = sorted(PODS, key=lambda n: gone[n])
        assert ready_new[first] <= gone[second], (
            f"{second} was taken down before {first}'s replacement was Ready: gone={gone} ready={ready_new}\n"
            + "\n".join(f"{e.get('lastTimestamp') or e.get('eventTime')} {e['reason']}: {e['message']}"
                        for e in (await meta.list(EVENT, NS)).items))
        assert down_at_once == 1  # never both replicas down
        after = await _apiserver_pods(meta)
        assert all(p["metadata"]["annotations"]["kokpit.io/restarted-at"] == asked_at for p in after.values())

        # each replacement took its own control-plane-release permit, released Succeeded once the restart was done
        async def permits() -> list[Obj] | None:
            items = [p for p in (await meta.list(PERMIT, NS)).items
                     if (p["metadata"].get("annotations") or {}).get(INTENT_ANNOTATION) == f"restart-{asked_at}"]
            done = [p for p in items if (p.get("status") or {}).get("outcome") == "Succeeded"]
            return items if len(done) == 2 == len(items) else None
        got = await until(permits, "both restart permits released Succeeded", 120)
        assert sorted(t for p in got for t in p["spec"]["targets"]) == sorted(PODS)
        assert {p["spec"]["operation"] for p in got} == {"control-plane-release"}

        async def closed() -> Obj | None:
            cr = (await a.get(f"/api/v1/changes/{NS}/{name}")).json()
            return cr if (cr.get("status") or {}).get("outcome") else None
        cr = await until(closed, "the change to close from the operator's report", 120)
        assert cr["status"]["outcome"] == "Succeeded", cr["status"]
        c1 = await meta.get(CLUSTER, "c1", NS)
        row = next(x for x in c1["status"]["components"] if x["name"] == "kube-apiserver")
        assert row["restartedAt"] == asked_at and row["readyReplicas"] == 2
