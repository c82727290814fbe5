"""Field sets (FieldsV1) as Python sets of paths: what an object sets, what changed between two versions,
and the conversions between path sets and FieldsV1 trees."""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

from kokpit.apiserver.patch._schema import (
    _KEY_DEFAULTS,
    _META_UNTRACKED,
    _MISSING,
    _ROOT_UNTRACKED,
    Path,
    Resolver,
    _dumps,
    _Info,
    _Schema,
)

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
    _paths(value, info, sch, path, out, every=False)


def _all_paths(value: Any, info: _Info, sch: _Schema, path: Path, out: set[Path]) -> None:
    """Every node of a subtree that appeared or disappeared.  Like kube-apiserver's records: structs with
    fields and associative/set lists are not nodes of their own (Go's typed objects always have them);
    maps (labels, data, schemaless objects), list items and leaves are."""
    _paths(value, info, sch, path, out, every=True)


def _paths(value: Any, info: _Info, sch: _Schema, path: Path, out: set[Path], *, every: bool) -> None:
    """The walk both sets share; they differ only in which objects are nodes of their own (``every``: see
    :func:`_all_paths`; else only an empty one below the root, see :func:`_applied_set`)."""
    if isinstance(value, dict) and not info.map_atomic:
        if every:
            if not value or (info.props is None and path != ("f:metadata",)):
                out.add(path)
        elif not value:
            if path:
                out.add(path)
            return
        for key, child in value.items():
            _paths(child, sch.info(info.child(key)), sch, (*path, "f:" + key), out, every=every)
        return
    if isinstance(value, list) and value:
        kind = _list_kind((value,), info)
        if kind == "map":
            items = sch.info(info.items)
            for item in value:
                p = (*path, _item_key(item, info))
                out.add(p)
                for key, child in item.items():
                    _paths(child, sch.info(items.child(key)), sch, (*p, "f:" + key), out, every=every)
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


def _tree_from_paths(paths: AbstractSet[Path]) -> dict[str, Any]:
    """The FieldsV1 tree of a path set: children in sorted order, `"."` first in a node that is in the set
    and has children, a member without children an empty dict.

    Built in one pass over the sorted paths (a path sorts before every path it is a prefix of, so each
    node's children arrive in order and a member is known to be one before its first child arrives),
    instead of building an unordered tree and copying it sorted: a Pod's 51 paths 31 → 24 µs, paid on
    every create and on every write that changes which fields a manager owns."""
    ordered = sorted(paths)
    root: dict[str, Any] = {}
    if len(ordered) > 1 and ordered[0] == ():
        root["."] = {}  # the root itself is a member (only a malformed managedFields entry says so)
    members: set[int] = set()  # ids of the member nodes that have no children yet
    for path in ordered:
        node = root
        for element in path:
            nxt = node.get(element)
            if nxt is None:
                nxt = node[element] = {}
            elif not nxt and id(nxt) in members:
                nxt["."] = {}  # a member gets its first child
            node = nxt
        if path:
            members.add(id(node))
    return root


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
