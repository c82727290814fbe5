"""Workloads on simulated hosts: a kubelet's pod loop and a minimal scheduler (binder).

Pods are what make node state visible to users: a cordoned or NotReady node gets no new pods, pods on a
broken host fail, and terminating pods disappear only when their node confirms (grace 0), as with a real
kubelet.  One pod informer and one node informer serve every host — never a watch per node.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit.client import POD, ApiError, Client, ConflictError, NotFoundError
from kokpit.runtime import Controller, Handlers, Informer, Request, Result, is_true
from kokpit.simulator._hosts import HostBook
from kokpit.simulator._kubelet import node_ip, pod_cidr

__all__ = ["Binder", "PodRunner"]

log = logging.getLogger("kokpit.simulator.pods")

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
SCHEDULER_NAMES = ("", "default-scheduler")


def _key_request(key: str) -> Request:
    ns, _, name = key.rpartition("/")
    return Request(ns, name)


def _ready(obj: Obj) -> bool:
    """The Ready condition of a Node or a Pod."""
    return is_true((obj.get("status") or {}).get("conditions"), "Ready")


def _tolerates(pod: Obj, taint: Obj) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _pod_ip(node_index: int, pod: Obj) -> str:
    """A stable fake pod IP inside the node's podCIDR (data only)."""
    uid = str((pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name"))
    host = 2 + int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) % 252
    return pod_cidr(node_index).rsplit(".", 1)[0] + f".{host}"


class PodRunner:
    """The kubelet pod loop for every simulated host: run, fail, or finish deleting pods bound to them."""

    def __init__(self, client: Client, book: HostBook, pods: Informer, *, workers: int = 8,
                 clock: Clock | None = None) -> None:
        self.client = client
        self.book = book
        self.pods = pods
        self._clock: Clock = clock or RealClock()
        _ensure_index(pods, "node", _node_index)
        self.controller = Controller("simulator-pods", self.reconcile, workers=workers,
                                     needs_leader_election=False, reconcile_timeout=None)
        self.controller.watches(pods, lambda o: [Request.for_object(o)], self._ours)
        self.started = 0
        self.failed = 0
        self.deleted = 0

    def _ours(self, pod: Obj) -> bool:
        return str((pod.get("spec") or {}).get("nodeName") or "") in self.book.hosts

    def host_changed(self, name: str) -> None:
        """HostBook listener: re-evaluate every pod on the node (health may have changed)."""
        for key in self.pods.store.index_keys("node", name):
            self.controller.queue.add(_key_request(key))

    async def reconcile(self, req: Request) -> Result | None:
        pod = self.pods.store.get_by_name(req.name, req.namespace or None)
        if pod is None:
            return None
        meta = pod.get("metadata") or {}
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        host = self.book.hosts.get(node)
        if host is None or host.hung:
            return None  # not ours, or a silently hung host: nothing happens
        if meta.get("deletionTimestamp"):
            try:
                await self.client.delete(POD, req.name, req.namespace, grace_period_seconds=0,
                                         precondition_uid=meta.get("uid"))
                self.deleted += 1
            except (NotFoundError, ConflictError):
                pass
            return None
        status = pod.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase in TERMINAL:
            return None
        ready = _ready(pod)
        now = format_time(self._clock.now())
        if host.healthy:
            if phase == "Running" and ready:
                return None
            await self._patch(req, self._running(pod, host.index, now))
            self.started += 1
        elif phase != "Running":
            _, reason, message = host.readiness()
            await self._patch(req, {"status": {"phase": "Failed", "reason": "NodeUnhealthy",
                                               "message": f"node {node} is not healthy: {message} ({reason})",
                                               "hostIP": node_ip(host.index)}})
            self.failed += 1
        elif ready:
            await self._patch(req, self._not_ready(pod, now, host.readiness()[2]))
        return None

    async def _patch(self, req: Request, body: Obj) -> None:
        try:
            await self.client.patch_status(POD, req.name, body, req.namespace)
        except NotFoundError:
            pass

    @staticmethod
    def _conditions(status: str, now: str, old: Obj) -> list[Obj]:
        prev = {c.get("type"): c for c in (old.get("status") or {}).get("conditions") or []}

        def cond(t: str, s: str) -> Obj:
            p = prev.get(t) or {}
            since = p.get("lastTransitionTime") if p.get("status") == s and p.get("lastTransitionTime") else now
            return {"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": since}

        return [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"),
                cond("Ready", status), cond("ContainersReady", status), cond("PodScheduled", "True")]

    def _running(self, pod: Obj, index: int, now: str) -> Obj:
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        started = status.get("startTime") or now
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        containers = []
        for c in spec.get("containers") or []:
            cid = hashlib.sha256(f"{uid}/{c.get('name')}".encode()).hexdigest()
            containers.append({
                "name": c.get("name"), "image": c.get("image", ""),
                "imageID": f"{c.get('image', '')}@sha256:{cid[:64]}",
                "containerID": f"containerd://{cid}", "ready": True, "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": started}}, "lastState": {},
            })
        ip = _pod_ip(index, pod)
        host_ip = node_ip(index)
        return {"status": {
            "phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip,
            "podIPs": [{"ip": ip}], "startTime": started, "conditions": self._conditions("True", now, pod),
            "containerStatuses": containers,
        }}

    def _not_ready(self, pod: Obj, now: str, message: str) -> Obj:
        containers = [{**cs, "ready": False} for cs in (pod.get("status") or {}).get("containerStatuses") or []]
        return {"status": {"conditions": self._conditions("False", now, pod), "containerStatuses": containers,
                           "message": f"node is not ready: {message}"}}


def _ensure_index(inf: Informer, name: str, fn: Any) -> None:
    """The pod informer is shared by the runner and the binder: add each index once."""
    try:
        inf.add_indexer(name, fn)
    except ValueError:
        pass


def _node_index(pod: Obj) -> list[str]:
    n = (pod.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


def _unbound_index(pod: Obj) -> list[str]:
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    if spec.get("nodeName") or meta.get("deletionTimestamp"):
        return []
    if (pod.get("status") or {}).get("phase") in TERMINAL:
        return []
    if str(spec.get("schedulerName") or "") not in SCHEDULER_NAMES:
        return []
    return ["pending"]


class Binder:
    """A minimal scheduler: binds pending pods to schedulable, Ready, healthy simulated nodes, fewest pods
    first (round-robin among equals), honouring nodeSelector, taints and the pods capacity."""

    def __init__(self, client: Client, book: HostBook, pods: Informer, nodes: Informer, *, workers: int = 4) -> None:
        self.client = client
        self.book = book
        self.pods = pods
        self.nodes = nodes
        _ensure_index(pods, "node", _node_index)
        _ensure_index(pods, "unbound", _unbound_index)
        self.controller = Controller("simulator-binder", self.reconcile, workers=workers,
                                     needs_leader_election=False, reconcile_timeout=None)
        self.controller.watches(pods, lambda o: [Request.for_object(o)], lambda o: bool(_unbound_index(o)))
        pods.add_event_handler(Handlers(update=lambda _o, n: self._settle(n), delete=self._forget))
        nodes.add_event_handler(Handlers(add=self._node_event, update=lambda _o, n: self._node_event(n)))
        self._assumed: dict[str, str] = {}
        self._assumed_count: Counter[str] = Counter()
        self._rr = 0
        self.bound = 0

    def _settle(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self._forget(pod)

    def _forget(self, pod: Obj) -> None:
        key = f"{(pod.get('metadata') or {}).get('namespace')}/{(pod.get('metadata') or {}).get('name')}"
        node = self._assumed.pop(key, None)
        if node is not None:
            self._assumed_count[node] -= 1

    def _node_event(self, node: Obj) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        if name in self.book.hosts and self._eligible_node(name, node):
            self.wake()

    def wake(self) -> None:
        """Retry every pending pod (a node became eligible)."""
        for key in self.pods.store.index_keys("unbound", "pending"):
            self.controller.queue.add(_key_request(key))


    def _eligible_node(self, name: str, node: Obj) -> bool:
        """What a scheduler can know — the API's view, not the simulator's: a silently hung node still
        looks Ready and gets pods (which then never start), exactly the signal fault detection needs."""
        return name in self.book.hosts and not (node.get("spec") or {}).get("unschedulable") and _ready(node)

    def pick(self, pod: Obj) -> str | None:
        spec = pod.get("spec") or {}
        selector = spec.get("nodeSelector") or {}
        best: str | None = None
        best_load = 0
        names = list(self.book.hosts)
        n = len(names)
        for i in range(n):
            name = names[(self._rr + i) % n]
            node = self.nodes.store.get(name)
            if node is None or not self._eligible_node(name, node):
                continue
            labels = (node.get("metadata") or {}).get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            taints = (node.get("spec") or {}).get("taints") or []
            if any(t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, t) for t in taints):
                continue
            load = len(self.pods.store.index_keys("node", name)) + self._assumed_count[name]
            cap = int(((node.get("status") or {}).get("allocatable") or {}).get("pods") or 110)
            if load >= cap:
                continue
            if best is None or load < best_load:
                best, best_load = name, load
                if load == 0:
                    break
        if best is not None:
            self._rr = (names.index(best) + 1) % n
        return best

    async def reconcile(self, req: Request) -> Result | None:
        pod = self.pods.store.get_by_name(req.name, req.namespace or None)
        key = f"{req.namespace}/{req.name}"
        if pod is None or not _unbound_index(pod) or key in self._assumed:
            return None
        node = self.pick(pod)
        if node is None:
            return Result(requeue_after=5.0)  # node events wake us earlier
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": req.name, "namespace": req.namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.client.create_subresource(POD, req.name, "binding", body, req.namespace)
        except (NotFoundError, ConflictError):
            return None  # gone, or bound by someone else
        except ApiError as e:
            log.warning("binding %s to %s failed: %s", key, node, e)
            raise
        cur = self.pods.store.get(key)
        if cur is None or not (cur.get("spec") or {}).get("nodeName"):  # informer has not seen it yet
            self._assumed[key] = node
            self._assumed_count[node] += 1
        self.bound += 1
        return None
