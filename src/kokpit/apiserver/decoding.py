"""Request decoding: reading the body, decoding it (JSON, YAML, protobuf), patch types, and the write / delete options of the query.

Every malformed input is a 400/415 ``Status`` that says what to fix; nothing here touches storage.
"""

from __future__ import annotations

from typing import Any

from kokpit.apiserver import errors, protobuf, safeload
from kokpit.apiserver.responses import Receive
from kokpit.apiserver.rest import DeleteOptions, WriteOptions
from kokpit.apiserver.routing import RequestInfo

__all__ = ["MAX_BODY", "as_object", "decode", "delete_options", "media_type", "options_of", "patch_type", "read_body",
           "typed", "write_options"]

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


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "an integer", bool: "a boolean",
               float: "a number"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def typed(obj: dict[str, Any], key: str, want: type, where: str) -> Any:
    """``obj[key]`` if absent, null or of the JSON type `want`; else the 400 kube's typed decoder answers
    ("cannot unmarshal ... into Go struct field"), naming the field. Bodies are parsed as plain JSON, so
    handlers that read fields of fixed types (DeleteOptions, Eviction, Binding, SubjectAccessReview) say so
    here instead of failing on a number where an object was meant."""
    value = obj.get(key)
    if value is None or (isinstance(value, want) and not (want is int and isinstance(value, bool))):
        return value
    raise errors.bad_request(f"the body is not a valid {where.split('.')[0]}: {where}.{key} must be "
                             f"{_JSON_TYPES[want]}, not {_json_type(value)}")


def as_object(body: Any, kind: str) -> dict[str, Any]:
    """A decoded body that must be a JSON object (a `kind`), else 400."""
    if not isinstance(body, dict):
        raise errors.bad_request(f"the body must be a JSON object (a {kind}), not {_json_type(body)}")
    return body


def options_of(data: dict[str, Any], query: dict[str, str], where: str = "DeleteOptions") -> DeleteOptions:
    """DeleteOptions from a decoded body (or an Eviction's deleteOptions) and the query, type-checked."""
    policy = query.get("propagationPolicy") or typed(data, "propagationPolicy", str, where)
    if policy is None and typed(data, "orphanDependents", bool, where) is True:
        policy = "Orphan"
    if policy is not None and policy not in ("Background", "Foreground", "Orphan"):
        raise errors.bad_request(f"propagationPolicy must be Background, Foreground or Orphan "
                                 f"(got {policy!r})")
    gp = query.get("gracePeriodSeconds") or typed(data, "gracePeriodSeconds", int, where)
    grace: int | None = None
    if gp is not None and gp != "":
        try:
            grace = int(gp)
        except (TypeError, ValueError):
            raise errors.bad_request(f"gracePeriodSeconds must be an integer (got {gp!r})") from None
    pre = typed(data, "preconditions", dict, where) or {}
    uid = typed(pre, "uid", str, f"{where}.preconditions")
    rv = typed(pre, "resourceVersion", str, f"{where}.preconditions")
    dry_run = typed(data, "dryRun", list, where) or []
    if not all(isinstance(d, str) for d in dry_run):
        raise errors.bad_request(f"the body is not a valid {where}: {where}.dryRun must be an array of strings")
    dry = query.get("dryRun") or ("All" if "All" in dry_run else "")
    return DeleteOptions(propagation=policy, grace_period=grace, precondition_uid=uid, precondition_rv=rv,
                         dry_run=dry == "All")


def delete_options(query: dict[str, str], body: bytes, headers: dict[str, str]) -> DeleteOptions:
    data: dict[str, Any] = as_object(decode(body, headers), "DeleteOptions") if body.strip() else {}
    return options_of(data, query)


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
