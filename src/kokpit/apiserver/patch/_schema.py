"""What the patch rules need from a schema node (list kinds, merge keys, strategies), memoised; and the
JSON helpers every patch type shares (copying, FieldsV1's compact value spelling)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

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
