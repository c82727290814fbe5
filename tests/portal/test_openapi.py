"""Every route of the JSON API is in the OpenAPI document, and the document is served to callers only."""

from __future__ import annotations

import re

import httpx
from starlette.routing import Route
from tests.portal.conftest import Running

from kokpit.portal._adapter import VERBS
from kokpit.portal._openapi import document


async def test_every_api_route_is_documented(portal: Running) -> None:
    assert portal.server.portal is not None
    routes = {r.path for r in portal.server.portal.routes if isinstance(r, Route) and r.path.startswith("/api/v1")}
    routes |= {"/api/v1/fleet", "/api/v1/clusters/{ns}/{name}", "/api/v1/clusters/{ns}/{name}/machines/{machine}",
               "/api/v1/risk"}
    routes.discard("/api/v1/legacy/{verb}")  # documented verb by verb
    routes |= {f"/api/v1/legacy/{v}" for v in VERBS}
    doc = document()
    assert routes <= set(doc["paths"]), routes - set(doc["paths"])
    for path, ops in doc["paths"].items():
        for name in re.findall(r"{(\w+)}", path):
            for op in ops.values():
                assert any(p["name"] == name for p in op.get("parameters") or []), (path, name)
    async with portal.http() as anonymous:
        assert (await anonymous.get("/api/openapi.json")).status_code == 401
    async with httpx.AsyncClient(base_url=portal.url, verify=False, headers={
            "Authorization": f"Bearer {portal.fleet.meta.readonly_token}"}) as viewer:
        r = await viewer.get("/api/openapi.json")
        assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
        assert "app;dur=" in (await viewer.get("/api/v1/fleet")).headers["server-timing"]
