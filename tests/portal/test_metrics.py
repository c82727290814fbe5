"""The portal serves Prometheus metrics like every process `kokpit up` starts (issue 13 item 6): HTTPS on its
own port, to whom the meta API server allows (TokenReview, then SubjectAccessReview for get on /metrics),
nothing to a caller without a token of the cluster; its answers are counted by method and code."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.portal.conftest import Fleet

from kokpit._lib.metricsserver import scrape
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions


async def test_portal_metrics_are_served_to_whom_the_api_server_allows(fleet: Fleet, tmp_path: Path) -> None:
    opts = PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp_path / "portal",
                         extensions=default_extensions(), business=False, metrics_port=0)
    srv = PortalServer(opts)
    url = await srv.start()
    try:
        assert srv.metrics is not None and srv.metrics.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, verify=False, timeout=20.0) as http:
            assert (await http.get("/login")).status_code == 200
        assert (await scrape(srv.metrics.url, ""))[0] == 401
        assert (await scrape(srv.metrics.url, "not-a-token-of-this-cluster-at-all"))[0] == 401
        code, body = await scrape(srv.metrics.url, fleet.meta.readonly_token)  # system:monitoring may scrape
        assert code == 200, body
        text = body.decode()
        assert 'kokpit_portal_http_requests_total{code="200",method="GET"}' in text, text[:2000]
        assert "kokpit_client_requests_total" in text  # its own calls to the meta API server
    finally:
        await srv.stop()
    assert srv.metrics is not None and srv.metrics._server is None
