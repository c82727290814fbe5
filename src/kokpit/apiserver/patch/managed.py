"""``metadata.managedFields``: which manager owns which fields after each write, kept like kube-apiserver
keeps them (operations, subresources, timestamps, merged entries)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kokpit.apiserver.patch._schema import _MISSING, Path, Resolver, _Schema
from kokpit.apiserver.patch.fieldsets import (
    _compare,
    _paths_from_tree,
    _tracked_root,
    _tree_from_paths,
    _tree_has,
)

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
