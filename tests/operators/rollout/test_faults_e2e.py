"""A fault attributed to the rollout fails its target: a NodeFault (issue 15's kind) on the canary's node that
names the Rollout in ``status.possiblyCausedBy`` aborts the rollout before the next batch and rolls the
canary back, with a Warning Event saying why."""

from __future__ import annotations

from typing import Any

import pytest
from tests.operators.rollout.conftest import NS, Fleet, cond

from kokpit.client import CRD, EVENT, Kind, NotFoundError
from kokpit.operators.faults.catalog import install_defaults

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
Obj = dict[str, Any]
NODE_FAULT = Kind("kokpit.io", "v1alpha1", "NodeFault", "nodefaults", namespaced=False)

# the shape of issue 15's NodeFault, for a server where that kind is not installed yet
_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefaults.kokpit.io"},
    "spec": {"group": "kokpit.io", "scope": "Cluster",
             "names": {"kind": "NodeFault", "listKind": "NodeFaultList", "plural": "nodefaults", "singular": "nodefault"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


async def _ensure_crd(fleet: Fleet) -> None:
    try:
        await fleet.meta.get(CRD, "nodefaults.kokpit.io")
    except NotFoundError:
        await fleet.meta.create(CRD, _CRD)

    async def established() -> bool:
        crd = await fleet.meta.get(CRD, "nodefaults.kokpit.io")
        return any(c["type"] == "Established" and c["status"] == "True" for c in crd.get("status", {}).get("conditions", []))

    from tests.operators.rollout.conftest import until
    await until(established, "the NodeFault CRD established", 30)
    await install_defaults(fleet.meta)  # kokpit's API server refuses a fault of a type not in the catalog


async def test_a_fault_attributed_to_the_rollout_fails_the_canary_and_rolls_it_back(fleet: Fleet) -> None:
    await _ensure_crd(fleet)
    fleet.cli("rollout", "create", "kb", "-n", NS, "--cluster", "c1", "--replace", "kubelet-1.30=kubelet-1.31",
              "--steps", "1,pause,100%")
    r = await fleet.wait_rollout("kb", lambda r: cond(r, "Paused").get("reason") == "WaitingForPromotion",
                                 "paused after the canary")
    canary = next(t for t in r["status"]["targets"] if t["state"] == "Updated")
    node = canary["node"]
    # a fault on another node, or one that names another change, counts for nothing
    other = next(n for n in fleet.nodes if n != node)
    for name, on, cause in (("f-other-node", other, {"kind": "Rollout", "name": "kb", "namespace": NS}),
                            ("f-other-cause", node, {"kind": "Rollout", "name": "someone-else", "namespace": NS})):
        await fleet.meta.create(NODE_FAULT, {"metadata": {"name": name},
                                             "spec": {"nodeName": on, "type": "component-unhealthy", "component": "kubelet"}})
        await fleet.meta.patch(NODE_FAULT, name, {"status": {"state": "Active", "possiblyCausedBy": [cause]}},
                               subresource="status")
    fault = {"metadata": {"name": f"{node}.component-unhealthy"},
             "spec": {"nodeName": node, "type": "component-unhealthy", "component": "kubelet"}}
    await fleet.meta.create(NODE_FAULT, fault)
    await fleet.meta.patch(NODE_FAULT, f"{node}.component-unhealthy", {"status": {
        "state": "Active", "message": "kubelet exits right after start",
        "possiblyCausedBy": [{"kind": "Rollout", "name": "kb", "namespace": NS, "operation": "component-upgrade"}]}},
        subresource="status")
    r = await fleet.wait_rollout("kb", lambda r: r["status"].get("phase") == "RolledBack", "rolled back")
    t = {x["name"]: x for x in r["status"]["targets"]}
    assert t[canary["name"]]["state"] == "RolledBack"
    assert sum(1 for x in t.values() if x["state"] == "Pending") == len(fleet.nodes) - 1
    assert cond(r, "Aborted")["reason"] == "FailureLimitExceeded" and node in cond(r, "Aborted")["message"]
    events = (await fleet.meta.list(EVENT, NS, field_selector="involvedObject.name=kb")).items
    attributed = [e for e in events if e["reason"] == "FaultAttributed"]
    assert attributed and attributed[0]["type"] == "Warning" and "component-unhealthy" in attributed[0]["message"]
    assert all(p == ["containerd-1.7", "kubelet-1.30"] for p in (await fleet.packages()).values())
