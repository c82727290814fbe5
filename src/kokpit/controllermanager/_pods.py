"""The pods a workload controller owns: one place for what ReplicaSet, DaemonSet and Job controllers share.

Each of them finds its pods by controller uid, creates them from its template with an owner reference in
slow-start batches, deletes surplus ones, and must not act twice on a write the informer has not shown yet
(expectations, upstream's ControllerExpectations).  :class:`PodControl` does all of that for one owner kind,
and batches the pod *updates* that only change status: a readiness flip or a binding re-reads the owner at
most once per ``batch_period`` instead of once per pod (kube's Job controller batches the same way; a
DaemonSet on 1,000 nodes otherwise reconciles over every node about three times per pod).  Creations,
deletions, terminal phases and label changes still reconcile at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kokpit._lib.podutil import is_active
from kokpit.client import POD, Kind
from kokpit.controllermanager._common import (
    Expectations,
    create_pods,
    delete_pods,
    ensure_owner_index,
    owned,
)
from kokpit.runtime import Controller, EventRecorder, Handlers, Manager, Request, Result, owner_mapper
from kokpit.runtime.informer import object_key

__all__ = ["POD_UPDATE_BATCH_PERIOD", "PodControl", "pod_update_delay"]

Obj = dict[str, Any]
POD_UPDATE_BATCH_PERIOD = 0.5


def pod_update_delay(period: float) -> Callable[[Obj, Obj], float]:
    """How long an owner waits before it looks at a pod update: at once when the pod stopped or started
    counting (terminal phase, deletion) or changed labels or owners, else ``period`` (status only)."""

    def delay(old: Obj, new: Obj) -> float:
        om, nm = old.get("metadata") or {}, new.get("metadata") or {}
        if (is_active(old) != is_active(new) or om.get("labels") != nm.get("labels")
                or om.get("ownerReferences") != nm.get("ownerReferences")):
            return 0.0
        return period

    return delay


class PodControl:
    """Owned pods of one controller kind: index, expectations, batched updates, create and delete."""

    def __init__(self, manager: Manager, controller: Controller, kind: Kind, component: str, *,
                 batch_period: float = POD_UPDATE_BATCH_PERIOD) -> None:
        self.client = manager.client
        self.informer = manager.informers.informer(POD)
        ensure_owner_index(self.informer)
        self.events = EventRecorder(self.client, component)
        self.expectations = Expectations()
        self._owners = owner_mapper(kind.kind, kind.api_version)
        controller.owns(self.informer, kind.kind, kind.api_version, update_delay=pod_update_delay(batch_period))
        self.informer.add_event_handler(Handlers(add=self._created, delete=self._deleted))

    def _created(self, pod: Obj) -> None:
        for req in self._owners(pod):
            self.expectations.created(str(req))

    def _deleted(self, pod: Obj) -> None:
        for req in self._owners(pod):
            self.expectations.deleted(str(req), object_key(pod))

    def owned(self, owner: Obj) -> list[Obj]:
        return owned(self.informer, owner)

    def satisfied(self, key: str) -> bool:
        """No create or delete of this owner is still on its way to the informer."""
        return self.expectations.satisfied(key)

    async def guard(self, req: Request, reconcile: Callable[[Request], Awaitable[Result | None]]) -> Result | None:
        """Run ``reconcile``; a failed or cancelled pass (leadership lost mid-create) may have sent fewer
        writes than expected, so its expectations are dropped and the next pass recounts from the cache."""
        try:
            return await reconcile(req)
        except BaseException:
            self.expectations.forget(str(req))
            raise

    def forget(self, key: str) -> None:
        self.expectations.forget(key)

    async def apply(self, key: str, owner: Obj, create: list[Obj], delete: list[Obj]) -> str | None:
        """Create ``create`` (pods from :func:`pod_from_template`) in slow-start batches and delete ``delete``,
        expecting to see each in the informer; a failed create becomes a FailedCreate Warning on the owner.
        Returns the first create error (for the owner's failure condition), None when all went through."""
        if not create and not delete:
            return None
        self.expectations.expect(key, adds=len(create), deletes=[object_key(p) for p in delete])
        errors = await create_pods(self.client, create, lambda: self.expectations.created(key))
        if errors:
            await self.events.warning(owner, "FailedCreate", f"Error creating: {errors[0]}")
        await delete_pods(self.client, delete)
        return errors[0] if errors else None
