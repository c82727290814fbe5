"""Request decoding: reading the body, decoding it (JSON, YAML, protobuf), patch types, and the write / delete options of the query.

Every malformed input is a 400/415 ``Status`` that says what to fix; nothing here touches storage.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from kokpit.apiserver import errors, protobuf
from kokpit.apiserver.responses import Receive
from kokpit.apiserver.rest import DeleteOptions, WriteOptions
from kokpit.apiserver.routing import RequestInfo

__all__ = ["MAX_BODY", "decode", "delete_options", "patch_type", "read_body", "write_options"]

MAX_BODY = 3 * 1024 * 1024
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}


def decode(body: bytes, headers: dict[str, str], yaml_ok: bool = True) -> Any:
    if not body.strip():
        raise errors.bad_request("the request body is empty; send a JSON or YAML object")
    ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(body)
    if "protobuf" in ctype or "cbor" in ctype:
        raise errors.unsupported_media_type(ctype)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if not yaml_ok and "yaml" not in ctype:
            raise errors.bad_request(f"the body is not valid JSON: {e}") from None
        if "json" in ctype and "yaml" not in ctype:
            raise errors.bad_request(f"the body is not valid JSON: {e}") from None
    try:
        data = yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise errors.bad_request(f"the body is not valid YAML: {e}") from None
    # YAML timestamps and other non-JSON scalars must not leak into objects
    return orjson.loads(orjson.dumps(data, default=str))


def patch_type(headers: dict[str, str]) -> str:
    """json, merge, strategic or apply, from the Content-Type; 415 for anything else."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    ptype = _PATCH_TYPES.get(ctype)
    if ptype is None or ptype == "apply-cbor":
        raise errors.unsupported_media_type(ctype)
    return ptype


def write_options(info: RequestInfo, query: dict[str, str], headers: dict[str, str]) -> WriteOptions:
    fv = query.get("fieldValidation", "Warn") or "Warn"
    if fv not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(f"fieldValidation must be one of Strict, Warn, Ignore (got {fv!r})")
    dry = query.get("dryRun", "")
    if dry not in ("", "All"):
        raise errors.bad_request(f"dryRun must be All (got {dry!r})")
    ua = headers.get("user-agent", "").split("/")[0][:128]
    return WriteOptions(field_manager=query.get("fieldManager", ""), default_manager=ua or "unknown",
                        field_validation=fv, dry_run=dry == "All", subresource=info.subresource)


def delete_options(query: dict[str, str], body: bytes, headers: dict[str, str]) -> DeleteOptions:
    data: dict[str, Any] = {}
    if body.strip():
        parsed = decode(body, headers)
        if isinstance(parsed, dict):
            data = parsed
    policy = query.get("propagationPolicy") or data.get("propagationPolicy")
    if policy is None and data.get("orphanDependents") is True:
        policy = "Orphan"
    if policy is not None and policy not in ("Background", "Foreground", "Orphan"):
        raise errors.bad_request(f"propagationPolicy must be Background, Foreground or Orphan "
                                 f"(got {policy!r})")
    gp = query.get("gracePeriodSeconds", data.get("gracePeriodSeconds"))
    grace: int | None = None
    if gp is not None and gp != "":
        try:
            grace = int(gp)
        except (TypeError, ValueError):
            raise errors.bad_request(f"gracePeriodSeconds must be an integer (got {gp!r})") from None
    pre = data.get("preconditions") or {}
    dry = query.get("dryRun") or ("All" if "All" in (data.get("dryRun") or []) else "")
    return DeleteOptions(propagation=policy, grace_period=grace, precondition_uid=pre.get("uid"),
                         precondition_rv=pre.get("resourceVersion"), dry_run=dry == "All")


async def read_body(receive: Receive, headers: dict[str, str]) -> bytes:
    """The whole request body, refused with 413 beyond :data:`MAX_BODY` (declared or as it arrives)."""
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise errors.too_large(MAX_BODY)
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.too_large(MAX_BODY)
        chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return b"".join(chunks)
