"""In-use protection: an object that others still use cannot vanish (Kubernetes' PVC protection, for kokpit).

A package version (MachinePackageVersion, ClusterPackageVersion) that a Machine or Cluster still runs or asks
for must not be deleted under it: the operator could no longer reinstall, repair or roll back to it.  So the
operator that uses such objects keeps the finalizer :data:`IN_USE_FINALIZER` on every one of them; a deletion
of one still in use waits — its ``Deleting`` condition (Cluster API's v1beta2 word) names the users and a
Warning Event says so once — and completes when the last user has moved off.

Level-triggered like everything else: :func:`protect` looks at the object and its current users and makes the
finalizer and condition match; it is safe to call again after a crash at any point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.client import CanPatch, Kind
from kokpit.runtime.conditions import find_condition, set_object_condition
from kokpit.runtime.controller import Request, Result
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.finalizers import add_finalizer, has_finalizer, is_deleting, remove_finalizer
from kokpit.runtime.informer import Store

__all__ = ["DELETING", "IN_USE", "IN_USE_FINALIZER", "InUseProtector", "protect", "users_message"]

Obj = dict[str, Any]

IN_USE_FINALIZER = "kokpit.io/in-use-protection"
DELETING = "Deleting"  # the condition a deletion waiting for its users shows
IN_USE = "InUse"  # its reason
_SHOWN = 10  # user names listed in a message; the rest are counted


def users_message(kind: str, users: list[str]) -> str:
    """``waiting for Machines n1, n2 (and 8 more) to stop using it``."""
    names = ", ".join(users[:_SHOWN])
    more = f" (and {len(users) - _SHOWN} more)" if len(users) > _SHOWN else ""
    return f"waiting for {kind} {names}{more} to stop using it"


async def protect(client: CanPatch, kind: Kind, obj: Obj, users: list[str], *, user_kind: str,
                  now: dt.datetime, warn: Callable[[Obj, str, str], Awaitable[Any]]) -> str:
    """Make ``obj``'s finalizer and ``Deleting`` condition match its ``users`` (sorted names).

    Returns what was done: ``"protected"`` (finalizer added), ``"held"`` (deletion waits for users),
    ``"released"`` (finalizer removed: the deletion completes) or ``""`` (nothing to do).  ``warn(obj, reason,
    message)`` records the Warning Event when a held deletion's users change."""
    if not is_deleting(obj):
        if has_finalizer(obj, IN_USE_FINALIZER):
            return ""
        await add_finalizer(client, kind, obj, IN_USE_FINALIZER)
        return "protected"
    if not has_finalizer(obj, IN_USE_FINALIZER):
        return ""
    name = obj["metadata"]["name"]
    if users:
        message = users_message(user_kind, users)
        cur = find_condition((obj.get("status") or {}).get("conditions"), DELETING)
        if cur is not None and cur.get("status") == "True" and cur.get("message") == message:
            return ""
        view: Obj = {"metadata": dict(obj["metadata"]), "status": {
            "conditions": [dict(c) for c in (obj.get("status") or {}).get("conditions") or []]}}
        set_object_condition(view, DELETING, True, IN_USE, message, now=now)
        await client.patch(kind, name, {"status": {"conditions": view["status"]["conditions"]}},
                           obj["metadata"].get("namespace") if kind.namespaced else None,
                           subresource="status")
        await warn(obj, IN_USE, f"deletion of {kind.kind} {name} is held: {message}")
        return "held"
    await remove_finalizer(client, kind, obj, IN_USE_FINALIZER)
    return "released"


class InUseProtector:
    """A reconciler for one kind of protected object: ``users(name)`` (sorted names, from informer caches)
    decides; wire it as ``manager.controller(..., protector.reconcile).for_(informer)`` plus a ``watches`` on
    the users' informer mapping each user to the objects it uses."""

    def __init__(self, client: CanPatch, kind: Kind, objects: Store, users: Callable[[str], list[str]], *,
                 user_kind: str, recorder: EventRecorder, clock: Clock | None = None) -> None:
        self.client = client
        self.kind = kind
        self.objects = objects
        self.users = users
        self.user_kind = user_kind
        self.recorder = recorder
        self.clock: Clock = clock or RealClock()

    async def reconcile(self, req: Request) -> Result | None:
        obj = self.objects.get_by_name(req.name, req.namespace or None)
        if obj is None:
            return None
        await protect(self.client, self.kind, obj, self.users(req.name), user_kind=self.user_kind,
                      now=self.clock.now(), warn=self._warn)
        return None

    async def _warn(self, obj: Obj, reason: str, message: str) -> None:
        await self.recorder.event(obj, "Warning", reason, message)
