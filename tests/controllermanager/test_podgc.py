"""Pod garbage collection through the real controller-manager and API server: pods bound to a Node that is
gone are failed (DisruptionTarget, DeletionByPodGC) and deleted; finished pods beyond the threshold go
oldest first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kokpit.client import EVENT, POD, Client
from kokpit.controllermanager.podgc import PodGCOptions

from .conftest import ControlPlane, eventually

Obj = dict[str, Any]


def _pod(name: str, node: str = "", **ann: str) -> Obj:
    spec: Obj = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}],
                 "schedulerName": "nobody"}  # no scheduler binds these: where they run is the test's choice
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": ann}, "spec": spec}


async def _names(c: Client, ns: str) -> set[str]:
    return {p["metadata"]["name"] for p in (await c.list(POD, ns)).items}


async def test_pod_gc_orphans_and_terminated_over_threshold(plane: Callable[..., Awaitable[ControlPlane]],
                                                         namespace: str) -> None:
    cp = await plane(nodes=1, controllers=["podgc"], pod_gc=PodGCOptions(period=0.3, terminated_threshold=2))
    c, ns = cp.client, namespace
    node = cp.nodes[0]
    # finished pods: four Succeeded on the live node, created in order; two must stay (the newest)
    for i in range(4):
        await c.create(POD, _pod(f"done-{i}", node, **{"simulator.kokpit.io/run-seconds": "0.1"}), ns)
        await eventually(lambda i=i: c.get(POD, f"done-{i}", ns), lambda p: p["status"].get("phase") == "Succeeded",
                         what=f"done-{i} succeeded")
    # an orphan: bound to a node that never existed (a deleted one)
    await c.create(POD, _pod("orphan", "gone-node"), ns)
    seen: list[Obj] = []

    async def orphan_state() -> set[str]:
        for p in (await c.list(POD, ns)).items:
            if p["metadata"]["name"] == "orphan" and p["status"].get("phase") == "Failed":
                seen.append(p)
        return await _names(c, ns)

    left = await eventually(orphan_state, lambda names: "orphan" not in names and not {"done-0", "done-1"} & names,
                            timeout=30, what="garbage collected")
    assert {"done-2", "done-3"} <= left  # the newest finished pods are kept
    events = [e for e in (await c.list(EVENT, ns)).items if e["reason"] == "PodGC"]
    assert any(e["involvedObject"]["name"] == "orphan" and "gone-node" in e["message"] for e in events), events
    if seen:  # the Failed state between the two writes may be too short to observe; when seen it is upstream's
        cond = next(x for x in seen[-1]["status"]["conditions"] if x["type"] == "DisruptionTarget")
        assert cond["reason"] == "DeletionByPodGC"
