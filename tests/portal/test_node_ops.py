"""Node operations of the change process and the adapter — reboot, reinstall, restart a component — become
repairs a person asks for: one NodeFault per node of the operation's type (``reboot-requested``...), reported
with a Person source naming the change, which the fault catalog routes to its maintenance flow (isolate,
migrate, repair through the risk center, verify, give back).  The change starts them batch by batch under the
risk budget, reads "done" from the flow resolving the fault, and stops starting while a flow waits for a
person."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Running, person
from tests.portal.test_changes import api, mpv

from kokpit.portal._adapter import parse_command
from kokpit.portal._kinds import FLOW, MPV, NODE_FAULT, RISK_POLICY

Obj = dict[str, Any]


def test_grammar_of_node_commands() -> None:
    assert parse_command("restart component kubelet on nodes n1,n2 in cluster fleet/c1") == {
        "verb": "restart-component", "component": "kubelet", "nodes": ["n1", "n2"], "cluster": "fleet/c1"}
    assert parse_command("restart component containerd on n3") == {
        "verb": "restart-component", "component": "containerd", "nodes": ["n3"], "cluster": ""}


async def _fault(portal: Running, name: str) -> Obj | None:
    for f in (await portal.fleet.biz.list(NODE_FAULT)).items:
        if f["metadata"]["name"] == name:
            return dict(f)
    return None


async def _resolve(portal: Running, name: str) -> None:
    """What the flow does once it gave the node back (the flows themselves are tested in operators/)."""
    await portal.fleet.biz.patch_status(NODE_FAULT, name, {"status": {
        "state": "Resolved", "resolution": {"by": "maintenance-flow", "at": "2026-12-07T05:00:00Z",
                                            "reason": "Repaired"}}})


async def test_reboot_reinstall_restart_become_requested_repairs(portal: Running) -> None:
    admin, biz = portal.fleet.admin, portal.fleet.biz
    try:
        await biz.create(MPV, mpv("kubelet-v1.37.0", "v1.37.0"))
    except Exception:
        pass
    try:
        await admin.create(RISK_POLICY, {"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
                                         "metadata": {"name": "one-reboot-at-a-time"},
                                         "spec": {"operations": ["node-reboot"], "scope": {"allClusters": True},
                                                  "maxConcurrent": 1}})
    except Exception:
        pass
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    async with api(portal, alice) as a, api(portal, bob) as b:
        async def ready() -> Obj | None:
            r = await a.post("/api/v1/legacy", json={"command": "reboot node n0,n1 in cluster fleet/c1"})
            return r.json() if r.status_code == 201 else None
        out = await eventually(ready, what="the adapter to know c1's Machines")
        name = out["translation"]["changeRequest"]["name"]
        assert out["translation"]["changeRequest"]["spec"]["operation"] == "node-reboot"
        assert out["approvalsRequired"] == 0 and out["phase"] == "Executing"
        assert out["plan"]["batchSize"] == 1 and "node-reboot: one-reboot-at-a-time" in out["plan"]["budget"]
        reporter = f"changerequest/fleet/{name}"

        async def first() -> Obj | None:
            f = await _fault(portal, "n0.reboot-requested")
            return f if f and (f.get("status") or {}).get("sources") else None
        f = await eventually(first, what="n0's reboot to be requested")
        src = f["status"]["sources"][0]
        assert src["reporter"] == reporter and src["kind"] == "Person" and "alice" in f["status"]["message"]
        assert f["spec"]["nodeName"] == "n0" and f["spec"]["type"] == "reboot-requested"
        await asyncio.sleep(1.5)  # a few engine passes: the budget holds the second node back
        assert await _fault(portal, "n1.reboot-requested") is None
        await _resolve(portal, "n0.reboot-requested")
        await eventually(lambda: _fault(portal, "n1.reboot-requested"), what="the next batch: n1's reboot")
        await _resolve(portal, "n1.reboot-requested")

        async def closed() -> Obj | None:
            cr = (await a.get(f"/api/v1/changes/fleet/{name}")).json()
            return cr if (cr.get("status") or {}).get("outcome") else None
        cr = await eventually(closed, what="the reboot change to close")
        assert cr["status"]["outcome"] == "Succeeded" and cr["status"]["progress"] == "2/2 done"
        assert [o["name"] for o in cr["status"]["objects"] if o["kind"] == "NodeFault"] == [
            "n0.reboot-requested", "n1.reboot-requested"]

        # reinstall needs a second person: nothing is asked of any node before the approval
        r = await a.post("/api/v1/legacy/reinstall-node", json={"nodes": ["n2"], "cluster": "c1"})
        assert r.status_code == 201 and r.json()["approvalsRequired"] == 1, r.text
        rname = r.json()["translation"]["changeRequest"]["name"]
        await asyncio.sleep(1.0)
        assert await _fault(portal, "n2.reinstall-requested") is None
        r = await b.post(f"/api/v1/changes/fleet/{rname}/approve", json={"comment": "disk image is bad"})
        assert r.status_code == 200, r.text
        f = await eventually(lambda: _fault(portal, "n2.reinstall-requested"), what="n2's reinstall requested")
        # its flow gets stuck: the change says a person must finish it, and stays open
        await biz.create(FLOW, {"apiVersion": "kokpit.io/v1alpha1", "kind": "MaintenanceFlow",
                                "metadata": {"name": "n2-reinstall"},
                                "spec": {"nodeName": "n2", "faultType": "reinstall-requested", "flow": "reinstall",
                                         "faults": ["n2.reinstall-requested"]}})
        await biz.patch_status(FLOW, "n2-reinstall", {"status": {"conditions": [
            {"type": "ManualRequired", "status": "True", "reason": "ManualRequired", "message": "x",
             "lastTransitionTime": "2026-12-07T05:00:00Z"}]}})
        await biz.patch_status(NODE_FAULT, "n2.reinstall-requested", {"status": {"maintenanceFlow": "n2-reinstall"}})

        async def waiting() -> bool:
            st = (await a.get(f"/api/v1/changes/fleet/{rname}")).json().get("status") or {}
            return "waiting for a person" in str(st.get("progress")) and not st.get("outcome")
        await eventually(waiting, what="the reinstall change to wait for a person")

        # an unknown component is refused naming the field; a known one becomes component-restart-requested
        r = await a.post("/api/v1/legacy", json={"command": "restart component etcd on nodes n1 in cluster c1"})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.targets"

    assert portal.server.portal is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kokpit", "legacy", "restart-component", "kubelet", "--nodes", "n1", "--cluster",
        "fleet/c1", "--portal", portal.url, "--token", alice,
        "--ca-file", str(portal.server.opts.data_dir / "pki" / "ca.crt"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err_b.decode()
    answer = json.loads(out_b)
    assert answer["translation"]["changeRequest"]["spec"] == {"operation": "component-restart", "cluster": "c1",
                                                              "targets": ["n1"], "component": "kubelet"}
    f = await eventually(lambda: _fault(portal, "n1.component-restart-requested.kubelet"),
                         what="n1's kubelet restart requested")
    assert f["spec"]["component"] == "kubelet"
