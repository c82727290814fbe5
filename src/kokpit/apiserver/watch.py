"""WATCH: a chunked stream of events, as kube-apiserver's watch handler writes it.

Events come from the store's watch (with its backlog from a resourceVersion, or the initial ADDED events of
``sendInitialEvents`` / a list-then-watch); selectors turn MODIFIED into ADDED/DELETED as an object enters or
leaves the selection; bookmarks (``allowWatchBookmarks``) carry the current revision; every event line is
the stored bytes of the object unless the client asked for a Table.  The stream ends at ``timeoutSeconds``
(or a random 30-60 minutes, like kube), when the client goes away, or when the store closes the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import orjson

from kokpit.apiserver import errors, selectors, tables
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.lists import matches, selectors_of
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.responses import Receive, Send
from kokpit.apiserver.rest import Rest
from kokpit.apiserver.routing import parse_bool
from kokpit.apiserver.storage.store import ADDED, DELETED, MODIFIED, Entry, Event, Store

__all__ = ["serve_watch"]


async def serve_watch(rest: Rest, store: Store, rt: ResourceType, ns: str | None, name: str,
                      query: dict[str, str], headers: dict[str, str], receive: Receive, send: Send, *,
                      bookmark_interval: float, default_timeout: tuple[float, float]) -> None:
    """Stream the events of ``rt`` (in ``ns``; only object ``name`` when given) until the watch ends.
    Bad parameters raise before the response starts; a compacted resourceVersion is an ERROR event."""
    lsel, fsel = selectors_of(rt, query)
    if name:  # /watch/.../NAME is a field selector on the name
        fsel = selectors.parse_field_selector(f"metadata.name={name}", rt) if fsel is None else fsel
    bookmarks = parse_bool(query.get("allowWatchBookmarks"), "allowWatchBookmarks")
    send_initial = parse_bool(query.get("sendInitialEvents"), "sendInitialEvents")
    rv_s = query.get("resourceVersion", "")
    if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
        raise errors.invalid("ListOptions", "", [errors.Cause(
            "resourceVersionMatch", "Forbidden: sendInitialEvents requires setting resourceVersionMatch "
            "to NotOlderThan", "FieldValueForbidden")], "meta.k8s.io")
    timeout_s = query.get("timeoutSeconds", "")
    if timeout_s:
        try:
            timeout = float(int(timeout_s))
        except ValueError:
            raise errors.bad_request(f"timeoutSeconds must be an integer (got {timeout_s!r})") from None
    else:
        timeout = random.uniform(*default_timeout)
    accept = headers.get("accept", "")
    as_table = "as=Table" in accept
    include = query.get("includeObject", "Metadata") or "Metadata"
    bucket = rt.store_prefix
    sub = f"{ns}/" if ns else ""

    def selected(obj: dict[str, Any]) -> bool:
        return matches(obj, lsel, fsel)

    from_rv: int | None
    if not rv_s or rv_s == "0" or send_initial:
        from_rv = None
    else:
        try:
            from_rv = int(rv_s)
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion {rv_s!r}") from None
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-cache, private"),
                            (b"transfer-encoding", b"chunked")]})
    try:
        watcher, backlog = store.watch(bucket, sub, from_revision=from_rv,
                                            initial=lambda e: selected(e.obj))
    except APIError as e:
        await send({"type": "http.response.body",
                    "body": orjson.dumps({"type": "ERROR", "object": e.status()}) + b"\n", "more_body": False})
        return

    def encode(etype: str, e: Entry) -> bytes:
        if as_table:
            obj = rest.to_view(rt, e)
            t = tables.to_table(rt, [obj], include_object=include, now=rest.clock(),
                                resource_version=str(e.rv))
            return orjson.dumps({"type": etype, "object": t}) + b"\n"
        return b'{"type":"' + etype.encode() + b'","object":' + rest.raw_of(rt, e) + b"}\n"

    def event_bytes(ev: Event) -> bytes | None:
        if lsel is None and fsel is None:
            return encode(ev.type, ev.entry)
        now_m = ev.type != DELETED and selected(ev.entry.obj)
        was_m = ev.prev is not None and selected(ev.prev.obj)
        if ev.type == DELETED:
            return encode(DELETED, ev.entry) if was_m else None
        if now_m and was_m:
            return encode(MODIFIED, ev.entry)
        if now_m:
            return encode(ADDED, ev.entry)
        if was_m:
            return encode(DELETED, ev.entry)
        return None

    def bookmark(initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(store.revision)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    disconnected = asyncio.Event()

    async def wait_disconnect() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                disconnected.set()
                watcher.queue.put_nowait(None)  # wakes the loop below, which stops at a None
                return

    dtask = asyncio.create_task(wait_disconnect())
    deadline = time.monotonic() + timeout
    try:
        chunk: list[bytes] = []
        for ev in backlog:
            b = encode(ADDED, ev.entry) if from_rv is None else event_bytes(ev)
            if b is not None:
                chunk.append(b)
            if len(chunk) >= 500:
                await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                chunk = []
        if send_initial and bookmarks:
            chunk.append(bookmark(initial_end=True))
        if chunk:
            await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
        next_bookmark = time.monotonic() + bookmark_interval
        while not disconnected.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if not watcher.queue.empty():
                ev0 = watcher.queue.get_nowait()
            else:
                # one timer per wait, no task: this loop runs once per burst of events for every watch the
                # server holds (a task and asyncio.wait per burst cost more than sending the burst)
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        ev0 = await watcher.queue.get()
                except TimeoutError:
                    if disconnected.is_set():
                        break
                    if bookmarks and time.monotonic() >= next_bookmark and watcher.queue.empty():
                        await send({"type": "http.response.body", "body": bookmark(), "more_body": True})
                        next_bookmark = time.monotonic() + bookmark_interval
                    continue
            if ev0 is None:
                break
            out: list[bytes] = []
            evs: list[Event] = [ev0]
            while not watcher.queue.empty() and len(evs) < 1000:
                nxt = watcher.queue.get_nowait()
                if nxt is None:
                    watcher.queue.put_nowait(None)
                    break
                evs.append(nxt)
            for ev in evs:
                b2 = event_bytes(ev)
                if b2 is not None:
                    out.append(b2)
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
    finally:
        watcher.close()
        dtask.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
