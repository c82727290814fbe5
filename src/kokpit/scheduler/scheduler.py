"""kokpit scheduler: binds every pending pod of the default scheduler to a node, like kube-scheduler.

One decision at a time against the incremental cache (so two decisions never book the same room), bindings
sent concurrently.  A pod that fits nowhere gets ``PodScheduled=False`` with reason ``Unschedulable`` and
kube-scheduler's message ("0/3 nodes are available: ..."), and a FailedScheduling Warning Event; it is
retried when the cluster changes (a node added or changed, a pod gone) and at least every 30 s — never in a
hot loop.  Everything it decides is in the API: a restarted scheduler relists and carries on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit._lib.podutil import TERMINAL_PHASES
from kokpit.client import NODE, POD, ApiError, ConflictError, NotFoundError, TransportError
from kokpit.runtime import EventRecorder, Handlers, Manager, Request, Result
from kokpit.runtime.informer import Informer, object_key
from kokpit.scheduler._cache import SchedulerCache
from kokpit.scheduler._framework import PodView, Sampler, failure_message, schedule

__all__ = ["SCHEDULER_NAME", "Scheduler", "SchedulerOptions"]

log = logging.getLogger("kokpit.scheduler")

Obj = dict[str, Any]
SCHEDULER_NAME = "default-scheduler"
UNSCHEDULABLE_RETRY = 30.0


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
        self.controller = manager.controller("scheduler", self.reconcile, workers=1, reconcile_timeout=None)
        self.controller.watches(self.pods, lambda o: [Request.for_object(o)], _pending)
        self.pods.add_event_handler(Handlers(add=self._pod_seen, update=lambda _o, n: self._pod_seen(n),
                                             delete=self._pod_gone))
        self.nodes.add_event_handler(Handlers(add=self._node_seen, update=self._node_changed,
                                              delete=self._node_gone))
        self.bound = 0

    # ------------------------------------------------------------------ cache upkeep (informer callbacks)
    def _pod_seen(self, pod: Obj) -> None:
        key = object_key(pod)
        if self.cache.observe_pod(key, pod):
            self._wake()
        if not _pending(pod):
            self.unschedulable.discard(key)
            self._in_flight.discard(key)

    def _pod_gone(self, pod: Obj) -> None:
        key = object_key(pod)
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
            await self._unschedulable(pod, failure_message(len(self.cache.nodes), decision.reasons))
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

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        conds = (pod.get("status") or {}).get("conditions") or []
        cur = next((c for c in conds if c.get("type") == "PodScheduled"), None)
        meta = pod.get("metadata") or {}
        if not (cur and cur.get("status") == "False" and cur.get("reason") == "Unschedulable"
                and cur.get("message") == message):
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": (cur or {}).get("lastTransitionTime") if (cur or {}).get("status") == "False"
                    else format_time(self._clock.now())}
            others = [c for c in conds if c.get("type") != "PodScheduled"]
            try:
                await self.client.patch_status(POD, str(meta.get("name")),
                                               {"status": {"conditions": [*others, cond]}}, meta.get("namespace"))
            except NotFoundError:
                return
        await self.events.warning(pod, "FailedScheduling", message)

    async def drain_bindings(self) -> None:
        """Wait for bindings in flight (tests and shutdown)."""
        if self._binding:
            await asyncio.gather(*list(self._binding), return_exceptions=True)
