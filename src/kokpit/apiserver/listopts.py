"""List query parameters checked as kube-apiserver checks them (ValidateListOptions and the storage layer).

A list must never answer garbage with a page that looks valid: `limit=-1` once returned an empty page with a
continue token that led back to the same page forever. kube treats a limit of zero or less as "no limit"
(etcd3 store: `paging := limit > 0`), refuses an unknown `resourceVersionMatch` with 422 Invalid on
`ListOptions.meta.k8s.io`, and cannot read at a resourceVersion that is not a number.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from kokpit.apiserver import errors

__all__ = ["continue_token", "page_limit", "validate_list"]

_MATCHES = ("Exact", "NotOlderThan")


def page_limit(query: dict[str, str]) -> int:
    """The page size asked for; 0 means the whole list (kube: any limit <= 0 is no limit)."""
    raw = query.get("limit", "")
    try:
        limit = int(raw) if raw else 0
    except ValueError:
        raise errors.bad_request(f"limit must be an integer (got {raw!r})") from None
    return max(limit, 0)


def validate_list(query: dict[str, str]) -> None:
    """ValidateListOptions for a list (not a watch): one 422 naming every problem, in kube's words."""
    match = query.get("resourceVersionMatch", "")
    rv = query.get("resourceVersion", "")
    causes: list[errors.Cause] = []
    if match:
        if not rv:
            causes.append(_forbidden("resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if query.get("continue"):
            causes.append(_forbidden("resourceVersionMatch is forbidden when continue is provided"))
        if match not in _MATCHES:
            causes.append(errors.Cause("resourceVersionMatch", f'Unsupported value: "{match}": supported '
                                       f'values: "Exact", "NotOlderThan", ""', "FieldValueNotSupported"))
        if match == "Exact" and rv == "0":
            causes.append(_forbidden('resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    if causes:
        raise errors.invalid("ListOptions", "", causes, "meta.k8s.io")
    if rv and not (rv.isascii() and rv.isdigit()):
        raise errors.bad_request(f"invalid resourceVersion {rv!r}: a resourceVersion is a number; use one "
                                 f"from a previous response unchanged")


def _forbidden(message: str) -> errors.Cause:
    return errors.Cause("resourceVersionMatch", f"Forbidden: {message}", "FieldValueForbidden")


def continue_token(token: str) -> tuple[int, str]:
    """(revision, last key) from a continue token this server made; anything else is a 400."""
    try:
        tok = orjson.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
    except (ValueError, binascii.Error):
        tok = None
    if not isinstance(tok, dict) or type(tok.get("rv")) is not int or not isinstance(tok.get("start"), str):
        raise errors.bad_request("continue key is not valid: use the token from the previous response unchanged")
    return tok["rv"], tok["start"]
