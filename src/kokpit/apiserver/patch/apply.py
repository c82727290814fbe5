"""Server-side apply: merging an apply configuration into the live object by ownership, with conflicts
reported field by field like kube-apiserver (``kubectl apply --server-side``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from kokpit.apiserver.errors import APIError, Cause, bad_request
from kokpit.apiserver.patch._schema import (
    _KEY_DEFAULTS,
    _META_APPLY_IGNORED,
    _MISSING,
    Path,
    Resolver,
    _dumps,
    _Info,
    _Schema,
    deep_copy,
)
from kokpit.apiserver.patch.fieldsets import (
    _applied_set,
    _compare,
    _is_key_field,
    _item_key,
    _list_kind,
    _tracked_root,
)
from kokpit.apiserver.patch.managed import _decode_entries, _Entry, _meta, _store_entries

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
