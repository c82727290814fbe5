"""The two halves of a raw ASGI JSON endpoint, shared by the servers that answer node driver calls (the
simulator and the node agent): read the whole body as JSON, send one JSON (or text) response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["BodyError", "Receive", "Scope", "Send", "read_json", "send_body"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BodyError(ValueError):
    """The request body is not JSON."""


async def read_json(receive: Receive) -> Any:
    """The request body parsed as JSON (None when empty); BodyError when it is not JSON."""
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BodyError(f"request body is not JSON: {e}") from None


async def send_body(send: Send, status: int, data: Any, content_type: bytes = b"application/json") -> None:
    """Send ``data`` (JSON-encoded unless it is bytes already) with its length."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
