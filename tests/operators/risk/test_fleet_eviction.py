"""The business controller-manager asks the risk center in a `kokpit up`-style fleet (issue 14 item 6): the
cluster operator (asking the risk center) runs a Cluster's control plane as processes under the local kubelet
and hands its controller-manager the least-privilege identity ``<cluster>-kube-controller-manager``; a node
tainted NoExecute makes it ask a ``node-drain`` Permit naming the Cluster through that identity — queued, with
nothing evicted, while the budget is full, granted once there is room, released Succeeded when the node's
pods are gone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path
from typing import Any

from tests.operators.cluster._e2e import cond, free_range, local_kubelet, until
from tests.operators.risk.conftest import Center, policy

from kokpit.api import install_crds
from kokpit.api.risk import PermitOutcome
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NODE, POD, SECRET, Client, NotFoundError
from kokpit.operators.cluster import CLUSTER, CPV, OperatorOptions
from kokpit.operators.cluster.run import run_operator
from kokpit.runtime.permits import PERMIT, PermitClient

Obj = dict[str, Any]
IMAGE = "kokpit:dev"


async def _drains(meta: Client, node: str) -> list[Obj]:
    return [p for p in (await meta.list(PERMIT, "default")).items
            if p["spec"]["operation"] == "node-drain" and p["spec"]["targets"] == [node]
            and p["spec"]["holder"] == "controller-manager/fl"]


async def test_tainted_node_eviction_in_a_fleet_takes_a_node_drain_permit_as_the_cluster_actor(
        apiserver: ApiServerProcess, tmp_path: Path) -> None:
    meta = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test")
    await install_crds(meta)
    await policy(meta, "one-drain", operations=["node-drain"], maxConcurrent=1)
    await meta.create(CPV, {"metadata": {"name": "v1"}, "spec": {"kubernetesVersion": "v1.30.7", "components": [
        {"name": "kube-apiserver", "image": IMAGE, "args": ["apiserver"]},
        {"name": "kube-controller-manager", "image": IMAGE, "args": ["controller-manager"]},
        {"name": "simulator", "image": IMAGE, "args": ["simulator", "--lease-period", "2s"]}]}})
    await meta.create(CLUSTER, {"metadata": {"name": "fl"},
                                "spec": {"packageVersion": "v1", "simulation": {"nodes": 3}}}, "default")
    opts = OperatorOptions(workers=2, poll=0.2, resync=1.0, unhealthy_timeout=20.0, release_timeout=30.0,
                           data_root="/clusters", port_range=free_range())
    center = Center(apiserver.kubeconfig).start()
    biz: Client | None = None
    person = PermitClient(meta, namespace="default", cluster="fl", holder="person")
    try:
        async with local_kubelet(meta, tmp_path / "kubelet"):
            op = asyncio.create_task(run_operator(apiserver.kubeconfig, opts, http_port=None,
                                                  handle_signals=False, ask_risk_center=True))
            try:
                async def ready() -> Obj | None:
                    cl = await meta.get(CLUSTER, "fl", "default")
                    return cl if cond(cl, "Ready").get("status") == "True" else None
                await until(ready, "Cluster Ready", 120)
                kcm = await meta.get(POD, "fl-kube-controller-manager-0", "default")
                assert kcm["spec"]["serviceAccountName"] == "fl-kube-controller-manager"
                args = kcm["spec"]["containers"][0]["args"]
                assert "--risk-in-cluster" in args and args[args.index("--risk-cluster") + 1] == "fl"
                kc = tmp_path / "fl.kubeconfig"
                kc.write_bytes(base64.b64decode((await meta.get(SECRET, "fl-kubeconfig", "default"))["data"]["value"]))
                biz = Client.from_kubeconfig(kc, field_manager="person")

                async def nodes() -> list[str]:
                    items = (await biz.list(NODE)).items
                    up = [n["metadata"]["name"] for n in items if cond(n, "Ready").get("status") == "True"]
                    return sorted(up) if len(up) == 3 else []
                a, b, _ = await until(nodes, "3 Ready nodes", 60)
                for node in (a, b):  # bare pods bound to a and b: what taint-based eviction would remove
                    await biz.create(POD, {"metadata": {"name": f"on-{node}", "namespace": "default"}, "spec": {
                        "nodeName": node, "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "c", "image": "pause"}]}}, "default")
                # the budget is full: a person holds the one node-drain of Cluster fl
                held = await person.ensure("node-drain", [b], intent="by-hand")
                await until(lambda: _granted(person, held.name), "the person's permit granted", 30)

                await biz.patch(NODE, a, {"spec": {"taints": [
                    {"key": "example.com/maintenance", "value": "now", "effect": "NoExecute"}]}})
                drains = await until(lambda: _drains(meta, a), "the controller-manager's node-drain permit", 60)
                p = drains[0]
                assert p["spec"]["cluster"] == "fl" and p["metadata"]["labels"]["kokpit.io/cluster"] == "fl"
                assert any(m.get("manager") == "kube-controller-manager"
                           for m in p["metadata"].get("managedFields") or []), p["metadata"].get("managedFields")
                await until(lambda: _state(meta, p["metadata"]["name"], "Queued"), "the drain queued", 30)
                # queued: nothing evicted, the Node says why
                await until(lambda: _warned(biz, a), "a RiskQueued Warning Event on the node", 30)
                assert (await biz.get(POD, f"on-{a}", "default"))["metadata"].get("deletionTimestamp") is None

                await person.release(held.name, PermitOutcome.SUCCEEDED)
                await until(lambda: _state(meta, p["metadata"]["name"], "Granted", "Released"), "the drain granted", 30)
                await until(lambda: _gone(biz, f"on-{a}"), "the pod on the tainted node evicted", 30)
                done = await until(lambda: _state(meta, p["metadata"]["name"], "Released"), "the drain released", 30)
                assert done["status"]["outcome"] == "Succeeded"
                assert (await biz.get(POD, f"on-{b}", "default"))["metadata"].get("deletionTimestamp") is None
            finally:
                op.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await op
                with contextlib.suppress(Exception):
                    await meta.delete(CLUSTER, "fl", "default")
    finally:
        await center.stop()
        await person.close()
        if biz is not None:
            await biz.close()
        await meta.close()


async def _granted(pc: PermitClient, name: str) -> bool:
    return (await pc.get(name)).granted


async def _state(meta: Client, name: str, *states: str) -> Obj | None:
    p = await meta.get(PERMIT, name, "default")
    return p if (p.get("status") or {}).get("state") in states else None


async def _warned(biz: Client, node: str) -> bool:
    events = (await biz.list(EVENT)).items
    return any(e.get("type") == "Warning" and e.get("reason") == "RiskQueued"
               and (e.get("involvedObject") or {}).get("name") == node for e in events)


async def _gone(biz: Client, pod: str) -> bool:
    try:
        await biz.get(POD, pod, "default")
    except NotFoundError:
        return True
    return False
