"""The portal against real API servers: login, the pages, who may change what, CSRF, XSS, live updates."""

from __future__ import annotations

import asyncio
import json

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import XSS, Running, login

from kokpit.client import NotFoundError
from kokpit.portal._kinds import CLUSTER, RISK_POLICY


async def test_login_refused_without_saying_why(portal: Running) -> None:
    async with portal.http() as http:
        page = await http.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await http.post("/login", data={"csrf": csrf, "token": "not-a-token-of-this-fleet"})
        assert r.status_code == 401
        assert "did not accept these credentials" in r.text and "kokpit_session" not in r.headers.get("set-cookie", "")
        # no login CSRF token: refused before the token is even looked at
        async with portal.http() as fresh:
            r = await fresh.post("/login", data={"token": portal.fleet.meta.admin_token})
            assert r.status_code == 403
        # pages need a session
        assert (await http.get("/fleet")).status_code == 303
        assert (await http.get("/api/v1/fleet")).status_code == 401


async def test_fleet_cluster_machine_pages_escape_and_count(portal: Running) -> None:
    async with portal.http() as http:
        page = await http.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await http.post("/login", data={"csrf": csrf, "token": portal.fleet.meta.admin_token})
        header = r.headers["set-cookie"].lower()
        assert "httponly" in header and "secure" in header and "samesite=strict" in header
        cookie = http.cookies.jar
        set_cookie = next(c for c in cookie if c.name == "kokpit_session")
        assert set_cookie.secure and set_cookie.has_nonstandard_attr("HttpOnly")
        r = await http.get("/fleet")
        assert r.status_code == 200 and "fleet/c1" in r.text and "fleet/c2" in r.text
        assert "Content-Security-Policy" in r.headers
        assert portal.fleet.meta.admin_token not in r.text  # no secret in a page

        async def counted() -> bool:
            v = (await http.get("/api/v1/fleet")).json()
            c1 = next(c for c in v["clusters"] if c["name"] == "c1")
            return c1["nodes"] == 3 and c1["nodes_ready"] == 2 and c1["nodes_isolated"] == 1
        await eventually(counted, what="node counts of c1 from its business API server")

        r = await http.get("/clusters/fleet/c1")
        assert r.status_code == 200 and "c1-kube-apiserver-0 serving" in r.text and "n2" in r.text
        assert XSS not in r.text and "&lt;script&gt;alert(" in r.text  # condition message escaped
        r = await http.get("/clusters/fleet/c1/machines/n0")
        assert r.status_code == 200 and "daemonset-readiness" in r.text and "Installed" in r.text
        assert XSS not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
        assert (await http.get("/clusters/fleet/nope")).status_code == 404
        # filter and sort
        v = (await http.get("/api/v1/fleet", params={"q": "c2"})).json()
        assert [c["name"] for c in v["clusters"]] == ["c2"]
        v = (await http.get("/api/v1/fleet", params={"health": "ready"})).json()
        assert [c["name"] for c in v["clusters"]] == ["c1"]
        v = (await http.get("/api/v1/fleet", params={"sort": "name", "desc": "1"})).json()
        assert [c["name"] for c in v["clusters"]][:2] == ["c2", "c1"]


async def test_csrf_and_viewer_refused_by_the_api_server(portal: Running) -> None:
    admin = portal.fleet.admin
    try:
        await admin.delete(RISK_POLICY, "kokpit-emergency-stop")
    except NotFoundError:
        pass
    async with portal.http() as viewer:
        csrf = await login(viewer, portal.fleet.meta.readonly_token)
        assert (await viewer.get("/risk")).status_code == 200  # a viewer sees
        r = await viewer.post("/risk/pause", data={"csrf": csrf})
        assert r.status_code == 403 and "forbidden" in r.text.lower()  # the API server's 403, readable
        assert "riskpolicies" in r.text
    async with portal.http() as http:
        csrf = await login(http, portal.fleet.meta.admin_token)
        assert (await http.post("/risk/pause", data={})).status_code == 403  # no CSRF token
        assert (await http.post("/risk/pause", data={"csrf": "wrong"})).status_code == 403
        with_header = await http.post("/api/v1/risk/pause", headers={"X-CSRF-Token": "wrong"})
        assert with_header.status_code == 403
        try:
            await admin.get(RISK_POLICY, "kokpit-emergency-stop")
            raise AssertionError("a refused request changed something")
        except NotFoundError:
            pass
        r = await http.post("/risk/pause", data={"csrf": csrf})
        assert r.status_code == 303
        p = await admin.get(RISK_POLICY, "kokpit-emergency-stop")
        assert p["spec"]["paused"] is True
        assert "PAUSED" in (await http.get("/risk")).text
        assert (await http.post("/risk/resume", data={"csrf": csrf})).status_code == 303


async def test_bearer_api_and_live_events(portal: Running) -> None:
    token = portal.fleet.meta.admin_token
    async with httpx.AsyncClient(base_url=portal.url, verify=False, timeout=20.0,
                                 headers={"Authorization": f"Bearer {token}"}) as api:
        v = (await api.get("/api/v1/fleet")).json()
        assert v["total"] >= 2
        seen: list[list[str]] = []

        async def listen() -> None:
            async with api.stream("GET", "/events", params={"watch": "Cluster/fleet/c2"}) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        return

        task = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        await portal.fleet.admin.patch(CLUSTER, "c2", {"metadata": {"labels": {"touched": "yes"}}}, "fleet")
        await asyncio.wait_for(task, 10)
        assert seen == [["Cluster/fleet/c2"]]
