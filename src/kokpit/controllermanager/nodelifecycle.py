"""Node lifecycle: Ready=Unknown for silent nodes, condition taints, and taint-based eviction with
upstream's rate limits and unhealthy-zone safety.

- A node whose kubelet renewed neither its Lease nor its Ready heartbeat for ``node-monitor-grace-period``
  (50 s) gets its kubelet conditions set to ``Unknown`` (reason NodeStatusUnknown).
- NoSchedule taints follow conditions (TaintNodesByCondition): ``not-ready`` (Ready=False), ``unreachable``
  (Unknown), ``unschedulable`` (spec.unschedulable), memory/disk/pid pressure.
- NoExecute taints ``not-ready``/``unreachable`` are added at most ``--node-eviction-rate`` nodes per second
  per zone (0.1); in a zone where at least 55% of the nodes (and more than 2) are not ready the rate drops to
  ``--secondary-node-eviction-rate`` (0.01), or to zero when the cluster has at most 50 nodes; when every
  node of every zone is not ready nothing is evicted at all (the control plane is the likelier culprit).
  The rate limit is computed from the API, not a token bucket: the newest ``timeAdded`` of these taints in the
  zone, so a restarted controller-manager neither resets nor forgets it.
- Pods on a node with NoExecute taints are deleted when a taint is not tolerated, or when the smallest
  ``tolerationSeconds`` of the matching tolerations has passed since the taint's ``timeAdded`` (new pods
  get 300 s from the API server's DefaultTolerationSeconds).  Their controllers recreate them elsewhere.
- With a risk center (``NodeLifecycleOptions.risk``), evicting a node's pods is a ``node-drain`` operation
  like any other: before the first deletion the controller takes a Permit for the node, named after the
  node's NoExecute taints and when they were added (so a restarted controller-manager finds the same one);
  while the permit is Queued or Denied nothing is evicted and a Warning Event on the Node says why (naming
  the policies); when every pod the taints evict is gone, or the taints are lifted, the permit is released
  (Succeeded, or Aborted if it was never granted).  The upstream rate limits above still apply first: the
  risk center adds the fleet's budgets (e.g. maxUnavailable counting NotReady nodes) rather than replacing
  them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time, parse_time
from kokpit._lib.podutil import is_active, tolerates
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.client import LEASE, NODE, POD, NotFoundError
from kokpit.runtime import EventRecorder, Handlers, Manager, Request, Result
from kokpit.runtime.informer import Informer
from kokpit.runtime.permit_gate import PermitGate

__all__ = ["NodeLifecycleController", "NodeLifecycleOptions", "zone_state"]

Obj = dict[str, Any]
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
PRESSURE = {"MemoryPressure": "node.kubernetes.io/memory-pressure",
            "DiskPressure": "node.kubernetes.io/disk-pressure", "PIDPressure": "node.kubernetes.io/pid-pressure"}
CONDITION_TAINTS = {NOT_READY, UNREACHABLE, UNSCHEDULABLE, *PRESSURE.values()}
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
ZONE_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone")
NORMAL, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"


@dataclass
class NodeLifecycleOptions:
    grace_period: float = 50.0  # --node-monitor-grace-period
    monitor_period: float = 5.0  # --node-monitor-period
    eviction_rate: float = 0.1  # --node-eviction-rate (nodes/s per zone)
    secondary_eviction_rate: float = 0.01  # --secondary-node-eviction-rate
    large_cluster_size: int = 50  # --large-cluster-size-threshold
    unhealthy_zone_threshold: float = 0.55  # --unhealthy-zone-threshold
    risk: PermitGate | None = None  # ask the risk center (node-drain) before evicting (--risk-kubeconfig)


def zone_state(ready: int, not_ready: int, threshold: float) -> str:
    """ComputeZoneState: all not ready → FullDisruption; > 2 and ≥ threshold not ready → Partial."""
    if not_ready > 0 and ready == 0:
        return FULL
    if not_ready > 2 and not_ready / (ready + not_ready) >= threshold:
        return PARTIAL
    return NORMAL


def _zone(node: Obj) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return ":".join(str(labels.get(k) or "") for k in ZONE_LABELS)


def _ready(node: Obj) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status") or "Unknown")
    return "Unknown"


def _ts(s: Any) -> float | None:
    return _parse_ts(str(s)) if s else None


@functools.lru_cache(maxsize=16384)
def _parse_ts(s: str) -> float | None:
    """Heartbeat times are scanned every monitor period for every node and change only every renewal:
    parsed once each."""
    try:
        return parse_time(s).timestamp()
    except ValueError:
        return None


def _eviction_intent(taints: list[Obj]) -> str:
    """What a node-drain permit is for: the node's NoExecute taints and when each was added."""
    return ",".join(sorted(f"{t.get('key')}={t.get('value') or ''}@{t.get('timeAdded') or ''}" for t in taints))


def _node_index(pod: Obj) -> list[str]:
    n = (pod.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


class NodeLifecycleController:
    def __init__(self, manager: Manager, options: NodeLifecycleOptions | None = None,
                 clock: Clock | None = None) -> None:
        self.client = manager.client
        self.options = options or NodeLifecycleOptions()
        self._clock: Clock = clock or RealClock()
        self.nodes: Informer = manager.informers.informer(NODE)
        self.leases: Informer = manager.informers.informer(LEASE, "kube-node-lease")
        self.pods: Informer = manager.informers.informer(POD)
        try:
            self.pods.add_indexer("node", _node_index)
        except ValueError:
            pass
        self.events = EventRecorder(self.client, "node-controller")
        self.zone_states: dict[str, str] = {}
        self.last_taint: dict[str, float] = {}  # zone -> newest NoExecute timeAdded (from the API + our writes)
        self.cluster_size = 0
        self.controller = c = manager.controller("nodelifecycle", self.reconcile, workers=1)
        c.for_(self.nodes)
        self.pods.add_event_handler(Handlers(add=self._pod, update=lambda _o, n: self._pod(n)))
        manager.add_runnable(self.monitor, needs_leader_election=True)

    def _pod(self, pod: Obj) -> None:
        node = self.nodes.store.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if node is not None and any(t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or []):
            self.controller.queue.add(Request("", str(node["metadata"]["name"])))

    # ------------------------------------------------------------------ monitor (every node-monitor-period)
    def _heartbeat(self, node: Obj) -> float:
        name = str((node.get("metadata") or {}).get("name"))
        lease = self.leases.store.get(f"kube-node-lease/{name}")
        times = [_ts(((lease or {}).get("spec") or {}).get("renewTime")),
                 _ts((node.get("metadata") or {}).get("creationTimestamp"))]
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                times.append(_ts(c.get("lastHeartbeatTime")))
        return max((t for t in times if t is not None), default=0.0)

    def scan(self) -> None:
        """Recompute zone states and enqueue every node whose health or zone handling may need a change."""
        now = self._clock.now().timestamp()
        counts: dict[str, list[int]] = {}
        for node in self.nodes.store.list():
            zone = _zone(node)
            ready = _ready(node) == "True"
            counts.setdefault(zone, [0, 0])[0 if ready else 1] += 1
            for t in (node.get("spec") or {}).get("taints") or []:
                if t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE):
                    added = _ts(t.get("timeAdded"))
                    if added is not None and added > self.last_taint.get(zone, 0.0):
                        self.last_taint[zone] = added
            stale = now - self._heartbeat(node) > self.options.grace_period
            if (stale and _ready(node) != "Unknown") or not ready:
                self.controller.queue.add(Request("", str(node["metadata"]["name"])))
        self.cluster_size = sum(a + b for a, b in counts.values())
        old = self.zone_states
        self.zone_states = {z: zone_state(r, n, self.options.unhealthy_zone_threshold) for z, (r, n) in counts.items()}
        if old != self.zone_states:
            for node in self.nodes.store.list():  # zone handling changed: every node of the cluster re-decides
                self.controller.queue.add(Request("", str(node["metadata"]["name"])))

    async def monitor(self) -> None:
        await self.nodes.wait_synced()
        await self.leases.wait_synced()
        while True:
            self.scan()
            await self._clock.sleep(self.options.monitor_period)

    # ------------------------------------------------------------------ per node
    def _rate(self, zone: str) -> float:
        states = self.zone_states
        if states and all(s == FULL for s in states.values()):
            return 0.0  # master disruption mode: every node is down, do not evict anything
        state = states.get(zone, NORMAL)
        if state == PARTIAL:
            return 0.0 if self.cluster_size <= self.options.large_cluster_size else self.options.secondary_eviction_rate
        return self.options.eviction_rate

    async def reconcile(self, req: Request) -> Result | None:
        node = self.nodes.store.get(req.name)
        if node is None:
            return None
        now_dt = self._clock.now()
        now = now_dt.timestamp()
        name = req.name
        waits: list[float] = []
        # 1. a silent kubelet: its conditions become Unknown
        if now - self._heartbeat(node) > self.options.grace_period and _ready(node) != "Unknown":
            node = await self._mark_unknown(node, now_dt)
        ready = _ready(node)
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        conds = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
        # 2. NoSchedule taints from conditions
        want_ns = {NOT_READY} if ready == "False" else {UNREACHABLE} if ready != "True" else set()
        if spec.get("unschedulable"):
            want_ns.add(UNSCHEDULABLE)
        want_ns |= {key for cond, key in PRESSURE.items() if conds.get(cond) == "True"}
        new_taints = [t for t in taints if not (t.get("effect") == "NoSchedule" and t.get("key") in CONDITION_TAINTS
                                                and t.get("key") not in want_ns)]
        have_ns = {t.get("key") for t in new_taints if t.get("effect") == "NoSchedule"}
        new_taints += [{"key": k, "effect": "NoSchedule"} for k in sorted(want_ns - have_ns)]
        # 3. NoExecute taints, rate limited per zone
        want_ne = NOT_READY if ready == "False" else UNREACHABLE if ready != "True" else None
        ours = [t for t in new_taints if t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE)]
        zone = _zone(node)
        rate = self._rate(zone)
        if want_ne is None or (rate == 0.0 and self.zone_states and all(s == FULL for s in self.zone_states.values())):
            new_taints = [t for t in new_taints if t not in ours]
        elif ours and ours[0].get("key") != want_ne:  # not-ready <-> unreachable: swap at once
            new_taints = [t for t in new_taints if t not in ours] + [
                {"key": want_ne, "effect": "NoExecute", "timeAdded": format_time(now_dt)}]
        elif not ours:
            if rate <= 0:
                waits.append(self.options.monitor_period * 2)
            else:
                nxt = self.last_taint.get(zone, 0.0) + 1.0 / rate
                if now >= nxt:
                    new_taints.append({"key": want_ne, "effect": "NoExecute", "timeAdded": format_time(now_dt)})
                    self.last_taint[zone] = now
                else:
                    waits.append(nxt - now)
        if new_taints != taints:
            try:
                node = await self.client.patch(NODE, name, {"spec": {"taints": new_taints or None}})
            except NotFoundError:
                return None
        # 4. taint-based eviction of the node's pods
        waits += await self._evict(node, now)
        return Result(requeue_after=max(0.2, min(waits))) if waits else None

    async def _mark_unknown(self, node: Obj, now: dt.datetime) -> Obj:
        stamp = format_time(now)
        conds = []
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") in KUBELET_CONDITIONS and c.get("status") != "Unknown":
                c = {**c, "status": "Unknown", "reason": "NodeStatusUnknown",
                     "message": "Kubelet stopped posting node status.", "lastTransitionTime": stamp}
            conds.append(c)
        if not any(c.get("type") == "Ready" for c in conds):
            conds.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status.", "lastTransitionTime": stamp,
                          "lastHeartbeatTime": stamp})
        name = str(node["metadata"]["name"])
        try:
            out = await self.client.patch_status(NODE, name, {"status": {"conditions": conds}})
        except NotFoundError:
            return node
        await self.events.normal(node, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        return out

    async def _evict(self, node: Obj, now: float) -> list[float]:
        name = str(node["metadata"]["name"])
        taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
        intent = _eviction_intent(taints)
        if not taints:
            await self._settle(name, intent, "the node's NoExecute taints were lifted")
            return []
        waits: list[float] = []
        victims: list[Obj] = []
        for pod in self.pods.store.by_index("node", name):
            if not is_active(pod):
                continue
            tols = list((pod.get("spec") or {}).get("tolerations") or [])
            deadline: float | None = None
            evict_now = False
            for taint in taints:
                matching = [t for t in tols if tolerates([t], taint)]
                if not matching:
                    evict_now = True
                    break
                secs = [float(t["tolerationSeconds"]) for t in matching if t.get("tolerationSeconds") is not None]
                if len(secs) == len(matching):  # every matching toleration is bounded
                    added = _ts(taint.get("timeAdded")) or now
                    d = added + max(0.0, min(secs))
                    deadline = d if deadline is None else min(deadline, d)
            if evict_now or (deadline is not None and deadline <= now):
                victims.append(pod)
            elif deadline is not None:
                waits.append(deadline - now)
        gate = self.options.risk
        if gate is not None:
            if not victims:
                if not waits:
                    await self._settle(name, "", f"every pod the NoExecute taints evict is gone from node {name}")
                else:
                    await self._settle(name, intent, "the node's NoExecute taints changed")
                return waits
            await self._settle(name, intent, "the node's NoExecute taints changed")
            adm = await gate.admit(OperationType.NODE_DRAIN, [name], intent,
                                   reason=f"taint-based eviction of {len(victims)} pod(s) from node {name} ({intent})")
            if not adm.granted:
                await self.events.warning(node, adm.reason, f"Taint-based eviction of {len(victims)} pod(s) from node "
                                                            f"{name} waits for the risk center: {adm.message}")
                return [*waits, adm.retry_after or gate.poll]
        await asyncio.gather(*(self._delete(p) for p in victims))
        return waits

    async def _settle(self, node: str, keep: str, why: str) -> None:
        """Release this controller's open node-drain permits of ``node`` except the one for intent ``keep``:
        Succeeded when it had been granted (its evictions are done), Aborted when it never was."""
        gate = self.options.risk
        if gate is None:
            return
        for view in gate.open_for(node):
            if keep and PermitGate.intent(view) == keep:
                continue
            await gate.finish(view, PermitOutcome.SUCCEEDED if view.granted else PermitOutcome.ABORTED, why)

    async def _delete(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        try:
            await self.client.delete(POD, str(meta.get("name")), meta.get("namespace"), precondition_uid=meta.get("uid"))
        except NotFoundError:
            return
        await self.events.normal(pod, "TaintManagerEviction", f"Marking for deletion Pod {meta.get('namespace')}/"
                                                              f"{meta.get('name')}")
