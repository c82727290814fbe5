"""What every workload controller shares: kinds, owner references, pod templates, template hashes,
expectations, the slow-start batch creator and status writes that happen only when something changed.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kokpit._lib.podutil import controller_ref
from kokpit.client import POD, AlreadyExistsError, ApiError, Client, Kind, NotFoundError, TransportError
from kokpit.runtime import Informer

__all__ = [
    "CONTROLLERREVISION",
    "DAEMONSET",
    "DEPLOYMENT",
    "JOB",
    "PDB",
    "REPLICASET",
    "STATEFULSET",
    "Expectations",
    "create_pods",
    "ensure_owner_index",
    "owned",
    "owner_reference",
    "pod_from_template",
    "template_hash",
    "write_status",
]

log = logging.getLogger("kokpit.controllermanager")

Obj = dict[str, Any]
DEPLOYMENT = Kind("apps", "v1", "Deployment", "deployments")
REPLICASET = Kind("apps", "v1", "ReplicaSet", "replicasets")
DAEMONSET = Kind("apps", "v1", "DaemonSet", "daemonsets")
STATEFULSET = Kind("apps", "v1", "StatefulSet", "statefulsets")
CONTROLLERREVISION = Kind("apps", "v1", "ControllerRevision", "controllerrevisions")
JOB = Kind("batch", "v1", "Job", "jobs")
PDB = Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")

BURST_REPLICAS = 500  # upstream's burstReplicas: at most this many creates/deletes per sync
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's alphabet (no vowels, no look-alikes)


def _owner_uid_index(obj: Obj) -> list[str]:
    ref = controller_ref(obj)
    return [str(ref["uid"])] if ref and ref.get("uid") else []


def ensure_owner_index(inf: Informer) -> None:
    """Index ``owner``: the uid of the object's controller (shared informers: add it once)."""
    try:
        inf.add_indexer("owner", _owner_uid_index)
    except ValueError:
        pass


def owned(inf: Informer, owner: Obj) -> list[Obj]:
    return inf.store.by_index("owner", str((owner.get("metadata") or {}).get("uid")))


def owner_reference(owner: Obj, kind: Kind) -> Obj:
    meta = owner.get("metadata") or {}
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": meta.get("name"), "uid": meta.get("uid"),
            "controller": True, "blockOwnerDeletion": True}


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """A short, stable hash of a pod template (upstream: fnv32a of the template, safe-encoded)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")) + (f"/{collision_count}" if collision_count
                                                                        else "")
    n = int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_SAFE))
        out.append(_SAFE[r])
    return "".join(out)


def pod_from_template(template: Obj, owner: Obj, kind: Kind, *, name: str | None = None,
                      generate_name: str | None = None, labels: dict[str, str] | None = None) -> Obj:
    t = copy.deepcopy(template)
    tmeta = t.get("metadata") or {}
    meta: Obj = {"namespace": (owner.get("metadata") or {}).get("namespace"),
                 "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
                 "ownerReferences": [owner_reference(owner, kind)]}
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t.get("spec") or {}}


@dataclass
class _Expect:
    adds: int
    deletes: set[str]
    at: float


class Expectations:
    """Creates and deletes sent but not yet seen in the informer (upstream ControllerExpectations).

    Without them a reconcile that runs before the informer catches up would create the same pods again.
    They are a cache of writes in flight, not state: after a restart the fresh list is the truth, and an
    expectation older than five minutes is dropped (a lost watch event must not block a controller).
    """

    TTL = 300.0

    def __init__(self) -> None:
        self._e: dict[str, _Expect] = {}

    def satisfied(self, key: str) -> bool:
        e = self._e.get(key)
        if e is None:
            return True
        if (e.adds <= 0 and not e.deletes) or time.monotonic() - e.at > self.TTL:
            del self._e[key]
            return True
        return False

    def expect(self, key: str, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        self._e[key] = _Expect(adds, set(deletes), time.monotonic())

    def created(self, key: str) -> None:
        e = self._e.get(key)
        if e is not None:
            e.adds -= 1

    def deleted(self, key: str, pod_key: str) -> None:
        e = self._e.get(key)
        if e is not None:
            e.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._e.pop(key, None)


async def create_pods(client: Client, pods: list[Obj], on_fail: Callable[[], None]) -> list[str]:
    """Create ``pods`` in slow-start batches (1, 2, 4, ...) so a systematic failure (quota, admission) costs
    one request, not hundreds; returns the errors. ``on_fail`` is called once per pod not created."""
    errors: list[str] = []
    i, batch = 0, 1
    while i < len(pods):
        chunk = pods[i:i + batch]
        results = await asyncio.gather(*(client.create(POD, p) for p in chunk), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for r in failed:
            if not isinstance(r, AlreadyExistsError):
                errors.append(str(r))
            on_fail()
        i += len(chunk)
        if failed:
            for _ in pods[i:]:
                on_fail()
            break
        batch *= 2
    return errors


async def delete_pods(client: Client, pods: list[Obj]) -> None:
    async def one(p: Obj) -> None:
        meta = p.get("metadata") or {}
        try:
            await client.delete(POD, str(meta.get("name")), meta.get("namespace"), precondition_uid=meta.get("uid"))
        except NotFoundError:
            pass

    await asyncio.gather(*(one(p) for p in pods))


async def write_status(client: Client, kind: Kind, obj: Obj, status: Obj) -> None:
    """Merge-patch ``status`` when it differs from what the object has (no write, no event otherwise)."""
    cur = obj.get("status") or {}
    if all(cur.get(k) == v for k, v in status.items()):
        return
    meta = obj.get("metadata") or {}
    try:
        await client.patch_status(kind, str(meta.get("name")), {"status": status}, meta.get("namespace"))
    except NotFoundError:
        pass


async def best_effort(aw: Awaitable[Any], what: str) -> None:
    try:
        await aw
    except (ApiError, TransportError) as e:
        log.warning("%s: %s", what, e)
