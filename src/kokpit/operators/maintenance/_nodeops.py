"""What a flow does to the Node and its pods: isolate, mark for migration, drain, give back.

Every function is idempotent (safe to repeat after a crash at any line) and reads the informer caches the
caller hands in; writes are merge patches of the fields the flow owns.

**The migration contract** (for a PaaS or a service's own MigrateController; also in docs/architecture.md):
watch pods with the label ``kokpit.io/to-be-migrated=true``; the annotations say why
(``kokpit.io/migration-reason``), until when (``kokpit.io/migration-deadline``, RFC 3339) and which
MaintenanceFlow asks (``kokpit.io/maintenance-flow``).  Migrate the pod — create its replacement elsewhere
(the node is cordoned and tainted, so the scheduler will not put it back) — and then delete the old pod:
**a pod that is gone (or terminating, or finished) is migrated**.  What is still on the node at the deadline
is evicted through the Eviction API (PodDisruptionBudgets honoured: a 429 is retried) or, for a bare pod
that no controller would recreate, deleted; both are recorded on the flow.  DaemonSet and mirror pods stay
(they belong to the node, as with ``kubectl drain --ignore-daemonsets``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import format_time
from kokpit.api.maintenance import (
    MIGRATE_LABEL,
    MIGRATION_DEADLINE_ANNOTATION,
    MIGRATION_FLOW_ANNOTATION,
    MIGRATION_REASON_ANNOTATION,
    TAINT_KEY,
)
from kokpit.client import NODE, POD, ApiError, CanPatch, ConflictError, NotFoundError

__all__ = [
    "CORDON_ANNOTATION",
    "OWNER",
    "DrainResult",
    "drain",
    "give_back",
    "is_isolated",
    "isolate",
    "mark_pods",
    "movable_pods",
]

Obj = dict[str, Any]
CORDON_ANNOTATION = "kokpit.io/cordoned-by"  # the machine operator's; the flow takes the cordon over
OWNER = "maintenance-flow"


def _controller(pod: Obj) -> Obj | None:
    return next((r for r in (pod["metadata"].get("ownerReferences") or []) if r.get("controller")), None)


def movable_pods(pods: Iterable[Obj]) -> list[Obj]:
    """Pods the flow must move off the node: not DaemonSet or mirror pods, not finished or terminating."""
    out = []
    for p in pods:
        meta = p.get("metadata") or {}
        if meta.get("deletionTimestamp") or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            continue
        ctl = _controller(p)
        if ctl is not None and ctl.get("kind") == "DaemonSet":
            continue
        out.append(p)
    return out


def has_taint(node: Obj) -> bool:
    return any(t.get("key") == TAINT_KEY for t in (node.get("spec") or {}).get("taints") or [])


def is_isolated(node: Obj | None, flow: str) -> bool:
    if node is None:
        return False
    ann = (node["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION)
    return bool((node.get("spec") or {}).get("unschedulable")) and has_taint(node) and ann == f"{OWNER}/{flow}"


async def _patch_node(client: CanPatch, node: Obj, build: Any) -> Obj | None:
    """A merge patch conditional on the cached resourceVersion; a stale cache re-reads and decides again."""
    for attempt in range(3):
        body = build(node)
        if body is None:
            return node
        body.setdefault("metadata", {})["resourceVersion"] = node["metadata"].get("resourceVersion")
        try:
            out: Obj = await client.patch(NODE, node["metadata"]["name"], body)
            return out
        except ConflictError:
            if attempt == 2:
                raise
            node = await client.get(NODE, node["metadata"]["name"])  # type: ignore[attr-defined]
        except NotFoundError:
            return None
    return None


async def isolate(client: CanPatch, node: Obj, flow: str, now: dt.datetime) -> Obj | None:
    """Cordon the node and taint it ``kokpit.io/maintenance:NoSchedule``; the cordon is the flow's from now
    on (a cordon the machine operator made for a NotReady node is taken over: one owner of cordons)."""

    def build(n: Obj) -> Obj | None:
        if is_isolated(n, flow):
            return None
        taints = [t for t in (n.get("spec") or {}).get("taints") or [] if t.get("key") != TAINT_KEY]
        taints.append({"key": TAINT_KEY, "value": flow, "effect": "NoSchedule", "timeAdded": format_time(now)})
        return {"spec": {"unschedulable": True, "taints": taints},
                "metadata": {"annotations": {CORDON_ANNOTATION: f"{OWNER}/{flow}"}}}

    return await _patch_node(client, node, build)


async def give_back(client: CanPatch, node: Obj, flow: str) -> Obj | None:
    """Uncordon and untaint — only what this flow did (a cordon by a person or another flow stays)."""

    def build(n: Obj) -> Obj | None:
        ours = (n["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION) == f"{OWNER}/{flow}"
        taints = (n.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if not (t.get("key") == TAINT_KEY and t.get("value") == flow)]
        if not ours and len(keep) == len(taints):
            return None
        body: Obj = {"spec": {"taints": keep or None}}
        if ours:
            body["spec"]["unschedulable"] = None
            body["metadata"] = {"annotations": {CORDON_ANNOTATION: None}}
        return body

    return await _patch_node(client, node, build)


async def mark_pods(client: CanPatch, pods: list[Obj], flow: str, reason: str, deadline: str) -> list[Obj]:
    """Label every movable pod ``kokpit.io/to-be-migrated=true`` with reason, deadline and flow; returns the
    pods labelled now (the others were already)."""
    done = []
    for p in movable_pods(pods):
        meta = p["metadata"]
        ann = meta.get("annotations") or {}
        if (meta.get("labels") or {}).get(MIGRATE_LABEL) == "true" and ann.get(MIGRATION_FLOW_ANNOTATION) == flow:
            continue
        body = {"metadata": {"labels": {MIGRATE_LABEL: "true"},
                             "annotations": {MIGRATION_REASON_ANNOTATION: reason[:1024],
                                             MIGRATION_DEADLINE_ANNOTATION: deadline,
                                             MIGRATION_FLOW_ANNOTATION: flow}}}
        try:
            await client.patch(POD, meta["name"], body, meta.get("namespace"))
            done.append(p)
        except NotFoundError:
            continue  # gone already: migrated
    return done


@dataclass
class DrainResult:
    evicted: list[Obj] = field(default_factory=list)
    deleted: list[Obj] = field(default_factory=list)
    blocked: list[tuple[Obj, str]] = field(default_factory=list)  # (pod, why) a PDB refused


async def drain(client: Any, pods: list[Obj], flow: str) -> DrainResult:
    """Evict what is left (Eviction API: a PDB that forbids it answers 429, retried on the next pass);
    delete bare pods, which no controller would recreate and the PaaS did not migrate."""
    out = DrainResult()
    for p in movable_pods(pods):
        meta = p["metadata"]
        name, ns = meta["name"], meta.get("namespace")
        try:
            if _controller(p) is None:
                await client.delete(POD, name, ns, precondition_uid=meta.get("uid"))
                out.deleted.append(p)
            else:
                await client.create_subresource(POD, name, "eviction", {
                    "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns},
                    "deleteOptions": {"preconditions": {"uid": meta.get("uid")}} if meta.get("uid") else {}}, ns)
                out.evicted.append(p)
        except NotFoundError:
            continue
        except ApiError as e:
            if getattr(e, "code", 0) == 429:
                out.blocked.append((p, str(e)))
            elif getattr(e, "code", 0) == 409:  # the uid precondition: a new pod of that name, not ours
                continue
            else:
                raise
    return out
