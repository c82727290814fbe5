"""The Rollouts pages and actions.  The Rollout kind is served by the rollout controller (issue 16); where this
checkout does not define it yet, the test installs a stand-in CRD of the same name and shape, so what is
tested is the portal's side: an optional watch that starts once the CRD exists, the pages, and each action
being a patch of the Rollout's spec with the user's own token."""

from __future__ import annotations

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Running

import kokpit.api
from kokpit.client import CRD
from kokpit.portal._rollouts import ROLLOUT

STAND_IN = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "rollouts.kokpit.io"},
            "spec": {"group": "kokpit.io", "scope": "Namespaced",
                     "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "listKind": "RolloutList"},
                     "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


async def test_rollout_pages_and_actions(portal: Running) -> None:
    admin = portal.fleet.admin
    if not hasattr(kokpit.api, "Rollout"):
        await admin.apply(CRD, STAND_IN, field_manager="test", force=True)

        async def served() -> bool:
            try:
                await admin.list(ROLLOUT, "fleet")
                return True
            except Exception:
                return False
        await eventually(served, what="the Rollout CRD to be served")
    await admin.create(ROLLOUT, {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout",
                                 "metadata": {"name": "kubelet-wave", "namespace": "fleet"},
                                 "spec": {"target": {"machines": {"clusterNames": ["c1"], "packages": [
                                     {"component": "kubelet", "to": "kubelet-v1.37.1"}]}},
                                          "strategy": {"steps": [{"canary": 1}, {"pause": {}}, {"canary": "100%"}]}}},
                       "fleet")
    await admin.patch_status(ROLLOUT, "kubelet-wave", {"status": {
        "phase": "Paused", "change": "kubelet → kubelet-v1.37.1 on 3 Machines", "targetKind": "Machines",
        "toVersion": "kubelet-v1.37.1", "currentStep": 1, "updated": "1/3",
        "counts": {"Updated": 1, "Pending": 2},
        "steps": [{"index": 0, "type": "canary", "outcome": "Succeeded"}],
        "targets": [{"name": "c1/n0", "state": "Updated", "step": 0, "previous": {"kubelet": "kubelet-v1.37.0"}},
                    {"name": "c1/n1", "state": "Pending"}, {"name": "c1/n2", "state": "Pending"}]}}, "fleet")
    admin_h = {"Authorization": f"Bearer {portal.fleet.meta.admin_token}"}
    viewer_h = {"Authorization": f"Bearer {portal.fleet.meta.readonly_token}"}
    async with httpx.AsyncClient(base_url=portal.url, verify=False, timeout=20.0) as http:
        async def listed() -> bool:
            r = await http.get("/api/v1/rollouts", headers=admin_h)
            return r.status_code == 200 and [x["name"] for x in r.json()["rollouts"]] == ["kubelet-wave"]
        await eventually(listed, timeout=60, what="the portal to watch Rollouts once their CRD exists")
        page = await http.get("/rollouts/fleet/kubelet-wave", headers=admin_h)
        assert page.status_code == 200 and "c1/n0" in page.text and "pause until promoted" in page.text
        assert "Updated 1" in page.text and "<svg" in page.text
        r = await http.post("/api/v1/rollouts/fleet/kubelet-wave/abort", headers=viewer_h)
        assert r.status_code == 403 and "rollouts" in r.json()["message"]
        assert (await http.post("/api/v1/rollouts/fleet/kubelet-wave/promote", headers=admin_h)).status_code == 200
        assert (await http.post("/api/v1/rollouts/fleet/kubelet-wave/pause", headers=admin_h)).status_code == 200
        got = await admin.get(ROLLOUT, "kubelet-wave", "fleet")
        assert got["spec"]["promotedStep"] == 1 and got["spec"]["paused"] is True and not got["spec"].get("abort")
        recs = (await http.get("/api/v1/audit", headers=admin_h)).json()["records"]
        assert {("rollout.abort", "Forbidden"), ("rollout.promote", "Succeeded")} <= {
            (x["action"], x["outcome"]) for x in recs}
        # a big rollout's status names only the targets worth naming and counts the rest (issue 16)
        await admin.patch_status(ROLLOUT, "kubelet-wave", {"status": {
            "updated": "4990/5000", "total": 5000, "counts": {"Updated": 4990, "Failed": 10},
            "targets": [{"name": f"c1/f{i}", "state": "Failed", "message": "install failed"} for i in range(10)],
            "targetsOmitted": 4990}}, "fleet")

        async def counted() -> bool:
            page = await http.get("/rollouts/fleet/kubelet-wave", headers=admin_h)
            return "4990 more are counted" in page.text and "Failed (10)" in page.text and "c1/f9" in page.text
        await eventually(counted, timeout=60, what="the rollout page to count the targets it does not name")
