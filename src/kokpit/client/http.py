"""A tiny async JSON-over-HTTP client for kokpit's own non-Kubernetes endpoints (node drivers, agents).

The layering rule keeps every HTTP library inside :mod:`kokpit.client`; node drivers and tools that speak a
small JSON protocol use this instead.  It rides on :class:`~kokpit.client.LeanPool` (plain keep-alive
HTTP/1.1): an operator driving thousands of nodes makes thousands of these calls, and each costs about a
tenth of the CPU it costs through httpx2.  Bodies are orjson-encoded, answers decoded when they are JSON;
transport failures become :class:`~kokpit.client.TransportError` (timeouts as :class:`HttpTimeoutError`)
so callers handle one exception family.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from kokpit.client._errors import TransportError
from kokpit.client._lean import LeanPool

__all__ = ["HttpTimeoutError", "JsonHttpClient", "JsonResponse"]


class HttpTimeoutError(TransportError):
    """The peer accepted the connection (or not) but did not answer in time."""


@dataclass(frozen=True)
class JsonResponse:
    """An answer: HTTP status and the decoded JSON body (``None`` when empty or not JSON)."""

    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class JsonHttpClient:
    """Up to ``max_connections`` keep-alive connections to ``base_url``; every call sends and expects JSON."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 50,
                 ssl_context: ssl.SSLContext | None = None, token: str | None = None) -> None:
        """``ssl_context`` for an https URL (default: the system's trust, no client certificate); mutual TLS
        peers (node drivers) pass theirs.  ``token`` is sent as ``Authorization: Bearer`` (the portal's API)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = url.scheme == "https"
        self._prefix = url.path.rstrip("/")
        self._pool = LeanPool(url.hostname, url.port or (443 if tls else 80),
                              ssl_context=(ssl_context or ssl.create_default_context()) if tls else None,
                              token=token,
                              size=max_connections, timeout=timeout)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> JsonResponse:
        content = orjson.dumps(body) if body is not None else b""
        target = self._prefix + path + ("?" + urlencode(dict(params)) if params else "")
        try:
            status, raw = await self._pool.request(method, target, content, timeout=timeout)
        except TransportError as e:
            where = f"{method} {self.base_url}{path}"
            if isinstance(e.__cause__, TimeoutError):
                raise HttpTimeoutError(f"{where}: timed out") from e
            raise TransportError(f"{where}: {e}") from e
        data: Any = None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = None
        return JsonResponse(status, data)

    async def get(
        self, path: str, *, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> JsonResponse:
        return await self.request("GET", path, params=params, timeout=timeout)

    async def post(self, path: str, body: Any = None, *, timeout: float | None = None) -> JsonResponse:
        return await self.request("POST", path, body, timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> JsonHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
