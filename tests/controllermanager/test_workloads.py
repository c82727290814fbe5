"""Deployments, ReplicaSets and DaemonSets driven by the real scheduler and controller-manager against the
real API server, with the simulator playing the kubelets."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, EVENT, NODE, POD, Client, NotFoundError
from kokpit.controllermanager._common import DAEMONSET, DEPLOYMENT, REPLICASET
from kokpit.nodes.simulator import SimulatorDriver

from .conftest import ControlPlane, eventually

Obj = dict[str, Any]


def deployment(name: str, replicas: int, image: str = "nginx:1.27") -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


async def running_pods(client: Client, ns: str, label: str) -> list[Obj]:
    pods = (await client.list(POD, ns, label_selector=label)).items
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


async def test_deployment_scales_rolls_and_replaces_pods(plane: Callable[..., Awaitable[ControlPlane]],
                                                         namespace: str) -> None:
    cp = await plane(nodes=3)
    c, ns = cp.client, namespace
    await c.create(DEPLOYMENT, deployment("web", 4), ns)

    def done(d: Obj, want: int) -> bool:
        st = d.get("status") or {}
        return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == want
                and st.get("availableReplicas") == want and st.get("replicas") == want)

    d = await eventually(lambda: c.get(DEPLOYMENT, "web", ns), lambda d: done(d, 4), what="4 replicas")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    pods = await running_pods(c, ns, "app=web")
    assert len(pods) == 4 and {p["spec"]["nodeName"] for p in pods} <= set(cp.nodes)
    assert len({p["spec"]["nodeName"] for p in pods}) == 3  # spread over the three nodes

    # a deleted pod is replaced
    await c.delete(POD, pods[0]["metadata"]["name"], ns)
    await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 4 and pods[0]["metadata"]["name"]
                     not in {p["metadata"]["name"] for p in ps}, what="replacement")

    # rolling update to a new image: a second ReplicaSet, revision 2, old one scaled to 0
    await c.patch(DEPLOYMENT, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.28"}]}}}}, ns, patch_type="strategic")
    d = await eventually(lambda: c.get(DEPLOYMENT, "web", ns), lambda d: done(d, 4), what="rolled out")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rss = (await c.list(REPLICASET, ns)).items
    assert sorted((r["spec"]["replicas"], r["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                  for r in rss) == [(0, "1"), (4, "2")]
    images = {p["spec"]["containers"][0]["image"] for p in await running_pods(c, ns, "app=web")}
    assert images == {"nginx:1.28"}
    conds = {x["type"]: x["reason"] for x in d["status"]["conditions"]}
    assert conds == {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}

    # scale down through the scale subresource path (spec.replicas)
    await c.patch(DEPLOYMENT, "web", {"spec": {"replicas": 1}}, ns)
    await eventually(lambda: c.get(DEPLOYMENT, "web", ns), lambda d: done(d, 1), what="scaled to 1")
    await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 1, what="one pod left")


async def test_unschedulable_pod_gets_condition_and_event(plane: Callable[..., Awaitable[ControlPlane]],
                                                          namespace: str) -> None:
    cp = await plane(nodes=2)
    c, ns = cp.client, namespace
    await c.create(POD, {"metadata": {"name": "huge"}, "spec": {"containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": "500"}}}]}}, ns)
    pod = await eventually(lambda: c.get(POD, "huge", ns), lambda p: any(
        x["type"] == "PodScheduled" and x["status"] == "False" for x in p["status"].get("conditions") or []),
        what="PodScheduled=False")
    cond = next(x for x in pod["status"]["conditions"] if x["type"] == "PodScheduled")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith(f"0/{len(cp.scheduler.cache.nodes) if cp.scheduler else 0} nodes are "
                                      "available: ") and "Insufficient cpu" in cond["message"]

    async def events() -> list[Obj]:
        return (await c.list(EVENT, ns, field_selector="involvedObject.name=huge")).items

    evs = await eventually(events, lambda es: any(e["reason"] == "FailedScheduling" for e in es), what="event")
    assert next(e for e in evs if e["reason"] == "FailedScheduling")["type"] == "Warning"


async def test_daemonset_runs_on_every_node_and_rolls(plane: Callable[..., Awaitable[ControlPlane]],
                                                      namespace: str, shared_apiserver: ApiServerProcess,
                                                      kubectl_bin: str) -> None:
    cp = await plane(nodes=3)
    c, ns = cp.client, namespace
    first = cp.nodes[0]
    await c.patch(NODE, first, {"spec": {"unschedulable": True}})  # daemon pods tolerate cordons
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs"},
          "spec": {"selector": {"matchLabels": {"app": "logs"}},
                   "template": {"metadata": {"labels": {"app": "logs"}}, "spec": {
                       "nodeSelector": {"kokpit.io/simulated": "true"},
                       "containers": [{"name": "fluent", "image": "fluent-bit:3.0"}]}}}}
    await c.create(DAEMONSET, ds, ns)
    mine = set(cp.nodes)

    def on_mine(ps: list[Obj]) -> set[str]:
        return {p["spec"]["nodeName"] for p in ps if p["spec"].get("nodeName") in mine}

    await eventually(lambda: running_pods(c, ns, "app=logs"), lambda ps: on_mine(ps) == mine, what="a pod per node")
    updated = copy.deepcopy(ds["spec"]["template"])
    updated["spec"]["containers"][0]["image"] = "fluent-bit:3.1"
    await c.patch(DAEMONSET, "logs", {"spec": {"template": updated}}, ns)

    async def rolled() -> Obj:
        return await c.get(DAEMONSET, "logs", ns)

    d = await eventually(rolled, lambda d: (d["status"].get("observedGeneration") == d["metadata"]["generation"]
                                            and d["status"].get("updatedNumberScheduled") == d["status"]
                                            .get("desiredNumberScheduled") == d["status"].get("numberAvailable")),
                         timeout=40, what="rolled to 3.1")
    pods = await running_pods(c, ns, "app=logs")
    assert {p["spec"]["containers"][0]["image"] for p in pods if p["spec"]["nodeName"] in mine} == {"fluent-bit:3.1"}
    assert d["status"]["desiredNumberScheduled"] >= 3

    # real kubectl reads the ControllerRevisions: rollout status, then undo back to 3.0
    env = {**os.environ, "KUBECONFIG": str(shared_apiserver.kubeconfig)}
    out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "rollout", "status", "daemonset/logs", "-n", ns,
                                                   "--timeout=30s"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "successfully rolled out" in out.stdout, out.stderr
    out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "rollout", "undo", "daemonset/logs", "-n", ns],
                                  env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    await eventually(lambda: running_pods(c, ns, "app=logs"), lambda ps: {
        p["spec"]["containers"][0]["image"] for p in ps if p["spec"]["nodeName"] in mine} == {"fluent-bit:3.0"}
        and on_mine(ps) == mine, timeout=40, what="rolled back to 3.0")


async def test_daemonset_readiness_reporter_writes_condition_configmaps(
        plane: Callable[..., Awaitable[ControlPlane]], namespace: str) -> None:
    cp = await plane(nodes=2, controllers=["daemonset", "daemonset-readiness"])
    c, ns = cp.client, namespace
    gated, other = cp.nodes
    await c.patch(NODE, other, {"metadata": {"labels": {"logs": "off"}}})
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "fluent", "annotations": {"kokpit.io/readiness-condition": "LogCollectionReady"}},
          "spec": {"selector": {"matchLabels": {"app": "fluent"}}, "template": {
              "metadata": {"labels": {"app": "fluent"}}, "spec": {
                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                      "nodeSelectorTerms": [{"matchExpressions": [{"key": "logs", "operator": "NotIn",
                                                                   "values": ["off"]}]}]}}},
                  "containers": [{"name": "fluent", "image": "fluent-bit:3.0"}]}}}}
    await c.create(DAEMONSET, ds, ns)

    async def report(node: str) -> dict[str, Any]:
        try:
            cm = await c.get(CONFIGMAP, f"daemonset-readiness.{node}", "kube-system")
        except NotFoundError:
            return {}
        return {k: json.loads(v) for k, v in (cm.get("data") or {}).items()} | {"_labels": cm["metadata"]["labels"]}

    r = await eventually(lambda: report(gated), lambda r: r.get("LogCollectionReady", {}).get("status") == "True",
                         what="gate True once the daemon pod is ready")
    assert r["_labels"] == {"kokpit.io/node": gated, "kokpit.io/condition-source": "daemonset-readiness"}
    pod = next(p for p in await running_pods(c, ns, "app=fluent") if p["spec"]["nodeName"] == gated)
    r_other = await report(other)
    assert r_other["LogCollectionReady"]["status"] == "True"  # the DaemonSet does not target that node
    assert r_other["LogCollectionReady"]["reason"] == "DaemonSetPodsReady"
    # the daemon pod stops being ready (its host breaks): the gate closes, and reopens on recovery
    assert pod["status"]["phase"] == "Running"
    assert cp.sim is not None
    driver = SimulatorDriver(cp.sim.driver_url, tls=cp.sim.client_tls, timeout=5)
    try:
        await driver.fault(gated, "hardware")
        closed = await eventually(lambda: report(gated), lambda r: r["LogCollectionReady"]["status"] == "False",
                                  what="gate closed")
        assert f"{ns}/fluent" in closed["LogCollectionReady"]["message"]
        await driver.fault(gated, "recover")
        await eventually(lambda: report(gated), lambda r: r["LogCollectionReady"]["status"] == "True",
                         what="gate reopened")
    finally:
        await driver.close()


async def test_rollout_survives_a_controller_manager_restart(plane: Callable[..., Awaitable[ControlPlane]],
                                                             namespace: str) -> None:
    cp = await plane(nodes=3, controllers=["replicaset", "deployment"])
    c, ns = cp.client, namespace
    await c.create(DEPLOYMENT, deployment("api", 4), ns)

    def done(d: Obj) -> bool:
        st = d.get("status") or {}
        return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("updatedReplicas") == 4
                == st.get("availableReplicas") == st.get("replicas"))

    await eventually(lambda: c.get(DEPLOYMENT, "api", ns), done, what="first rollout")
    await c.patch(DEPLOYMENT, "api", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.28"}]}}}}, ns, patch_type="strategic")
    await eventually(lambda: c.list(REPLICASET, ns), lambda rs: len(rs.items) == 2, what="new ReplicaSet")
    assert cp.restart_cm is not None
    await cp.restart_cm()  # mid-rollout: every expectation and queue is gone; the API holds the state
    d = await eventually(lambda: c.get(DEPLOYMENT, "api", ns), done, timeout=40, what="rollout finished")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rss = (await c.list(REPLICASET, ns)).items
    assert sorted(r["spec"]["replicas"] for r in rss) == [0, 4]  # no third ReplicaSet, nothing doubled
    pods = await running_pods(c, ns, "app=api")
    assert len(pods) == 4 and {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.28"}


async def test_daemonset_that_fits_no_node_waits_without_churn(plane: Callable[..., Awaitable[ControlPlane]],
                                                               namespace: str) -> None:
    """Bad input from the issue: a DaemonSet whose pods fit no node. As in kube, one pod per eligible node is
    created and each waits with PodScheduled=False (the scheduler's reason); the DaemonSet reports them
    unavailable and neither controller loops: the same pods stay, none is recreated."""
    cp = await plane(nodes=2, controllers=["daemonset"])
    c, ns = cp.client, namespace
    await c.create(DAEMONSET, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "fat"}, "spec": {
        "selector": {"matchLabels": {"app": "fat"}}, "template": {"metadata": {"labels": {"app": "fat"}}, "spec": {
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "500"}}}]}}}}, ns)

    def waiting(pods: list[Obj]) -> bool:
        return len(pods) == 2 and all(any(x["type"] == "PodScheduled" and x["status"] == "False"
                                          for x in p["status"].get("conditions") or []) for p in pods)

    async def pods() -> list[Obj]:
        return (await c.list(POD, ns, label_selector="app=fat")).items

    first = await eventually(pods, waiting, what="both daemon pods unschedulable")
    for p in first:
        cond = next(x for x in p["status"]["conditions"] if x["type"] == "PodScheduled")
        assert cond["reason"] == "Unschedulable" and "1 Insufficient cpu" in cond["message"]
    ds = await eventually(lambda: c.get(DAEMONSET, "fat", ns), lambda d: (d.get("status") or {}).get(
        "desiredNumberScheduled") == 2, what="status")
    assert ds["status"]["numberReady"] == 0 and ds["status"]["numberUnavailable"] == 2
    await asyncio.sleep(3)  # a while of nothing happening is the point: no pod deleted or added meanwhile
    assert sorted(p["metadata"]["uid"] for p in await pods()) == sorted(p["metadata"]["uid"] for p in first)


async def test_daemonset_surge_update_keeps_every_node_served(plane: Callable[..., Awaitable[ControlPlane]],
                                                              namespace: str, shared_apiserver: ApiServerProcess,
                                                              kubectl_bin: str) -> None:
    """``maxSurge: 1, maxUnavailable: 0``: the new pod starts next to the old one and the old one goes only once
    the new one is available, so no node is ever without a ready daemon pod; one node surges at a time."""
    cp = await plane(nodes=3, controllers=["daemonset"])
    c, ns = cp.client, namespace
    mine = set(cp.nodes)
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "proxy"}, "spec": {
        "selector": {"matchLabels": {"app": "proxy"}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": {"app": "proxy"}}, "spec": {
            "containers": [{"name": "envoy", "image": "envoy:1.30"}]}}}}
    await c.create(DAEMONSET, ds, ns)

    def ready_by_node(ps: list[Obj]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in mine}
        for p in ps:
            if p["spec"].get("nodeName") in mine and any(x["type"] == "Ready" and x["status"] == "True"
                                                        for x in p["status"].get("conditions") or []):
                out[p["spec"]["nodeName"]].append(p["spec"]["containers"][0]["image"])
        return out

    await eventually(lambda: running_pods(c, ns, "app=proxy"), lambda ps: all(ready_by_node(ps).values()),
                     what="a ready pod per node")
    updated = copy.deepcopy(ds["spec"]["template"])
    updated["spec"]["containers"][0]["image"] = "envoy:1.31"
    await c.patch(DAEMONSET, "proxy", {"spec": {"template": updated}}, ns)
    surged: set[str] = set()
    deadline = asyncio.get_running_loop().time() + 60
    while True:  # watch the rollout closely: every node keeps a ready pod all along
        pods = (await c.list(POD, ns, label_selector="app=proxy")).items
        by_node = ready_by_node([p for p in pods if not p["metadata"].get("deletionTimestamp")])
        assert all(by_node.values()), f"a node without a ready daemon pod mid-rollout: {by_node}"
        live = [p for p in pods if p["spec"].get("nodeName") in mine and not p["metadata"].get("deletionTimestamp")]
        pairs = {n for n in mine if sum(p["spec"]["nodeName"] == n for p in live) == 2}
        assert len(pairs) <= 1, f"more nodes surging than maxSurge 1: {pairs}"
        surged |= pairs
        if all(imgs == ["envoy:1.31"] for imgs in by_node.values()) and len(live) == len(mine):
            break
        assert asyncio.get_running_loop().time() < deadline, f"rollout stuck: {by_node}"
        await asyncio.sleep(0.05)
    assert surged, "no node ever ran the old and the new pod side by side"
    env = {**os.environ, "KUBECONFIG": str(shared_apiserver.kubeconfig)}
    out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "rollout", "status", "daemonset/proxy", "-n", ns,
                                                   "--timeout=30s"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "successfully rolled out" in out.stdout, out.stderr
