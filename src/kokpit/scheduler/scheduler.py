"""kokpit scheduler: binds every pending pod of the default scheduler to a node, like kube-scheduler.

One decision at a time against the incremental cache (so two decisions never book the same room), bindings
sent concurrently.  A pod that fits nowhere gets ``PodScheduled=False`` with reason ``Unschedulable`` and
kube-scheduler's message ("0/3 nodes are available: ..."), and a FailedScheduling Warning Event; it is
retried when the cluster changes (a node added or changed, a pod gone) and at least every 30 s — never in a
hot loop.  Pending pods are taken highest ``spec.priority`` first; one that fits nowhere may preempt pods
of lower priority (:mod:`._preemption`): it is nominated to the node (``status.nominatedNodeName``, room
other pods of no higher priority may not take) and the victims get ``DisruptionTarget``
(PreemptionByScheduler), a ``Preempted`` Event and are deleted, as kube-scheduler does.  Everything it
decides is in the API: a restarted scheduler relists and carries on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit._lib.podutil import TERMINAL_PHASES
from kokpit.client import NODE, POD, ApiError, ConflictError, Kind, NotFoundError, TransportError
from kokpit.runtime import Controller, EventRecorder, Handlers, Manager, Request, Result
from kokpit.runtime.informer import Informer, object_key
from kokpit.runtime.workqueue import WorkQueue
from kokpit.scheduler._cache import PodInfo, SchedulerCache
from kokpit.scheduler._framework import PodView, Sampler, failure_message, schedule
from kokpit.scheduler._preemption import (
    Candidate,
    budgets_of,
    find_candidate,
    postfilter_message,
    without_candidates,
)

__all__ = ["SCHEDULER_NAME", "Scheduler", "SchedulerOptions"]

log = logging.getLogger("kokpit.scheduler")

Obj = dict[str, Any]
SCHEDULER_NAME = "default-scheduler"
UNSCHEDULABLE_RETRY = 30.0
PDB = Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")


class _ByPriority:
    """The active queue's order: highest priority first, then first come (kube-scheduler's activeQ sort).
    Stands in for the work queue's deque (append, popleft, len, clear)."""

    def __init__(self, priority_of: Callable[[Request], int]) -> None:
        self._priority_of = priority_of
        self._heap: list[tuple[int, int, Request]] = []
        self._seq = itertools.count()

    def append(self, item: Request) -> None:
        heapq.heappush(self._heap, (-self._priority_of(item), next(self._seq), item))

    def popleft(self) -> Request:
        return heapq.heappop(self._heap)[2]

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


class _SchedulingController(Controller):
    """A Controller whose queue hands out the highest-priority pending pod first."""

    def __init__(self, name: str, reconcile: Any, priority_of: Callable[[Request], int], **kwargs: Any) -> None:
        self._priority_of = priority_of
        super().__init__(name, reconcile, **kwargs)

    def _new_queue(self) -> WorkQueue[Request]:
        q: WorkQueue[Request] = super()._new_queue()
        q._queue = _ByPriority(self._priority_of)  # type: ignore[assignment]
        return q


class SchedulerOptions:
    def __init__(self, *, bind_concurrency: int = 64, scheduled_events: bool = True) -> None:
        self.bind_concurrency = bind_concurrency
        self.scheduled_events = scheduled_events


def _pending(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and str(spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter("scheduler_schedule_attempts_total", "Scheduling attempts by result.",
                                ["result"], registry=registry)
        self.latency = Histogram("scheduler_scheduling_attempt_duration_seconds", "Time to decide one pod.",
                                 registry=registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                             0.1, 0.25, 1.0))
        self.pending = Gauge("scheduler_pending_pods", "Pods waiting for a node by queue.", ["queue"],
                             registry=registry)
        self.binds = Counter("scheduler_binds_total", "Bindings by result.", ["result"], registry=registry)
        self.preemptions = Counter("scheduler_preemption_attempts_total", "Preemption attempts by result.",
                                   ["result"], registry=registry)
        self.victims = Counter("scheduler_preemption_victims_total", "Pods deleted to make room.",
                               registry=registry)


class Scheduler:
    """Wires the scheduler onto a Manager: pod and node informers, one decision worker, binder tasks."""

    def __init__(self, manager: Manager, options: SchedulerOptions | None = None,
                 clock: Clock | None = None) -> None:
        self.manager = manager
        self._clock: Clock = clock or RealClock()
        self.client = manager.client
        self.options = options or SchedulerOptions()
        self.pods: Informer = manager.informers.informer(POD)
        self.nodes: Informer = manager.informers.informer(NODE)
        self.cache = SchedulerCache()
        self.sampler = Sampler()
        self.events = EventRecorder(self.client, SCHEDULER_NAME)
        self.metrics = _Metrics(manager.registry)
        self.unschedulable: set[str] = set()
        self._bind_slots = asyncio.Semaphore(self.options.bind_concurrency)
        self._binding: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # pod keys bound or being bound, not yet seen bound by the informer
        self._wake_pending = False
        self.pdbs: Informer = manager.informers.informer(PDB)
        self.controller = _SchedulingController("scheduler", self.reconcile, self._priority_of, workers=1,
                                                reconcile_timeout=None, metrics=manager.metrics, clock=self._clock)
        manager.add_controller(self.controller)
        self.controller.watches(self.pods, lambda o: [Request.for_object(o)], _pending)
        self.pods.add_event_handler(Handlers(add=self._pod_seen, update=lambda _o, n: self._pod_seen(n),
                                             delete=self._pod_gone))
        self.nodes.add_event_handler(Handlers(add=self._node_seen, update=self._node_changed,
                                              delete=self._node_gone))
        self.bound = 0

    # ------------------------------------------------------------------ cache upkeep (informer callbacks)
    def _priority_of(self, req: Request) -> int:
        pod = self.pods.store.get(f"{req.namespace}/{req.name}")
        return int(((pod or {}).get("spec") or {}).get("priority") or 0)

    def _pod_seen(self, pod: Obj) -> None:
        key = object_key(pod)
        if self.cache.observe_pod(key, pod):
            self._wake()
        if not _pending(pod):
            self.unschedulable.discard(key)
            self._in_flight.discard(key)
            if key in self.cache.nominations:
                self.cache.nominate(key, None, "")
        else:
            nominated = str((pod.get("status") or {}).get("nominatedNodeName") or "")
            if nominated or key in self.cache.nominations:
                self.cache.nominate(key, pod, nominated)

    def _pod_gone(self, pod: Obj) -> None:
        key = object_key(pod)
        self.cache.nominate(key, None, "")
        self.unschedulable.discard(key)
        self._in_flight.discard(key)
        if self.cache.observe_pod(key, None):
            self._wake()

    def _node_seen(self, node: Obj) -> None:
        self.cache.upsert_node(node)
        self._wake()

    def _node_changed(self, old: Obj, new: Obj) -> None:
        self.cache.upsert_node(new)
        # only what can make a pod fit (not the 10 s status heartbeats) wakes the unschedulable pods
        if (old.get("spec") != new.get("spec") or (old.get("metadata") or {}).get("labels")
                != (new.get("metadata") or {}).get("labels")
                or (old.get("status") or {}).get("allocatable") != (new.get("status") or {}).get("allocatable")):
            self._wake()

    def _node_gone(self, node: Obj) -> None:
        self.cache.remove_node(str((node.get("metadata") or {}).get("name")))

    def _wake(self) -> None:
        """Move every unschedulable pod back to the active queue, at most once per second."""
        if self._wake_pending or not self.unschedulable:
            return
        self._wake_pending = True

        def go() -> None:
            self._wake_pending = False
            for key in list(self.unschedulable):
                ns, _, name = key.rpartition("/")
                self.controller.queue.add(Request(ns, name))

        try:
            asyncio.get_running_loop().call_later(1.0, go)
        except RuntimeError:
            self._wake_pending = False

    # ------------------------------------------------------------------ scheduling
    async def reconcile(self, req: Request) -> Result | None:
        key = f"{req.namespace}/{req.name}"
        pod = self.pods.store.get(key)
        if pod is None or not _pending(pod):
            self.unschedulable.discard(key)
            return None
        if key in self.cache.assumed:
            if key in self._in_flight:
                return None  # its binding is on the way (or done): the informer will show it
            self.cache.unplace(key)  # an assumption whose binding never went out (e.g. leadership lost)
        t0 = asyncio.get_running_loop().time()
        view = PodView.of(key, pod)
        decision = schedule(view, self.cache, self.sampler)
        self.metrics.latency.observe(asyncio.get_running_loop().time() - t0)
        if decision.node is None:
            self.metrics.attempts.labels("unschedulable").inc()
            self.unschedulable.add(key)
            self.metrics.pending.labels("unschedulable").set(len(self.unschedulable))
            total = len(self.cache.nodes)
            message = failure_message(total, decision.reasons)
            candidate: Candidate | None = None
            if not view.preempts:
                message += " " + postfilter_message(total, None)
            else:
                pre = (find_candidate(view, self.cache, budgets_of(self.pdbs.store.list()), self.sampler.next_start)
                       if self.cache.has_lower_priority(view.priority) else without_candidates(decision.reasons))
                if pre.candidate is None:
                    self.metrics.preemptions.labels("no-candidate").inc()
                    message += " " + postfilter_message(total, pre)
                else:
                    self.metrics.preemptions.labels("preempted").inc()
                    candidate = pre.candidate
            await self._unschedulable(pod, message, candidate.node if candidate else "")
            if candidate is not None:
                self.cache.nominate(key, pod, candidate.node)
                await self._evict_victims(pod, candidate)
            return Result(requeue_after=UNSCHEDULABLE_RETRY)
        self.metrics.attempts.labels("scheduled").inc()
        self.unschedulable.discard(key)
        await self._bind_slots.acquire()  # before assuming: a cancellation here leaves nothing half-done
        self.cache.place(key, pod, decision.node, assumed=True)
        self._in_flight.add(key)
        task = asyncio.get_running_loop().create_task(self._bind(req, pod, decision.node))
        self._binding.add(task)
        task.add_done_callback(self._binding.discard)
        return None

    async def _bind(self, req: Request, pod: Obj, node: str) -> None:
        """Bind, then record the Scheduled Event, both inside the bind slot: a burst of binds is not
        followed by an unbounded burst of Event writes queueing ahead of everything else this client sends."""
        try:
            if await self._bind_once(req, pod, node) and self.options.scheduled_events:
                await self.events.normal(pod, "Scheduled", f"Successfully assigned {req.namespace}/{req.name} to {node}")
        finally:
            self._bind_slots.release()

    async def _bind_once(self, req: Request, pod: Obj, node: str) -> bool:
        key = f"{req.namespace}/{req.name}"
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": req.name, "namespace": req.namespace,
                                                                     "uid": (pod.get("metadata") or {}).get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.client.create_subresource(POD, req.name, "binding", body, req.namespace)
        except (NotFoundError, ConflictError) as e:
            self.metrics.binds.labels("conflict").inc()
            log.debug("binding %s to %s: %s", key, node, e)
            self._in_flight.discard(key)
            self.cache.unplace(key)
            return False
        except (ApiError, TransportError) as e:
            self.metrics.binds.labels("error").inc()
            log.warning("binding %s to %s failed: %s; retrying", key, node, e)
            self._in_flight.discard(key)
            self.cache.unplace(key)
            self.controller.queue.add_rate_limited(req)
            return False
        except BaseException:
            self._in_flight.discard(key)
            raise
        self.bound += 1
        self.metrics.binds.labels("bound").inc()
        return True

    async def _evict_victims(self, pod: Obj, candidate: Candidate) -> None:
        """Delete the victims as kube-scheduler's preemption does: each gets the DisruptionTarget condition
        (reason PreemptionByScheduler) and a Preempted Event naming the preemptor, then is deleted with its
        own grace period (a uid precondition: a pod recreated under the same name is not touched)."""
        uid = (pod.get("metadata") or {}).get("uid")

        async def one(victim: PodInfo) -> None:
            obj = self.pods.store.get(victim.key)
            meta = (obj or {}).get("metadata") or {}
            if obj is None or meta.get("uid") != victim.uid:
                return  # gone, or another pod under that name now
            name, ns = str(meta.get("name")), meta.get("namespace")
            conds = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"]
            cond = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                    "message": f"{SCHEDULER_NAME}: preempting to accommodate a higher priority pod",
                    "lastTransitionTime": format_time(self._clock.now())}
            try:
                await self.client.patch_status(POD, name, {"status": {"conditions": [*conds, cond]}}, ns)
                await self.client.delete(POD, name, ns, precondition_uid=victim.uid)
            except (NotFoundError, ConflictError):
                return
            except (ApiError, TransportError) as e:
                log.warning("preempting %s/%s: %s", ns, name, e)
                return
            self.metrics.victims.inc()
            await self.events.normal(obj, "Preempted", f"Preempted by pod {uid} on node {candidate.node}")

        await asyncio.gather(*(one(v) for v in candidate.victims))

    async def _unschedulable(self, pod: Obj, message: str, nominated: str = "") -> None:
        conds = (pod.get("status") or {}).get("conditions") or []
        cur = next((c for c in conds if c.get("type") == "PodScheduled"), None)
        meta = pod.get("metadata") or {}
        had = str((pod.get("status") or {}).get("nominatedNodeName") or "")
        if not (cur and cur.get("status") == "False" and cur.get("reason") == "Unschedulable"
                and cur.get("message") == message) or (nominated and nominated != had):
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": (cur or {}).get("lastTransitionTime") if (cur or {}).get("status") == "False"
                    else format_time(self._clock.now())}
            others = [c for c in conds if c.get("type") != "PodScheduled"]
            try:
                status: Obj = {"conditions": [*others, cond]}
                if nominated:
                    status["nominatedNodeName"] = nominated
                await self.client.patch_status(POD, str(meta.get("name")), {"status": status}, meta.get("namespace"))
            except NotFoundError:
                return
        await self.events.warning(pod, "FailedScheduling", message)

    async def drain_bindings(self) -> None:
        """Wait for bindings in flight (tests and shutdown)."""
        if self._binding:
            await asyncio.gather(*list(self._binding), return_exceptions=True)
