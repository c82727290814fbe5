"""Nothing the portal decides lives only in its memory: a restarted portal keeps people logged in (sealed
cookies, same key file) and carries an executing change on from where it was (progress is read back from
the request and its targets)."""

from __future__ import annotations

from pathlib import Path

from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Fleet, Running, login, person
from tests.portal.test_changes import api, installed, mpv

from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.portal._kinds import MACHINE, MPV


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
    # while the portal is down the machine operator finishes nothing; nothing was started (paused)
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

        async def both_started() -> bool:
            packages = [(await biz.get(MACHINE, n))["spec"]["packages"] for n in ("n0", "n1")]
            return packages == [["kubelet-v1.37.1"]] * 2
        await eventually(both_started, what="the restarted portal to start the upgrade")
        await installed(running, "n0", "v1.37.1")
        await installed(running, "n1", "v1.37.1")
        async with api(running, alice) as a:
            async def closed() -> str:
                return str((await a.get(f"/api/v1/changes/fleet/{name}")).json()["status"].get("outcome") or "")
            assert await eventually(closed, what="the change to close") == "Succeeded"
        assert (await biz.get(MACHINE, "n2"))["spec"]["packages"] == ["kubelet-v1.37.0"]  # not a target
    finally:
        await second.stop()
