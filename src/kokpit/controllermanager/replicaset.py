"""ReplicaSet controller: keep ``spec.replicas`` active pods (replacing deleted, evicted and failed ones).

Level-triggered: each reconcile counts the active pods the ReplicaSet controls (by controller uid) and
creates or deletes the difference, at most 500 per pass, creates in slow-start batches.  Scale-down picks
victims as upstream does: unassigned before assigned, pending before running, not ready before ready,
most recently ready first.  Status (replicas, ready, available after minReadySeconds, observedGeneration,
ReplicaFailure) is written only when it changed.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from kokpit._lib.clock import format_time
from kokpit._lib.podutil import is_active, is_available, is_ready, ready_since
from kokpit.controllermanager._common import BURST_REPLICAS, REPLICASET, pod_from_template, write_status
from kokpit.controllermanager._pods import POD_UPDATE_BATCH_PERIOD, PodControl
from kokpit.runtime import Manager, Request, Result

__all__ = ["ReplicaSetController", "deletion_rank"]

Obj = dict[str, Any]


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Sort key: pods earlier in the order are deleted first (controller.ActivePods, simplified)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(status.get("phase") or "Pending"), 0)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    since = ready_since(pod) or ""
    return (bool(spec.get("nodeName")), phase, is_ready(pod), -restarts, _neg(since),
            _neg(str((pod.get("metadata") or {}).get("creationTimestamp") or "")))


def _neg(s: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in s)  # newer (larger) timestamps first


class ReplicaSetController:
    def __init__(self, manager: Manager, *, workers: int = 8,
                 batch_period: float = POD_UPDATE_BATCH_PERIOD) -> None:
        self.client = manager.client
        self.rs = manager.informers.informer(REPLICASET)
        c = manager.controller("replicaset", self.reconcile, workers=workers)
        c.for_(self.rs)
        self.pods = PodControl(manager, c, REPLICASET, "replicaset-controller", batch_period=batch_period)

    async def reconcile(self, req: Request) -> Result | None:
        return await self.pods.guard(req, self._reconcile)

    async def _reconcile(self, req: Request) -> Result | None:
        key = str(req)
        rs = self.rs.store.get(key)
        if rs is None:
            self.pods.forget(key)
            return None
        meta, spec = rs.get("metadata") or {}, rs.get("spec") or {}
        pods = [p for p in self.pods.owned(rs) if is_active(p)]
        failure: str | None = None
        if not meta.get("deletionTimestamp") and self.pods.satisfied(key):
            diff = int(spec.get("replicas", 1) or 0) - len(pods)
            if diff > 0:
                name = str(meta.get("name"))
                failure = await self.pods.apply(key, rs, [
                    pod_from_template(spec.get("template") or {}, rs, REPLICASET, generate_name=f"{name}-")
                    for _ in range(min(diff, BURST_REPLICAS))], [])
            elif diff < 0:
                await self.pods.apply(key, rs, [], sorted(pods, key=deletion_rank)[:min(-diff, BURST_REPLICAS)])
        return await self._status(rs, pods, failure)

    async def _status(self, rs: Obj, pods: list[Obj], failure: str | None) -> Result | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = time.time()
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in pods if is_ready(p)]
        available = [p for p in ready if is_available(p, min_ready, now)]
        status: Obj = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(1 for p in pods if all(
                ((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())),
            "readyReplicas": len(ready), "availableReplicas": len(available),
            "observedGeneration": int((rs.get("metadata") or {}).get("generation") or 0),
        }
        old = (rs.get("status") or {}).get("conditions") or []
        conds = [c for c in old if c.get("type") != "ReplicaFailure"]
        if failure:
            prev: Obj = next((c for c in old if c.get("type") == "ReplicaFailure"), {})
            conds.append({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                          "message": failure[:1000], "lastTransitionTime": prev.get("lastTransitionTime")
                          or format_time(dt.datetime.now(dt.UTC))})
        status["conditions"] = conds or None
        await write_status(self.client, REPLICASET, rs, status)
        if len(available) < len(ready):
            return Result(requeue_after=max(1.0, float(min_ready)))
        return None
