"""A StatefulSet's PersistentVolumeClaims: one per ``volumeClaimTemplates`` entry and ordinal, named
``<template>-<statefulset>-<ordinal>``, created before the ordinal's pod and mounted into it, so a pod that
comes back under the same name finds the same data.

``persistentVolumeClaimRetentionPolicy`` decides when they go, through owner references the API server's
garbage collector follows (upstream's mechanism, read as behaviour):

- ``whenDeleted: Delete``: every claim is owned by the StatefulSet, so deleting it deletes them;
- ``whenScaled: Delete``: a claim of an ordinal at or above ``replicas`` is owned by its pod (set before the
  pod is deleted), so scaling down deletes it; a condemned claim whose pod is already gone is deleted;
- ``Retain`` (both defaults): the controller owns nothing and the claims outlive pods and the StatefulSet.
Claims are kept exactly as the policy says on every pass, so a policy changed later is applied too.
"""

from __future__ import annotations

import copy
from typing import Any

from kokpit.client import AlreadyExistsError, Client, Kind, NotFoundError
from kokpit.controllermanager._common import STATEFULSET, owner_reference
from kokpit.runtime import EventRecorder, Informer

__all__ = ["PVC", "claim_name", "ensure_claims", "keep_retention", "mount_claims"]

Obj = dict[str, Any]
PVC = Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")


def claim_name(template: Obj, sts_name: str, ordinal: int) -> str:
    return f"{(template.get('metadata') or {}).get('name')}-{sts_name}-{ordinal}"


def _templates(sts: Obj) -> list[Obj]:
    return [t for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
            if (t.get("metadata") or {}).get("name")]


def mount_claims(sts: Obj, pod: Obj, ordinal: int) -> None:
    """Point the pod's volume of each template's name at the ordinal's claim (replacing a same-named one)."""
    name = str((sts.get("metadata") or {}).get("name"))
    templates = _templates(sts)
    if not templates:
        return
    names = {str(t["metadata"]["name"]) for t in templates}
    volumes = [v for v in pod["spec"].get("volumes") or [] if v.get("name") not in names]
    for t in templates:
        volumes.append({"name": t["metadata"]["name"],
                        "persistentVolumeClaim": {"claimName": claim_name(t, name, ordinal)}})
    pod["spec"]["volumes"] = volumes


def _claim(sts: Obj, template: Obj, ordinal: int) -> Obj:
    meta = sts.get("metadata") or {}
    tmeta = template.get("metadata") or {}
    selector_labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    body: Obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": claim_name(template, str(meta.get("name")), ordinal), "namespace": meta.get("namespace"),
        "labels": {**(tmeta.get("labels") or {}), **selector_labels}},
        "spec": copy.deepcopy(template.get("spec") or {})}
    if tmeta.get("annotations"):
        body["metadata"]["annotations"] = dict(tmeta["annotations"])
    return body


async def ensure_claims(client: Client, claims: Informer, events: EventRecorder, sts: Obj, ordinal: int,
                        pod_name: str) -> str | None:
    """Create the ordinal's missing claims; a reason to wait (a claim still being deleted) or None."""
    meta = sts.get("metadata") or {}
    ns, name = str(meta.get("namespace")), str(meta.get("name"))
    for t in _templates(sts):
        cname = claim_name(t, name, ordinal)
        cur = claims.store.get(f"{ns}/{cname}")
        if cur is not None:
            if (cur.get("metadata") or {}).get("deletionTimestamp"):
                return f"PersistentVolumeClaim {cname} is being deleted"
            continue
        body = _claim(sts, t, ordinal)
        if _policy(sts, "whenDeleted") == "Delete":
            body["metadata"]["ownerReferences"] = [owner_reference(sts, STATEFULSET)]
        try:
            await client.create(PVC, body, ns)
        except AlreadyExistsError:
            continue
        await events.normal(sts, "SuccessfulCreate", f"create Claim {cname} Pod {pod_name} in StatefulSet {name} "
                                                     "success")
    return None


def _policy(sts: Obj, when: str) -> str:
    return str((((sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}).get(when)) or "Retain")


async def keep_retention(client: Client, claims: Informer, sts: Obj, by_ord: dict[int, Obj], replicas: int) -> None:
    """Hold every claim of this StatefulSet at the owner references its retention policy asks for."""
    templates = _templates(sts)
    if not templates:
        return
    meta = sts.get("metadata") or {}
    ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
    delete_with_set = _policy(sts, "whenDeleted") == "Delete"
    delete_scaled = _policy(sts, "whenScaled") == "Delete"
    for claim in claims.store.list():
        cmeta = claim.get("metadata") or {}
        if cmeta.get("namespace") != ns or cmeta.get("deletionTimestamp"):
            continue
        ordinal = _claim_ordinal(str(cmeta.get("name")), templates, name)
        if ordinal is None:
            continue
        pod = by_ord.get(ordinal)
        condemned = ordinal >= replicas and delete_scaled
        if condemned and pod is None:
            try:
                await client.delete(PVC, str(cmeta.get("name")), ns, precondition_uid=cmeta.get("uid"))
            except NotFoundError:
                pass
            continue
        pod_uid = str((pod or {}).get("metadata", {}).get("uid") or "")
        ours = {uid, pod_uid} - {""}
        refs = [r for r in cmeta.get("ownerReferences") or [] if r.get("uid") not in ours]
        if delete_with_set:
            refs.append(owner_reference(sts, STATEFULSET))
        if condemned and pod is not None:
            refs.append({"apiVersion": "v1", "kind": "Pod", "name": (pod.get("metadata") or {}).get("name"),
                         "uid": pod_uid, "controller": False, "blockOwnerDeletion": True})
        if refs != list(cmeta.get("ownerReferences") or []):
            try:
                await client.patch(PVC, str(cmeta.get("name")), {"metadata": {"ownerReferences": refs or None}}, ns)
            except NotFoundError:
                pass


def _claim_ordinal(claim: str, templates: list[Obj], sts_name: str) -> int | None:
    for t in templates:
        prefix = f"{t['metadata']['name']}-{sts_name}-"
        rest = claim[len(prefix):] if claim.startswith(prefix) else ""
        if rest.isdigit() and str(int(rest)) == rest:
            return int(rest)
    return None
