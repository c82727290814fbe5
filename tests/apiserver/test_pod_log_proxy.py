"""pods/log as a proxy (kokpit._lib.http1 underneath): what the API server sends to the Node's kubelet
endpoint, how it relays the kubelet's answer, and the Status it answers when the kubelet is unreachable.
The kubelet here is a small asyncio TLS server speaking the documented containerLogs contract; the real
kubelet is exercised end to end (kubectl logs, logs -f) in tests/kubelet/test_kubelet.py."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator

import pytest

from kokpit._lib.pki import KUBELET_CLIENT_NAME, self_signed_server_context
from kokpit.apiserver.testing import ApiServerProcess

NS = "default"


async def _node_with_kubelet_port(apiserver: ApiServerProcess, name: str, port: int) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    status, body = await asyncio.to_thread(apiserver.request, "POST", "/api/v1/nodes", json.dumps(node).encode())
    assert status == 201, body
    patch = {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}
    status, body = await asyncio.to_thread(apiserver.request, "PATCH", f"/api/v1/nodes/{name}/status",
                                           json.dumps(patch).encode(), content_type="application/merge-patch+json")
    assert status == 200, body
    pod = {"metadata": {"name": "p", "namespace": NS},
           "spec": {"nodeName": name, "containers": [{"name": "c", "image": "kokpit"}]}}
    status, body = await asyncio.to_thread(apiserver.request, "POST", f"/api/v1/namespaces/{NS}/pods",
                                           json.dumps(pod).encode())
    assert status == 201, body


@pytest.fixture
async def fake_kubelet(apiserver: ApiServerProcess) -> AsyncIterator[tuple[int, list[bytes], list[bytes]]]:
    """(port, request heads received, the answer to send: status line + headers + body pieces).  Like the
    kubelet, it serves TLS and requires a client certificate of the cluster CA, and it checks the caller is
    the API server's kubelet client identity."""
    heads: list[bytes] = []
    answer: list[bytes] = []
    ctx = self_signed_server_context(["127.0.0.1"], "fake-kubelet")
    ctx.load_verify_locations(cafile=str(apiserver.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(x[0] for x in writer.get_extra_info("peercert")["subject"])
        assert subject["commonName"] == KUBELET_CLIENT_NAME
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        for piece in answer:
            writer.write(piece)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1]), heads, answer
    finally:
        server.close()
        await server.wait_closed()


async def test_log_is_relayed_from_the_kubelet(apiserver: ApiServerProcess,
                                               fake_kubelet: tuple[int, list[bytes], list[bytes]]) -> None:
    port, heads, answer = fake_kubelet
    await _node_with_kubelet_port(apiserver, "n1", port)
    answer[:] = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"6\r\nhello\n\r\n",
                 b"6\r\nworld\n\r\n", b"0\r\n\r\n"]
    status, body = await asyncio.to_thread(apiserver.request, "GET",
                                           f"/api/v1/namespaces/{NS}/pods/p/log?tailLines=2&previous=true")
    assert (status, body) == (200, b"hello\nworld\n")
    first = heads[0].split(b"\r\n")[0]
    assert first.startswith(b"GET /containerLogs/default/p/c?") and b"tailLines=2" in first \
        and b"previous=true" in first

    answer[:] = [b"HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\n", b"container c has no log yet"]
    status, body = await asyncio.to_thread(apiserver.request, "GET", f"/api/v1/namespaces/{NS}/pods/p/log")
    assert status == 400 and json.loads(body)["message"] == "container c has no log yet"


async def test_unreachable_kubelet_is_a_clear_bad_request(apiserver: ApiServerProcess) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()  # nothing listens on `port` any more
    await _node_with_kubelet_port(apiserver, "n2", port)
    status, body = await asyncio.to_thread(apiserver.request, "GET", f"/api/v1/namespaces/{NS}/pods/p/log")
    message = json.loads(body)["message"]
    assert status == 400 and f"cannot reach the kubelet of node n2 at 127.0.0.1:{port}" in message, message
