"""Disruption controller: PodDisruptionBudget status, which the Eviction API checks.

``expectedPods`` comes from the pods' controllers' desired replicas when the budget is a percentage or a
``maxUnavailable`` (as upstream, through Deployment/ReplicaSet/StatefulSet scale), else from the number of
selected pods; ``currentHealthy`` counts Ready pods; ``disruptionsAllowed = currentHealthy -
desiredHealthy`` (never below 0).  Pods the API server evicted stay in ``disruptedPods`` (counted as
unhealthy) until they are gone or two minutes passed, so a fast second eviction cannot overspend the budget.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from kokpit._lib.clock import format_time, parse_time
from kokpit._lib.podutil import controller_ref, is_ready, selector_matches
from kokpit.client import POD
from kokpit.controllermanager._common import DEPLOYMENT, PDB, REPLICASET, STATEFULSET, write_status
from kokpit.runtime import EventRecorder, Manager, Request, Result

__all__ = ["DisruptionController", "desired_healthy"]

Obj = dict[str, Any]
DELETION_TIMEOUT = 120.0  # upstream DeletionTimeout for disruptedPods entries


def _int_or_percent(v: Any, total: int, round_up: bool) -> int:
    if isinstance(v, str) and v.endswith("%"):
        x = float(v[:-1] or 0) * total / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(v or 0)


def desired_healthy(spec: Obj, expected: int) -> int:
    if spec.get("maxUnavailable") is not None:
        return max(0, expected - _int_or_percent(spec["maxUnavailable"], expected, True))
    if spec.get("minAvailable") is not None:
        return _int_or_percent(spec["minAvailable"], expected, True)
    return expected  # neither: no disruption allowed (kube defaults minAvailable to 1 in v1beta1 only)


class DisruptionController:
    def __init__(self, manager: Manager, *, workers: int = 2) -> None:
        self.client = manager.client
        self.pdbs = manager.informers.informer(PDB)
        self.pods = manager.informers.informer(POD)
        self.rs = manager.informers.informer(REPLICASET)
        self.deployments = manager.informers.informer(DEPLOYMENT)
        self.sts = manager.informers.informer(STATEFULSET)
        self.events = EventRecorder(self.client, "controllermanager")
        c = self.controller = manager.controller("disruption", self.reconcile, workers=workers)
        c.for_(self.pdbs)
        c.watches(self.pods, self._pdbs_of)

    def _pdbs_of(self, pod: Obj) -> list[Request]:
        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        return [Request.for_object(p) for p in self.pdbs.store.by_namespace(ns)
                if selector_matches((p.get("spec") or {}).get("selector"), meta.get("labels") or {})]

    def _expected_from_controllers(self, pods: list[Obj], ns: str) -> int | None:
        """Sum of the desired replicas of the pods' controllers; None when a pod has none we can scale."""
        seen: dict[str, int] = {}
        for p in pods:
            ref = controller_ref(p)
            if ref is None:
                return None
            kind, name, uid = ref.get("kind"), str(ref.get("name")), str(ref.get("uid"))
            if uid in seen:
                continue
            if kind == "ReplicaSet":
                rs = self.rs.store.get(f"{ns}/{name}")
                if rs is None:
                    return None
                dref = controller_ref(rs)
                d = self.deployments.store.get(f"{ns}/{dref['name']}") if dref and dref.get("kind") == "Deployment" else None
                if d is not None:
                    uid = str(d["metadata"]["uid"])
                    seen[uid] = int((d.get("spec") or {}).get("replicas", 1) or 0)
                else:
                    seen[uid] = int((rs.get("spec") or {}).get("replicas", 1) or 0)
            elif kind == "StatefulSet":
                sts = self.sts.store.get(f"{ns}/{name}")
                if sts is None:
                    return None
                seen[uid] = int((sts.get("spec") or {}).get("replicas", 1) or 0)
            else:
                return None
        return sum(seen.values())

    async def reconcile(self, req: Request) -> Result | None:
        pdb = self.pdbs.store.get(str(req))
        if pdb is None:
            return None
        meta, spec = pdb.get("metadata") or {}, pdb.get("spec") or {}
        ns = str(meta.get("namespace") or "")
        pods = [p for p in self.pods.store.by_namespace(ns)
                if selector_matches(spec.get("selector"), (p.get("metadata") or {}).get("labels") or {})
                and not (p.get("metadata") or {}).get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        now = time.time()
        old_status = pdb.get("status") or {}
        disrupted: dict[str, str] = {}
        names = {str(p["metadata"]["name"]) for p in pods}
        waits: list[float] = []
        for pod_name, stamp in (old_status.get("disruptedPods") or {}).items():
            try:
                t = parse_time(str(stamp)).timestamp()
            except ValueError:
                continue
            if pod_name in names and t + DELETION_TIMEOUT > now:
                disrupted[pod_name] = stamp
                waits.append(t + DELETION_TIMEOUT - now)
        needs_scale = (spec.get("maxUnavailable") is not None
                       or (isinstance(spec.get("minAvailable"), str) and str(spec["minAvailable"]).endswith("%")))
        expected: int | None = len(pods)
        if needs_scale and pods:
            expected = self._expected_from_controllers(pods, ns)
        generation = int(meta.get("generation") or 0)
        stamp_now = format_time(dt.datetime.now(dt.UTC))
        prev: Obj = next((c for c in old_status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
        if expected is None:
            status: Obj = {"observedGeneration": generation, "disruptionsAllowed": 0, "currentHealthy": 0,
                           "desiredHealthy": 0, "expectedPods": 0, "disruptedPods": disrupted or None}
            cond: Obj = {"type": "DisruptionAllowed", "status": "False", "reason": "SyncFailed",
                    "message": "found pods without a controller whose scale is known (Deployment, ReplicaSet, "
                               "StatefulSet); maxUnavailable and percentages need one"}
            await self.events.warning(pdb, "CalculateExpectedPodCountFailed", cond["message"])
        else:
            healthy = sum(1 for p in pods if is_ready(p) and str(p["metadata"]["name"]) not in disrupted)
            desired = desired_healthy(spec, expected)
            allowed = max(0, healthy - desired)
            status = {"observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": healthy,
                      "desiredHealthy": desired, "expectedPods": expected, "disruptedPods": disrupted or None}
            cond = ({"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": ""}
                    if allowed > 0 else
                    {"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": ""})
        cond["observedGeneration"] = generation
        cond["lastTransitionTime"] = prev.get("lastTransitionTime") if prev.get("status") == cond["status"] else stamp_now
        status["conditions"] = [cond]
        await write_status(self.client, PDB, pdb, status)
        return Result(requeue_after=min(waits) + 0.5) if waits else None
