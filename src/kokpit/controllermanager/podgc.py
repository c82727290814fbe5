"""Pod garbage collection (kube-controller-manager's PodGC), run every ``period`` seconds by the leader:

1. **orphaned pods** — bound to a Node that no longer exists (checked with a live GET, not only the cache, so
   a lagging informer never costs a pod): marked ``Failed`` with a ``DisruptionTarget`` condition (reason
   ``DeletionByPodGC``), as upstream does so that Jobs count them, then deleted at once;
2. **unscheduled terminating pods** — deleted (``deletionTimestamp`` set) but never bound, so no kubelet will
   ever confirm: deleted with grace period 0;
3. **terminated pods** (``Succeeded``/``Failed``) beyond ``--terminated-pod-gc-threshold`` (12,500 upstream;
   0 turns it off): the oldest are deleted first, so finished Jobs' pods do not pile up in the API forever.

Everything is read from the cluster on each pass, so a restarted controller-manager carries on where the
last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit._lib.podutil import TERMINAL_PHASES
from kokpit.client import NODE, POD, ApiError, NotFoundError, TransportError
from kokpit.runtime import EventRecorder, Manager
from kokpit.runtime.informer import Informer

__all__ = ["PodGCController", "PodGCOptions"]

log = logging.getLogger("kokpit.controllermanager.podgc")

Obj = dict[str, Any]


@dataclass
class PodGCOptions:
    period: float = 20.0  # upstream's gcCheckPeriod
    terminated_threshold: int = 12500  # --terminated-pod-gc-threshold (0: never by count)


class PodGCController:
    def __init__(self, manager: Manager, options: PodGCOptions | None = None, clock: Clock | None = None) -> None:
        self.client = manager.client
        self.options = options or PodGCOptions()
        self._clock: Clock = clock or RealClock()
        self.pods: Informer = manager.informers.informer(POD)
        self.nodes: Informer = manager.informers.informer(NODE)
        self.events = EventRecorder(self.client, "pod-garbage-collector")
        self.deleted = 0
        manager.add_runnable(self.run, needs_leader_election=True)

    async def run(self) -> None:
        await self.pods.wait_synced()
        await self.nodes.wait_synced()
        while True:
            try:
                await self.collect()
            except (ApiError, TransportError) as e:
                log.warning("pod garbage collection pass failed: %s", e)
            await self._clock.sleep(self.options.period)

    async def collect(self) -> int:
        """One pass; returns how many pods it deleted."""
        pods = self.pods.store.list()
        before = self.deleted
        await self._orphaned(pods)
        await self._unscheduled_terminating(pods)
        await self._terminated(pods)
        return self.deleted - before

    async def _orphaned(self, pods: list[Obj]) -> None:
        missing: dict[str, bool] = {}
        for pod in pods:
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            if not node or self.nodes.store.get(node) is not None:
                continue
            if node not in missing:
                try:
                    await self.client.get(NODE, node)
                    missing[node] = False  # the cache is behind: the node exists
                except NotFoundError:
                    missing[node] = True
            if missing[node]:
                await self._fail_and_delete(pod, f"PodGC: node {node} no longer exists")

    async def _fail_and_delete(self, pod: Obj, message: str) -> None:
        meta = pod.get("metadata") or {}
        name, ns = str(meta.get("name")), meta.get("namespace")
        if (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES:
            conds = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"]
            conds.append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                          "message": message, "lastTransitionTime": format_time(self._clock.now())})
            try:
                await self.client.patch_status(POD, name, {"status": {"phase": "Failed", "conditions": conds}}, ns)
            except NotFoundError:
                return
        await self._delete(pod, message)

    async def _unscheduled_terminating(self, pods: list[Obj]) -> None:
        for pod in pods:
            meta = pod.get("metadata") or {}
            if meta.get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName"):
                await self._delete(pod, "PodGC: deleting an unscheduled terminating pod")

    async def _terminated(self, pods: list[Obj]) -> None:
        limit = self.options.terminated_threshold
        if limit <= 0:
            return
        done = [p for p in pods if (p.get("status") or {}).get("phase") in TERMINAL_PHASES
                and not (p.get("metadata") or {}).get("deletionTimestamp")]
        excess = len(done) - limit
        if excess <= 0:
            return
        done.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        log.info("deleting %d terminated pods over the threshold of %d", excess, limit)
        sem = asyncio.Semaphore(32)

        async def one(p: Obj) -> None:
            async with sem:
                await self._delete(p, f"PodGC: more than {limit} terminated pods", event=False)

        await asyncio.gather(*(one(p) for p in done[:excess]))

    async def _delete(self, pod: Obj, message: str, *, event: bool = True) -> None:
        meta = pod.get("metadata") or {}
        try:
            await self.client.delete(POD, str(meta.get("name")), meta.get("namespace"), grace_period_seconds=0,
                                     precondition_uid=meta.get("uid"))
        except NotFoundError:
            return
        self.deleted += 1
        if event:
            await self.events.normal(pod, "PodGC", message)
