"""The kubelet's two small HTTP needs, on plain asyncio streams: probing containers, and serving their logs.

Probes are one GET each (HTTP/1.0, connection closed after), like kubelet's: any status 200–399 passes, an
https endpoint is probed without verifying its certificate.  The log endpoint is the contract with the API
server's ``pods/log`` handler (which may not import kubelet code): the kubelet serves
``GET /containerLogs/<namespace>/<pod>/<container>?tailLines=N&follow=true&previous=true&limitBytes=N`` over
HTTPS on its ``--address`` and publishes the port as the Node's ``status.daemonEndpoints.kubeletEndpoint.Port``.
Errors are a non-2xx status with a one-line text explanation the API server passes on.

Logs hold secrets often enough that the endpoint authenticates, as kubelet's does with ``--client-ca-file``
and anonymous access off: the caller must present a client certificate signed by the cluster CA (the CA of
the kubelet's own kubeconfig, which signs the API server's kubelet client certificate) whose common name is
:data:`~kokpit._lib.pki.KUBELET_CLIENT_NAME`.  No certificate → 401; another identity → 403; a certificate
of another CA fails the handshake.  With ``authorize`` a caller without a certificate may instead present a
bearer token, which the API server reviews, as kubelet's ``--authentication-token-webhook`` and
``--authorization-mode=Webhook`` do (TokenReview, then SubjectAccessReview for ``get`` on ``nodes/proxy`` of
this Node, the attributes kubelet gives ``/containerLogs``): not a token of the cluster → 401, a user
without that permission → 403.  The serving certificate is self-signed at start (kubelet's default
without ``--tls-cert-file``; kube-apiserver does not verify it either unless given
``--kubelet-certificate-authority``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from kokpit._lib.pki import KUBELET_CLIENT_NAME, self_signed_server_context

__all__ = ["LogRequest", "LogServer", "LogSource", "http_probe", "tail_bytes", "tcp_probe"]

log = logging.getLogger("kokpit.kubelet.http")


@functools.cache
def _insecure_context() -> ssl.SSLContext:
    """One context for every HTTPS probe (kube's probes do not verify certificates either).  Built once:
    ``create_default_context`` loads the system CA bundle, ~20 ms on the event loop per probe otherwise."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def http_probe(host: str, port: int, path: str, *, https: bool = False, timeout: float = 1.0,
                     headers: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(passed, why) for one GET; only the status line is read."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port,
                                                           ssl=_insecure_context() if https else None)
            lines = [f"GET {path or '/'} HTTP/1.0", f"Host: {host}:{port}", "User-Agent: kube-probe/1.37",
                     "Accept: */*", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1").strip()
    except TimeoutError:
        return False, f"Get {path}: timed out after {timeout}s"
    except (OSError, ssl.SSLError) as e:
        return False, f"Get {path}: {e}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"Get {path}: malformed answer {status_line!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP probe answered {code}"


async def tcp_probe(host: str, port: int, *, timeout: float = 1.0) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _r, w = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError) as e:
        return False, f"dial tcp {host}:{port}: {e or 'timeout'}"
    w.close()
    with contextlib.suppress(Exception):
        await w.wait_closed()
    return True, "connected"


def tail_bytes(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all of it when None)."""
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    pod: str
    container: str
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None


@dataclass
class LogSource:
    """Where a container's log is, and whether more may still be written to it."""

    path: Path
    still_running: Callable[[], bool]


class LogServer:
    """``GET /containerLogs/...`` over HTTPS on ``host``, to the API server's client certificate only;
    ``lookup`` maps a request to a :class:`LogSource` or raises ``LookupError`` with the message to send
    back (404).  ``client_ca_pem`` None: no caller can be authenticated, every request is refused (401)."""

    def __init__(self, lookup: Callable[[LogRequest], LogSource], *, host: str = "127.0.0.1", port: int = 0,
                 client_ca_pem: bytes | None = None, users: frozenset[str] = frozenset({KUBELET_CLIENT_NAME}),
                 follow_poll: float = 0.2, authorize: Callable[[str], Awaitable[int]] | None = None) -> None:
        if not host or host in ("0.0.0.0", "::"):
            raise ValueError("the kubelet's log endpoint binds to one address, not a wildcard")
        self.lookup = lookup
        self.host = host
        self.port = port
        self.client_ca_pem = client_ca_pem
        self.users = users
        self.follow_poll = follow_poll
        self.authorize = authorize  # bearer token -> 200, 401 or 403 (the API server's answer); None: no tokens
        self._server: asyncio.Server | None = None

    def _context(self) -> ssl.SSLContext:
        ctx = self_signed_server_context([self.host, "localhost"], "kokpit-kubelet")
        if self.client_ca_pem:
            ctx.load_verify_locations(cadata=self.client_ca_pem.decode())
            ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate of another CA fails; none at all gets a 401
        return ctx

    async def start(self) -> int:
        ctx = await asyncio.to_thread(self._context)
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=ctx)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        except Exception:
            log.exception("log request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refusal(self, writer: asyncio.StreamWriter, authorization: str) -> tuple[int, bytes] | None:
        """(401, why) without a verified client certificate or an accepted bearer token, (403, why) for an
        identity not allowed to read logs, else None."""
        cert = writer.get_extra_info("peercert") if self.client_ca_pem else None
        scheme, _, token = authorization.partition(" ")
        if not cert and self.authorize is not None and scheme.lower() == "bearer" and token.strip():
            try:
                answer = await self.authorize(token.strip())
            except Exception as e:  # the API server did not answer the review: nobody is let in
                log.warning("reviewing a bearer token failed: %s", e)
                return 503, b"Service Unavailable: the API server could not review the bearer token\n"
            if answer == 200:
                return None
            if answer == 403:
                return 403, b"Forbidden (verb=get, resource=nodes, subresource=proxy): the API server does not " \
                            b"allow this user to read this node's logs\n"
            return 401, b"Unauthorized: the bearer token is not one of this cluster's\n"
        if not cert:
            return 401, (b"Unauthorized: a client certificate of the cluster CA" +
                         (b" or a bearer token" if self.authorize is not None else b"") + b" is required\n")
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        if cn not in self.users:
            return 403, f"Forbidden (user={cn}, verb=get, resource=nodes, subresource=proxy)\n".encode()
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        authorization = ""
        async with asyncio.timeout(10):
            request_line = (await reader.readline()).decode("latin-1").split()
            for _ in range(100):  # headers: only Authorization matters
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "authorization":
                    authorization = value.strip()
            else:
                await _send(writer, 431, b"too many request header fields\n")
                return
        refused = await self._refusal(writer, authorization)
        if refused is not None:
            await _send(writer, *refused)
            return
        if len(request_line) < 2 or request_line[0] != "GET":
            await _send(writer, 405, b"only GET is served\n")
            return
        url = urlsplit(request_line[1])
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            await _send(writer, 404, b"not found: use /containerLogs/<namespace>/<pod>/<container>\n")
            return
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            req = LogRequest(parts[1], parts[2], parts[3], follow=q.get("follow") in ("true", "1"),
                             previous=q.get("previous") in ("true", "1"),
                             tail_lines=int(q["tailLines"]) if q.get("tailLines") else None,
                             limit_bytes=int(q["limitBytes"]) if q.get("limitBytes") else None)
        except ValueError:
            await _send(writer, 400, b"tailLines and limitBytes must be integers\n")
            return
        try:
            src = self.lookup(req)
        except LookupError as e:
            await _send(writer, 404, (str(e.args[0] if e.args else e) + "\n").encode())
            return
        try:
            data = src.path.read_bytes()
        except FileNotFoundError:
            data = b""
        body = tail_bytes(data, req.tail_lines)
        if req.limit_bytes is not None:
            body = body[: max(0, req.limit_bytes)]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n")
        if not req.follow:
            writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            return
        writer.write(b"\r\n" + body)
        await writer.drain()
        offset = len(data)
        while True:
            await asyncio.sleep(self.follow_poll)
            try:
                more = _read_from(src.path, offset)
            except FileNotFoundError:
                return
            if more:
                offset += len(more)
                writer.write(more)
                await writer.drain()
            elif not src.still_running():
                return
            if reader.at_eof():
                return


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


async def _send(writer: asyncio.StreamWriter, code: int, body: bytes) -> None:
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              405: "Method Not Allowed", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}.get(code, "Error")
    writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()

