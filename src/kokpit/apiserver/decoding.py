"""Request decoding: reading the body, decoding it (JSON, YAML, protobuf), patch types, and the write / delete options of the query.

Every malformed input is a 400/415 ``Status`` that says what to fix; nothing here touches storage.
"""

from __future__ import annotations

from typing import Any

from kokpit.apiserver import errors, protobuf, safeload
from kokpit.apiserver.responses import Receive
from kokpit.apiserver.rest import DeleteOptions, WriteOptions
from kokpit.apiserver.routing import RequestInfo

__all__ = ["MAX_BODY", "decode", "delete_options", "media_type", "patch_type", "read_body", "write_options"]

MAX_BODY = 3 * 1024 * 1024
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}
_PATCH_MEDIA = {t for t, p in _PATCH_TYPES.items() if p != "apply-cbor"}
_OBJECT_MEDIA = {"", "application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}


def media_type(headers: dict[str, str]) -> str:
    """The request's Content-Type without parameters, lower-cased; "" when there is none."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


def decode(body: bytes, headers: dict[str, str], patch: bool = False) -> Any:
    """An object body (JSON, YAML, or protobuf for the kinds kubectl's generators send so) or a patch body
    (JSON; server-side apply YAML too), parsed within :mod:`~kokpit.apiserver.safeload`'s bounds. Any other
    media type is a 415, as kube-apiserver answers; no Content-Type means JSON, as in kube."""
    ctype = media_type(headers)
    if ctype not in (_PATCH_MEDIA if patch else _OBJECT_MEDIA):
        raise errors.unsupported_media_type(ctype)
    if not body.strip():
        raise errors.bad_request("the request body is empty; send a JSON or YAML object")
    if ctype == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(body)
    return safeload.load(body, yaml_ok=ctype in ("application/yaml", "application/apply-patch+yaml"))


def patch_type(headers: dict[str, str]) -> str:
    """json, merge, strategic or apply, from the Content-Type; 415 for anything else."""
    ctype = media_type(headers)
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
