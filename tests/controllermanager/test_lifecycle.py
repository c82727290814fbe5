"""Disruption budgets, node lifecycle (taint-based eviction), StatefulSets and Jobs through the real
controller-manager, scheduler and API server, with the simulator playing kubelets."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from kokpit.client import EVENT, NODE, POD, ApiError, Client
from kokpit.controllermanager._claims import PVC
from kokpit.controllermanager._common import DEPLOYMENT, JOB, PDB, STATEFULSET
from kokpit.controllermanager.nodelifecycle import FULL, NORMAL, PARTIAL, NodeLifecycleOptions, zone_state
from kokpit.nodes.simulator import SimulatorDriver

from .conftest import ControlPlane, eventually
from .test_workloads import deployment, running_pods

Obj = dict[str, Any]


async def evict(c: Client, ns: str, name: str) -> int:
    try:
        await c.create_subresource(POD, name, "eviction", {"apiVersion": "policy/v1", "kind": "Eviction",
                                                            "metadata": {"name": name, "namespace": ns}}, ns)
    except ApiError as e:
        return e.code
    return 201


async def test_pdb_status_lets_eviction_refuse_and_allow(plane: Callable[..., Awaitable[ControlPlane]],
                                                         namespace: str) -> None:
    cp = await plane(nodes=3, controllers=["replicaset", "deployment", "disruption"])
    c, ns = cp.client, namespace
    await c.create(DEPLOYMENT, deployment("db", 2), ns)
    await c.create(PDB, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
                         "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}}, ns)
    pdb = await eventually(lambda: c.get(PDB, "db", ns), lambda p: (p.get("status") or {}).get("currentHealthy") == 2,
                           what="PDB sees two healthy pods")
    assert pdb["status"]["disruptionsAllowed"] == 0 and pdb["status"]["expectedPods"] == 2
    victim = (await running_pods(c, ns, "app=db"))[0]["metadata"]["name"]
    assert await evict(c, ns, victim) == 429  # the budget forbids it: nothing is lost
    assert (await c.get(POD, victim, ns))["metadata"].get("deletionTimestamp") is None

    await c.patch(DEPLOYMENT, "db", {"spec": {"replicas": 3}}, ns)
    await eventually(lambda: c.get(PDB, "db", ns), lambda p: p["status"].get("disruptionsAllowed") == 1,
                     what="one disruption allowed")
    assert await evict(c, ns, victim) == 201
    await eventually(lambda: running_pods(c, ns, "app=db"),
                     lambda ps: len(ps) == 3 and victim not in {p["metadata"]["name"] for p in ps},
                     what="the evicted pod replaced")


async def test_not_ready_node_is_tainted_and_its_pods_move(plane: Callable[..., Awaitable[ControlPlane]],
                                                           namespace: str) -> None:
    cp = await plane(nodes=3, node_lifecycle=NodeLifecycleOptions(grace_period=3.0, monitor_period=0.5))
    c, ns = cp.client, namespace
    d = deployment("web", 3)
    d["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]
    await c.create(DEPLOYMENT, d, ns)
    pods = await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 3, what="3 running")
    broken = pods[0]["spec"]["nodeName"]
    assert cp.sim is not None
    driver = SimulatorDriver(cp.sim.driver_url, tls=cp.sim.client_tls, timeout=5)
    try:
        await driver.fault(broken, "hardware")
        node = await eventually(lambda: c.get(NODE, broken), lambda n: any(
            t["key"] == "node.kubernetes.io/not-ready" and t["effect"] == "NoExecute"
            for t in n["spec"].get("taints") or []), what="not-ready NoExecute taint")
        assert any(t["key"] == "node.kubernetes.io/not-ready" and t["effect"] == "NoSchedule"
                   for t in node["spec"]["taints"])
        moved = await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 3 and all(
            p["spec"]["nodeName"] != broken for p in ps), what="pods recreated elsewhere")
        assert len(moved) == 3
        events = (await c.list(EVENT, ns)).items
        assert any(e["reason"] == "TaintManagerEviction" for e in events)

        # a silent node: Ready goes Unknown after the grace period, then the unreachable taint
        silent = next(n for n in cp.nodes if n != broken)
        await driver.fault(silent, "hang")
        node = await eventually(lambda: c.get(NODE, silent), lambda n: any(
            t["key"] == "node.kubernetes.io/unreachable" and t["effect"] == "NoExecute"
            for t in n["spec"].get("taints") or []), timeout=30, what="unreachable taint")
        ready = next(x for x in node["status"]["conditions"] if x["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")

        await driver.fault(broken, "recover")
        await eventually(lambda: c.get(NODE, broken), lambda n: not any(
            t["key"] == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints") or []),
            what="taints removed after recovery")
    finally:
        await driver.close()


def test_zone_states_follow_upstream_thresholds() -> None:
    assert zone_state(10, 0, 0.55) == NORMAL
    assert zone_state(0, 3, 0.55) == FULL
    assert zone_state(4, 6, 0.55) == PARTIAL
    assert zone_state(1, 2, 0.55) == NORMAL  # more than two not-ready nodes are needed
    assert zone_state(5, 5, 0.55) == NORMAL


async def test_statefulset_ordered_names_and_scale_down(plane: Callable[..., Awaitable[ControlPlane]],
                                                        namespace: str) -> None:
    cp = await plane(nodes=2, controllers=["statefulset"])
    c, ns = cp.client, namespace
    await c.create(STATEFULSET, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "pg"},
                                 "spec": {"replicas": 3, "serviceName": "pg",
                                          "selector": {"matchLabels": {"app": "pg"}},
                                          "template": {"metadata": {"labels": {"app": "pg"}}, "spec": {
                                              "containers": [{"name": "pg", "image": "postgres:17"}]}}}}, ns)
    sts = await eventually(lambda: c.get(STATEFULSET, "pg", ns), lambda s: (s.get("status") or {}).get(
        "readyReplicas") == 3, what="3 ready")
    pods = {p["metadata"]["name"]: p for p in await running_pods(c, ns, "app=pg")}
    assert sorted(pods) == ["pg-0", "pg-1", "pg-2"]
    # ordered: each ordinal was created after the previous one was ready
    assert pods["pg-0"]["metadata"]["creationTimestamp"] <= pods["pg-1"]["metadata"]["creationTimestamp"] \
        <= pods["pg-2"]["metadata"]["creationTimestamp"]
    assert pods["pg-1"]["spec"]["hostname"] == "pg-1" and pods["pg-1"]["spec"]["subdomain"] == "pg"
    assert sts["status"]["updateRevision"] == pods["pg-0"]["metadata"]["labels"]["controller-revision-hash"]
    await c.patch(STATEFULSET, "pg", {"spec": {"replicas": 1}}, ns)
    await eventually(lambda: running_pods(c, ns, "app=pg"), lambda ps: [p["metadata"]["name"] for p in ps] == ["pg-0"],
                     what="scaled down to pg-0")


async def test_jobs_complete_and_fail_after_backoff_limit(plane: Callable[..., Awaitable[ControlPlane]],
                                                          namespace: str) -> None:
    cp = await plane(nodes=2, controllers=["job"])
    c, ns = cp.client, namespace

    def job(name: str, annotations: dict[str, str], **spec: Any) -> Obj:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {**spec, "template": {
            "metadata": {"annotations": annotations},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}

    await c.create(JOB, job("ok", {"simulator.kokpit.io/run-seconds": "0.5"}, completions=3, parallelism=2), ns)
    await c.create(JOB, job("bad", {"simulator.kokpit.io/run-seconds": "0.2", "simulator.kokpit.io/exit-code": "1"},
                            backoffLimit=1), ns)

    def cond(j: Obj) -> dict[str, str]:
        return {x["type"]: x.get("reason", "") for x in (j.get("status") or {}).get("conditions") or []}

    ok = await eventually(lambda: c.get(JOB, "ok", ns), lambda j: "Complete" in cond(j), what="ok completes")
    assert ok["status"]["succeeded"] == 3 and ok["status"]["completionTime"]
    bad = await eventually(lambda: c.get(JOB, "bad", ns), lambda j: "Failed" in cond(j), what="bad fails")
    assert cond(bad)["Failed"] == "BackoffLimitExceeded" and bad["status"]["failed"] == 2
    assert json.dumps(bad["status"]).count("BackoffLimitExceeded") >= 1


async def test_statefulset_claims_follow_the_retention_policy(plane: Callable[..., Awaitable[ControlPlane]],
                                                              namespace: str, kubectl_bin: str,
                                                              shared_apiserver: Any) -> None:
    cp = await plane(nodes=2, controllers=["statefulset"])
    c, ns = cp.client, namespace

    def sts(name: str, **retention: str) -> Obj:
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": {
            "replicas": 2, "serviceName": name, "selector": {"matchLabels": {"app": name}},
            "persistentVolumeClaimRetentionPolicy": retention,
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "storage"}}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "containers": [{"name": "c", "image": "postgres:17",
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/pg"}]}]}}}}

    async def claims(app: str) -> dict[str, Obj]:
        return {p["metadata"]["name"]: p for p in (await c.list(PVC, ns, label_selector=f"app={app}")).items}

    await c.create(STATEFULSET, sts("keep"), ns)
    await c.create(STATEFULSET, sts("drop", whenScaled="Delete", whenDeleted="Delete"), ns)
    for app in ("keep", "drop"):
        await eventually(lambda app=app: running_pods(c, ns, f"app={app}"), lambda ps: len(ps) == 2,
                         what=f"{app} has 2 pods")
    kept = await claims("keep")
    assert sorted(kept) == ["data-keep-0", "data-keep-1"]
    assert kept["data-keep-1"]["metadata"]["labels"] == {"tier": "storage", "app": "keep"}
    assert kept["data-keep-1"]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert not kept["data-keep-1"]["metadata"].get("ownerReferences")  # Retain: nothing owns them
    pod1 = await c.get(POD, "keep-1", ns)
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-keep-1"}} in pod1["spec"]["volumes"]
    out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "--kubeconfig", str(shared_apiserver.kubeconfig),
                                                   "get", "pvc", "-n", ns, "-l", "app=keep"],
                                  capture_output=True, text=True, check=True)
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "STATUS", "VOLUME", "CAPACITY"]  # kube's printer columns
    assert [r.split()[:2] for r in rows] == [["data-keep-0", "Pending"], ["data-keep-1", "Pending"]]  # no provisioner
    dropped = await claims("drop")
    assert [r["kind"] for r in dropped["data-drop-0"]["metadata"]["ownerReferences"]] == ["StatefulSet"]
    for app in ("keep", "drop"):
        await c.patch(STATEFULSET, app, {"spec": {"replicas": 1}}, ns)
    await eventually(lambda: claims("drop"), lambda cs: sorted(cs) == ["data-drop-0"], what="scaled claim deleted")
    await eventually(lambda: running_pods(c, ns, "app=keep"), lambda ps: len(ps) == 1, what="keep scaled down")
    assert (await claims("keep"))["data-keep-1"]["metadata"]["uid"] == kept["data-keep-1"]["metadata"]["uid"]
    # scaling up again: the retained claim is the new pod's, not a fresh one
    await c.patch(STATEFULSET, "keep", {"spec": {"replicas": 2}}, ns)
    await eventually(lambda: running_pods(c, ns, "app=keep"), lambda ps: len(ps) == 2, what="keep scaled up")
    assert (await claims("keep"))["data-keep-1"]["metadata"]["uid"] == kept["data-keep-1"]["metadata"]["uid"]
    await c.delete(STATEFULSET, "drop", ns)  # whenDeleted: Delete — the claims go with the set
    await c.delete(STATEFULSET, "keep", ns)
    await eventually(lambda: claims("drop"), lambda cs: not cs, what="claims deleted with the set")
    assert sorted(await claims("keep")) == ["data-keep-0", "data-keep-1"]
