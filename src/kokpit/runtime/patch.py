"""Write what a reconcile changed, once, at the end: metadata (labels, annotations) and status.

Reconciles mutate a copy of the cached object; :class:`PatchHelper` diffs it against the snapshot and sends
JSON merge patches only for what differs (zero writes when nothing changed — the benchmark target is at
most one write per reconcile).  Merge patches carry no resourceVersion, so a concurrent writer of other
fields never causes a conflict; if the server still answers 409 (it gave up under contention) the helper
resends the same patch: a merge patch carries no resourceVersion, so there is nothing to re-read.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from kokpit.client import CanPatch, ConflictError, Kind

__all__ = ["PatchClient", "PatchHelper", "json_copy", "merge_patch", "reconcile_view"]

Obj = dict[str, Any]
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (what API objects are): an orjson round trip, about three times cheaper
    than ``copy.deepcopy`` on a big status (a Rollout's 10,000 targets: 180 ms against 550 ms).  A value
    holding something that is not JSON — a datetime, a dataclass, a str or int subclass, a non-str key —
    takes ``copy.deepcopy``, so those keep their type.  A tuple inside comes back a list and an Enum member
    as its value: objects read from a server hold neither, and a patch sends them that way anyway."""
    if type(value) is dict or type(value) is list:
        try:
            return orjson.loads(orjson.dumps(value, option=_STRICT))
        except (TypeError, orjson.JSONEncodeError):
            pass
    return copy.deepcopy(value)


PatchClient = CanPatch  # the helper only ever patches


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning ``old`` into ``new`` (``None`` entries delete keys)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return json_copy(new)
    out: Obj = {}
    for k in old.keys() - new.keys():
        out[k] = None
    for k, v in new.items():
        if k not in old:
            out[k] = json_copy(v)
        elif old[k] != v:
            if isinstance(old[k], dict) and isinstance(v, dict):
                out[k] = merge_patch(old[k], v)
            else:
                out[k] = json_copy(v)
    return out


# creationTimestamp: the flows' time-to-isolate / time-to-repair histograms are measured from it (without it
# they never got a sample); deletionTimestamp: a reconcile may need to know its object is going
_VIEW_META = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp",
              "labels", "annotations", "finalizers")


def reconcile_view(obj: Obj, kind: Kind) -> Obj:
    """The parts of a cached object a reconcile reads or writes — spec, status and the identifying
    metadata, without managedFields — as a new top level (cheaper for :class:`PatchHelper` to snapshot)."""
    meta = obj.get("metadata") or {}
    out: Obj = {k: obj[k] for k in ("spec", "status") if k in obj}
    out["apiVersion"] = obj.get("apiVersion") or kind.api_version
    out["kind"] = obj.get("kind") or kind.kind
    out["metadata"] = {k: meta[k] for k in _VIEW_META if k in meta}
    return out


class PatchHelper:
    """``helper = PatchHelper(client, kind, obj)``; mutate ``helper.obj``; ``await helper.patch()``."""

    def __init__(self, client: PatchClient, kind: Kind, obj: Obj, *, max_conflict_retries: int = 3) -> None:
        self.client = client
        self.kind = kind
        self.original: Obj = json_copy(obj)
        self.obj: Obj = json_copy(obj)
        self.max_conflict_retries = max_conflict_retries
        self.writes = 0

    def _meta_patch(self) -> Obj:
        o = self.original.get("metadata") or {}
        n = self.obj.get("metadata") or {}
        out: Obj = {}
        for field in ("labels", "annotations"):
            if o.get(field) != n.get(field):
                out[field] = merge_patch(o.get(field) or {}, n.get(field) or {})
        return {"metadata": out} if out else {}

    def _status_patch(self) -> Obj:
        o = self.original.get("status")
        n = self.obj.get("status")
        if o == n or n is None:
            return {}
        return {"status": merge_patch(o or {}, n)}

    async def patch(self) -> Obj:
        """Send the metadata and status differences; returns the latest object."""
        meta = self.obj.get("metadata") or {}
        name, ns = meta["name"], meta.get("namespace")
        result = self.obj
        mp = self._meta_patch()
        if mp:
            result = await self._send(name, ns, mp, None)
        sp = self._status_patch()
        if sp:
            result = await self._send(name, ns, sp, "status")
        self.original = json_copy(self.obj)
        return result

    async def _send(self, name: str, ns: str | None, body: Obj, subresource: str | None) -> Obj:
        attempt = 0
        while True:
            try:
                out = await self.client.patch(
                    self.kind, name, body, ns, patch_type="merge", subresource=subresource
                )
                self.writes += 1
                return out
            except ConflictError:
                attempt += 1
                if attempt > self.max_conflict_retries:
                    raise
