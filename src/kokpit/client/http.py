"""A tiny async JSON-over-HTTP client for kokpit's own non-Kubernetes endpoints (node drivers, agents).

The layering rule keeps every HTTP library inside :mod:`kokpit.client`; node drivers and tools that speak a
small JSON protocol use this instead of importing httpx themselves.  Bodies are orjson-encoded, answers
decoded when they are JSON; transport failures become :class:`~kokpit.client.TransportError` (timeouts as
:class:`HttpTimeoutError`) so callers handle one exception family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from kokpit.client._errors import TransportError

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
    """One pooled connection set to ``base_url``; every call sends and expects JSON."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 50) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> JsonResponse:
        content = orjson.dumps(body) if body is not None else None
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = await self._http.request(
                method,
                path,
                content=content,
                params=dict(params) if params else None,
                headers=headers,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as e:
            raise HttpTimeoutError(f"{method} {self.base_url}{path}: timed out ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise TransportError(f"{method} {self.base_url}{path}: {type(e).__name__}: {e}") from e
        data: Any = None
        if resp.content:
            try:
                data = orjson.loads(resp.content)
            except orjson.JSONDecodeError:
                data = None
        return JsonResponse(resp.status_code, data)

    async def get(
        self, path: str, *, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> JsonResponse:
        return await self.request("GET", path, params=params, timeout=timeout)

    async def post(self, path: str, body: Any = None, *, timeout: float | None = None) -> JsonResponse:
        return await self.request("POST", path, body, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> JsonHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
