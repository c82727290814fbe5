"""Taint-based eviction asks the risk center: a node-drain Permit per node and taint episode, nothing evicted
while the risk center refuses (a Warning Event on the Node says why), pods moved once it grants, the permit
released when the node's pods are gone — with a real risk center on its own meta API server, and a
controller-manager restarted while it waits (the permit is found again by its name, not asked twice)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.operators.risk.conftest import Center, policy

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NODE, POD, SECRET, Client
from kokpit.controllermanager._common import DEPLOYMENT
from kokpit.controllermanager.nodelifecycle import NodeLifecycleOptions
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.risk import CLUSTER
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permits import PERMIT, RISK_POLICY, PermitClient

from .conftest import ControlPlane, eventually
from .test_workloads import deployment, running_pods

Obj = dict[str, Any]
NOT_READY = "node.kubernetes.io/not-ready"


@pytest.fixture
async def meta(apiserver: ApiServerProcess, shared_apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    """The meta cluster: kokpit's CRDs and Cluster c1, whose kubeconfig Secret points at the business server."""
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as c:
        await install_crds(c)
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": "default"}, "spec": {"packageVersion": "v1"}})
        raw = await asyncio.to_thread(Path(shared_apiserver.kubeconfig).read_bytes)
        await c.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": "default"},
                                "data": {"value": base64.b64encode(raw).decode()}})
        yield c


def _gate(apiserver: ApiServerProcess) -> tuple[Client, PermitGate]:
    client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="kube-controller-manager")
    return client, PermitGate(PermitClient(client, namespace="default", cluster="c1",
                                           holder="controller-manager/c1"), poll=0.5)


def _drains(permits: list[Obj], node: str) -> list[Obj]:
    return [p for p in permits if p["spec"]["operation"] == "node-drain" and p["spec"]["targets"] == [node]]


async def test_taint_eviction_waits_for_a_node_drain_permit(plane: Callable[..., Awaitable[ControlPlane]],
                                                            namespace: str, meta: Client,
                                                            apiserver: ApiServerProcess) -> None:
    await policy(meta, "hold-drains", operations=["node-drain"], paused=True)
    center = Center(apiserver.kubeconfig).start()
    clients: list[Client] = []
    gates: list[PermitGate] = []
    meta_cm, gate = _gate(apiserver)
    clients.append(meta_cm)
    gates.append(gate)
    opts = NodeLifecycleOptions(grace_period=3.0, monitor_period=0.5, risk=gate)
    cp = await plane(nodes=3, node_lifecycle=opts)
    c, ns = cp.client, namespace
    d = deployment("web", 3)
    d["spec"]["template"]["spec"]["tolerations"] = [
        {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]
    await c.create(DEPLOYMENT, d, ns)
    pods = await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 3, what="3 running")
    broken = pods[0]["spec"]["nodeName"]
    on_broken = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == broken}
    assert cp.sim is not None
    driver = SimulatorDriver(cp.sim.driver_url, tls=cp.sim.client_tls, timeout=5)
    try:
        await driver.fault(broken, "hardware")
        await eventually(lambda: c.get(NODE, broken), lambda n: any(
            t["key"] == NOT_READY and t["effect"] == "NoExecute" for t in n["spec"].get("taints") or []),
            what="not-ready NoExecute taint")
        # the paused policy denies the drain: a Warning on the Node names it, and nothing is evicted
        ev = await eventually(lambda: _node_events(c, broken), lambda es: any(e["reason"] == "RiskDenied" for e in es),
                              timeout=30, what="RiskDenied event on the node")
        denied = next(e for e in ev if e["reason"] == "RiskDenied")
        assert denied["type"] == "Warning" and "hold-drains" in denied["message"], denied
        permits = _drains((await meta.list(PERMIT, "default")).items, broken)
        assert len(permits) == 1 and permits[0]["status"]["state"] == "Denied"
        assert permits[0]["spec"]["holder"] == "controller-manager/c1"
        still = {p["metadata"]["name"]: p for p in (await c.list(POD, ns, label_selector="app=web")).items}
        assert on_broken <= set(still)
        assert all(not still[n]["metadata"].get("deletionTimestamp") for n in on_broken), "evicted without a permit"

        # a restarted controller-manager (fresh permit client) finds the same permit instead of asking twice
        assert cp.restart_cm is not None
        meta_cm2, gate2 = _gate(apiserver)
        clients.append(meta_cm2)
        gates.append(gate2)
        await cp.restart_cm(NodeLifecycleOptions(grace_period=3.0, monitor_period=0.5, risk=gate2))
        await eventually(lambda: _node_events(c, broken), lambda es: sum(
            e.get("count", 1) for e in es if e["reason"] == "RiskDenied") >= 2 and any(
            e["source"]["component"] == "node-controller" for e in es), timeout=30, what="denied again after restart")
        assert len(_drains((await meta.list(PERMIT, "default")).items, broken)) == 1

        # the policy is lifted: the permit is granted, the pods move, the permit is released
        await meta.patch(RISK_POLICY, "hold-drains", {"spec": {"paused": False}})
        moved = await eventually(lambda: running_pods(c, ns, "app=web"), lambda ps: len(ps) == 3 and all(
            p["spec"]["nodeName"] != broken for p in ps), timeout=60, what="pods recreated elsewhere")
        assert not on_broken & {p["metadata"]["name"] for p in moved}
        released = await eventually(lambda: meta.list(PERMIT, "default"), lambda lst: any(
            (p.get("status") or {}).get("outcome") == "Succeeded" for p in _drains(lst.items, broken)),
            timeout=30, what="permit released Succeeded")
        assert len(_drains(released.items, broken)) == 1
    finally:
        await driver.close()
        await center.stop()
        for g in gates:  # their permit watches before the clients they use
            await g.permits.close()
        for cl in clients:
            await cl.close()


async def _node_events(c: Client, node: str) -> list[Obj]:
    return [e for e in (await c.list(EVENT, "default")).items
            if e["involvedObject"].get("kind") == "Node" and e["involvedObject"].get("name") == node]
