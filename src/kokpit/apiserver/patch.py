"""The patch engine of the embedded API server: how a write request turns into the next object.

kubectl, kopf and the client libraries rely on the exact semantics of kube-apiserver's four patch types
(JSON merge patch, JSON patch, strategic merge patch, server-side apply) and on `metadata.managedFields`
being kept like kube-apiserver keeps them, so that `kubectl apply --server-side` reports the same conflicts
against `kubectl edit` or client-side apply.  Everything here is a pure function on JSON values (dicts,
lists, scalars), so the HTTP and storage layers stay thin and these rules are tested in isolation.

Schema information comes in as a JSON-schema node (OpenAPI v3 as served by kube-apiserver, or a CRD's
structural schema) plus a `resolve` callable that follows `$ref`.  `None` means "no schema": maps merge
key by key, lists are atomic.

Field sets (FieldsV1) are handled internally as Python sets of paths; a path is a tuple of FieldsV1 path
elements: `f:<field>`, `k:<compact JSON of the list-map keys>`, `v:<JSON value>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from kokpit.apiserver.errors import APIError, Cause, bad_request

__all__ = [
    "Resolver",
    "deep_copy",
    "fields_set",
    "json_merge_patch",
    "json_patch",
    "server_side_apply",
    "strategic_merge_patch",
    "update_managed_fields",
]

Resolver = Callable[[dict[str, Any]], dict[str, Any]]
Path = tuple[str, ...]

_MISSING: Any = object()

# Fields the server owns: never tracked in managedFields (kube-apiserver's stripMeta, plus deletion fields
# that only the server sets).
_ROOT_UNTRACKED = frozenset({"apiVersion", "kind"})
_META_UNTRACKED = frozenset({
    "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
    "managedFields", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
})
# Server-set metadata an apply configuration may carry but must not write.
_META_APPLY_IGNORED = frozenset({
    "creationTimestamp", "selfLink", "uid", "generation", "managedFields", "resourceVersion",
    "deletionTimestamp", "deletionGracePeriodSeconds",
})
# Defaults of list-map key fields that kube-apiserver fills in before computing keys
# (ContainerPort/ServicePort/EndpointPort.protocol).
_KEY_DEFAULTS: dict[str, Any] = {"protocol": "TCP"}


def _dumps(value: Any) -> str:
    """Compact JSON with sorted keys, as FieldsV1 path elements spell values."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def deep_copy(value: Any) -> Any:
    """A deep copy of JSON data: orjson's round trip (C, several times faster than walking it in Python;
    a strategic patch of a Node spent 15 % of its time here), or the walk for what orjson cannot encode
    (integers beyond 64 bits)."""
    if isinstance(value, (dict, list)):
        try:
            return orjson.loads(orjson.dumps(value))
        except TypeError:
            return _walk_copy(value)
    return value


def _walk_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _walk_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- schema


class _Info:
    """What the patch rules need to know about one schema node (after following `$ref`)."""

    __slots__ = ("additional", "items", "keys", "list_kind", "map_atomic", "merge_key", "props", "strategies")

    def __init__(self) -> None:
        self.props: dict[str, Any] | None = None
        self.additional: dict[str, Any] | None = None
        self.items: dict[str, Any] | None = None
        self.map_atomic = False
        self.list_kind = "atomic"  # for apply: "atomic" | "map" | "set"
        self.keys: tuple[str, ...] = ()
        self.strategies: frozenset[str] = frozenset()  # strategic merge patch strategies
        self.merge_key = ""

    def child(self, key: str) -> dict[str, Any] | None:
        if self.props is not None:
            node = self.props.get(key)
            if node is not None:
                return node  # type: ignore[no-any-return]
        return self.additional


_UNKNOWN = _Info()


# Schema nodes are long-lived and never mutated (a changed CRD brings new dicts), so what they mean is
# cached across calls.  Each entry keeps its node and resolver alive, so their ids cannot be reused while
# cached; the cache is dropped wholesale when it grows past a bound.
_INFO_CACHE: dict[tuple[int, int], tuple[dict[str, Any], Any, _Info]] = {}
_INFO_CACHE_MAX = 50_000


class _Schema:
    """Turns schema nodes into `_Info`, memoised per (node, resolver)."""

    __slots__ = ("resolve",)

    def __init__(self, resolve: Resolver | None) -> None:
        self.resolve = resolve

    def info(self, raw: dict[str, Any] | None) -> _Info:
        if raw is None or not isinstance(raw, dict):
            return _UNKNOWN
        key = (id(raw), id(self.resolve))
        hit = _INFO_CACHE.get(key)
        if hit is not None and hit[0] is raw and hit[1] is self.resolve:
            return hit[2]
        info = self._build(raw)
        if len(_INFO_CACHE) >= _INFO_CACHE_MAX:
            _INFO_CACHE.clear()
        _INFO_CACHE[key] = (raw, self.resolve, info)
        return info

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node and self.resolve is not None:
            return self.resolve(node)
        return node

    def _build(self, raw: dict[str, Any]) -> _Info:
        res = self._deref(raw)
        layers = [raw, res]
        # kube's OpenAPI v3 wraps some refs as allOf: [{$ref}]
        for _ in range(4):
            all_of = res.get("allOf")
            if not (isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict)):
                break
            if "properties" in res or "items" in res or "additionalProperties" in res:
                break
            res = self._deref(all_of[0])
            layers.append(res)

        def ext(name: str) -> Any:
            for layer in layers:
                if name in layer:
                    return layer[name]
            return None

        info = _Info()
        props = res.get("properties")
        info.props = props if isinstance(props, dict) and props else None
        additional = res.get("additionalProperties")
        info.additional = additional if isinstance(additional, dict) else None
        items = res.get("items")
        info.items = items if isinstance(items, dict) else None
        info.map_atomic = ext("x-kubernetes-map-type") == "atomic"
        strategy = ext("x-kubernetes-patch-strategy")
        info.strategies = frozenset(s.strip() for s in strategy.split(",")) if isinstance(strategy, str) \
            else frozenset()
        merge_key = ext("x-kubernetes-patch-merge-key")
        info.merge_key = merge_key if isinstance(merge_key, str) else ""
        list_type = ext("x-kubernetes-list-type")
        keys = ext("x-kubernetes-list-map-keys")
        if list_type == "map":
            if isinstance(keys, list) and keys:
                info.keys = tuple(str(k) for k in keys)
            elif info.merge_key:
                info.keys = (info.merge_key,)
            info.list_kind = "map" if info.keys else "atomic"
        elif list_type == "set":
            info.list_kind = "set"
        elif list_type == "atomic":
            info.list_kind = "atomic"
        elif "merge" in info.strategies:
            if info.merge_key:
                info.list_kind, info.keys = "map", (info.merge_key,)
            else:
                info.list_kind = "set"
        return info


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


# ------------------------------------------------------------------------------ strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any] | None,
                          resolve: Resolver, *, copy: bool = True) -> dict[str, Any]:
    """Apply a strategic merge patch the way kube-apiserver does for built-in kinds.

    Lists whose schema says `x-kubernetes-patch-strategy: merge` merge by `x-kubernetes-patch-merge-key`
    (or as a set of scalars when there is no key); every other list is replaced.  Merged lists put the
    patch's items in the patch's (or `$setElementOrder`'s) order and keep server-only items in their
    relative place, like apimachinery's `normalizeElementOrder`.  With ``copy=False`` the original is
    patched in place (the caller's private copy).
    """
    if not isinstance(patch, dict):
        raise bad_request("a strategic merge patch must be a JSON object")
    sch = _Schema(resolve)
    base = (deep_copy(original) if copy else original) if isinstance(original, dict) else {}
    return _smp_map(base, deep_copy(patch), sch.info(schema), sch)  # the patch is re-applied on a conflict retry


def _smp_map(orig: dict[str, Any], patch: dict[str, Any], info: _Info, sch: _Schema) -> dict[str, Any]:
    directive = patch.pop(_DIRECTIVE, None)
    if directive is not None:
        if directive == "replace":
            return _smp_map({}, patch, info, sch)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise bad_request(f"invalid strategic merge patch: unknown patch type {directive!r} in map")
    retain = patch.pop(_RETAIN_KEYS, _MISSING)
    if retain is not _MISSING:
        if not isinstance(retain, list):
            raise bad_request("invalid strategic merge patch: $retainKeys must be a list of field names")
        keep = {k for k in retain if isinstance(k, str)}
        for key in [k for k in orig if k not in keep]:
            del orig[key]
    orders: dict[str, list[Any]] = {}
    deletes: dict[str, list[Any]] = {}
    # other keys that start with "$" are ordinary fields (a CRD's JSONSchemaProps has `$ref`, `$schema`)
    for key in [k for k in patch if k.startswith((_SET_ORDER, _DELETE_PRIMITIVE))]:
        value = patch.pop(key)
        if not isinstance(value, list):
            raise bad_request(f"invalid strategic merge patch: {key} must be a list")
        if key.startswith(_SET_ORDER):
            orders[key[len(_SET_ORDER):]] = value
        else:
            deletes[key[len(_DELETE_PRIMITIVE):]] = value

    for key, value in patch.items():
        if value is None:
            orig.pop(key, None)
            continue
        current = orig.get(key)
        if isinstance(value, dict):
            child = sch.info(info.child(key))
            if "replace" in child.strategies or not isinstance(current, dict):
                orig[key] = _smp_map({}, value, child, sch)
            else:
                orig[key] = _smp_map(current, value, child, sch)
        elif isinstance(value, list):
            child = sch.info(info.child(key))
            orig[key] = _smp_list(current if isinstance(current, list) else [], value, child, sch,
                                  orders.pop(key, None))
        else:
            orig[key] = value
    for key, order in orders.items():  # $setElementOrder without a patch list: reorder only
        current = orig.get(key)
        if isinstance(current, list) and current:
            orig[key] = _smp_list(current, [], sch.info(info.child(key)), sch, order)
    for key, doomed in deletes.items():
        current = orig.get(key)
        if isinstance(current, list):
            orig[key] = [v for v in current if v not in doomed]
    return orig


def _hashable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _dumps(value)
    return value


def _smp_list(orig: list[Any], patch: list[Any], info: _Info, sch: _Schema,
              order: list[Any] | None) -> list[Any]:
    if "merge" not in info.strategies:
        items = sch.info(info.items)
        return [_smp_map({}, v, items, sch) if isinstance(v, dict) else v for v in patch
                if not (isinstance(v, dict) and v.get(_DIRECTIVE) is not None and len(v) == 1)]
    if not orig and not patch:
        return orig
    if not any(isinstance(v, dict) for v in orig) and not any(isinstance(v, dict) for v in patch):
        merged: list[Any] = []
        seen: set[Any] = set()
        for v in orig + patch:
            h = _hashable(v)
            if h not in seen:
                seen.add(h)
                merged.append(v)
        order_keys = [_hashable(v) for v in (order if order is not None else patch)]
        return _normalize_order(merged, order_keys, [_hashable(v) for v in orig], _hashable)

    mkey = info.merge_key
    if not mkey:
        raise bad_request("invalid strategic merge patch: cannot merge lists of objects without a merge key")
    items = sch.info(info.items)
    current = list(orig)
    plain: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"invalid strategic merge patch: expected objects in the list merged by "
                              f"{mkey!r}, got {item!r}")
        directive = item.get(_DIRECTIVE)
        if directive is None or directive == "merge":
            plain.append({k: v for k, v in item.items() if k != _DIRECTIVE})
        elif directive == "delete":
            if mkey not in item:
                raise bad_request(f"invalid strategic merge patch: map {_dumps(item)} does not contain "
                                  f"declared merge key: {mkey}")
            doomed = item[mkey]
            current = [v for v in current if not (isinstance(v, dict) and v.get(mkey) == doomed)]
        elif directive == "replace":
            replace = True
        else:
            raise bad_request(f"invalid strategic merge patch: unknown patch type {directive!r} in list")
    if replace:
        return [_smp_map({}, v, items, sch) for v in plain]
    for item in plain:
        if mkey not in item:
            raise bad_request(f"invalid strategic merge patch: map {_dumps(item)} does not contain declared "
                              f"merge key: {mkey}")
        wanted = item[mkey]
        for i, v in enumerate(current):
            if isinstance(v, dict) and v.get(mkey) == wanted:
                current[i] = _smp_map(v, item, items, sch)
                break
        else:
            current.append(_smp_map({}, item, items, sch))

    def key_of(v: Any) -> Any:
        return _hashable(v.get(mkey)) if isinstance(v, dict) else _hashable(v)

    order_src = order if order is not None else plain
    return _normalize_order(current, [key_of(v) for v in order_src], [key_of(v) for v in orig], key_of)


def _normalize_order(merged: list[Any], patch_order: list[Any], server_order: list[Any],
                     key_of: Callable[[Any], Any]) -> list[Any]:
    """Patch items in patch order; server-only items keep their live order and are interleaved by it."""
    pidx: dict[Any, int] = {}
    for i, k in enumerate(patch_order):
        pidx.setdefault(k, i)
    sidx: dict[Any, int] = {}
    for i, k in enumerate(server_order):
        sidx.setdefault(k, i)
    patch_items = [v for v in merged if key_of(v) in pidx]
    server_only = [v for v in merged if key_of(v) not in pidx]
    patch_items.sort(key=lambda v: pidx[key_of(v)])
    server_only.sort(key=lambda v: sidx.get(key_of(v), len(sidx)))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        else:
            li = sidx.get(key_of(server_only[i]))
            ri = sidx.get(key_of(patch_items[j]))
            if li is not None and ri is not None and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


# ------------------------------------------------------------------------------------------ field sets


def _item_key(item: Any, info: _Info) -> str:
    """The FieldsV1 path element of a list item: `k:{...}` for associative lists, `v:...` for sets."""
    if info.list_kind == "map" and isinstance(item, dict):
        key = {}
        for name in info.keys:
            if name in item:
                key[name] = item[name]
            elif name in _KEY_DEFAULTS:
                key[name] = _KEY_DEFAULTS[name]
        return "k:" + _dumps(key)
    return "v:" + _dumps(item)


def _list_kind(values: Iterable[list[Any]], info: _Info) -> str:
    """Associative and set handling only when the items fit; anything else is atomic."""
    kind = info.list_kind
    if kind == "map":
        if all(isinstance(v, dict) for lst in values for v in lst):
            return "map"
        return "atomic"
    if kind == "set":
        if all(not isinstance(v, (dict, list)) for lst in values for v in lst):
            return "set"
        return "atomic"
    return "atomic"


def _tracked_root(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object whose fields are owned by managers (no server-set metadata)."""
    out = {k: v for k, v in obj.items() if k not in _ROOT_UNTRACKED}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        tracked = {k: v for k, v in meta.items() if k not in _META_UNTRACKED}
        if tracked:
            out["metadata"] = tracked
        else:
            del out["metadata"]
    return out


def _is_key_field(path: Path) -> bool:
    """`f:name` right under `k:{"name":...}`: the item's identity, which stays while the item stays."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    try:
        return path[-1][2:] in json.loads(path[-2][2:])
    except ValueError:
        return False


def _applied_set(value: Any, info: _Info, sch: _Schema, path: Path, out: set[Path]) -> None:
    """What an apply configuration owns: leaves, list items, atomic values and empty containers."""
    if isinstance(value, dict) and not info.map_atomic:
        if not value:
            if path:
                out.add(path)
            return
        for key, child in value.items():
            _applied_set(child, sch.info(info.child(key)), sch, (*path, "f:" + key), out)
        return
    if isinstance(value, list) and value:
        kind = _list_kind((value,), info)
        if kind == "map":
            items = sch.info(info.items)
            for item in value:
                p = (*path, _item_key(item, info))
                out.add(p)
                for key, child in item.items():
                    _applied_set(child, sch.info(items.child(key)), sch, (*p, "f:" + key), out)
            return
        if kind == "set":
            for item in value:
                out.add((*path, "v:" + _dumps(item)))
            return
    out.add(path)


def _all_paths(value: Any, info: _Info, sch: _Schema, path: Path, out: set[Path]) -> None:
    """Every node of a subtree that appeared or disappeared.  Like kube-apiserver's records: structs with
    fields and associative/set lists are not nodes of their own (Go's typed objects always have them);
    maps (labels, data, schemaless objects), list items and leaves are."""
    if isinstance(value, dict) and not info.map_atomic:
        if not value or (info.props is None and path != ("f:metadata",)):
            out.add(path)
        for key, child in value.items():
            _all_paths(child, sch.info(info.child(key)), sch, (*path, "f:" + key), out)
        return
    if isinstance(value, list) and value:
        kind = _list_kind((value,), info)
        if kind == "map":
            items = sch.info(info.items)
            for item in value:
                p = (*path, _item_key(item, info))
                out.add(p)
                for key, child in item.items():
                    _all_paths(child, sch.info(items.child(key)), sch, (*p, "f:" + key), out)
            return
        if kind == "set":
            for item in value:
                out.add((*path, "v:" + _dumps(item)))
            return
    out.add(path)


def _compare(old: Any, new: Any, info: _Info, sch: _Schema, path: Path, changed: set[Path],
             removed: set[Path]) -> None:
    """Paths added or modified from `old` to `new` go to `changed`, paths that disappeared to `removed`."""
    if isinstance(old, dict) and isinstance(new, dict) and not info.map_atomic:
        for key, nv in new.items():
            ov = old.get(key, _MISSING)
            if ov is _MISSING:
                _all_paths(nv, sch.info(info.child(key)), sch, (*path, "f:" + key), changed)
            elif ov != nv or type(ov) is not type(nv):
                _compare(ov, nv, sch.info(info.child(key)), sch, (*path, "f:" + key), changed, removed)
        for key, ov in old.items():
            if key not in new:
                _all_paths(ov, sch.info(info.child(key)), sch, (*path, "f:" + key), removed)
        return
    if isinstance(old, list) and isinstance(new, list):
        kind = _list_kind((old, new), info)
        if kind == "map":
            items = sch.info(info.items)
            old_items: dict[str, Any] = {}
            for item in old:
                old_items.setdefault(_item_key(item, info), item)
            new_items: dict[str, Any] = {}
            for item in new:
                new_items.setdefault(_item_key(item, info), item)
            for key, item in new_items.items():
                p = (*path, key)
                prev = old_items.get(key)
                if prev is None:
                    changed.add(p)
                    for field, child in item.items():
                        _all_paths(child, sch.info(items.child(field)), sch, (*p, "f:" + field), changed)
                elif prev != item:
                    _compare(prev, item, items, sch, p, changed, removed)
            for key, item in old_items.items():
                if key not in new_items:
                    p = (*path, key)
                    removed.add(p)
                    for field, child in item.items():
                        _all_paths(child, sch.info(items.child(field)), sch, (*p, "f:" + field), removed)
            return
        if kind == "set":
            old_values = {_dumps(v) for v in old}
            new_values = {_dumps(v) for v in new}
            changed.update((*path, "v:" + v) for v in new_values - old_values)
            removed.update((*path, "v:" + v) for v in old_values - new_values)
            return
    if old != new or type(old) is not type(new):
        changed.add(path)
        if isinstance(old, (dict, list)) and type(old) is not type(new):
            gone: set[Path] = set()
            _all_paths(old, info, sch, path, gone)
            gone.discard(path)
            removed.update(gone)


def _paths_from_tree(tree: dict[str, Any], prefix: Path, out: set[Path]) -> None:
    for key, child in tree.items():
        if key == ".":
            out.add(prefix)
            continue
        path = (*prefix, key)
        if not child:
            out.add(path)
        elif isinstance(child, dict):
            _paths_from_tree(child, path, out)


def _tree_from_paths(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for element in path:
            nxt = node.get(element)
            if nxt is None:
                nxt = node[element] = {}
            node = nxt
        node["."] = {}
    return _finish_tree(root)


def _finish_tree(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "." in node and len(node) > 1:
        out["."] = {}
    for key in sorted(node):
        if key == ".":
            continue
        child = node[key]
        out[key] = {} if len(child) == 1 and "." in child else _finish_tree(child)
    return out


def _tree_has(tree: dict[str, Any], path: Path) -> bool:
    node = tree
    for element in path:
        nxt = node.get(element)
        if not isinstance(nxt, dict):
            return False
        node = nxt
    return not node or "." in node


def fields_set(obj: dict[str, Any], schema: dict[str, Any] | None, resolve: Resolver) -> dict[str, Any]:
    """The FieldsV1 tree of every field an object sets (server-set metadata excluded)."""
    sch = _Schema(resolve)
    out: set[Path] = set()
    _applied_set(_tracked_root(obj), sch.info(schema), sch, (), out)
    out.discard(())
    return _tree_from_paths(out)


# ------------------------------------------------------------------------------------- managed fields


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    time: str | None
    subresource: str
    tree: dict[str, Any]
    _paths: set[Path] | None = None
    dirty: bool = False

    @property
    def paths(self) -> set[Path]:
        if self._paths is None:
            self._paths = set()
            _paths_from_tree(self.tree, (), self._paths)
        return self._paths

    def set_paths(self, paths: set[Path]) -> None:
        # the same set (a Lease renewal, a status write changing values only): the stored tree still
        # holds, so encode() need not rebuild it — that rebuild was a quarter of a fleet's server CPU
        if not self.dirty and self._paths is not None and paths == self._paths:
            return
        self._paths = paths
        self.dirty = True

    def identity(self) -> tuple[str, str, str, str]:
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def empty(self) -> bool:
        return not self.paths if self._paths is not None else not self.tree

    def encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {"manager": self.manager, "operation": self.operation,
                               "apiVersion": self.api_version}
        if self.time is not None:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = _tree_from_paths(self.paths) if self.dirty else self.tree
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    def describe(self) -> str:
        """How kube-apiserver names a manager in conflict messages."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def _decode_entries(raw: Any) -> list[_Entry] | None:
    """Parse metadata.managedFields; None when it is not a valid list of entries."""
    if not isinstance(raw, list):
        return None
    entries = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        tree = item.get("fieldsV1", {})
        manager = item.get("manager", "")
        operation = item.get("operation", "")
        if not isinstance(tree, dict) or not isinstance(manager, str) or operation not in ("Apply", "Update"):
            return None
        time = item.get("time")
        entries.append(_Entry(manager=manager, operation=operation, api_version=str(item.get("apiVersion", "")),
                              time=time if isinstance(time, str) else None,
                              subresource=str(item.get("subresource", "") or ""), tree=tree))
    return entries


def _encode_entries(entries: list[_Entry]) -> list[dict[str, Any]]:
    kept = [e for e in entries if not e.empty()]
    kept.sort(key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource))
    return [e.encode() for e in kept]


def _is_reset(value: Any) -> bool:
    return isinstance(value, list) and (value == [] or value == [{}])


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _store_entries(obj: dict[str, Any], entries: list[_Entry]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    encoded = _encode_entries(entries)
    if encoded:
        meta["managedFields"] = encoded
    else:
        meta.pop("managedFields", None)


def update_managed_fields(old: dict[str, Any] | None, new: dict[str, Any], manager: str, operation: str,
                          schema: dict[str, Any] | None, resolve: Resolver, now: str,
                          subresource: str = "") -> None:
    """Record, in place on `new`, that `manager` owns the fields this create/update/patch changed.

    Fields it changed leave every other manager's set; fields it removed leave every set.  A request that
    sets managedFields to `[]` (or `[{}]`) starts from nothing; one that sends its own non-empty list
    replaces the recorded history (main resource only); one that omits them keeps the live ones.
    """
    if not isinstance(new, dict):
        return
    new_meta = new.get("metadata")
    if not isinstance(new_meta, dict):
        return
    old_raw = _meta(old).get("managedFields", [])
    sent = new_meta.get("managedFields", _MISSING)
    entries: list[_Entry] | None
    if subresource:
        entries = _decode_entries(old_raw)
    elif _is_reset(sent):
        entries = []
    else:
        entries = _decode_entries(sent) if sent is not _MISSING and sent else None
        if not entries:
            entries = _decode_entries(old_raw)
    if entries is None:
        entries = []

    sch = _Schema(resolve)
    changed: set[Path] = set()
    removed: set[Path] = set()
    old_root = _tracked_root(old) if isinstance(old, dict) else {}
    _compare(old_root, _tracked_root(new), sch.info(schema), sch, (), changed, removed)
    changed.discard(())
    removed.discard(())

    api_version = str(new.get("apiVersion", ""))
    me = (manager, operation, "" if operation == "Apply" else api_version, subresource)
    mine: _Entry | None = None
    touched = changed | removed
    for entry in entries:
        if entry.identity() == me:
            mine = entry
            continue
        if touched and any(_tree_has(entry.tree, p) for p in touched):
            entry.set_paths(entry.paths - touched)
    if changed or removed:
        if mine is None:
            if changed:
                mine = _Entry(manager, operation, api_version, now, subresource, {})
                mine.set_paths(changed - removed)
                entries.append(mine)
        else:
            mine.set_paths((mine.paths | changed) - removed)
            if changed:
                mine.time = now
    _store_entries(new, entries)


# ---------------------------------------------------------------------------------- server-side apply


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _ssa_merge(live: Any, applied: Any, info: _Info, sch: _Schema) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict) and not info.map_atomic:
        out = dict(live)
        for key, value in applied.items():
            current = live.get(key, _MISSING)
            out[key] = deep_copy(value) if current is _MISSING else \
                _ssa_merge(current, value, sch.info(info.child(key)), sch)
        return out
    if isinstance(live, list) and isinstance(applied, list):
        kind = _list_kind((live, applied), info)
        if kind == "map":
            items = sch.info(info.items)
            return _merge_lists(live, applied, lambda v: _item_key(v, info),
                                lambda lv, av: _ssa_merge(lv, av, items, sch))
        if kind == "set":
            return _merge_lists(live, applied, _dumps, lambda lv, av: av)
    return deep_copy(applied)


def _merge_lists(lhs: list[Any], rhs: list[Any], key_of: Callable[[Any], str],
                 merge: Callable[[Any, Any], Any]) -> list[Any]:
    """Merge associative lists like structured-merge-diff: applied items in applied order, live-only items
    stay where they were relative to the shared ones."""
    lkeys = [key_of(v) for v in lhs]
    rkeys = [key_of(v) for v in rhs]
    lmap: dict[str, Any] = {}
    for k, v in zip(lkeys, lhs, strict=True):
        lmap.setdefault(k, v)
    rmap: dict[str, Any] = {}
    for k, v in zip(rkeys, rhs, strict=True):
        rmap.setdefault(k, v)
    shared = [k for k in rkeys if k in lmap]
    nxt = 0
    done: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lhs) or ri < len(rhs):
        if li < len(lhs) and ri < len(rhs):
            lk = lkeys[li]
            if lk == rkeys[ri]:
                if lk not in done:
                    out.append(merge(lmap[lk], rmap[lk]))
                    done.add(lk)
                li += 1
                ri += 1
                nxt += 1
                continue
            if lk in rmap and nxt < len(shared) and shared[nxt] != lk:
                li += 1
                continue
        if li < len(lhs):
            lk = lkeys[li]
            if lk not in rmap:
                out.append(lhs[li])
                li += 1
                continue
            if lk in done:
                li += 1
                continue
        if ri < len(rhs):
            rk = rkeys[ri]
            if rk not in done:
                out.append(merge(lmap[rk], rmap[rk]) if rk in lmap else deep_copy(rmap[rk]))
                done.add(rk)
            ri += 1
            if nxt < len(shared) and shared[nxt] == rk:
                nxt += 1
    return out


def _find_child(container: Any, element: str) -> tuple[Any, Any]:
    """(container, key-or-index) of one path element inside a value, or (None, None)."""
    kind, text = element[:2], element[2:]
    if kind == "f:":
        if isinstance(container, dict) and text in container:
            return container, text
        return None, None
    if not isinstance(container, list):
        return None, None
    if kind == "k:":
        want = json.loads(text)
        for i, item in enumerate(container):
            if isinstance(item, dict) and all(
                    item.get(k, _KEY_DEFAULTS.get(k, _MISSING)) == v for k, v in want.items()):
                return container, i
        return None, None
    if kind == "v:":
        want = json.loads(text)
        for i, item in enumerate(container):
            if item == want:
                return container, i
    return None, None


def _remove_paths(obj: dict[str, Any], paths: Iterable[Path], owned_prefixes: set[Path]) -> None:
    """Delete each path's subtree; containers left empty by that (and owned by no one) go as well."""
    for path in sorted(paths, key=len, reverse=True):
        trail: list[tuple[Any, Any]] = []
        node: Any = obj
        for element in path:
            parent, key = _find_child(node, element)
            if parent is None:
                trail = []
                break
            trail.append((parent, key))
            node = parent[key]
        if not trail:
            continue
        parent, key = trail[-1]
        del parent[key]
        # climb: drop containers that became empty and that nobody owns
        for depth in range(len(trail) - 1, 0, -1):
            parent, key = trail[depth - 1]
            value = parent[key]
            if (isinstance(value, (dict, list)) and not value and path[:depth] not in owned_prefixes):
                del parent[key]
            else:
                break


def _path_string(path: Path) -> str:
    parts = []
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:":
            parts.append("." + text)
        elif kind == "k:":
            try:
                key = json.loads(text)
                parts.append("[" + ",".join(f"{k}={_dumps(v)}" for k, v in key.items()) + "]")
            except ValueError:
                parts.append(f"[{text}]")
        elif kind == "v:":
            parts.append(f"[={text}]")
        else:
            parts.append(f"[{text}]")
    return "".join(parts)


def _conflict_error(conflicts: list[tuple[_Entry, list[Path]]]) -> APIError:
    causes: list[Cause] = []
    lines: list[str] = []
    total = 0
    for entry, paths in sorted(conflicts, key=lambda c: c[0].identity()):
        who = entry.describe()
        lines.append(f"conflicts with {who}:")
        for path in sorted(paths, key=_path_string):
            text = _path_string(path)
            causes.append(Cause(field=text, message=f"conflict with {who}", reason="FieldManagerConflict"))
            lines.append(f"- {text}")
            total += 1
    if total == 1:
        message = f"Apply failed with 1 conflict: {causes[0].message}: {causes[0].field}"
    else:
        message = f"Apply failed with {total} conflicts: " + "\n".join(lines)
    return APIError(409, "Conflict", message, causes=causes)


def server_side_apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool,
                      schema: dict[str, Any] | None, resolve: Resolver, now: str,
                      subresource: str = "") -> dict[str, Any]:
    """Merge an apply configuration into the live object and record `manager`'s ownership.

    Raises 409 Conflict when the configuration changes a field another manager owns (unless `force`,
    which moves the ownership); prunes fields this manager applied before, no longer applies, and nobody
    else owns.  Applying a value equal to the live one shares ownership.
    """
    if not isinstance(applied, dict):
        raise bad_request("an apply configuration must be a JSON object")
    if not manager:
        raise bad_request("PATCH with apply type requires a fieldManager")
    sch = _Schema(resolve)
    info = sch.info(schema)
    config = _drop_nulls(applied)
    config_meta = config.get("metadata")
    if isinstance(config_meta, dict):
        config["metadata"] = {k: v for k, v in config_meta.items() if k not in _META_APPLY_IGNORED}

    live_obj = deep_copy(live) if isinstance(live, dict) else {}
    live_meta = _meta(live_obj)
    entries = _decode_entries(live_meta.pop("managedFields", None)) or []
    if isinstance(live, dict) and not entries:
        # an object written before anyone tracked fields: its fields belong to "before-first-apply"
        before: set[Path] = set()
        _applied_set(_tracked_root(live_obj), info, sch, (), before)
        before.discard(())
        if before:
            first = _Entry("before-first-apply", "Update", str(live_obj.get("apiVersion", "")), now, "", {})
            first.set_paths(before)
            entries.append(first)

    applied_paths: set[Path] = set()
    _applied_set(_tracked_root(config), info, sch, (), applied_paths)
    applied_paths.discard(())

    merged = _ssa_merge(live_obj, config, info, sch)

    me = (manager, "Apply", "", subresource)
    mine = next((e for e in entries if e.identity() == me), None)
    others = [e for e in entries if e is not mine]
    if mine is not None:
        owned = set(applied_paths)
        for entry in others:
            owned |= entry.paths
        doomed = mine.paths - owned
        if doomed:
            prefixes = {p[:i] for p in owned for i in range(1, len(p) + 1)}
            _remove_paths(merged, [p for p in doomed if p not in prefixes and not _is_key_field(p)], prefixes)

    changed: set[Path] = set()
    removed: set[Path] = set()
    _compare(_tracked_root(live_obj), _tracked_root(merged), info, sch, (), changed, removed)
    changed.discard(())
    removed.discard(())

    conflicts = []
    for entry in others:
        hit = entry.paths & changed
        if hit:
            conflicts.append((entry, sorted(hit)))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry in others:
        if changed or removed:
            remaining = entry.paths - changed - removed
            if remaining != entry.paths:
                entry.set_paths(remaining)

    if mine is None:
        mine = _Entry(manager, "Apply", "", None, subresource, {})
        entries.append(mine)
    mine.api_version = str(config.get("apiVersion", live_obj.get("apiVersion", "")))
    mine.time = now
    mine.set_paths(applied_paths)
    _store_entries(merged, entries)
    return merged  # type: ignore[no-any-return]
