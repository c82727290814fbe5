"""The controlled change process over HTTP: plan, the author cannot approve, RBAC decides who may, batches
under the risk budget, pause/resume/abort, outcome, and every attempt in the audit log."""

from __future__ import annotations

from typing import Any

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Running, login, person

from kokpit.client import NotFoundError
from kokpit.portal._kinds import CLUSTER, MACHINE, MPV, RISK_POLICY, ROLLOUT

Obj = dict[str, Any]


def mpv(name: str, version: str) -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "MachinePackageVersion", "metadata": {"name": name},
            "spec": {"component": "kubelet", "version": version}}


def rollout_status(machines: list[str], *, updated: int, completed: bool = False, cluster: str = "c1") -> Obj:
    """What the rollout controller reports (the controller itself is tested in tests/operators/rollout and
    end to end with the portal in test_rollout_e2e.py)."""
    targets = [{"name": f"{cluster}/{m}", "state": "Updated" if i < updated else "Pending"}
               for i, m in enumerate(machines)]
    st: Obj = {"targets": targets, "counts": {"Updated": updated, "Pending": len(machines) - updated},
               "phase": "Completed" if completed else "Progressing", "updated": f"{updated}/{len(machines)}"}
    if completed:
        st["conditions"] = [{"type": "Completed", "status": "True", "reason": "Completed",
                             "message": "every target runs the new version",
                             "lastTransitionTime": "2026-12-07T05:00:00Z"}]
    return st


async def _rollout(admin: Any, name: str) -> Obj | None:
    try:
        return dict(await admin.get(ROLLOUT, name, "fleet"))
    except NotFoundError:
        return None


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

        # approved: it runs as a Rollout (created with bob's token), not batched by the portal
        ro = await eventually(lambda: _rollout(admin, name), what="the change's Rollout")
        assert ro["spec"]["target"]["machines"] == {
            "clusterNames": ["c1"], "machineSelector": {"matchLabels": {f"change.kokpit.io/{name}": "true"}},
            "packages": [{"component": "kubelet", "from": "kubelet-v1.37.0", "to": "kubelet-v1.37.1"}]}
        assert ro["spec"]["strategy"]["steps"] == [{"canary": 1}, {"canary": "100%"}]  # the budget's batch
        assert ro["spec"]["strategy"]["maxUnavailable"] == 1
        assert ro["metadata"]["managedFields"][0]["manager"] == "kokpit-portal"
        labelled = {m["metadata"]["name"] for m in (await biz.list(MACHINE)).items
                    if (m["metadata"].get("labels") or {}).get(f"change.kokpit.io/{name}") == "true"}
        assert labelled == {"n0", "n1"}
        m0 = await biz.get(MACHINE, "n0")
        assert m0["spec"]["packages"] == ["kubelet-v1.37.0"]  # the rollout controller changes Machines, not the portal
        assert (await b.post(base + "/pause")).status_code == 200
        assert (await admin.get(ROLLOUT, name, "fleet"))["spec"]["paused"] is True
        r = await v.post(base + "/resume")  # a viewer may not steer the Rollout: the API server's 403
        assert r.status_code == 403 and (await admin.get(ROLLOUT, name, "fleet"))["spec"]["paused"] is True
        assert (await b.post(base + "/resume")).status_code == 200
        assert (await admin.get(ROLLOUT, name, "fleet"))["spec"]["paused"] is False
        # the rollout controller's progress, as it reports it, becomes the change's
        await admin.patch_status(ROLLOUT, name, {"status": rollout_status(["n0", "n1"], updated=1)}, "fleet")

        async def progress(want: str) -> bool:
            return (await a.get(base)).json()["status"].get("progress", "").startswith(want)
        await eventually(lambda: progress("1/2 done"), what="progress 1/2 from the Rollout")
        page = (await b.get(f"/changes/fleet/{name}")).text
        assert f'href="/rollouts/fleet/{name}"' in page and "step 0/2" in page  # the change page shows its Rollout
        await admin.patch_status(ROLLOUT, name, {"status": rollout_status(["n0", "n1"], updated=2,
                                                                          completed=True)}, "fleet")

        async def closed() -> Obj | None:
            got = (await a.get(base)).json()
            return got if got["status"].get("outcome") else None
        final = await eventually(closed, what="the change to close")
        assert final["status"]["outcome"] == "Succeeded" and final["status"]["phase"] == "Succeeded"
        assert final["status"]["progress"] == "2/2 done"
        actions = [h["action"] for h in final["status"]["history"]]
        assert actions[0] == "planned" and "approved" in actions and "paused" in actions and actions[-1] == "closed"
        # undo acts on the Rollout (its controller rolls every target back)
        assert (await b.post(base + "/undo")).status_code == 200
        assert (await admin.get(ROLLOUT, name, "fleet"))["spec"]["undo"] is True

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


async def test_release_of_several_clusters_runs_as_a_rollout(portal: Running) -> None:
    admin = portal.fleet.admin
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    for c in ("c1", "c2"):
        await admin.patch(CLUSTER, c, {"spec": {"packageVersion": "v1"}}, "fleet")
    async with api(portal, alice) as a, api(portal, bob) as b:
        r = await a.post("/api/v1/legacy", json={"command": "release cluster c1,ghost to v2"})
        assert r.status_code == 422 and "ghost" in r.json()["message"]
        r = await a.post("/api/v1/legacy", json={"command": "release cluster fleet/c1,fleet/c2 to v1.37.1"})
        assert r.status_code == 201, r.text
        out = r.json()
        name = out["translation"]["changeRequest"]["name"]
        assert out["translation"]["changeRequest"]["spec"] == {"operation": "control-plane-release",
                                                               "targets": ["c1", "c2"], "version": "v2"}
        assert [t["name"] for t in out["plan"]["touches"]] == ["c1", "c2"]
        r = await b.post(f"/api/v1/changes/fleet/{name}/approve")
        assert r.status_code == 200, r.text
        ro = await admin.get(ROLLOUT, name, "fleet")
        assert ro["spec"]["target"] == {"clusters": {"names": ["c1", "c2"], "packageVersion": "v2"}}
        # nothing is released by the portal itself: the rollout controller takes the Clusters one by one
        assert {(await admin.get(CLUSTER, c, "fleet"))["spec"]["packageVersion"] for c in ("c1", "c2")} == {"v1"}
        await admin.patch_status(ROLLOUT, name, {"status": {"targets": [{"name": "c1", "state": "Updated"},
                                                                        {"name": "c2", "state": "RolledBack"}],
                                                            "counts": {"Updated": 1, "RolledBack": 1},
                                                            "conditions": [{"type": "Aborted", "status": "True",
                                                                            "reason": "FailureLimitExceeded",
                                                                            "message": "c2 failed its post-check",
                                                                            "lastTransitionTime": "2026-12-07T05:00:00Z"},
                                                                           {"type": "RolledBack", "status": "True",
                                                                            "reason": "RolledBack", "message": "",
                                                                            "lastTransitionTime": "2026-12-07T05:00:00Z"}]}},
                                 "fleet")

        async def closed() -> Obj | None:
            got = (await a.get(f"/api/v1/changes/fleet/{name}")).json()
            return got if got["status"].get("outcome") else None
        final = await eventually(closed, what="the change to close with the Rollout's outcome")
        assert final["status"]["outcome"] == "Failed" and "RolledBack" in final["status"]["history"][-1]["message"]


async def test_change_form_namespace_default_and_validation(portal: Running) -> None:
    """The new-change form has a namespace field, prefilled with where the fleet's Clusters live (all in
    fleet here); a bad namespace is refused naming the field, in the form and in the JSON API; a release of
    several Clusters (no NAMESPACE/ in a cluster field) lands in the namespace given."""
    admin = portal.fleet.admin
    alice = await person(admin, "alice")
    async with portal.http() as browser, api(portal, alice) as a:
        csrf = await login(browser, alice)
        page = await browser.get("/changes/new")
        assert page.status_code == 200
        field = page.text.split('name="namespace"', 1)[1].split(">", 1)[0]
        assert 'value="fleet"' in field, field
        assert (await browser.get("/changes/new?namespace=team-a")).text.count('value="team-a"') == 1
        # bad namespaces: not a DNS label, or disagreeing with the cluster's NAMESPACE/ prefix
        for ns, cluster, words in (("Bad_NS", "c1", "not a namespace name"), ("x" * 64, "c1", "not a namespace"),
                                   ("other", "fleet/c1", "make them agree")):
            r = await browser.post("/changes", data={"csrf": csrf, "namespace": ns, "operation":
                                                     "control-plane-release", "cluster": cluster, "version": "v2"})
            assert r.status_code == 422 and "namespace" in r.text and words in r.text, (ns, r.text[:500])
            r = await a.post("/api/v1/changes", json={"namespace": ns, "operation": "control-plane-release",
                                                      "cluster": cluster, "version": "v2"})
            assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "namespace", r.text
        r = await a.post("/api/v1/changes", json={"namespace": 7, "operation": "control-plane-release",
                                                  "cluster": "c1", "version": "v2"})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "namespace"
        # a good form: the namespace field decides where the request lives
        r = await browser.post("/changes", data={"csrf": csrf, "namespace": "fleet", "operation":
                                                 "control-plane-release", "targets": "c1 c2", "version": "v2"})
        assert r.status_code == 303, r.text[:500]
        assert r.headers["location"].startswith("/changes/fleet/control-plane-release-fleet-")
        name = r.headers["location"].rsplit("/", 1)[1]
        cr = (await a.get(f"/api/v1/changes/fleet/{name}")).json()
        assert cr["spec"]["targets"] == ["c1", "c2"] and cr["metadata"]["namespace"] == "fleet"
        # and "fleet/c1" with the namespace field agreeing is the same request
        r = await browser.post("/changes", data={"csrf": csrf, "namespace": "fleet", "operation":
                                                 "control-plane-release", "cluster": "fleet/c1", "version": "v2"})
        assert r.status_code == 303 and r.headers["location"].startswith("/changes/fleet/"), r.text[:300]
        assert (await a.post(f"/api/v1/changes/fleet/{name}/abort")).status_code == 200
        second = r.headers["location"].rsplit("/", 1)[1]
        assert (await a.post(f"/api/v1/changes/fleet/{second}/abort")).status_code == 200
