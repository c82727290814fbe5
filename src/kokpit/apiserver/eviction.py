"""The Eviction subresource (POST pods/<name>/eviction) with kube-apiserver's PodDisruptionBudget checks.

``kubectl drain`` evicts rather than deletes so that a PodDisruptionBudget can refuse: the budget's
``status.disruptionsAllowed`` (kept by the disruption controller of the controller-manager) is checked and
decremented here, atomically with the PDB's resourceVersion, and the evicted pod is remembered in
``status.disruptedPods`` until the controller sees it go.  The rules are upstream's
(pkg/registry/core/pod/storage/eviction.go, read as behaviour):

- a pod that is Pending, Succeeded, Failed or already terminating is deleted without consulting a PDB;
- more than one PDB selecting the pod is a 500 (eviction does not support it);
- a PDB not yet processed by its controller (observedGeneration behind) or with no disruptions allowed
  answers 429 TooManyRequests (kubectl drain retries every 5 s);
- an unready pod under the default ``unhealthyPodEvictionPolicy: IfHealthyBudget`` may go without a
  decrement while the budget is healthy; ``AlwaysAllow`` lets unready pods always go.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.errors import APIError, Cause
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import DeleteOptions, Rest, WriteOptions
from kokpit.apiserver.selectors import label_selector_from_dict

__all__ = ["MAX_DISRUPTED_PODS", "evict"]

MAX_DISRUPTED_PODS = 2000  # upstream MaxDisruptedPodSize
_RETRIES = 20  # upstream EvictionsRetry: 20 steps on conflicts
_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
_PDB_WRITE = WriteOptions(field_manager="kokpit-apiserver-eviction", field_validation="Ignore", subresource="status")


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _too_many(message: str, cause: str) -> APIError:
    return APIError(429, "TooManyRequests", message, causes=[Cause("", cause, "DisruptionBudget")])


def _matching_pdbs(rest: Rest, pdb_rt: ResourceType, ns: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    _, entries = rest.list_entries(pdb_rt, ns)
    out = []
    for _key, e in entries:
        pdb = e.obj
        try:
            sel = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
        except APIError:
            continue  # a PDB with a broken selector selects nothing
        if sel.matches(labels):
            # the stored dict may carry the resourceVersion it was written over: serve the entry's own
            out.append({**pdb, "metadata": {**(pdb.get("metadata") or {}), "resourceVersion": str(e.rv)}})
    return out


async def evict(rest: Rest, pod_rt: ResourceType, pdb_rt: ResourceType | None, ns: str, name: str,
                delete_options: dict[str, Any], dry_run: bool = False) -> None:
    """Evict pod ``ns/name`` or raise the Status kube answers (404, 429, 500, 403)."""
    for _ in range(_RETRIES):
        pod = rest.get(pod_rt, ns, name).obj
        meta = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        budget = None
        if pdb_rt is not None and not meta.get("deletionTimestamp") and phase not in ("Pending", "Succeeded",
                                                                                         "Failed"):
            pdbs = _matching_pdbs(rest, pdb_rt, ns, pod)
            if len(pdbs) > 1:
                raise errors.internal("This pod has more than one PodDisruptionBudget, which the eviction "
                                      "subresource does not support.")
            budget = pdbs[0] if pdbs else None
        if budget is not None and not await _take_disruption(rest, pdb_rt, budget, pod, dry_run):
            await asyncio.sleep(0.05)
            continue  # the PDB changed under us: read everything again
        opts = DeleteOptions(grace_period=delete_options.get("gracePeriodSeconds"),
                             propagation=delete_options.get("propagationPolicy"),
                             precondition_uid=str(meta.get("uid") or "") or None, dry_run=dry_run)
        await rest.delete(pod_rt, ns, name, opts)
        return
    raise errors.conflict("poddisruptionbudgets", name, "policy",
                          "the PodDisruptionBudget kept changing; please retry the eviction")


async def _take_disruption(rest: Rest, pdb_rt: ResourceType | None, pdb: dict[str, Any], pod: dict[str, Any],
                           dry_run: bool) -> bool:
    """Check the budget and record one disruption; False when the PDB changed concurrently (retry)."""
    assert pdb_rt is not None
    meta = pdb.get("metadata") or {}
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    pdb_name = str(meta.get("name"))
    if not _pod_ready(pod):
        policy = spec.get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
        healthy, desired = int(status.get("currentHealthy") or 0), int(status.get("desiredHealthy") or 0)
        if policy == "AlwaysAllow" or (healthy >= desired and desired > 0):
            return True  # an unready pod does not count against a healthy budget
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        raise _too_many(_MESSAGE, f"The disruption budget {pdb_name} is still being processed by the server.")
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise errors.forbidden("pdb disruptions allowed is negative")
    disrupted = dict(status.get("disruptedPods") or {})
    if len(disrupted) > MAX_DISRUPTED_PODS:
        raise errors.forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if allowed == 0:
        raise _too_many(_MESSAGE, f"The disruption budget {pdb_name} needs {int(status.get('desiredHealthy') or 0)}"
                                  f" healthy pods and has {int(status.get('currentHealthy') or 0)} currently")
    pod_name = str((pod.get("metadata") or {}).get("name"))
    disrupted[pod_name] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new_status = {**status, "disruptionsAllowed": allowed - 1, "disruptedPods": disrupted}
    if allowed - 1 == 0:
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
        conds.append({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                      "message": "", "observedGeneration": int(status.get("observedGeneration") or 0),
                      "lastTransitionTime": rest.now()})
        new_status["conditions"] = conds
    if dry_run:
        return True
    body = {**pdb, "status": new_status}
    try:
        await rest.update(pdb_rt, str(meta.get("namespace")), pdb_name, body,
                          WriteOptions(**{**_PDB_WRITE.__dict__, "warnings": []}))
    except APIError as e:
        if e.code == 409:
            return False
        raise
    return True
