"""The Faults and flows page: open faults, flows by step, ManualRequired nodes, and resolve/retry as the
logged-in user — the same request ``kokpit fault resolve|retry`` writes, refused for a viewer by the API
server, refused without the CSRF token, audited either way."""

from __future__ import annotations

from typing import Any

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import XSS, Running, login

from kokpit.client import Client, Kind, NotFoundError
from kokpit.portal._kinds import FLOW, NODE_FAULT

Obj = dict[str, Any]
AUDIT = Kind("kokpit.io", "v1alpha1", "AuditRecord", "auditrecords", namespaced=False)


async def _put(biz: Client, kind: Kind, body: Obj, status: Obj) -> None:
    name = body["metadata"]["name"]
    try:
        await biz.delete(kind, name)
    except NotFoundError:
        pass

    async def gone() -> bool:
        try:
            await biz.get(kind, name)
            return False
        except NotFoundError:
            return True
    await eventually(gone, what=f"{name} deleted")
    await biz.create(kind, body)
    await biz.patch_status(kind, name, {"status": status})


async def seed(biz: Client) -> None:
    """n2 has a kernel deadlock its reboot could not repair (ManualRequired); n1 a flow at Isolate."""
    now = "2026-12-07T04:00:00Z"
    await _put(biz, NODE_FAULT, {"apiVersion": "kokpit.io/v1alpha1", "kind": "NodeFault",
                                 "metadata": {"name": "n2.kernel-deadlock"},
                                 "spec": {"nodeName": "n2", "type": "kernel-deadlock"}},
               {"state": "Active", "severity": "Critical", "count": 3, "firstSeen": now, "lastSeen": now,
                "reporter": "agent/n2", "message": XSS, "maintenanceFlow": "n2-abc"})
    await _put(biz, FLOW, {"apiVersion": "kokpit.io/v1alpha1", "kind": "MaintenanceFlow",
                           "metadata": {"name": "n2-abc"},
                           "spec": {"nodeName": "n2", "faultType": "kernel-deadlock", "flow": "reboot",
                                    "faults": ["n2.kernel-deadlock"]}},
               {"phase": "ManualRequired", "step": "Repair", "currentFlow": "hardware-repair", "level": 3,
                "attempt": 1, "conditions": [{"type": "ManualRequired", "status": "True", "reason": "ManualRequired",
                                              "message": "every repair failed", "lastTransitionTime": now}]})
    await _put(biz, FLOW, {"apiVersion": "kokpit.io/v1alpha1", "kind": "MaintenanceFlow",
                           "metadata": {"name": "n1-def"},
                           "spec": {"nodeName": "n1", "faultType": "node-not-ready", "flow": "reboot"}},
               {"phase": "Running", "step": "Isolate", "currentFlow": "reboot", "attempt": 1})


async def test_faults_page_and_resolve_retry_as_the_user(portal: Running) -> None:
    biz, admin = portal.fleet.biz, portal.fleet.admin
    await seed(biz)
    bearer = {"Authorization": f"Bearer {portal.fleet.meta.admin_token}"}
    async with portal.http(headers=bearer) as api:
        async def listed() -> bool:
            v = (await api.get("/api/v1/faults")).json()
            return v["manualTotal"] == 1 and v["flowsTotal"] == 2 and v["faultsTotal"] >= 1
        await eventually(listed, what="the faults page to show the seeded faults and flows")
        v = (await api.get("/api/v1/faults", params={"cluster": "fleet/c1"})).json()
        assert [m["node"] for m in v["manual"]] == ["n2"] and v["manual"][0]["flow"] == "hardware-repair"
        assert [f["node"] for f in v["flows"]] == ["n1"] and v["byStep"] == {"Isolate": 1, "ManualRequired": 1}
        assert sum(v["openedPerHour"]) >= 0 and len(v["openedPerHour"]) == 24
        assert (await api.get("/api/v1/faults", params={"cluster": "fleet/c2"})).json()["faultsTotal"] == 0
        fleet = (await api.get("/api/v1/fleet", params={"q": "c1"})).json()["clusters"][0]
        assert fleet["faults"] >= 1 and fleet["nodes_repair"] == 2
        machine = (await api.get("/api/v1/clusters/fleet/c1/machines/n2")).json()
        assert machine["faults"][0]["type"] == "kernel-deadlock" and machine["flows"][0]["manual"]

        # malformed input is refused naming the field; a node without an open flow is a 404 naming it
        r = await api.post("/api/v1/faults/fleet/c1/n2/resolve", content=b"{", headers={
            "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["details"]["causes"][0]["field"] == "body"
        r = await api.post("/api/v1/faults/fleet/c1/n2/resolve", json={"note": 7})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "note"
        r = await api.post("/api/v1/faults/fleet/c1/n0/retry", json={})
        assert r.status_code == 404 and r.json()["details"]["causes"][0]["field"] == "node"

    async with portal.http() as viewer:
        csrf = await login(viewer, portal.fleet.meta.readonly_token)
        page = await viewer.get("/faults")
        assert page.status_code == 200 and 'data-node="n2"' in page.text and XSS not in page.text
        r = await viewer.post("/faults/fleet/c1/n2/resolve", data={"csrf": csrf, "note": "mine"})
        assert r.status_code == 403 and "maintenanceflows" in r.text  # the API server's answer, readable
    assert "request" not in (await biz.get(FLOW, "n2-abc"))["spec"]

    async with portal.http() as person:
        csrf = await login(person, portal.fleet.meta.admin_token)
        assert (await person.post("/faults/fleet/c1/n2/resolve", data={"note": "x"})).status_code == 403  # CSRF
        assert "request" not in (await biz.get(FLOW, "n2-abc"))["spec"]
        r = await person.post("/faults/fleet/c1/n2/resolve", data={"csrf": csrf, "note": "replaced the disk"})
        assert r.status_code == 303, r.text
        req = (await biz.get(FLOW, "n2-abc"))["spec"]["request"]
        who = (await person.get("/fleet")).text.split('id="whoami">', 1)[1].split("<", 1)[0]
        assert req["action"] == "Resolve" and req["note"] == "replaced the disk" and req["user"] == who and req["id"]
        r = await person.post("/api/v1/faults/fleet/c1/n2/retry", headers={"X-CSRF-Token": csrf}, json={})
        assert r.status_code == 202 and r.json()["request"]["action"] == "Retry"
        assert (await biz.get(FLOW, "n2-abc"))["spec"]["request"]["id"] != req["id"]  # a new request

    async def audited() -> bool:
        recs = (await admin.list(AUDIT)).items
        mine = [a for a in recs if (a.get("spec") or {}).get("action", "").startswith("fault.")]
        outcomes = {(a["spec"]["action"], a["spec"]["outcome"]) for a in mine}
        return {("fault.resolve", "Forbidden"), ("fault.resolve", "Succeeded"), ("fault.retry", "Succeeded"),
                ("fault.resolve", "Refused")} <= outcomes
    await eventually(audited, what="every resolve/retry attempt audited")


async def test_faults_page_follows_a_flow_live(portal: Running) -> None:
    """An SSE subscriber of the page's topics hears of a flow's change without polling."""
    biz = portal.fleet.biz
    await seed(biz)
    async with httpx.AsyncClient(base_url=portal.url, verify=False, timeout=20.0, headers={
            "Authorization": f"Bearer {portal.fleet.meta.admin_token}"}) as api:
        async with api.stream("GET", "/events", params={"watch": "NodeFault@,MaintenanceFlow@"}) as stream:
            await biz.patch_status(FLOW, "n1-def", {"status": {"step": "Migrate"}})
            async for line in stream.aiter_lines():
                if line.startswith("data:") and "MaintenanceFlow@c1/n1-def" in line:
                    break
        v = (await api.get("/api/v1/faults")).json()
        assert [f["step"] for f in v["flows"] if f["node"] == "n1"] == ["Migrate"]
