"""The controlled change process over HTTP: plan, the author cannot approve, RBAC decides who may, batches
under the risk budget, pause/resume/abort, outcome, and every attempt in the audit log."""

from __future__ import annotations

from typing import Any

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Running, login, person

from kokpit.client import NotFoundError
from kokpit.portal._kinds import CLUSTER, MACHINE, MPV, RISK_POLICY

Obj = dict[str, Any]


def mpv(name: str, version: str) -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "MachinePackageVersion", "metadata": {"name": name},
            "spec": {"component": "kubelet", "version": version}}


async def installed(portal: Running, machine: str, version: str) -> None:
    """What the machine operator reports once a node runs the new package."""
    await portal.fleet.biz.patch_status(MACHINE, machine, {"status": {"components": [
        {"name": "kubelet", "version": version, "installState": "Installed", "runState": "Running",
         "packageVersion": f"kubelet-{version}"}]}})


def api(portal: Running, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=portal.url, verify=False, timeout=20.0,
                             headers={"Authorization": f"Bearer {token}"})


async def test_upgrade_change_batches_pauses_and_closes(portal: Running) -> None:
    admin, biz = portal.fleet.admin, portal.fleet.biz
    for name, v in (("kubelet-v1.37.0", "v1.37.0"), ("kubelet-v1.37.1", "v1.37.1")):
        try:
            await biz.create(MPV, mpv(name, v))
        except Exception:
            pass
    try:
        await admin.create(RISK_POLICY, {"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
                                         "metadata": {"name": "one-upgrade-at-a-time"},
                                         "spec": {"operations": ["component-upgrade"], "scope": {"allClusters": True},
                                                  "maxConcurrent": 1}})
    except Exception:
        pass
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    async with api(portal, alice) as a, api(portal, bob) as b, api(portal, portal.fleet.meta.readonly_token) as v:
        async def mpvs_seen() -> bool:
            r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                      "cluster": "c1", "targets": ["n0"], "component": "kubelet",
                                                      "version": "kubelet-v9"})
            return r.status_code == 422 and "kubelet-v1.37.1" in r.json()["message"]
        await eventually(mpvs_seen, what="the portal's cache to hold c1's MachinePackageVersions")
        # bad input names the field
        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                  "cluster": "c1", "targets": 5})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.targets"
        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "explode", "cluster": "c1"})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.operation"
        r = await a.post("/api/v1/changes", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "malformed JSON" in r.json()["message"]
        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                  "cluster": "c1", "targets": ["n0", "ghost"], "component": "kubelet",
                                                  "version": "kubelet-v1.37.1"})
        assert r.status_code == 422 and "ghost" in r.json()["message"]
        # a viewer cannot even create one: the API server's 403
        r = await v.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                  "cluster": "c1", "targets": ["n0", "n1"], "component": "kubelet",
                                                  "version": "kubelet-v1.37.1"})
        assert r.status_code == 403 and "changerequests" in r.json()["message"]

        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                  "cluster": "c1", "targets": ["n0", "n1"], "component": "kubelet",
                                                  "version": "kubelet-v1.37.1", "reason": "CVE fix"})
        assert r.status_code == 201, r.text
        cr = r.json()
        name = cr["metadata"]["name"]
        st = cr["status"]
        assert st["author"] == "system:serviceaccount:fleet:alice" and st["approvalsRequired"] == 1
        assert st["plan"]["batchSize"] == 1 and st["plan"]["batches"] == 2
        assert "one-upgrade-at-a-time" in st["plan"]["budget"]
        base = f"/api/v1/changes/fleet/{name}"
        r = await a.post(base + "/approve")
        assert r.status_code == 403 and "author cannot approve" in r.json()["message"]
        r = await v.post(base + "/approve")
        assert r.status_code == 403
        m0 = await biz.get(MACHINE, "n0")
        assert m0["spec"]["packages"] == ["kubelet-v1.37.0"]  # nothing moved before approval

        r = await b.post(base + "/approve", json={"comment": "looks right"})
        assert r.status_code == 200, r.text

        async def machine_packages(name: str) -> list[str]:
            return list((await biz.get(MACHINE, name))["spec"]["packages"])

        async def started(name: str) -> bool:
            return await machine_packages(name) == ["kubelet-v1.37.1"]
        await eventually(lambda: started("n0"), what="the first batch (n0) to be pointed at the new package")
        assert await machine_packages("n1") == ["kubelet-v1.37.0"]  # one at a time: the budget's batch
        assert (await b.post(base + "/pause")).status_code == 200
        await installed(portal, "n0", "v1.37.1")

        async def progress(want: str) -> bool:
            return (await a.get(base)).json()["status"].get("progress", "").startswith(want)
        await eventually(lambda: progress("1/2"), what="progress 1/2")
        assert await machine_packages("n1") == ["kubelet-v1.37.0"]  # paused: no new batch
        assert (await b.post(base + "/resume")).status_code == 200
        await eventually(lambda: started("n1"), what="the second batch after resume")
        await installed(portal, "n1", "v1.37.1")

        async def closed() -> Obj | None:
            got = (await a.get(base)).json()
            return got if got["status"].get("outcome") else None
        final = await eventually(closed, what="the change to close")
        assert final["status"]["outcome"] == "Succeeded" and final["status"]["phase"] == "Succeeded"
        actions = [h["action"] for h in final["status"]["history"]]
        assert actions[0] == "planned" and "approved" in actions and "paused" in actions and actions[-1] == "closed"

        async def audited() -> list[Obj] | None:
            recs = (await a.get("/api/v1/audit")).json()["records"]
            mine = [x for x in recs if name in x["target"]]
            return mine if len(mine) >= 5 else None
        recs = await eventually(audited, what="audit records of the change")
        outcomes = {(x["action"], x["outcome"], x["user"].rsplit(":", 1)[-1]) for x in recs}
        assert ("changerequest.approve", "Refused", "alice") in outcomes
        assert ("changerequest.approve", "Forbidden", "readonly") in outcomes or \
            any(o[0] == "changerequest.approve" and o[1] == "Forbidden" for o in outcomes)
        assert ("changerequest.approve", "Succeeded", "bob") in outcomes
        assert all(x["source"] == "127.0.0.1" and x["via"] == "api" for x in recs)


async def test_release_change_is_made_with_the_approvers_token_and_abort(portal: Running) -> None:
    admin = portal.fleet.admin
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    await admin.patch(CLUSTER, "c2", {"spec": {"packageVersion": "v1"}}, "fleet")
    async with api(portal, alice) as a, portal.http() as browser:
        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "control-plane-release",
                                                  "cluster": "c2", "version": "v2"})
        assert r.status_code == 201, r.text
        name = r.json()["metadata"]["name"]
        # bob approves in a browser: session + CSRF
        csrf = await login(browser, bob)
        page = await browser.get(f"/changes/fleet/{name}")
        assert page.status_code == 200 and "release Cluster c2 to v2" in page.text
        assert (await browser.post(f"/changes/fleet/{name}/approve", data={})).status_code == 403  # no CSRF
        assert (await admin.get(CLUSTER, "c2", "fleet"))["spec"]["packageVersion"] == "v1"
        r = await browser.post(f"/changes/fleet/{name}/approve", data={"csrf": csrf})
        assert r.status_code == 303
        c2 = await admin.get(CLUSTER, "c2", "fleet")
        assert c2["spec"]["packageVersion"] == "v2"
        managers = {m["manager"] for m in c2["metadata"].get("managedFields") or []}
        assert "kokpit-portal" in managers
        # a second request, aborted before anyone approved it
        r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "control-plane-release",
                                                  "cluster": "c1", "version": "v2"})
        other = r.json()["metadata"]["name"]
        assert (await a.post(f"/api/v1/changes/fleet/{other}/abort")).status_code == 200

        async def aborted() -> bool:
            return (await a.get(f"/api/v1/changes/fleet/{other}")).json()["status"].get("outcome") == "Aborted"
        await eventually(aborted, what="the aborted change to close")
        try:
            c1 = await admin.get(CLUSTER, "c1", "fleet")
            assert c1["spec"]["packageVersion"] == "v1"
        except NotFoundError:
            raise AssertionError("c1 vanished") from None
