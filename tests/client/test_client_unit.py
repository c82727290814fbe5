"""kokpit.client against a scripted transport: auth, pagination, retries, watch bookmarks and 410, metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kokpit._lib.clock import RealClock
from kokpit.client import (
    ApiError,
    Client,
    ConflictError,
    Kind,
    NotFoundError,
    ResourceExpiredError,
    TransportError,
    load_config,
)

WIDGET = Kind("example.io", "v1", "Widget", "widgets")
KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: t
clusters: [{name: t, cluster: {server: "https://kube.test:6443", insecure-skip-tls-verify: true}}]
users: [{name: t, user: {token: secret-token}}]
contexts: [{name: t, context: {cluster: t, user: t, namespace: team}}]
"""


class NoSleepClock(RealClock):
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


Handler = Callable[[httpx2.Request], httpx2.Response]


def make_client(tmp_path: Path, handler: Handler, **kw: Any) -> tuple[Client, NoSleepClock]:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(KUBECONFIG)
    clock = NoSleepClock()
    c = Client.from_kubeconfig(cfg, transport=httpx2.MockTransport(handler), clock=clock, **kw)
    return c, clock


def js(code: int, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(
        code,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def status(code: int, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": reason,
    }


async def test_get_sends_bearer_token_and_uses_context_namespace(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def h(req: httpx2.Request) -> httpx2.Response:
        seen.append(req)
        return js(200, {"metadata": {"name": "w"}})

    c, _ = make_client(tmp_path, h)
    assert (await c.get(WIDGET, "w"))["metadata"]["name"] == "w"
    assert seen[0].headers["Authorization"] == "Bearer secret-token"
    assert seen[0].url.path == "/apis/example.io/v1/namespaces/team/widgets/w"
    assert c.metrics.count("get", 200) == 1
    await c.close()


async def test_list_follows_continue_tokens(tmp_path: Path) -> None:
    def h(req: httpx2.Request) -> httpx2.Response:
        cont = req.url.params.get("continue")
        assert req.url.params["limit"] == "2"
        if cont is None:
            return js(
                200, {"metadata": {"resourceVersion": "10", "continue": "p2"}, "items": [{"n": 1}, {"n": 2}]}
            )
        assert cont == "p2" and "resourceVersion" not in req.url.params
        return js(200, {"metadata": {"resourceVersion": "10"}, "items": [{"n": 3}]})

    c, _ = make_client(tmp_path, h)
    out = await c.list(WIDGET, "ns", limit=2)
    assert [i["n"] for i in out.items] == [1, 2, 3] and out.resource_version == "10"
    await c.close()


async def test_expired_continue_token_raises_expired(tmp_path: Path) -> None:
    def h(req: httpx2.Request) -> httpx2.Response:
        if req.url.params.get("continue"):
            return js(410, status(410, "Expired"))
        return js(200, {"metadata": {"resourceVersion": "1", "continue": "old"}, "items": []})

    c, _ = make_client(tmp_path, h)
    with pytest.raises(ResourceExpiredError):
        await c.list(WIDGET, "ns")
    await c.close()


async def test_5xx_retried_for_get_not_for_post(tmp_path: Path) -> None:
    n = {"GET": 0, "POST": 0}

    def h(req: httpx2.Request) -> httpx2.Response:
        n[req.method] += 1
        if req.method == "GET" and n["GET"] < 3:
            return js(503, status(503, "ServiceUnavailable"))
        if req.method == "POST":
            return js(500, status(500, "InternalError"))
        return js(200, {"metadata": {"name": "w"}})

    c, clock = make_client(tmp_path, h)
    await c.get(WIDGET, "w", "ns")
    assert n["GET"] == 3 and len(clock.slept) == 2 and clock.slept[1] > clock.slept[0] * 1.5
    assert c.metrics.count("get", 503) == 2 and c.metrics.count("get", 200) == 1
    with pytest.raises(ApiError) as e:
        await c.create(WIDGET, {"metadata": {"name": "w"}}, "ns")
    assert e.value.code == 500 and n["POST"] == 1
    await c.close()


async def test_429_honours_retry_after_for_any_verb(tmp_path: Path) -> None:
    n = [0]

    def h(req: httpx2.Request) -> httpx2.Response:
        n[0] += 1
        if n[0] == 1:
            return js(429, status(429, "TooManyRequests"), {"Retry-After": "3"})
        return js(201, json.loads(req.content))

    c, clock = make_client(tmp_path, h)
    out = await c.create(WIDGET, {"metadata": {"name": "w"}}, "ns")
    assert out["kind"] == "Widget" and out["apiVersion"] == "example.io/v1"
    assert clock.slept == [3.0]
    await c.close()


async def test_connect_errors_retried_then_surface_as_transport_error(tmp_path: Path) -> None:
    def h(req: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=req)

    c, clock = make_client(tmp_path, h, max_retries=2)
    with pytest.raises(TransportError):
        await c.create(WIDGET, {"metadata": {"name": "w"}}, "ns")
    assert len(clock.slept) == 2 and c.metrics.count("create", "<error>") == 3
    await c.close()


async def test_error_mapping(tmp_path: Path) -> None:
    def h(req: httpx2.Request) -> httpx2.Response:
        if req.method == "GET":
            return js(404, status(404, "NotFound"))
        return js(409, status(409, "Conflict"))

    c, _ = make_client(tmp_path, h)
    with pytest.raises(NotFoundError):
        await c.get(WIDGET, "w", "ns")
    with pytest.raises(ConflictError):
        await c.update(WIDGET, {"metadata": {"name": "w", "namespace": "ns", "resourceVersion": "1"}})
    await c.close()


async def test_patch_types_field_manager_and_force(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def h(req: httpx2.Request) -> httpx2.Response:
        seen.append(req)
        return js(200, {"metadata": {"name": "w"}})

    c, _ = make_client(tmp_path, h, field_manager="mgr")
    await c.patch(WIDGET, "w", {"spec": {"a": 1}}, "ns")
    await c.patch(WIDGET, "w", [{"op": "add", "path": "/x", "value": 1}], "ns", patch_type="json")
    await c.patch(WIDGET, "w", {"spec": {}}, "ns", patch_type="strategic")
    await c.patch_status(WIDGET, "w", {"status": {"v": 1}}, "ns")
    await c.apply(
        WIDGET, {"metadata": {"name": "w", "namespace": "ns"}, "spec": {"v": 1}}, field_manager="ssa"
    )
    types = [r.headers["Content-Type"] for r in seen]
    assert types == [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    assert seen[0].url.params["fieldManager"] == "mgr"
    assert seen[3].url.path.endswith("/widgets/w/status")
    assert seen[4].url.params["fieldManager"] == "ssa" and seen[4].url.params["force"] == "true"
    assert json.loads(seen[4].content)["apiVersion"] == "example.io/v1"
    await c.close()


def _stream(lines: list[dict[str, Any]]) -> httpx2.Response:
    return httpx2.Response(200, content=b"".join(json.dumps(x).encode() + b"\n" for x in lines))


async def test_watch_asks_for_bookmarks_and_reports_410(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def h(req: httpx2.Request) -> httpx2.Response:
        seen.append(req)
        return _stream(
            [
                {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
                {"type": "ERROR", "object": status(410, "Expired")},
            ]
        )

    c, _ = make_client(tmp_path, h)
    got = []
    with pytest.raises(ResourceExpiredError):
        async for ev in c.watch(WIDGET, resource_version="4"):
            got.append((ev.type, ev.resource_version))
    assert got == [("ADDED", "5"), ("BOOKMARK", "9")]
    p = seen[0].url.params
    assert p["watch"] == "true" and p["allowWatchBookmarks"] == "true" and p["resourceVersion"] == "4"
    assert seen[0].url.path == "/apis/example.io/v1/widgets"  # all namespaces
    await c.close()


async def test_watch_resumable_resumes_from_last_seen_version(tmp_path: Path) -> None:
    rvs: list[str] = []

    def h(req: httpx2.Request) -> httpx2.Response:
        rvs.append(req.url.params["resourceVersion"])
        if len(rvs) == 1:
            return _stream([{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}])
        if len(rvs) == 2:
            raise httpx2.ReadError("reset", request=req)
        return _stream([{"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "21"}}}])

    c, clock = make_client(tmp_path, h)
    async for ev in c.watch_resumable(WIDGET, "ns", resource_version="10"):
        assert ev.type in ("BOOKMARK", "MODIFIED")
        if ev.type == "MODIFIED":
            break
    assert rvs == ["10", "20", "20"] and len(clock.slept) == 1
    await c.close()


async def test_client_side_qps_limit(tmp_path: Path) -> None:
    c, clock = make_client(tmp_path, lambda req: js(200, {}), qps=5.0, burst=2)
    for _ in range(4):
        await c.get(WIDGET, "w", "ns")
    assert len(clock.slept) == 2 and clock.slept[0] == pytest.approx(0.2, abs=0.05)
    await c.close()


def test_in_cluster_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("kokpit-system")
    (tmp_path / "ca.crt").write_text("")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conf = load_config(in_cluster=True, service_account_dir=tmp_path)
    assert conf.cluster.server == "https://10.0.0.1:443"
    assert conf.namespace == "kokpit-system"
    assert conf.user is not None and conf.user.token == "sa-token"
