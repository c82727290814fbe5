"""Every process's /metrics is HTTPS and needs a bearer token of its cluster; probes answer anyone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from kokpit._lib.http1 import TransportError
from kokpit._lib.metricsserver import MetricsServer, load_tokens, scrape

TOKENS = {"admin": "a" * 32, "readonly": "r" * 32}


@pytest.fixture
async def server() -> MetricsServer:
    reg = CollectorRegistry()
    Counter("kokpit_test_things", "things", registry=reg).inc(3)
    ready = asyncio.Event()
    srv = MetricsServer(reg, host="127.0.0.1", port=0, tokens=list(TOKENS.values()), ready=ready.is_set)
    await srv.start()
    srv.ready_event = ready  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        await srv.stop()


async def test_metrics_need_a_token_of_the_cluster(server: MetricsServer) -> None:
    assert server.url.startswith("https://127.0.0.1:") and server.url.endswith("/metrics")
    code, body = await scrape(server.url, TOKENS["readonly"])
    assert code == 200 and b"kokpit_test_things_total 3.0" in body
    assert (await scrape(server.url, TOKENS["admin"]))[0] == 200
    code, body = await scrape(server.url, "x" * 32)
    assert code == 401 and b"kokpit_test_things" not in body
    code, body = await scrape(server.url, "")
    assert code == 401 and b"kokpit_test_things" not in body


async def test_probes_answer_without_a_token(server: MetricsServer) -> None:
    base = server.url.removesuffix("/metrics")
    assert (await scrape(base + "/healthz", ""))[0] == 200
    assert (await scrape(base + "/readyz", ""))[0] == 503
    server.ready_event.set()  # type: ignore[attr-defined]
    assert (await scrape(base + "/readyz", ""))[0] == 200
    assert (await scrape(base + "/other", TOKENS["admin"]))[0] == 404


async def test_plain_http_gets_nothing(server: MetricsServer) -> None:
    with pytest.raises(TransportError):
        await scrape(server.url.replace("https://", "http://"), TOKENS["admin"], timeout=2)


def test_wildcards_and_tokenless_servers_are_refused() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        MetricsServer(CollectorRegistry(), host="0.0.0.0", port=0, tokens=["t" * 32])
    with pytest.raises(ValueError, match="token"):
        MetricsServer(CollectorRegistry(), host="127.0.0.1", port=0, tokens=[])


def test_token_files(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    assert load_tokens(tmp_path / "tokens.json") == list(TOKENS.values())
    (tmp_path / "lines").write_text("\n" + "z" * 20 + "\n")
    assert load_tokens(tmp_path / "lines") == ["z" * 20]
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ValueError, match="holds no token"):
        load_tokens(tmp_path / "short")
    with pytest.raises(ValueError, match="missing"):
        load_tokens(tmp_path / "missing")
