"""Finalizer helpers: the first step of a reconcile that must clean up outside the API before deletion.

Writes use a JSON patch guarded by a ``test`` of the resourceVersion, so two writers cannot silently drop
each other's finalizers; a lost race surfaces as an API error and the reconcile is retried.
"""

from __future__ import annotations

from typing import Any

from kokpit.client import CanPatch, Kind

__all__ = ["FinalizerClient", "add_finalizer", "has_finalizer", "is_deleting", "remove_finalizer"]

Obj = dict[str, Any]


FinalizerClient = CanPatch  # adding and removing a finalizer is one guarded patch


def has_finalizer(obj: Obj, finalizer: str) -> bool:
    return finalizer in ((obj.get("metadata") or {}).get("finalizers") or [])


def is_deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _guarded(obj: Obj, finalizers: list[str]) -> list[Obj]:
    meta = obj.get("metadata") or {}
    ops: list[Obj] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}
    ]
    if "finalizers" in meta:
        ops.append({"op": "replace", "path": "/metadata/finalizers", "value": finalizers})
    else:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": finalizers})
    return ops


async def add_finalizer(client: FinalizerClient, kind: Kind, obj: Obj, finalizer: str) -> Obj:
    """Ensure ``finalizer`` is present; returns the (possibly updated) object."""
    if has_finalizer(obj, finalizer):
        return obj
    meta = obj.get("metadata") or {}
    new = [*(meta.get("finalizers") or []), finalizer]
    return await client.patch(
        kind, meta["name"], _guarded(obj, new), meta.get("namespace"), patch_type="json"
    )


async def remove_finalizer(client: FinalizerClient, kind: Kind, obj: Obj, finalizer: str) -> Obj:
    """Ensure ``finalizer`` is absent (the server deletes the object once none remain)."""
    if not has_finalizer(obj, finalizer):
        return obj
    meta = obj.get("metadata") or {}
    new = [f for f in meta.get("finalizers") or [] if f != finalizer]
    return await client.patch(
        kind, meta["name"], _guarded(obj, new), meta.get("namespace"), patch_type="json"
    )
