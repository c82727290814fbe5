"""Opening flows and watching for storms: the two small controllers beside the flow reconcile.

- **Opener** (keyed by node): a node with an Active, accepted NodeFault whose flow is not ``none`` and no open
  MaintenanceFlow gets one, named deterministically from the fault's episode (``<node>-<hash>``), so a
  restarted opener finds the flow it made instead of making a second; faults that appear later on the same
  node join the open flow (``spec.faults``), and every fault names its flow (``status.maintenanceFlow``).
- **Storm** (keyed by policy): counts faulty nodes (from the NodeFaults and the flows) against the cluster's
  nodes and writes the breaker (``status.storm`` of the MaintenancePolicy), with a Warning Event when it trips
  and a Normal one when it closes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_time
from kokpit.api.maintenance import DEFAULT_POLICY
from kokpit.client import AlreadyExistsError, NotFoundError
from kokpit.operators.maintenance._flowbase import FLOW, NODE_FAULT, POLICY
from kokpit.operators.maintenance._metrics import FlowMetrics
from kokpit.operators.maintenance._policy import (
    Storm,
    active_faults,
    flow_is_open,
    policy_spec,
    reported_faults,
    starting_flow,
    storm,
)
from kokpit.runtime import EventRecorder, Request, Result, Store

__all__ = ["FlowOpener", "StormWatch", "flow_name"]

log = logging.getLogger("kokpit.operators.maintenance")

Obj = dict[str, Any]


def flow_name(node: str, fault: Obj) -> str:
    """``<node>-<10 hex>`` from the fault's name and the start of its episode (a new episode of the same
    fault after the node was given back opens a new flow)."""
    first = str((fault.get("status") or {}).get("firstSeen") or fault["metadata"].get("uid") or "")
    digest = hashlib.sha256(f"{fault['metadata']['name']}\0{first}".encode()).hexdigest()[:10]
    return f"{node[:240]}-{digest}"


class FlowOpener:
    def __init__(self, client: Any, *, flows: Store, faults: Store, policies: Store, metrics: FlowMetrics,
                 policy: str = DEFAULT_POLICY) -> None:
        self.client = client
        self.flows, self.faults, self.policies = flows, faults, policies
        self.metrics = metrics
        self.policy = policy

    async def reconcile(self, req: Request) -> Result | None:
        node = req.name
        faults = active_faults(self.faults.by_index("node", node))
        open_flows = [f for f in self.flows.by_index("node", node) if flow_is_open(f)]
        if not faults:
            return None
        if open_flows:
            flow = open_flows[0]
            have = set((flow.get("spec") or {}).get("faults") or [])
            new = sorted(f["metadata"]["name"] for f in faults if f["metadata"]["name"] not in have)
            if new:
                await self.client.patch(FLOW, flow["metadata"]["name"],
                                        {"spec": {"faults": sorted(have | set(new))}})
            await self._link(faults, flow["metadata"]["name"])
            return None
        spec, why = policy_spec(self.policies.get_by_name(self.policy))
        if spec is None:
            log.warning("node %s has faults but MaintenancePolicy %s is %s: no flow opened", node, self.policy, why)
            return Result(requeue_after=30.0)
        start, fault = starting_flow(spec, faults)
        name = flow_name(node, fault)
        done = self.flows.get_by_name(name)
        if done is not None:  # this episode was handled already (completed): nothing new to open
            return None
        body = {"apiVersion": FLOW.api_version, "kind": FLOW.kind,
                "metadata": {"name": name, "labels": {"kokpit.io/node": node[:63]}},
                "spec": {"nodeName": node, "faultType": fault["spec"]["type"],
                         "faults": sorted(f["metadata"]["name"] for f in faults), "policy": self.policy,
                         "flow": start, "component": str(fault["spec"].get("component") or "")}}
        try:
            await self.client.create(FLOW, body)
            self.metrics.created.inc()
            log.info("opened maintenance flow %s (%s) for node %s", name, start, node)
        except AlreadyExistsError:
            pass
        await self._link(faults, name)
        return None

    async def _link(self, faults: list[Obj], flow: str) -> None:
        for f in faults:
            if (f.get("status") or {}).get("maintenanceFlow") == flow:
                continue
            try:
                await self.client.patch(NODE_FAULT, f["metadata"]["name"], {"status": {"maintenanceFlow": flow}},
                                        subresource="status")
            except NotFoundError:
                continue


class StormWatch:
    """Keeps ``status.storm`` of each MaintenancePolicy (the breaker the flows read)."""

    def __init__(self, client: Any, recorder: EventRecorder, *, flows: Store, nodes: Store, policies: Store,
                 metrics: FlowMetrics, faults: Store | None = None, policy: str = DEFAULT_POLICY,
                 clock: Clock | None = None) -> None:
        """``faults`` (the NodeFaults) count toward ``policy``, the one the opener opens their flows under."""
        self.client = client
        self.recorder = recorder
        self.flows, self.nodes, self.policies, self.faults = flows, nodes, policies, faults
        self.policy = policy
        self.metrics = metrics
        self.clock: Clock = clock or RealClock()
        self._flows_moved = 0  # bumped by every flow event that can change a count (see flow_event)
        self._faults_moved = 0  # bumped by every fault event that can (see fault_event)
        self._verdicts: dict[str, tuple[tuple[Any, ...], float, bool, int]] = {}

    def flow_event(self, old: Obj | None, new: Obj | None) -> None:
        """An informer handler on the flows: count the changes that can move the breaker (a flow created,
        deleted, opened or closed — not the status writes of a flow at work)."""
        if old is None or new is None or flow_is_open(old) != flow_is_open(new) or \
                (old.get("spec") or {}).get("policy") != (new.get("spec") or {}).get("policy"):
            self._flows_moved += 1

    def fault_event(self, old: Obj | None, new: Obj | None) -> bool:
        """An informer handler on the NodeFaults: count a fault appearing, going or turning (in)active — not
        its heartbeat refreshes.  Returns whether it moved (the storm controller is woken only then)."""
        if old is None or new is None or bool(reported_faults([old])) != bool(reported_faults([new])):
            self._faults_moved += 1
            return True
        return False

    def _count(self, policy: str, spec: Any, was_open: bool) -> Storm:
        flows = [f for f in self.flows.list() if (f.get("spec") or {}).get("policy") == policy]
        faults = [f for f in self.faults.list() if self.nodes.get_by_name(str(f["spec"].get("nodeName") or ""))] \
            if self.faults is not None and policy == self.policy else []  # a report for no node is no node
        return storm(spec, flows, len(self.nodes), was_open, self.clock.now(), faults)

    def is_open(self, policy: str) -> bool:
        """The breaker as of now, from the caches (the flows ask right before isolating a node, so a storm
        trips before its status is even written).  Every flow asks before isolating, so in a storm of N
        nodes a fresh count each time is O(N²): the verdict is kept until a flow opens/closes/appears, the
        policy or the node count changes, or a second passes (only arrivals ageing out of the window move
        it then, which can only close the breaker later — the safe side).  Faults arrive by thousands in a
        storm: one that moved the count is taken into account within a quarter of a second, not at once."""
        p = self.policies.get_by_name(policy)
        spec, _ = policy_spec(p)
        if p is None or spec is None:
            return False
        key = (p["metadata"].get("resourceVersion"), self._flows_moved, len(self.nodes))
        now_m = self.clock.monotonic()
        hit = self._verdicts.get(policy)
        if hit is not None and hit[0] == key and now_m - hit[1] < 1.0 and (
                hit[3] == self._faults_moved or now_m - hit[1] < 0.25):
            return hit[2]
        was = bool(((p.get("status") or {}).get("storm") or {}).get("open"))
        verdict = self._count(policy, spec, was).open
        self._verdicts[policy] = (key, now_m, verdict, self._faults_moved)
        return verdict

    async def reconcile(self, req: Request) -> Result | None:
        policy = self.policies.get_by_name(req.name)
        if policy is None:
            return None
        spec, _ = policy_spec(policy)
        if spec is None:
            return None
        now = self.clock.now()
        prev = ((policy.get("status") or {}).get("storm") or {})
        s = self._count(req.name, spec, bool(prev.get("open")))
        status: Obj = {"open": s.open, "faultyNodes": s.faulty, "nodes": s.nodes, "limit": s.limit,
                       "message": s.message}
        if s.open and not prev.get("open"):
            status["trippedAt"] = format_time(now)
            self.metrics.storm_trips.labels(req.name).inc()
            await self.recorder.event(policy, "Warning", "StormBreakerTripped", s.message)
        elif not s.open and prev.get("open"):
            status["closedAt"] = format_time(now)
            await self.recorder.event(policy, "Normal", "StormBreakerClosed", s.message)
        self.metrics.storm_open.labels(req.name).set(1 if s.open else 0)
        self.metrics.faulty.labels(req.name).set(s.faulty)
        if any(prev.get(k) != v for k, v in status.items()):
            try:
                await self.client.patch(POLICY, req.name, {"status": {"storm": status}}, subresource="status")
            except NotFoundError:
                return None
        return Result(requeue_after=5.0)

