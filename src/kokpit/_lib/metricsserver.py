"""The one HTTPS endpoint every kokpit process serves its Prometheus metrics and probes on.

Metrics tell an attacker a lot (object names, rates, what is failing), so ``/metrics`` is protected the
way the API server protects its own: TLS and a bearer token from the cluster's token file (the API
server's ``tokens.json``: its admin and read-only tokens; any string value of a JSON object, or one token
per line, is accepted).  ``/healthz``, ``/livez`` and ``/readyz`` answer anyone, as kube-apiserver's do,
because kubelets probe them without credentials and they reveal nothing but "ok".

A component that talks to an API server can instead hand the decision to it (``authorize``), as
controller-runtime's secure metrics and kube-rbac-proxy do: the token is reviewed (TokenReview) and the
user must be allowed ``get`` on the non-resource URL ``/metrics`` (SubjectAccessReview), so a cluster grants
scraping with RBAC (``kokpit:metrics-reader``) and no token Secret needs to be made by hand.

The serving certificate is made in memory at start (a fresh CA and certificate for the bound address),
like kube-controller-manager's self-signed default: the token, not the certificate, is the protection, and
scrapers reach the address they were told (``kokpit status`` lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kokpit._lib import pki

__all__ = ["PUBLIC_PATHS", "MetricsServer", "load_tokens", "scrape"]

log = logging.getLogger("kokpit.metrics")

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


def load_tokens(path: Path) -> list[str]:
    """The bearer tokens in ``path``: every string value of a JSON object (``{"admin": .., "readonly": ..}``),
    else every non-empty line.  Raises ValueError when there is none (an endpoint nobody may read is a
    misconfiguration, not a lock)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"metrics token file {path}: {e.strerror or e}") from None
    tokens: list[str]
    try:
        raw = json.loads(text)
        tokens = [v for v in raw.values() if isinstance(v, str)] if isinstance(raw, dict) else []
    except ValueError:
        tokens = [line.strip() for line in text.splitlines() if line.strip()]
    tokens = [t for t in tokens if len(t) >= 16]
    if not tokens:
        raise ValueError(f"metrics token file {path} holds no token (16 characters or more)")
    return tokens


def _url_host(host: str) -> str:
    with contextlib.suppress(ValueError):
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]"
    return host


class MetricsServer:
    """``https://HOST:PORT`` serving ``/metrics`` of ``registry`` to holders of ``tokens``, and probes.

    ``port`` 0 picks a free one; :attr:`url` is where it answers once :meth:`start` returned.  A wildcard
    ``host`` is refused: servers bind to the address they were asked for.
    """

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int, tokens: list[str],
                 ready: Callable[[], bool] | None = None,
                 authorize: Callable[[str], Awaitable[int]] | None = None) -> None:
        if not host or host in ("0.0.0.0", "::"):
            raise ValueError("the metrics endpoint binds to one address, not a wildcard")
        if not tokens and authorize is None:
            raise ValueError("the metrics endpoint needs at least one bearer token")
        self.authorize = authorize  # token -> 200, 401 or 403 (the API server's answer), for tokens not above
        self.registry = registry
        self.host = host
        self.port = port
        self._tokens = [t.encode() for t in tokens]
        self.ready = ready or (lambda: True)
        self.url = ""
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        ctx = await asyncio.to_thread(pki.self_signed_server_context, [self.host, "localhost"],
                                        "kokpit-metrics")
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=ctx)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.url = f"https://{_url_host(self.host)}:{self.port}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _authorized(self, headers: dict[str, str]) -> int:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401
        given = token.strip().encode()
        if any(hmac.compare_digest(given, t) for t in self._tokens):  # each compared in constant time
            return 200
        if self.authorize is None:
            return 401
        try:
            return await self.authorize(token.strip())
        except Exception as e:  # the API server is unreachable: refuse, never open
            log.warning("metrics: cannot review a token with the API server: %s", e)
            return 401

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            headers: dict[str, str] = {}
            for _ in range(100):
                h = await asyncio.wait_for(reader.readline(), 10)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            parts = line.decode("latin-1").split()
            method = parts[0] if parts else ""
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            ctype = "text/plain; charset=utf-8"
            if method not in ("GET", "HEAD"):
                code, body = 405, b"method not allowed"
            elif path in PUBLIC_PATHS:
                ok = path != "/readyz" or self.ready()
                code, body = (200, b"ok") if ok else (503, b"not ready")
            elif path != "/metrics":
                code, body = 404, b"not found"
            elif (auth := await self._authorized(headers)) == 401:
                code, body = 401, b"Unauthorized: a bearer token of this cluster is required"
            elif auth != 200:
                code, body = 403, b'Forbidden: the user may not get "/metrics"'
            else:
                code, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
            reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[code]
            extra = "WWW-Authenticate: Bearer\r\n" if code == 401 else ""
            head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    f"{extra}Connection: close\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def scrape(url: str, token: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a metrics URL with a bearer token (the certificate is not verified: see the module docstring);
    raises OSError/TimeoutError (or http1's TransportError) when nothing answers."""
    from urllib.parse import urlsplit

    from kokpit._lib.http1 import Http1Pool

    u = urlsplit(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    pool = Http1Pool(u.hostname or "127.0.0.1", u.port or 443, ssl_context=ctx if u.scheme == "https" else None,
                     headers={"Authorization": f"Bearer {token}"}, size=1, timeout=timeout)
    try:
        return await pool.request("GET", u.path or "/metrics")
    finally:
        await pool.close()
