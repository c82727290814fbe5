"""kokpit's one low-level HTTP/1.1 client: keep-alive connections on plain asyncio streams.

Why hand-rolled: one merge-patch of a Lease costs about 0.9 ms of client CPU through httpx2/lightkube and
about 0.09 ms over asyncio streams, and ten thousand simulated kubelets renew a Lease every 10 s.  Why here,
in ``_lib``: both sides of the layer table need it — :mod:`kokpit.client` (``LeanPool``, ``JsonHttpClient``)
builds on it, and the API server, which may not import the client, proxies ``pods/log`` from a kubelet
through :meth:`Http1Pool.stream`.  It knows HTTP only: no kubeconfig, no Kubernetes types, no metrics
library (``on_response`` lets a caller count).  Transport failures raise :class:`TransportError`, the same
class ``kokpit.client`` raises, caused by ``TimeoutError`` when a deadline ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

__all__ = ["ConnectError", "Http1Pool", "StreamedResponse", "TransportError"]

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_IO_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError)


class TransportError(Exception):
    """The server could not be reached or the connection broke, after the client's retries."""


class ConnectError(TransportError):
    """The connection could not be opened (refused, unreachable, or not within the connect timeout)."""


class StreamedResponse:
    """An answer whose body is read as it arrives (a followed log): ``status``, ``headers`` (names
    lower-cased) and :meth:`chunks`.  Its connection is private and closed when the stream ends."""

    def __init__(self, status: int, headers: dict[str, str], reader: asyncio.StreamReader) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader

    async def chunks(self, size: int = 65536) -> AsyncGenerator[bytes, None]:
        """The body, piece by piece as the server sends it (chunked, sized or until close)."""
        reader = self._reader
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                n = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if n == 0:
                    return
                yield await reader.readexactly(n)
                await reader.readexactly(2)
        length = self.headers.get("content-length")
        if length is not None:
            left = int(length)
            while left > 0:
                data = await reader.read(min(size, left))
                if not data:
                    return
                left -= len(data)
                yield data
            return
        while data := await reader.read(size):
            yield data

    async def read(self, limit: int = 65536) -> bytes:
        """Up to ``limit`` bytes of the body (an error text, say)."""
        out = b""
        async for chunk in self.chunks():
            out += chunk
            if len(out) >= limit:
                break
        return out[:limit]


class Http1Pool:
    """Up to ``size`` keep-alive connections to one ``host:port``; ``request`` returns (status, body bytes).

    ``headers`` are sent with every request (Authorization, Accept, ...) after Host."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        size: int = 8,
        timeout: float = 30.0,
        on_response: Callable[[str, str], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._headers = f"Host: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: deque[_Conn] = deque()
        self._slots = asyncio.Semaphore(size)
        self.timeout = timeout
        # (lower-case verb, status code or "<error>") after every request, for a caller's metrics
        self.on_response = on_response

    async def _open(self) -> _Conn:
        return await asyncio.open_connection(
            self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
        )

    def _count(self, verb: str, code: str) -> None:
        if self.on_response is not None:
            self.on_response(verb, code)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
        *,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """One request on a pooled connection; any I/O failure closes it and raises TransportError
        (caused by ``TimeoutError`` when ``timeout``, default the pool's, ran out)."""
        status, data, _ = await self.request_with_headers(method, path, body, content_type, timeout=timeout)
        return status, data

    async def request_with_headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
        *,
        timeout: float | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """`request`, plus the response headers (names lower-cased)."""
        verb = method.lower()
        async with self._slots:
            while True:
                conn = self._idle.popleft() if self._idle else None
                reused = conn is not None
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    async with asyncio.timeout(self.timeout if timeout is None else timeout):
                        if conn is None:
                            conn = await self._open()
                        self._send(conn[1], method, path, body, content_type)
                        status, headers = await _read_head(conn[0])
                        data, keep = await _read_body(conn[0], status, headers)
                    break
                except _IO_ERRORS as e:
                    if conn is not None:
                        self._discard(conn)
                    stale = reused and (isinstance(e, ConnectionError) or (
                        isinstance(e, asyncio.IncompleteReadError) and not e.partial))
                    if stale:  # the server closed an idle keep-alive connection before reading: retry fresh
                        continue
                    self._count(verb, "<error>")
                    raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
            if keep:
                self._idle.append(conn)
            else:
                self._discard(conn)
        self._count(verb, str(status))
        return status, data, headers

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, connect_timeout: float | None = None,
                     timeout: float | None = None) -> AsyncIterator[StreamedResponse]:
        """Send a request on a fresh connection and hand over the answer once its head has arrived; the body
        streams for as long as the server sends it (a followed log), and the connection is closed on exit.
        Not connected within ``connect_timeout`` raises :class:`ConnectError`; no head within ``timeout``
        (both default to the pool's) raises TransportError; a body that breaks raises ``OSError`` /
        ``asyncio.IncompleteReadError`` from :meth:`StreamedResponse.chunks`."""
        verb = method.lower()
        try:
            async with asyncio.timeout(self.timeout if connect_timeout is None else connect_timeout):
                conn = await self._open()
        except (OSError, TimeoutError) as e:
            self._count(verb, "<error>")
            raise ConnectError(f"{method} {path}: cannot connect to {self.host}:{self.port}: "
                               f"{type(e).__name__}: {e}") from e
        try:
            try:
                async with asyncio.timeout(self.timeout if timeout is None else timeout):
                    self._send(conn[1], method, path, b"", "", close=True)
                    status, headers = await _read_head(conn[0])
            except _IO_ERRORS as e:
                self._count(verb, "<error>")
                raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
            self._count(verb, str(status))
            yield StreamedResponse(status, headers, conn[0])
        finally:
            self._discard(conn)

    def _send(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes, content_type: str,
              *, close: bool = False) -> None:
        head = f"{method} {path} HTTP/1.1\r\n{self._headers}"
        if close:
            head += "Connection: close\r\n"
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)

    @staticmethod
    def _discard(conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            conn[1].close()

    async def close(self) -> None:
        while self._idle:
            _, writer = self._idle.popleft()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name:
            headers[name] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The whole body, and whether the connection may be reused."""
    keep = headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return b"".join(parts), keep
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"])), keep
    if status in (204, 304) or 100 <= status < 200:
        return b"", keep
    return await reader.read(), False  # length by connection close
