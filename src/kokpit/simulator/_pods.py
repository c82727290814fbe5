"""Workloads on simulated hosts: a kubelet's pod loop (the scheduler is ``kokpit scheduler``).

Pods are what make node state visible to users: a cordoned or NotReady node gets no new pods, pods on a
broken host fail, and terminating pods disappear only when their node confirms (grace 0), as with a real
kubelet.  One pod informer and one node informer serve every host — never a watch per node.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time, parse_time
from kokpit.client import POD, Client, ConflictError, NotFoundError
from kokpit.runtime import Controller, Informer, Request, Result, is_true
from kokpit.simulator._heartbeats import node_ip, pod_cidr
from kokpit.simulator._hosts import HostBook

__all__ = ["PodRunner"]

log = logging.getLogger("kokpit.simulator.pods")

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
RUN_SECONDS_ANNOTATION = "simulator.kokpit.io/run-seconds"
EXIT_CODE_ANNOTATION = "simulator.kokpit.io/exit-code"
DEFAULT_RUN_SECONDS = 2.0


def _key_request(key: str) -> Request:
    ns, _, name = key.rpartition("/")
    return Request(ns, name)


def _ready(obj: Obj) -> bool:
    """The Ready condition of a Node or a Pod."""
    return is_true((obj.get("status") or {}).get("conditions"), "Ready")


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
                return await self._maybe_finish(req, pod)
            if host.pods_fail and phase == "Pending":  # an injected start failure: the kubelet's waiting reason
                if not _waiting(pod, "CreateContainerError"):
                    await self._patch(req, self._start_failed(pod, host.index))
                    self.failed += 1
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

    async def _maybe_finish(self, req: Request, pod: Obj) -> Result | None:
        """A pod whose restartPolicy is not Always (a Job's) exits after ``simulator.kokpit.io/run-seconds``
        (default 2) with ``simulator.kokpit.io/exit-code`` (default 0): Succeeded, or Failed when non-zero."""
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        if spec.get("restartPolicy", "Always") == "Always":
            return None
        ann = meta.get("annotations") or {}
        try:
            run = float(ann.get(RUN_SECONDS_ANNOTATION, DEFAULT_RUN_SECONDS))
            code = int(ann.get(EXIT_CODE_ANNOTATION, 0))
        except ValueError:
            run, code = DEFAULT_RUN_SECONDS, 1
        started = (pod.get("status") or {}).get("startTime")
        elapsed = (self._clock.now() - parse_time(str(started))).total_seconds() if started else 0.0
        if elapsed < run:
            return Result(requeue_after=run - elapsed)
        now = format_time(self._clock.now())
        containers = [{**cs, "ready": False, "started": False, "state": {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
            "finishedAt": now}}} for cs in (pod.get("status") or {}).get("containerStatuses") or []]
        await self._patch(req, {"status": {"phase": "Succeeded" if code == 0 else "Failed",
                                           "conditions": self._conditions("False", now, pod),
                                           "containerStatuses": containers}})
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

    @staticmethod
    def _start_failed(pod: Obj, index: int) -> Obj:
        waiting = {"waiting": {"reason": "CreateContainerError",
                               "message": "failed to create containerd task: injected pod-start-failure"}}
        containers = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": False,
                       "started": False, "restartCount": 0, "state": waiting, "lastState": {}}
                      for c in (pod.get("spec") or {}).get("containers") or []]
        return {"status": {"phase": "Pending", "hostIP": node_ip(index), "containerStatuses": containers}}

    def _not_ready(self, pod: Obj, now: str, message: str) -> Obj:
        containers = [{**cs, "ready": False} for cs in (pod.get("status") or {}).get("containerStatuses") or []]
        return {"status": {"conditions": self._conditions("False", now, pod), "containerStatuses": containers,
                           "message": f"node is not ready: {message}"}}


def _waiting(pod: Obj, reason: str) -> bool:
    return any(((c.get("state") or {}).get("waiting") or {}).get("reason") == reason
               for c in (pod.get("status") or {}).get("containerStatuses") or [])


def _ensure_index(inf: Informer, name: str, fn: Any) -> None:
    """The pod informer is shared by the runner and the binder: add each index once."""
    try:
        inf.add_indexer(name, fn)
    except ValueError:
        pass


def _node_index(pod: Obj) -> list[str]:
    n = (pod.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []
