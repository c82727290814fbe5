"""The kubelet log endpoint's bearer-token path on its own (the API server's review faked): what each answer of
the review becomes, a review that cannot be made lets nobody in, and a flood of header lines is cut short."""

from __future__ import annotations

import asyncio
import ssl

from kokpit.kubelet._http import LogRequest, LogServer, LogSource


def _missing(req: LogRequest) -> LogSource:
    raise LookupError(f"pod {req.pod} not found")


async def _ask(port: int, headers: list[str]) -> tuple[int, str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write("\r\n".join(["GET /containerLogs/ns/p/c HTTP/1.1", "Host: x", *headers, "", ""]).encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_each_review_answer_and_a_failed_review() -> None:
    answers: dict[str, int] = {"admin-token": 200, "viewer-token": 403, "foreign-token": 401}
    seen: list[str] = []

    async def review(token: str) -> int:
        seen.append(token)
        if token == "unreviewable":
            raise ConnectionError("API server unreachable")
        return answers[token]

    srv = LogServer(_missing, authorize=review)
    port = await srv.start()
    try:
        assert await _ask(port, ["Authorization: Bearer admin-token"]) == (404, "pod p not found\n")
        code, body = await _ask(port, ["authorization:  bearer viewer-token "])
        assert code == 403 and "nodes" in body
        code, body = await _ask(port, ["Authorization: Bearer foreign-token"])
        assert code == 401 and "bearer token" in body
        code, body = await _ask(port, ["Authorization: Bearer unreviewable"])
        assert code == 503 and "could not review" in body
        code, body = await _ask(port, ["Authorization: Basic YWRtaW46YWRtaW4="])  # only bearer tokens
        assert code == 401 and "client certificate" in body
        code, _ = await _ask(port, [])
        assert code == 401
        code, _ = await _ask(port, [f"X-Pad-{i}: {i}" for i in range(150)] + ["Authorization: Bearer admin-token"])
        assert code == 431
        assert seen == ["admin-token", "viewer-token", "foreign-token", "unreviewable"]
    finally:
        await srv.stop()


async def test_without_a_reviewer_tokens_are_not_accepted() -> None:
    srv = LogServer(_missing)
    port = await srv.start()
    try:
        code, body = await _ask(port, ["Authorization: Bearer admin-token"])
        assert code == 401 and "bearer" not in body
    finally:
        await srv.stop()
