"""The maintenance-flow controller (issue 15): repairs faulty nodes, escalates, hands them to people.

It runs inside the per-cluster machine operator process (``kokpit machine-operator``, ``--maintenance`` on by
default): that process already has the node driver, the business cluster's API and the risk-center client.
This module wires three controllers onto the shared :class:`~kokpit.runtime.Manager`:

- ``maintenance-opener`` (per node): a NodeFault opens a MaintenanceFlow (:mod:`._opener`);
- ``maintenance-flow`` (per flow): isolate → migrate → drain → repair → verify → restore (:mod:`._flow`);
- ``maintenance-storm`` (per policy): the fault-storm breaker (:mod:`._opener`).

It also installs MaintenancePolicy ``default`` when it is missing (never overwriting an edit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import CollectorRegistry

from kokpit._lib.clock import Clock
from kokpit._lib.podutil import slim_pod
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.maintenance import DEFAULT_POLICY, default_policy_spec
from kokpit.client import NODE, POD, AlreadyExistsError, ApiError, Client, Kind, TransportError
from kokpit.operators.maintenance._flow import FLOW, NODE_FAULT, POLICY, FlowOptions, FlowReconciler
from kokpit.operators.maintenance._metrics import FlowMetrics
from kokpit.operators.maintenance._opener import FlowOpener, StormWatch
from kokpit.operators.maintenance._policy import flow_is_open
from kokpit.runtime import EventRecorder, Handlers, Manager, Request, Result
from kokpit.runtime.informer import strip_managed_fields

__all__ = ["MaintenanceOperator"]

log = logging.getLogger("kokpit.operators.maintenance")

Obj = dict[str, Any]
MACHINE = Kind(GROUP, VERSION, "Machine", "machines", namespaced=False)


def _node_of(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    n = spec.get("nodeName")
    return [str(n)] if n else []


def _decisive(policy: Obj) -> tuple[Any, bool]:
    """What of a MaintenancePolicy can change a flow's or the opener's decision: its spec and whether its
    storm breaker is open (not the counts beside it)."""
    return policy.get("spec"), bool(((policy.get("status") or {}).get("storm") or {}).get("open"))


def _add_index(informer: Any, name: str, fn: Any) -> None:
    with contextlib.suppress(ValueError):  # another controller of the process added it
        informer.add_indexer(name, fn)


class MaintenanceOperator:
    """Wires the flow controllers onto ``manager``; ``driver`` repairs nodes (:class:`~kokpit.nodes.RepairDriver`)."""

    def __init__(self, manager: Manager, driver: Any, options: FlowOptions | None = None, *,
                 policy: str = DEFAULT_POLICY, install_default_policy: bool = True, clock: Clock | None = None,
                 registry: CollectorRegistry | None = None, client: Client | None = None) -> None:
        """``client`` (default: the manager's) writes, so the flows' changes carry their own field manager
        while the informers — Nodes, Machines, Pods, NodeFaults — are the process's shared ones (a second
        watch of 10,000 Nodes and Machines doubled the machine operator's memory and decode CPU)."""
        self.manager = manager
        self.client = c = client or manager.client
        self.options = options or FlowOptions()
        self.policy = policy
        self.install_default_policy = install_default_policy
        inf = manager.informers
        self.flow_informer = inf.informer(FLOW)
        self.policy_informer = inf.informer(POLICY)
        self.fault_informer = inf.informer(NODE_FAULT)
        self.node_informer = inf.informer(NODE)
        self.pod_informer = inf.informer(POD)
        if self.pod_informer.transform in (None, strip_managed_fields):
            self.pod_informer.transform = slim_pod  # a cluster's pods: keep only what a flow reads
        self.machine_informer = inf.informer(MACHINE)
        for informer in (self.flow_informer, self.fault_informer, self.pod_informer, self.machine_informer):
            _add_index(informer, "node", _node_of)
        self.metrics = FlowMetrics(registry if registry is not None else manager.registry)
        self.metrics.watch_flows(self.flow_informer.store.list)
        self.recorder = EventRecorder(c, "maintenance-flow", clock=clock)
        flows = self.flow_informer.store
        self.storm = StormWatch(c, self.recorder, flows=flows, nodes=self.node_informer.store,
                                policies=self.policy_informer.store, metrics=self.metrics,
                                faults=self.fault_informer.store, policy=policy, clock=clock)
        self.flow_informer.add_event_handler(Handlers(add=lambda o: self.storm.flow_event(None, o),
                                                      update=self.storm.flow_event,
                                                      delete=lambda o: self.storm.flow_event(o, None)))
        self.reconciler = FlowReconciler(
            c, self.recorder, driver, flows=flows, policies=self.policy_informer.store,
            faults=self.fault_informer.store, nodes=self.node_informer.store, pods=self.pod_informer.store,
            machines=self.machine_informer.store, metrics=self.metrics, options=self.options, clock=clock,
            storm_open=self.storm.is_open)
        self.opener = FlowOpener(c, flows=flows, faults=self.fault_informer.store,
                                 policies=self.policy_informer.store, metrics=self.metrics, policy=policy)
        # one flow per node: the opener is keyed by node
        op = manager.controller("maintenance-opener", self.opener.reconcile, workers=4, needs_leader_election=False)
        op.watches(self.fault_informer, lambda o: [Request("", n) for n in _node_of(o)])
        op.watches(self.flow_informer, lambda o: [Request("", n) for n in _node_of(o)])
        self.opener_controller = op
        fc = manager.controller("maintenance-flow", self._reconcile, workers=self.options.workers,
                                needs_leader_election=False)
        fc.for_(self.flow_informer)
        fc.watches(self.node_informer, self._open_flows_of_node)
        fc.watches(self.fault_informer, self._open_flows_of_node)
        fc.watches(self.machine_informer, self._open_flows_of_node)
        fc.watches(self.pod_informer, self._open_flows_of_node)
        self.flow_controller = fc
        # a policy change wakes every node with a fault and every open flow — but only a change that can
        # change a decision: the storm controller rewrites the breaker's counts every few seconds in a
        # storm, and waking thousands of flows for each of those writes made a storm quadratic
        self.policy_informer.add_event_handler(Handlers(
            add=self._policy_changed, update=lambda old, new: self._policy_changed(new)
            if _decisive(old) != _decisive(new) else None, delete=self._policy_changed))
        sc = manager.controller("maintenance-storm", self._storm, workers=1, needs_leader_election=False)
        sc.for_(self.policy_informer)
        sc.watches(self.flow_informer, lambda o: [Request("", str((o.get("spec") or {}).get("policy") or policy))])
        # a fault turning (in)active moves the count of faulty nodes; its heartbeats do not
        self.fault_informer.add_event_handler(Handlers(
            add=lambda o: self._fault_moved(None, o), update=self._fault_moved,
            delete=lambda o: self._fault_moved(o, None)))
        self.storm_controller = sc
        if install_default_policy:
            manager.add_runnable(self._install_policy)

    def _fault_moved(self, old: Obj | None, new: Obj | None) -> None:
        if self.storm.fault_event(old, new):
            # at most every half second: in a storm thousands of faults arrive within seconds, and each pass
            # counts them all (the flows read the breaker from the caches, not from this status)
            self.storm_controller.queue.add_after(Request("", self.policy), 0.5)

    def _policy_changed(self, _policy: Obj) -> None:
        for f in self.fault_informer.store.list():
            for n in _node_of(f):
                self.opener_controller.queue.add(Request("", n))
        for f in self.flow_informer.store.list():
            if flow_is_open(f):
                self.flow_controller.queue.add(Request.for_object(f))

    def _open_flows_of_node(self, obj: Obj) -> list[Request]:
        return [Request.for_object(f) for n in _node_of(obj) or [str(obj["metadata"].get("name"))]
                for f in self.flow_informer.store.by_index("node", n) if flow_is_open(f)]

    async def _reconcile(self, req: Request) -> Result | None:
        return await self.reconciler.reconcile(req)

    async def _storm(self, req: Request) -> Result | None:
        return await self.storm.reconcile(req)

    async def _install_policy(self) -> None:
        """MaintenancePolicy ``default`` when it is missing (an existing one is never overwritten)."""
        body = {"apiVersion": POLICY.api_version, "kind": POLICY.kind, "metadata": {"name": self.policy},
                "spec": default_policy_spec().to_wire()}
        while True:
            try:
                await self.client.create(POLICY, body)
                log.info("installed MaintenancePolicy %s", self.policy)
                return
            except AlreadyExistsError:
                return
            except (ApiError, TransportError) as e:
                log.warning("installing MaintenancePolicy %s: %s; retrying", self.policy, e)
                await asyncio.sleep(2.0)
