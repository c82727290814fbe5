"""The portal in a real browser: Playwright driving Debian's chromium (never skipped; .ci/run installs it).

Log in, see the fleet, open a cluster and a machine, watch a page change live (no reload) when an object
changes, plan a change as one person and approve it as another, watch it progress, pause and abort it; a
viewer is refused by the API server; a change without the CSRF token is refused; hostile text in objects
stays text.  With KOKPIT_SCREENSHOTS=DIR the main pages are saved there (docs/ holds the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import XSS, Running, person
from tests.portal.test_changes import mpv, rollout_status

from kokpit.portal._kinds import MACHINE, MPV, ROLLOUT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_PRESENT = Path(CHROMIUM).exists()
SHOTS = os.environ.get("KOKPIT_SCREENSHOTS", "")
if SHOTS:
    Path(SHOTS).mkdir(parents=True, exist_ok=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run does)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            await b.close()


async def session(browser: Browser, portal: Running, token: str) -> tuple[BrowserContext, Page]:
    ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    await page.goto(portal.url + "/fleet")
    await expect(page).to_have_url(portal.url + "/login")
    await page.fill("#token", token)
    await page.click("#login")
    await expect(page).to_have_url(portal.url + "/fleet")
    return ctx, page


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / f"portal-{name}.png"), full_page=True)


async def test_fleet_cluster_machine_live_and_escaped(browser: Browser, portal: Running) -> None:
    ctx, page = await session(browser, portal, portal.fleet.meta.admin_token)
    await expect(page.locator("#whoami")).to_have_text("kokpit-admin")
    await expect(page.locator('tr[data-cluster="fleet/c1"]')).to_be_visible()
    await expect(page.locator('tr[data-cluster="fleet/c1"] td').nth(4)).to_have_text("3", timeout=20000)
    assert await page.locator("svg.chart").count() >= 1
    await expect(page.locator("#live-state")).to_have_class("live on")
    await shot(page, "fleet")
    await page.click('a[href="/clusters/fleet/c1"]')
    await expect(page.locator("h1")).to_have_text("Cluster c1")
    await expect(page.locator("#components")).to_contain_text("c1-kube-apiserver-0 serving")
    await expect(page.locator("body")).to_contain_text('<script>alert("x")</script>')  # shown as text
    await shot(page, "cluster")
    await page.click('a[href="/clusters/fleet/c1/machines/n0"]')
    await expect(page.locator("h1")).to_have_text("Machine n0")
    await expect(page.locator("#machine-components")).to_contain_text("Installed")
    await expect(page.locator("body")).to_contain_text("daemonset-readiness")
    await shot(page, "machine")
    # live: the Machine changes in its business cluster; the page follows without a reload
    await page.evaluate("window.__same_page = 42")
    await expect(page.locator("#live-state")).to_have_class("live on")
    await portal.fleet.biz.patch_status(MACHINE, "n0", {"status": {"phase": "Upgrading-live-check"}})
    await expect(page.locator("#machine-phase")).to_have_text("Upgrading-live-check", timeout=5000)
    assert await page.evaluate("window.__same_page") == 42
    # a change without the CSRF token, from the page's own origin with its cookie: refused
    status = await page.evaluate("fetch('/risk/pause', {method: 'POST'}).then(r => r.status)")
    assert status == 403
    assert page.dialogs == []  # type: ignore[attr-defined]  # no injected script ever ran
    await ctx.close()


async def test_viewer_sees_but_cannot_stop(browser: Browser, portal: Running) -> None:
    ctx, page = await session(browser, portal, portal.fleet.meta.readonly_token)
    await expect(page.locator('tr[data-cluster="fleet/c2"]')).to_be_visible()
    await page.click('nav a[href="/risk"]')
    await page.click("#emergency-stop")
    await expect(page.locator("h1")).to_have_text("403")
    await expect(page.locator(".flash.err")).to_contain_text("forbidden")
    await shot(page, "forbidden")
    await ctx.close()


async def test_change_planned_approved_watched_paused_aborted(browser: Browser, portal: Running) -> None:
    admin, biz = portal.fleet.admin, portal.fleet.biz
    for name, v in (("kubelet-v1.37.0", "v1.37.0"), ("kubelet-v1.37.1", "v1.37.1")):
        try:
            await biz.create(MPV, mpv(name, v))
        except Exception:
            pass
    for n in ("n0", "n1", "n2"):
        await biz.patch(MACHINE, n, {"spec": {"packages": ["kubelet-v1.37.0"]}})
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    actx, apage = await session(browser, portal, alice)
    await apage.click('nav a[href="/changes"]')
    await apage.click("#new-change")
    await expect(apage.locator("#namespace")).to_have_value("fleet")  # where the fleet's Clusters live
    await apage.select_option("#operation", "component-upgrade")
    await apage.fill("#cluster", "fleet/c1")
    await apage.fill("#targets", "n0 n1 n2")
    await apage.fill("#component", "kubelet")
    await apage.fill("#version", "kubelet-v1.37.1")
    await apage.fill("#reason", "kernel CVE")
    await shot(apage, "change-new")

    async def mpvs_cached() -> bool:  # the portal reads c1's MachinePackageVersions through its watch
        assert portal.server.portal is not None
        bc = portal.server.portal.cache.cluster_cache("fleet", "c1")
        return bc is not None and bc.synced and len(bc.mpvs.store) >= 2
    await eventually(mpvs_cached, what="c1's MachinePackageVersions in the portal's cache")
    await apage.click("#submit-change")
    await expect(apage.locator("h1")).to_contain_text("Change ")
    await expect(apage.locator("#author")).to_have_text("system:serviceaccount:fleet:alice")
    await expect(apage.locator("#phase")).to_have_text("AwaitingApproval")
    url = apage.url
    await apage.click("#approve")  # the author tries
    await expect(apage.locator(".flash.err")).to_contain_text("author cannot approve")

    bctx, bpage = await session(browser, portal, bob)
    await bpage.goto(url)
    await bpage.click("#approve")
    await expect(bpage.locator("#phase")).to_contain_text("Executing")
    # alice's page was left open on the change: it follows live
    await apage.goto(url)
    await expect(apage.locator("#phase")).to_contain_text("Executing", timeout=5000)
    # it runs as a Rollout: its controller's progress (reported here by the test) shows live on the change
    name = url.rstrip("/").rsplit("/", 1)[1]
    await expect(apage.locator("#rollout")).to_contain_text(f"Rollout {name}", timeout=10000)
    await portal.fleet.admin.patch_status(ROLLOUT, name, {"status": rollout_status(["n0", "n1", "n2"], updated=2)},
                                          "fleet")
    await expect(apage.locator("#progress")).to_contain_text("2/3 done", timeout=10000)
    await shot(apage, "change")
    await bpage.click("#pause")
    await expect(bpage.locator("#paused-tag")).to_be_visible()
    assert (await portal.fleet.admin.get(ROLLOUT, name, "fleet"))["spec"]["paused"] is True
    await bpage.click("#abort")
    await expect(apage.locator("#outcome")).to_have_text("Aborted", timeout=10000)
    assert (await portal.fleet.admin.get(ROLLOUT, name, "fleet"))["spec"]["abort"] is True
    await expect(apage.locator("#timeline")).to_contain_text("aborted by")
    await apage.click('nav a[href="/audit"]')
    await expect(apage.locator("#audit")).to_contain_text("changerequest.approve")
    await shot(apage, "audit")
    await actx.close()
    await bctx.close()
    assert XSS  # the fixture's hostile text is in the objects these pages rendered


async def test_resolve_a_manual_required_node(browser: Browser, portal: Running) -> None:
    """The Faults and flows page lists the node a person must finish; Resolve (with a note) puts the same
    request on its flow as ``kokpit fault resolve`` — as the logged-in user — and the page follows the flow's
    answer live.  A viewer's Resolve is refused by the API server."""
    from tests.portal.test_faults import seed

    from kokpit.portal._kinds import FLOW

    biz = portal.fleet.biz
    await seed(biz)
    vctx, viewer = await session(browser, portal, portal.fleet.meta.readonly_token)
    await viewer.goto(portal.url + "/faults")
    await viewer.locator('tr[data-node="n2"] button.resolve').click()
    await expect(viewer.locator("body")).to_contain_text("maintenanceflows")  # the API server's 403
    assert "request" not in (await biz.get(FLOW, "n2-abc"))["spec"]
    await vctx.close()

    ctx, page = await session(browser, portal, portal.fleet.meta.admin_token)
    await page.click('nav a[href="/faults"]')
    await expect(page.locator("h1")).to_have_text("Faults and flows")
    row = page.locator('tr[data-node="n2"]')
    await expect(row).to_contain_text("hardware-repair", timeout=20000)
    await expect(page.locator('#faults tr[data-fault="n2.kernel-deadlock"]')).to_contain_text("Critical")
    await expect(page.locator("#flows")).to_contain_text("Isolate")
    await shot(page, "faults")
    await row.locator('input[name="note"]').fill("replaced the disk")
    await row.locator("button.resolve").click()
    await expect(page).to_have_url(portal.url + "/faults")
    req = (await biz.get(FLOW, "n2-abc"))["spec"]["request"]
    assert req["action"] == "Resolve" and req["user"] == "kokpit-admin" and req["note"] == "replaced the disk"
    # the flow controller's answer (here written by the test): the page follows without a reload
    await biz.patch_status(FLOW, "n2-abc", {"status": {"phase": "Running", "step": "Verify", "conditions": [
        {"type": "ManualRequired", "status": "False", "reason": "ResolvedByPerson", "message": "resolved",
         "lastTransitionTime": "2026-12-07T04:10:00Z"}],
        "humanActions": [{"id": req["id"], "action": "Resolve", "user": "kokpit-admin", "at": "2026-12-07T04:10:00Z"}]}})
    await expect(page.locator('#flows tr[data-flow="n2-abc"]')).to_contain_text("Resolve by kokpit-admin",
                                                                                 timeout=10000)
    await expect(page.locator("#manual-count")).to_have_text("0")
    await ctx.close()
