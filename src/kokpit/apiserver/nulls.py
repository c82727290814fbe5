"""JSON null in a built-in kind, read as kube-apiserver reads it.

kube decodes a built-in object into Go structs with encoding/json, where a JSON ``null`` leaves the Go value at
its zero: a struct field becomes absent (pointers, and everything ``omitempty``), a ``null`` item of a list or
value of a map becomes the item type's zero (``""``, ``0``, ``false``, an empty object).  So what kube stores
and serves never contains a ``null`` where its schema wants a value.  We keep objects as JSON, so the same
normalisation is done here, once per write, before defaulting and validation (which then see what kube's
validation sees: a ``containerPort`` sent as ``null`` is missing, a ``containers: [null]`` item has no name).
The API fuzzer found ``source.host: null`` in an Event and ``unschedulable: null`` in a Node stored and
served against the published schema before this existed.

Custom resources are different (their nulls are pruned or refused by the structural schema: see
:mod:`.schema`), so this applies to built-in kinds only.
"""

from __future__ import annotations

from typing import Any

from kokpit.apiserver import schema as S

_ZERO: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}


def _zero(node: dict[str, Any]) -> Any:
    node = S.resolve(node)
    if node.get("x-kubernetes-int-or-string") or "oneOf" in node:
        return None  # IntOrString, Quantity: a union, no single zero; left for validation to judge
    t = node.get("type")
    if isinstance(t, list):  # the bundled definitions spell optional fields ["string", "null"]
        t = next((x for x in t if x != "null"), None)
    if t == "object":
        return {}
    if t == "array":
        return []
    return _ZERO.get(t) if isinstance(t, str) else None


def _walk(v: Any, node: dict[str, Any]) -> None:
    node = S.resolve(node)
    if type(v) is dict:
        props = node.get("properties")
        addl = node.get("additionalProperties")
        if props is None and not isinstance(addl, dict):
            return  # opaque (RawExtension, FieldsV1) or free-form: stored as sent
        for k in list(v):
            x = v[k]
            sub = props.get(k) if props is not None else None
            if sub is None:
                if isinstance(addl, dict):
                    if x is None:
                        z = _zero(addl)
                        if z is not None:
                            v[k] = z
                    else:
                        _walk(x, addl)
                continue  # an unknown field: validation (or pruning) decides
            if x is None:
                del v[k]
            elif type(x) is dict or type(x) is list:
                _walk(x, sub)
    elif type(v) is list:
        items = node.get("items")
        if not isinstance(items, dict):
            return
        for i, x in enumerate(v):
            if x is None:
                z = _zero(items)
                if z is not None:
                    v[i] = z
            elif type(x) is dict or type(x) is list:
                _walk(x, items)


def _has_null(v: Any) -> bool:
    if type(v) is dict:
        for x in v.values():
            if x is None or ((type(x) is dict or type(x) is list) and _has_null(x)):
                return True
    elif type(v) is list:
        for x in v:
            if x is None or ((type(x) is dict or type(x) is list) and _has_null(x)):
                return True
    return False


def normalize(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    """Replace every ``null`` in a built-in object as Go's decoding would, in place (see the module doc).

    The common write has no null at all: one cheap scan finds that and the schema walk is skipped."""
    if _has_null(obj):
        _walk(obj, schema)
