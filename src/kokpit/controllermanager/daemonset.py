"""DaemonSet controller: one pod on every eligible node, rolled to a new template node by node.

A node is eligible when the template's nodeSelector and required node affinity admit it and every
NoSchedule/NoExecute taint is tolerated — counting the tolerations the controller adds to every daemon pod
as upstream does (not-ready/unreachable NoExecute without a deadline; disk/memory/pid pressure and
unschedulable NoSchedule; network-unavailable for host-network pods), which is why a DaemonSet runs on
cordoned nodes.  Pods are placed through the scheduler, pinned by a required node affinity on
``metadata.name`` (upstream's ScheduleDaemonSetPods).  The template's revision is a ControllerRevision
(``controller-revision-hash`` label on the pods), so ``kubectl rollout status|undo daemonset`` work; a
rolling update deletes outdated pods while at most ``maxUnavailable`` daemon pods are unavailable.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from typing import Any

from kokpit._lib.podutil import (
    TERMINAL_PHASES,
    is_available,
    is_ready,
    node_affinity_matches,
    untolerated_taint,
)
from kokpit.client import NODE, AlreadyExistsError, ApiError, Client, Kind, NotFoundError
from kokpit.controllermanager._common import (
    BURST_REPLICAS,
    CONTROLLERREVISION,
    DAEMONSET,
    ensure_owner_index,
    owned,
    owner_reference,
    pod_from_template,
    template_hash,
    write_status,
)
from kokpit.controllermanager._pods import POD_UPDATE_BATCH_PERIOD, PodControl
from kokpit.runtime import Handlers, Informer, Manager, Request, Result

__all__ = ["DaemonSetController", "daemon_tolerations", "node_should_run", "sync_revisions"]

Obj = dict[str, Any]
REVISION_HASH = "controller-revision-hash"
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                           "effect": "NoSchedule"}


def daemon_tolerations(spec: Obj) -> list[Obj]:
    """The template's tolerations plus the ones every daemon pod gets (without duplicates)."""
    tols = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS) + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for t in extra:
        if not any(o.get("key") == t["key"] and o.get("effect") == t["effect"] and o.get("operator") == "Exists"
                   for o in tols):
            tols.append(dict(t))
    return tols


def node_should_run(template_spec: Obj, node: Obj, tolerations: list[Obj] | None = None) -> bool:
    """Whether a daemon pod of this template belongs on ``node``; pass ``daemon_tolerations(template_spec)``
    as ``tolerations`` when asking for every node of a cluster (it is the same for all of them)."""
    taints = (node.get("spec") or {}).get("taints")
    if taints and untolerated_taint(daemon_tolerations(template_spec) if tolerations is None else tolerations,
                                    taints) is not None:
        return False
    return node_affinity_matches(template_spec, node)


def _pinned(spec: Obj, node: str) -> Obj:
    """The pod spec with a required node affinity to ``node`` added to each term (or as the only term)."""
    spec = copy.deepcopy(spec)
    field = {"key": "metadata.name", "operator": "In", "values": [node]}
    na = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    req = na.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = req.get("nodeSelectorTerms") or [{}]
    for t in terms:
        t["matchFields"] = [f for f in t.get("matchFields") or [] if f.get("key") != "metadata.name"] + [field]
    na["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    spec["tolerations"] = daemon_tolerations(spec)
    return spec


async def sync_revisions(client: Client, revisions: Informer, owner: Obj, kind: Kind, template: Obj) -> tuple[str, int]:
    """Make sure a ControllerRevision holds ``template`` as the newest revision; (hash, revision number).

    The revision's ``data`` is the patch ``kubectl rollout undo`` applies to go back to it."""
    meta = owner.get("metadata") or {}
    h = template_hash(template)
    mine = owned(revisions, owner)
    newest = max((int(r.get("revision") or 0) for r in mine), default=0)
    name = f"{meta.get('name')}-{h}"
    cur = next((r for r in mine if (r.get("metadata") or {}).get("name") == name), None)
    if cur is not None:
        rev = int(cur.get("revision") or 0)
        if rev < newest:  # an old template came back (rollout undo): it becomes the newest revision
            rev = newest + 1
            cur = {**cur, "revision": rev}
            try:
                await client.update(CONTROLLERREVISION, cur)
            except (NotFoundError, ApiError):
                pass
        return h, rev
    data_template = copy.deepcopy(template)
    data_template["$patch"] = "replace"
    body = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {
        "name": name, "namespace": meta.get("namespace"),
        "labels": {**((template.get("metadata") or {}).get("labels") or {}), REVISION_HASH: h},
        "ownerReferences": [owner_reference(owner, kind)]},
        "data": {"spec": {"template": data_template}}, "revision": newest + 1}
    try:
        await client.create(CONTROLLERREVISION, body)
    except AlreadyExistsError:
        pass
    return h, newest + 1


def _fenceposts(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as node counts, percentages rounded up, both 0 → 1 unavailable (upstream's
    daemonset util.UnavailableCount/SurgeCount)."""
    ru = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}

    def scaled(v: Any) -> int:
        if isinstance(v, str) and v.endswith("%"):
            return -(-int(float(v[:-1] or 0) * desired) // 100)
        return int(v or 0)

    surge, unavailable = scaled(ru.get("maxSurge", 0)), scaled(ru.get("maxUnavailable", 1))
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _hash(pod: Obj) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH) or "")


def _surge(by_node: dict[str, list[Obj]], desired: set[str], h: str, now: float, min_ready: int, surge: int,
           already: list[Obj]) -> tuple[list[str], list[Obj]]:
    """A surge rolling update (``maxSurge`` > 0): nodes that get a new pod next to their old one, and old pods
    whose new pod is available (upstream's rollingUpdate with surge).  An old pod that is not available is
    replaced at once, outside the surge budget; otherwise at most ``surge`` nodes run both at a time."""
    taken = {id(p) for p in already}
    create: list[str] = []
    delete: list[Obj] = []
    candidates: list[str] = []
    surging = 0
    for n in sorted(desired):
        pods = [p for p in by_node.get(n, []) if id(p) not in taken
                and (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]
        old = [p for p in pods if _hash(p) != h]
        if not old:
            continue
        new = [p for p in pods if _hash(p) == h]
        if new:
            if any(is_available(p, min_ready, now) for p in new):
                delete += old
            else:
                surging += 1
        elif not any(is_available(p, min_ready, now) for p in old):
            create.append(n)
        else:
            candidates.append(n)
    return create + candidates[:max(0, surge - surging)], delete


class DaemonSetController:
    def __init__(self, manager: Manager, *, workers: int = 2,
                 batch_period: float = POD_UPDATE_BATCH_PERIOD) -> None:
        self.client = manager.client
        self.ds = manager.informers.informer(DAEMONSET)
        self.nodes = manager.informers.informer(NODE)
        self.revisions = manager.informers.informer(CONTROLLERREVISION)
        ensure_owner_index(self.revisions)
        self.controller = c = manager.controller("daemonset", self.reconcile, workers=workers)
        c.for_(self.ds)
        self.pods = PodControl(manager, c, DAEMONSET, "daemonset-controller", batch_period=batch_period)
        self.nodes.add_event_handler(Handlers(add=self._all, update=self._node_changed, delete=self._all))

    def _all(self, _node: Obj) -> None:
        for ds in self.ds.store.list():
            self.controller.queue.add(Request.for_object(ds))

    def _node_changed(self, old: Obj, new: Obj) -> None:
        if (old.get("spec") != new.get("spec")
                or (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels")):
            self._all(new)

    async def reconcile(self, req: Request) -> Result | None:
        return await self.pods.guard(req, self._reconcile)

    async def _reconcile(self, req: Request) -> Result | None:
        key = str(req)
        ds = self.ds.store.get(key)
        if ds is None:
            self.pods.forget(key)
            return None
        meta, spec = ds.get("metadata") or {}, ds.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return None
        template = spec.get("template") or {}
        h, _rev = await sync_revisions(self.client, self.revisions, ds, DAEMONSET, template)
        by_node: dict[str, list[Obj]] = defaultdict(list)
        for p in self.pods.owned(ds):
            if not (p.get("metadata") or {}).get("deletionTimestamp"):
                by_node[_target_node(p)].append(p)
        tspec = template.get("spec") or {}
        tols = daemon_tolerations(tspec)
        desired = {str(n["metadata"]["name"]) for n in self.nodes.store.list() if node_should_run(tspec, n, tols)}
        create: list[str] = []
        delete: list[Obj] = []
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        surge, max_unavailable = _fenceposts(ds, len(desired)) if rolling else (0, 0)
        for name in sorted(desired):
            pods = by_node.get(name)
            if not pods:
                create.append(name)
                continue
            alive = [p for p in pods if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]
            if len(alive) < len(pods):
                delete += [p for p in pods if (p.get("status") or {}).get("phase") in TERMINAL_PHASES]
            if not alive:
                create.append(name)
            elif len(alive) == 2 and surge and sorted(_hash(p) == h for p in alive) == [False, True]:
                pass  # a surge pair: the old pod goes once the new one is available
            elif len(alive) > 1:  # keep the oldest
                delete += sorted(alive, key=lambda p: str(p["metadata"].get("creationTimestamp")))[1:]
        for name, pods in by_node.items():
            if name not in desired:
                delete += pods
        now = time.time()
        min_ready = int(spec.get("minReadySeconds") or 0)
        if self.pods.satisfied(key):
            if rolling and not create and surge:
                more, victims = _surge(by_node, desired, h, now, min_ready, surge, delete)
                if victims:  # retire old pods whose new one is available first; the next pass surges on
                    delete += victims
                else:
                    create += more
            elif rolling and not create:
                delete += self._rolling_victims(by_node, desired, h, now, min_ready, max_unavailable, delete)
            pods = []
            for n in create[:BURST_REPLICAS]:
                pod = pod_from_template(template, ds, DAEMONSET, generate_name=f"{meta.get('name')}-",
                                        labels={REVISION_HASH: h})
                pod["spec"] = _pinned(pod["spec"], n)
                pods.append(pod)
            await self.pods.apply(key, ds, pods, delete[:BURST_REPLICAS])
        return await self._status(ds, by_node, desired, h, now, min_ready)

    def _rolling_victims(self, by_node: dict[str, list[Obj]], desired: set[str], h: str, now: float,
                         min_ready: int, max_unavailable: int, already: list[Obj]) -> list[Obj]:
        unavailable = sum(1 for n in desired if not any(is_available(p, min_ready, now) for p in by_node.get(n, [])))
        taken = {id(p) for p in already}
        old = [p for n in sorted(desired) for p in by_node.get(n, [])
               if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH) != h and id(p) not in taken]
        old_unavailable = [p for p in old if not is_available(p, min_ready, now)]
        old_available = [p for p in old if is_available(p, min_ready, now)]
        budget = max(0, max_unavailable - unavailable)
        return old_unavailable + old_available[:budget]

    async def _status(self, ds: Obj, by_node: dict[str, list[Obj]], desired: set[str], h: str, now: float,
                      min_ready: int) -> Result | None:
        scheduled = {n for n, pods in by_node.items() if any(_bound(p) for p in pods)}
        ready = available = updated = 0
        for n in desired:
            r = a = u = False
            for p in by_node.get(n) or ():  # one pass over each pod: this runs for every node of the cluster
                if is_ready(p):
                    r = True
                    a = a or is_available(p, min_ready, now)
                u = u or (_bound(p) and ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH) == h)
            ready += r
            available += a
            updated += u
        status = {
            "desiredNumberScheduled": len(desired), "currentNumberScheduled": len(scheduled & desired),
            "numberMisscheduled": len(scheduled - desired), "numberReady": ready, "numberAvailable": available,
            "numberUnavailable": len(desired) - available, "updatedNumberScheduled": updated,
            "observedGeneration": int((ds.get("metadata") or {}).get("generation") or 0),
        }
        await write_status(self.client, DAEMONSET, ds, status)
        return Result(requeue_after=max(1.0, float(min_ready))) if available < ready else None


def _target_node(pod: Obj) -> str:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for t in terms:
        for f in t.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return str(f["values"][0])
    return ""


def _bound(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))
