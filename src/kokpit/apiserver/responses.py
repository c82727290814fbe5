"""Response negotiation: one object, list or Status rendered as JSON, YAML or a server-side Table.

JSON is the stored bytes (:meth:`Rest.raw_of`) whenever the client accepts it, so a GET or LIST copies no
object; YAML and ``as=Table`` (what ``kubectl get`` asks for) are built from the served view.  Warnings of a
write (unknown fields under ``fieldValidation=Warn``) go out as ``Warning: 299`` headers like kube's.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import yaml

from kokpit.apiserver import tables
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import Rest, WriteOptions
from kokpit.apiserver.storage.store import Entry

__all__ = ["Receive", "Response", "Scope", "Send", "json_response", "object_response", "status_ok",
           "table_response", "wants_yaml", "written_response"]

# the ASGI callables (raw ASGI: the Kubernetes URL grammar is its own, bodies are pre-serialized bytes)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Response:
    """A complete (non-streamed) answer."""

    def __init__(self, status: int, body: bytes, content_type: bytes = JSON,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def status_ok(details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        out["details"] = details
    return out


def wants_yaml(accept: str) -> bool:
    return accept.startswith("application/yaml") and "json" not in accept


def json_response(obj: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, orjson.dumps(obj), headers=headers)


def object_response(rest: Rest, rt: ResourceType, e: Entry, accept: str, status: int = 200) -> Response:
    if "as=Table" in accept:
        return table_response(rest, rt, [rest.to_view(rt, e)], {}, rv=str(e.rv), status=status)
    if wants_yaml(accept):
        return Response(status, yaml.safe_dump(rest.to_view(rt, e), sort_keys=False).encode(),
                        b"application/yaml")
    return Response(status, rest.raw_of(rt, e))


def written_response(rest: Rest, rt: ResourceType, obj: Entry | dict[str, Any], status: int,
                     opts: WriteOptions, accept: str) -> Response:
    # RFC 7234 quoted-string, as kube's NewWarningHeader writes it: clients unquote `\"` back; control
    # characters (an unknown field named "\x1f") would make the header invalid and drop the connection
    hdrs = [(b"warning", ('299 - "' + _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}", w.replace(
        "\\", "\\\\").replace('"', '\\"')) + '"').encode()) for w in opts.warnings[:50]]
    if isinstance(obj, Entry):
        resp = object_response(rest, rt, obj, accept, status)
    else:
        resp = json_response(rest.view_of(rt, obj), status)
    resp.headers.extend(hdrs)
    return resp


def table_response(rest: Rest, rt: ResourceType, objs: list[dict[str, Any]], query: dict[str, str],
                   rv: str = "", cont: str = "", status: int = 200) -> Response:
    include = query.get("includeObject", "Metadata") or "Metadata"
    table = tables.to_table(rt, objs, include_object=include, now=rest.clock(), resource_version=rv,
                            continue_token=cont)
    return json_response(table, status)
