"""kokpit._lib.http1 against a real asyncio server on 127.0.0.1: pooled requests and streamed answers in each
body framing, and the two transport failures a caller tells apart (cannot connect / broke after)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kokpit._lib.http1 import ConnectError, Http1Pool, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def _request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_requests_reuse_one_connection_and_send_default_headers() -> None:
    connections = 0
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head = await _request_head(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\nX-Echo: yes\r\n\r\n" % len(body) + body)
            await writer.drain()

    counted: list[tuple[str, str]] = []
    async with serve(handler) as port:
        pool = Http1Pool("127.0.0.1", port, headers={"Authorization": "Bearer t"},
                         on_response=lambda verb, code: counted.append((verb, code)))
        try:
            for i in range(3):
                status, data, headers = await pool.request_with_headers("POST", "/x", b"body%d" % i)
                assert (status, data, headers["x-echo"]) == (201, b"body%d" % i, "yes")
        finally:
            await pool.close()
    assert connections == 1
    assert all(b"Authorization: Bearer t\r\n" in h and h.startswith(b"POST /x HTTP/1.1\r\n") for h in heads)
    assert counted == [("post", "201")] * 3


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_stream_hands_over_the_body_as_it_arrives(framing: str) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _request_head(reader)
        assert b"Connection: close\r\n" in head
        pieces = [b"first line\n", b"second line\n"]
        total = sum(map(len, pieces))
        writer.write(b"HTTP/1.1 200 OK\r\n" + {"chunked": b"Transfer-Encoding: chunked\r\n",
                                              "length": b"Content-Length: %d\r\n" % total,
                                              "close": b""}[framing] + b"\r\n")
        for i, piece in enumerate(pieces):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
            await writer.drain()
            if i == 0:
                await release.wait()  # the first piece must reach the caller before the rest is sent
        if framing == "chunked":
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as port:
        pool = Http1Pool("127.0.0.1", port)
        async with pool.stream("GET", "/log") as answer:
            assert answer.status == 200
            chunks = answer.chunks()
            assert await anext(chunks) == b"first line\n"
            release.set()
            assert b"".join([c async for c in chunks]) == b"second line\n"


async def test_stream_cannot_connect_is_a_connect_error() -> None:
    async with serve(lambda r, w: asyncio.sleep(0)) as port:
        pass  # the port is free again: nothing listens
    pool = Http1Pool("127.0.0.1", port)
    with pytest.raises(ConnectError):
        async with pool.stream("GET", "/log", connect_timeout=2.0):
            pass


async def test_stream_without_an_answer_is_a_transport_error_caused_by_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; ends when the client gives up and closes

    async with serve(silent) as port:
        pool = Http1Pool("127.0.0.1", port)
        with pytest.raises(TransportError) as exc:
            async with pool.stream("GET", "/log", timeout=0.2):
                pass
        assert not isinstance(exc.value, ConnectError) and isinstance(exc.value.__cause__, TimeoutError)
