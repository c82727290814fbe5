"""Deployment controller: Deployment → ReplicaSets, with upstream's rolling-update arithmetic.

Each reconcile reads the Deployment and the ReplicaSets it controls and derives everything from them:
the *new* ReplicaSet is the one whose template (minus ``pod-template-hash``) equals the Deployment's;
revisions live in the ``deployment.kubernetes.io/revision`` annotation (so ``kubectl rollout undo``
finds and restores an old template, which then becomes the new ReplicaSet again with the next revision);
``maxSurge`` rounds up and ``maxUnavailable`` down, both 0 → 1 unavailable.  Rolling update scales the new
ReplicaSet up to ``replicas + maxSurge`` in total, then old ones down while at least ``replicas -
maxUnavailable`` pods stay available (unhealthy old pods first).  Recreate scales old ReplicaSets to zero
and waits for their pods to go before scaling the new one up.  Old ReplicaSets beyond
``revisionHistoryLimit`` are deleted; status and the Available/Progressing conditions are what
``kubectl rollout status`` reads.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

from kokpit._lib.clock import format_time, parse_time
from kokpit._lib.podutil import is_active
from kokpit.client import POD, AlreadyExistsError, NotFoundError
from kokpit.controllermanager._common import (
    DEPLOYMENT,
    REPLICASET,
    ensure_owner_index,
    owned,
    owner_reference,
    template_hash,
    write_status,
)
from kokpit.runtime import EventRecorder, Manager, Request, Result

__all__ = ["DeploymentController", "new_rs_replicas", "resolve_fenceposts"]

Obj = dict[str, Any]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_SKIP_ANNOTATIONS = {REVISION, DESIRED, MAX_REPLICAS, "deployment.kubernetes.io/revision-history",
                     "kubectl.kubernetes.io/last-applied-configuration"}


def _scaled(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        pct = float(value[:-1] or 0)
        v = pct * total / 100
        return math.ceil(v) if round_up else math.floor(v)
    return int(value or 0)


def resolve_fenceposts(strategy: Obj, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as absolute pod counts (deploymentutil.ResolveFenceposts)."""
    ru = strategy.get("rollingUpdate") or {}
    surge = _scaled(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = _scaled(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def new_rs_replicas(replicas: int, surge: int, current_total: int, new_current: int) -> int:
    """How far the new ReplicaSet may grow now (deploymentutil.NewRSNewReplicas, rolling update)."""
    max_total = replicas + surge
    if current_total >= max_total:
        return new_current
    return new_current + max(0, min(max_total - current_total, replicas - new_current))


def _rev(rs: Obj) -> int:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas") or 0)


def _template_without_hash(rs: Obj) -> Obj:
    t = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def _created(rs: Obj) -> str:
    return str((rs.get("metadata") or {}).get("creationTimestamp") or "")


class DeploymentController:
    def __init__(self, manager: Manager, *, workers: int = 4) -> None:
        self.client = manager.client
        self.deployments = manager.informers.informer(DEPLOYMENT)
        self.rs = manager.informers.informer(REPLICASET)
        self.pods = manager.informers.informer(POD)
        ensure_owner_index(self.rs)
        ensure_owner_index(self.pods)
        self.events = EventRecorder(self.client, "deployment-controller")
        c = manager.controller("deployment", self.reconcile, workers=workers)
        c.for_(self.deployments)
        c.owns(self.rs, "Deployment", "apps/v1")

    async def reconcile(self, req: Request) -> Result | None:
        d = self.deployments.store.get(str(req))
        if d is None or (d.get("metadata") or {}).get("deletionTimestamp"):
            return None
        spec = d.get("spec") or {}
        rss = sorted(owned(self.rs, d), key=_created)
        template = spec.get("template") or {}
        new = next((rs for rs in rss if _template_without_hash(rs) == template), None)
        old = [rs for rs in rss if rs is not new]
        replicas = int(spec.get("replicas", 1) or 0)
        strategy = spec.get("strategy") or {}
        surge, unavailable = resolve_fenceposts(strategy, replicas)
        recreate = strategy.get("type") == "Recreate"
        max_old_rev = max((_rev(rs) for rs in old), default=0)
        created_new = False
        if new is None and not spec.get("paused"):
            total = sum(_replicas(rs) for rs in rss)
            if recreate:
                start = 0 if any(_replicas(rs) for rs in old) else replicas
            else:
                start = new_rs_replicas(replicas, surge, total, 0)
            new = await self._create_new(d, max_old_rev + 1, start, surge)
            if new is None:
                return Result(requeue_after=1.0)
            created_new = True
            rss.append(new)
        elif new is not None and _rev(new) <= max_old_rev:
            new = await self._annotate(new, {REVISION: str(max_old_rev + 1)})  # an old template came back
        if new is not None:
            await self._sync_revision(d, new)
        if not spec.get("paused"):
            if recreate:
                await self._recreate(d, new, old, replicas)
            else:
                await self._rolling(d, new, old, replicas, surge, unavailable)
            await self._cleanup(d, old)
        return await self._status(d, new, old, replicas, unavailable, created_new)

    # ------------------------------------------------------------------ steps
    async def _create_new(self, d: Obj, revision: int, replicas: int, surge: int) -> Obj | None:
        meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
        collisions = int(status.get("collisionCount") or 0)
        h = template_hash(spec.get("template") or {}, collisions)
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SKIP_ANNOTATIONS}
        annotations.update({REVISION: str(revision), DESIRED: str(int(spec.get("replicas", 1) or 0)),
                            MAX_REPLICAS: str(int(spec.get("replicas", 1) or 0) + surge)})
        rs_name = f"{meta.get('name')}-{h}"
        body: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": rs_name, "namespace": meta.get("namespace"),
            "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
            "ownerReferences": [owner_reference(d, DEPLOYMENT)]},
            "spec": {"replicas": replicas, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": template}}
        try:
            rs = await self.client.create(REPLICASET, body)
        except AlreadyExistsError:
            # a ReplicaSet of that name with another template: count a collision, the next hash differs
            try:
                existing = await self.client.get(REPLICASET, rs_name, meta.get("namespace"))
            except NotFoundError:
                return None
            if _template_without_hash(existing) == spec.get("template"):
                return None  # ours, not yet in the cache
            await self.client.patch_status(DEPLOYMENT, str(meta.get("name")),
                                           {"status": {"collisionCount": collisions + 1}}, meta.get("namespace"))
            return None
        await self.events.normal(d, "ScalingReplicaSet",
                                 f"Scaled up replica set {rs['metadata']['name']} from 0 to {replicas}")
        return rs

    async def _annotate(self, rs: Obj, annotations: dict[str, str]) -> Obj:
        meta = rs.get("metadata") or {}
        if all((meta.get("annotations") or {}).get(k) == v for k, v in annotations.items()):
            return rs
        out: Obj = await self.client.patch(REPLICASET, str(meta.get("name")), {"metadata": {"annotations": annotations}},
                                           meta.get("namespace"))
        return out

    async def _sync_revision(self, d: Obj, new: Obj) -> None:
        rev = str(_rev(new))
        meta = d.get("metadata") or {}
        if (meta.get("annotations") or {}).get(REVISION) != rev:
            await self.client.patch(DEPLOYMENT, str(meta.get("name")), {"metadata": {"annotations": {REVISION: rev}}},
                                    meta.get("namespace"))

    async def _scale(self, d: Obj, rs: Obj, replicas: int, surge: int) -> Obj:
        cur = _replicas(rs)
        want_replicas = int((d.get("spec") or {}).get("replicas", 1) or 0)
        meta = rs.get("metadata") or {}
        annotations = {DESIRED: str(want_replicas), MAX_REPLICAS: str(want_replicas + surge)}
        if cur == replicas and all((meta.get("annotations") or {}).get(k) == v for k, v in annotations.items()):
            return rs
        out: Obj = await self.client.patch(REPLICASET, str(meta.get("name")), {
            "metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}, meta.get("namespace"))
        if cur != replicas:
            verb = "up" if replicas > cur else "down"
            await self.events.normal(d, "ScalingReplicaSet",
                                     f"Scaled {verb} replica set {meta.get('name')} from {cur} to {replicas}")
        return out

    async def _rolling(self, d: Obj, new: Obj | None, old: list[Obj], replicas: int, surge: int,
                       unavailable: int) -> None:
        if new is not None:
            cur = _replicas(new)
            if cur > replicas:
                new = await self._scale(d, new, replicas, surge)
            elif cur < replicas:
                total = sum(_replicas(rs) for rs in [new, *old])
                new = await self._scale(d, new, new_rs_replicas(replicas, surge, total, cur), surge)
            else:
                new = await self._scale(d, new, cur, surge)
        active_old = [rs for rs in old if _replicas(rs) > 0]
        if not active_old:
            return
        sizes = {id(rs): _replicas(rs) for rs in [*old, *([new] if new else [])]}
        all_pods = sum(sizes.values())
        min_available = replicas - unavailable
        new_unavailable = (_replicas(new) - int((new.get("status") or {}).get("availableReplicas") or 0)) if new else 0
        max_down = all_pods - min_available - new_unavailable
        if max_down <= 0:
            return
        # first old pods that are not available anyway
        cleaned = 0
        for rs in active_old:
            if cleaned >= max_down:
                break
            unhealthy = sizes[id(rs)] - int((rs.get("status") or {}).get("availableReplicas") or 0)
            if unhealthy <= 0:
                continue
            down = min(max_down - cleaned, unhealthy, sizes[id(rs)])
            sizes[id(rs)] -= down
            cleaned += down
        # then available ones, oldest first, keeping minAvailable
        available = sum(int((rs.get("status") or {}).get("availableReplicas") or 0) for rs in [*old, *([new] if new else [])])
        budget = max(0, min(available - min_available, max_down - cleaned))
        for rs in active_old:
            if budget <= 0:
                break
            down = min(sizes[id(rs)], budget)
            sizes[id(rs)] -= down
            budget -= down
        for rs in active_old:
            if sizes[id(rs)] != _replicas(rs):
                await self._scale(d, rs, sizes[id(rs)], 0)

    async def _recreate(self, d: Obj, new: Obj | None, old: list[Obj], replicas: int) -> None:
        for rs in old:
            if _replicas(rs):
                await self._scale(d, rs, 0, 0)
        if any(is_active(p) for rs in old for p in owned(self.pods, rs)):
            return  # wait until every old pod is gone
        if new is not None and _replicas(new) != replicas:
            await self._scale(d, new, replicas, 0)

    async def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [rs for rs in old if _replicas(rs) == 0 and not int((rs.get("status") or {}).get("replicas") or 0)
                and not (rs.get("metadata") or {}).get("deletionTimestamp")]
        idle.sort(key=_rev)
        for rs in idle[:max(0, len(idle) - limit)]:
            meta = rs.get("metadata") or {}
            try:
                await self.client.delete(REPLICASET, str(meta.get("name")), meta.get("namespace"),
                                         precondition_uid=meta.get("uid"))
            except NotFoundError:
                pass

    async def _status(self, d: Obj, new: Obj | None, old: list[Obj], replicas: int, unavailable: int,
                      created_new: bool) -> Result | None:
        meta, spec = d.get("metadata") or {}, d.get("spec") or {}
        rss = [*old, *([new] if new else [])]

        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field) or 0) for rs in rss)

        updated = int((new.get("status") or {}).get("replicas") or 0) if new else 0
        status: Obj = {
            "observedGeneration": int(meta.get("generation") or 0), "replicas": total("replicas"),
            "updatedReplicas": updated, "readyReplicas": total("readyReplicas"),
            "availableReplicas": total("availableReplicas"),
            "unavailableReplicas": max(0, replicas - total("availableReplicas")),
        }
        now = dt.datetime.now(dt.UTC)
        stamp = format_time(now)
        prev = {c.get("type"): c for c in (d.get("status") or {}).get("conditions") or []}

        def cond(type_: str, st: str, reason: str, message: str, progress: bool = False) -> Obj:
            p = prev.get(type_) or {}
            same = p.get("status") == st and p.get("reason") == reason and p.get("message") == message
            return {"type": type_, "status": st, "reason": reason, "message": message,
                    "lastUpdateTime": p.get("lastUpdateTime") if same and not progress else stamp,
                    "lastTransitionTime": p.get("lastTransitionTime") if p.get("status") == st else stamp}

        if status["availableReplicas"] >= replicas - unavailable:
            available = cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available = cond("Available", "False", "MinimumReplicasUnavailable",
                             "Deployment does not have minimum availability.")
        name = (new.get("metadata") or {}).get("name") if new else ""
        complete = (new is not None and updated == replicas and status["availableReplicas"] >= replicas
                    and status["replicas"] == updated)
        old_status = d.get("status") or {}
        moved = any(old_status.get(k) != status[k] for k in ("replicas", "updatedReplicas", "readyReplicas",
                                                              "availableReplicas"))
        deadline = spec.get("progressDeadlineSeconds")
        requeue: float | None = None
        if spec.get("paused"):
            progressing = cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif complete:
            progressing = cond("Progressing", "True", "NewReplicaSetAvailable",
                               f'ReplicaSet "{name}" has successfully progressed.')
        elif created_new:
            progressing = cond("Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"',
                               True)
        else:
            p = prev.get("Progressing") or {}
            last = p.get("lastUpdateTime")
            timed_out = (p.get("reason") == "ProgressDeadlineExceeded"
                         or (deadline is not None and last and not moved
                             and (now - parse_time(str(last))).total_seconds() > int(deadline)))
            if timed_out:
                progressing = cond("Progressing", "False", "ProgressDeadlineExceeded",
                                   f'ReplicaSet "{name}" has timed out progressing.')
                if p.get("reason") != "ProgressDeadlineExceeded":
                    await self.events.warning(d, "ProgressDeadlineExceeded", progressing["message"])
            else:
                progressing = cond("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.',
                                   moved)
                if deadline is not None:
                    requeue = float(deadline) + 1
        status["conditions"] = [available, progressing]
        await write_status(self.client, DEPLOYMENT, d, status)
        return Result(requeue_after=requeue) if requeue else None
