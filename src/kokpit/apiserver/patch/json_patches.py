"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) with kube-apiserver's errors."""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from kokpit.apiserver.errors import APIError, Cause, bad_request
from kokpit.apiserver.patch._schema import deep_copy

# ----------------------------------------------------------------------------------- JSON merge patch


def json_merge_patch(target: Any, patch: Any, *, copy: bool = True) -> Any:
    """RFC 7386: `null` deletes a key, objects merge recursively, anything else replaces.

    With `copy=False` the target is merged into in place: for callers that already own a private copy
    (the server's patch path), saving a deep copy of the whole object on every write."""
    if not isinstance(patch, dict):
        return deep_copy(patch)
    if isinstance(target, dict):
        base = deep_copy(target) if copy else target
    else:
        base = {}
    return _merge_into(base, patch)


def _merge_into(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict):
            current = base.get(key)
            base[key] = _merge_into(current if isinstance(current, dict) else {}, value)
        else:
            base[key] = deep_copy(value)
    return base


# ----------------------------------------------------------------------------------------- JSON patch

_JSON_PATCH_REJECTED = "the server rejected our request due to an error in our request"


def json_patch(target: Any, ops: Any, *, copy: bool = True) -> Any:
    """RFC 6902.  Malformed operations are 400; an operation that cannot be applied (a failed `test`, a
    missing path) is 422 Invalid, as kube-apiserver answers — kopf relies on the 422 of a failed test.
    With ``copy=False`` the caller's private target is patched in place (atomically: a failed patch leaves
    it as it was) instead of deep-copied first."""
    try:
        patch = jsonpatch.JsonPatch(ops)
        return patch.apply(target, in_place=not copy, atomic=not copy)
    except jsonpatch.InvalidJsonPatch as exc:
        raise bad_request(f"invalid JSON patch: {exc}") from exc
    except jsonpatch.JsonPatchTestFailed as exc:
        path = _failed_test_path(ops, target)
        detail = f"testing value {path} failed: {exc}" if path else f"test operation failed: {exc}"
        raise _json_patch_unprocessable(detail) from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise _json_patch_unprocessable(f"unable to apply JSON patch: {exc}") from exc
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise _json_patch_unprocessable(f"unable to apply JSON patch: {exc!r}") from exc


def _json_patch_unprocessable(detail: str) -> APIError:
    return APIError(422, "Invalid", f"{_JSON_PATCH_REJECTED}: {detail}",
                    causes=[Cause(field="", message=detail, reason="FieldValueInvalid")])


def _failed_test_path(ops: Any, target: Any) -> str:
    """Find the first `test` operation that fails on its own, to name it in the error."""
    doc = target
    for op in ops if isinstance(ops, list) else []:
        if not isinstance(op, dict):
            return ""
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=False)
        except jsonpatch.JsonPatchTestFailed:
            return str(op.get("path", ""))
        except Exception:
            return ""
    return ""
