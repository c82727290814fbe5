"""StatefulSet controller: pods ``<name>-0 … <name>-(n-1)`` with stable names, created in order.

With the default ``OrderedReady`` policy a pod is created only when every lower ordinal is Running and
Ready, scale-down removes the highest ordinal first and one at a time, and a rolling update replaces pods
from the highest ordinal down to ``partition``, one at a time, each only when all others are Ready.  A
failed pod is deleted and recreated under the same name.  Revisions are ControllerRevisions (the pods'
``controller-revision-hash``), as ``kubectl rollout status|undo statefulset`` expect.  Stateful services
need this identity, which is why kokpit's maintenance flows hand such pods to their own MigrateController
instead of counting on a ReplicaSet to recreate them anywhere.  ``volumeClaimTemplates`` give every
ordinal its own PersistentVolumeClaims, kept or deleted as the retention policy says (:mod:`._claims`).
"""

from __future__ import annotations

import re
from typing import Any

from kokpit._lib.podutil import TERMINAL_PHASES, is_ready
from kokpit.client import POD, AlreadyExistsError, NotFoundError
from kokpit.controllermanager._claims import PVC, ensure_claims, keep_retention, mount_claims
from kokpit.controllermanager._common import (
    CONTROLLERREVISION,
    STATEFULSET,
    ensure_owner_index,
    owned,
    pod_from_template,
    write_status,
)
from kokpit.controllermanager.daemonset import REVISION_HASH, sync_revisions
from kokpit.runtime import EventRecorder, Manager, Request, Result

__all__ = ["StatefulSetController"]

Obj = dict[str, Any]
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
CLAIM_WAIT = "claim"


def _ordinal(sts_name: str, pod: Obj) -> int | None:
    m = re.fullmatch(re.escape(sts_name) + r"-(\d+)", str((pod.get("metadata") or {}).get("name")))
    return int(m.group(1)) if m else None


def _running_ready(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and is_ready(pod) and not (
        pod.get("metadata") or {}).get("deletionTimestamp")


class StatefulSetController:
    def __init__(self, manager: Manager, *, workers: int = 2) -> None:
        self.client = manager.client
        self.sts = manager.informers.informer(STATEFULSET)
        self.pods = manager.informers.informer(POD)
        self.revisions = manager.informers.informer(CONTROLLERREVISION)
        self.claims = manager.informers.informer(PVC)
        ensure_owner_index(self.pods)
        ensure_owner_index(self.revisions)
        self.events = EventRecorder(self.client, "statefulset-controller")
        c = manager.controller("statefulset", self.reconcile, workers=workers)
        c.for_(self.sts)
        c.owns(self.pods, "StatefulSet", "apps/v1")

    async def reconcile(self, req: Request) -> Result | None:
        sts = self.sts.store.get(str(req))
        if sts is None or (sts.get("metadata") or {}).get("deletionTimestamp"):
            return None
        meta, spec = sts.get("metadata") or {}, sts.get("spec") or {}
        name = str(meta.get("name"))
        template = spec.get("template") or {}
        h, _ = await sync_revisions(self.client, self.revisions, sts, STATEFULSET, template)
        update_rev = f"{name}-{h}"
        replicas = int(spec.get("replicas", 1) or 0)
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        by_ord: dict[int, Obj] = {}
        for p in owned(self.pods, sts):
            o = _ordinal(name, p)
            if o is not None:
                by_ord[o] = p
        await keep_retention(self.client, self.claims, sts, by_ord, replicas)
        acted = await self._sync(sts, by_ord, replicas, ordered, template, update_rev)
        if acted == CLAIM_WAIT:
            await self._status(sts, by_ord, replicas, update_rev)
            return Result(requeue_after=2.0)  # a claim of the same name is still being deleted
        if not acted:
            await self._roll(sts, by_ord, replicas, update_rev)
        return await self._status(sts, by_ord, replicas, update_rev)

    def _revision(self, pod: Obj) -> str:
        return str(((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH) or "")

    async def _sync(self, sts: Obj, by_ord: dict[int, Obj], replicas: int, ordered: bool, template: Obj,
                    update_rev: str) -> bool | str:
        """Create missing ordinals, replace failed pods, remove surplus ones; True when it acted,
        ``CLAIM_WAIT`` when an ordinal waits for its claim."""
        meta, spec = sts.get("metadata") or {}, sts.get("spec") or {}
        name = str(meta.get("name"))
        for o in range(replicas):
            pod = by_ord.get(o)
            if pod is not None and (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
                await self._delete(pod)
                await self.events.warning(sts, "RecreatingFailedPod",
                                          f"StatefulSet {meta.get('namespace')}/{name} is recreating failed Pod "
                                          f"{pod['metadata']['name']}")
                return True
            if pod is None:
                pod_name = f"{name}-{o}"
                body = pod_from_template(template, sts, STATEFULSET, name=pod_name, labels={
                    POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(o), REVISION_HASH: update_rev})
                body["spec"].setdefault("hostname", pod_name)
                if spec.get("serviceName"):
                    body["spec"].setdefault("subdomain", spec["serviceName"])
                mount_claims(sts, body, o)
                waiting = await ensure_claims(self.client, self.claims, self.events, sts, o, pod_name)
                if waiting is not None:
                    await self.events.warning(sts, "FailedCreate", f"create Pod {pod_name} in StatefulSet {name} "
                                                                   f"failed error: {waiting}")
                    return CLAIM_WAIT
                try:
                    await self.client.create(POD, body)
                    await self.events.normal(sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {name} "
                                                                      "successful")
                except AlreadyExistsError:
                    pass  # still terminating from a deletion: wait for it to go
                if ordered:
                    return True
            elif ordered and not _running_ready(pod):
                return True  # wait for this one before the next ordinal
        surplus = sorted((o for o in by_ord if o >= replicas), reverse=True)
        if surplus:
            if ordered and not all(_running_ready(by_ord[o]) for o in range(replicas) if o in by_ord):
                return True
            victims = surplus[:1] if ordered else surplus
            for o in victims:
                await self._delete(by_ord[o])
                await self.events.normal(sts, "SuccessfulDelete", f"delete Pod {by_ord[o]['metadata']['name']} in "
                                                                  f"StatefulSet {name} successful")
            return True
        return False

    async def _roll(self, sts: Obj, by_ord: dict[int, Obj], replicas: int, update_rev: str) -> None:
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return  # OnDelete: pods take the new template when someone deletes them
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        if not all(_running_ready(by_ord[o]) for o in range(replicas) if o in by_ord):
            return
        for o in sorted(range(partition, replicas), reverse=True):
            pod = by_ord.get(o)
            if pod is not None and self._revision(pod) != update_rev:
                await self._delete(pod)
                return

    async def _delete(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        try:
            await self.client.delete(POD, str(meta.get("name")), meta.get("namespace"), precondition_uid=meta.get("uid"))
        except NotFoundError:
            pass

    async def _status(self, sts: Obj, by_ord: dict[int, Obj], replicas: int, update_rev: str) -> Result | None:
        pods = [p for o, p in by_ord.items() if not (p.get("metadata") or {}).get("deletionTimestamp")]
        old = sts.get("status") or {}
        updated = sum(1 for p in pods if self._revision(p) == update_rev)
        current_rev = old.get("currentRevision") or update_rev
        if updated == len(pods) == replicas:
            current_rev = update_rev
        current = sum(1 for p in pods if self._revision(p) == current_rev)
        ready = sum(1 for p in pods if is_ready(p))
        status = {"observedGeneration": int((sts.get("metadata") or {}).get("generation") or 0),
                  "replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                  "currentReplicas": current, "updatedReplicas": updated, "currentRevision": current_rev,
                  "updateRevision": update_rev, "collisionCount": int(old.get("collisionCount") or 0)}
        await write_status(self.client, STATEFULSET, sts, status)
        return None
