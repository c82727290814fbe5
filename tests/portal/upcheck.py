"""What `kokpit up`'s end-to-end test checks of the portal it starts (kept here, beside the portal's tests)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import httpx


async def check_portal(data_dir: Path, deadline: float, nodes: int, host: str = "127.0.0.1") -> None:
    """The URL `kokpit up` wrote answers over HTTPS with the portal's CA; the admin token logs in and sees every
    cluster's nodes (from the portal's watches of the business clusters); the viewer is refused a change."""
    url = (data_dir / "portal" / "url").read_text().strip()
    assert url.startswith(f"https://{host}:"), url  # kokpit up --host
    tokens = json.loads((data_dir / "meta" / "tokens.json").read_text())
    ctx = ssl.create_default_context(cafile=str(data_dir / "portal" / "pki" / "ca.crt"))
    async with httpx.AsyncClient(base_url=url, verify=ctx, timeout=20.0) as http:
        assert (await http.get("/login")).status_code == 200
        assert (await http.get("/api/v1/fleet")).status_code == 401
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        while True:
            v = (await http.get("/api/v1/fleet", headers=admin)).json()
            if v["total"] >= 2 and all(c["nodes"] == nodes for c in v["clusters"]):
                break
            assert time.monotonic() < deadline, f"the portal never counted {nodes} nodes per cluster: {v}"
            await asyncio.sleep(0.5)
        r = await http.post("/api/v1/risk/pause", headers={"Authorization": f"Bearer {tokens['readonly']}"})
        assert r.status_code == 403, r.text
