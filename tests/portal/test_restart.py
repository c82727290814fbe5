"""Nothing the portal decides lives only in its memory: a restarted portal keeps people logged in (sealed
cookies, same key file) and carries an executing change on from where it was (progress is read back from
the request, its Rollout and its targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Fleet, Running, login, person
from tests.portal.test_changes import api, mpv, rollout_status

from kokpit.client import NotFoundError
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.portal._kinds import MACHINE, MPV, NODE_FAULT, RISK_POLICY, ROLLOUT


async def test_restart_keeps_sessions_and_carries_a_change_on(fleet: Fleet, tmp_path: Path) -> None:
    biz, admin = fleet.biz, fleet.admin
    for name, v in (("kubelet-v1.37.0", "v1.37.0"), ("kubelet-v1.37.1", "v1.37.1")):
        try:
            await biz.create(MPV, mpv(name, v))
        except Exception:
            pass
    for n in ("n0", "n1", "n2"):
        await biz.patch(MACHINE, n, {"spec": {"packages": ["kubelet-v1.37.0"]}})
    opts = PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp_path / "portal",
                         extensions=default_extensions(), business_interval=0.2)
    first = PortalServer(opts)
    running = Running(await first.start(), first, fleet)
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    try:
        async def cached() -> bool:
            assert first.portal is not None
            bc = first.portal.cache.cluster_cache("fleet", "c1")
            return bc is not None and bc.synced and len(bc.mpvs.store) >= 2
        await eventually(cached, what="c1 in the portal's cache")
        async with api(running, alice) as a, api(running, bob) as b:
            r = await a.post("/api/v1/changes", json={"namespace": "fleet", "operation": "component-upgrade",
                                                      "cluster": "c1", "targets": ["n0", "n1"],
                                                      "component": "kubelet", "version": "kubelet-v1.37.1"})
            assert r.status_code == 201, r.text
            name = r.json()["metadata"]["name"]
            assert (await b.post(f"/api/v1/changes/fleet/{name}/pause")).status_code == 200
            assert (await b.post(f"/api/v1/changes/fleet/{name}/approve")).status_code == 200
        async with running.http() as browser:
            await login(browser, bob)
            cookies = dict(browser.cookies)
    finally:
        await first.stop()
    # the approval made the Rollout (paused, as the change was); nothing else happened while the portal was down
    ro = await admin.get(ROLLOUT, name, "fleet")
    assert ro["spec"]["paused"] is True
    assert (await biz.get(MACHINE, "n0"))["spec"]["packages"] == ["kubelet-v1.37.0"]

    second = PortalServer(PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp_path / "portal",
                                        extensions=default_extensions(), business_interval=0.2))
    running = Running(await second.start(), second, fleet)
    try:
        async with running.http(cookies=cookies) as browser:
            page = await browser.get(f"/changes/fleet/{name}")
            assert page.status_code == 200 and "Executing" in page.text  # still logged in, same session
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            assert (await browser.post(f"/changes/fleet/{name}/resume", data={"csrf": csrf})).status_code == 303
        assert (await admin.get(ROLLOUT, name, "fleet"))["spec"]["paused"] is False
        await admin.patch_status(ROLLOUT, name, {"status": rollout_status(["n0", "n1"], updated=2, completed=True)},
                                 "fleet")
        async with api(running, alice) as a:
            async def closed() -> str:
                return str((await a.get(f"/api/v1/changes/fleet/{name}")).json()["status"].get("outcome") or "")
            assert await eventually(closed, what="the restarted portal to close the change") == "Succeeded"
    finally:
        await second.stop()


async def test_restart_mid_node_operation_asks_no_node_twice(fleet: Fleet, tmp_path: Path) -> None:
    """A reboot of two nodes one at a time: the first portal asks for n0; a restarted one asks for n1 once n0
    is done — and never for n0 again (started targets are read back from the change and the faults)."""
    admin = fleet.admin
    try:
        await admin.create(RISK_POLICY, {"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
                                         "metadata": {"name": "one-reboot-at-a-time"},
                                         "spec": {"operations": ["node-reboot"], "scope": {"allClusters": True},
                                                  "maxConcurrent": 1}})
    except Exception:
        pass
    alice = await person(admin, "alice")

    def portal() -> PortalServer:
        return PortalServer(PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp_path / "portal",
                                          extensions=default_extensions(), business_interval=0.2))
    first = portal()
    running = Running(await first.start(), first, fleet)
    try:
        async with api(running, alice) as a:
            async def planned() -> str | None:
                r = await a.post("/api/v1/legacy", json={"command": "reboot node n0,n1 in cluster fleet/c1"})
                return str(r.json()["translation"]["changeRequest"]["name"]) if r.status_code == 201 else None
            await eventually(planned, what="the reboot change")
        await eventually(lambda: _fault(fleet, "n0.reboot-requested"), what="n0's reboot requested")
    finally:
        await first.stop()
    n0 = await _fault(fleet, "n0.reboot-requested")
    assert n0 is not None and await _fault(fleet, "n1.reboot-requested") is None
    count = int(n0["status"]["count"])

    second = portal()
    await second.start()
    try:
        await fleet.biz.patch_status(NODE_FAULT, "n0.reboot-requested", {"status": {
            "state": "Resolved", "resolution": {"by": "maintenance-flow", "at": "2026-12-07T05:00:00Z"}}})
        await eventually(lambda: _fault(fleet, "n1.reboot-requested"), what="the restarted portal to ask for n1")
        again = await _fault(fleet, "n0.reboot-requested")
        assert again is not None and int(again["status"]["count"]) == count and again["status"]["state"] == "Resolved"
    finally:
        await second.stop()


async def _fault(fleet: Fleet, name: str) -> dict[str, Any] | None:
    try:
        return dict(await fleet.biz.get(NODE_FAULT, name))
    except NotFoundError:
        return None
