"""The machine operator: holds every worker node at the final state its Machine declares.

This module wires it: shared informers (Machine, MachinePackageVersion, Node, Condition ConfigMaps) with their
indexes, the controller, the node-state poller and :class:`MachineReconciler` (``_reconciler.py``, the
reconcile itself, written on :class:`kokpit.runtime.StepReconciler`) onto a :class:`Manager`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kokpit._lib.clock import Clock
from kokpit.api.risk import PermitState
from kokpit.client import CONFIGMAP, NODE, ApiError, TransportError
from kokpit.nodes import DriverError, NodeDriver
from kokpit.operators.machine._poller import NodeStatePoller
from kokpit.operators.machine._protection import installed_from, machine_mpvs, mpv_users
from kokpit.operators.machine._reconciler import (
    CORDON_ANNOTATION,
    MACHINE,
    MPV,
    MachineReconciler,
    OperatorOptions,
)
from kokpit.operators.machine._reports import NODE_LABEL
from kokpit.runtime import (
    Controller,
    EventRecorder,
    Handlers,
    Manager,
    Request,
    Result,
    field_indexer,
    find_condition,
)
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.protection import InUseProtector

__all__ = [
    "CORDON_ANNOTATION",
    "INDEXERS_CM",
    "INDEXERS_MACHINE",
    "INDEXERS_MPV",
    "MACHINE",
    "MPV",
    "MachineOperator",
    "MachineReconciler",
    "OperatorOptions",
    "slim_node",
]

log = logging.getLogger("kokpit.operators.machine")

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------ indexes
def _machine_node(obj: Obj) -> list[str]:
    n = (obj.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


def _cm_node(obj: Obj) -> list[str]:
    n = ((obj.get("metadata") or {}).get("labels") or {}).get(NODE_LABEL)
    return [str(n)] if n else []


INDEXERS_MACHINE = {"node": _machine_node, "mpv": field_indexer("spec.packages"), "mpv-installed": installed_from}
INDEXERS_MPV = {"component": field_indexer("spec.component")}
INDEXERS_CM = {"node": _cm_node}


def slim_node(node: Obj) -> Obj:
    """A cache transform keeping what the operator reads of a Node: metadata (no managedFields), spec,
    conditions, nodeInfo and addresses (where a node agent listens); images and capacity are dropped."""
    meta = dict(node.get("metadata") or {})
    meta.pop("managedFields", None)
    status = node.get("status") or {}
    out: Obj = {"apiVersion": node.get("apiVersion", "v1"), "kind": node.get("kind", "Node"), "metadata": meta,
                "spec": node.get("spec") or {},
                "status": {k: status[k] for k in ("conditions", "nodeInfo", "addresses") if k in status}}
    return out


def _node_significant(node: Obj) -> tuple[Any, ...]:
    meta = node.get("metadata") or {}
    ready = find_condition((node.get("status") or {}).get("conditions"), "Ready") or {}
    return (ready.get("status"), bool((node.get("spec") or {}).get("unschedulable")),
            (meta.get("annotations") or {}).get(CORDON_ANNOTATION), meta.get("deletionTimestamp"))


class MachineOperator:
    """Wires informers, controllers and the poller onto a :class:`Manager`; ``await op.run()``."""

    def __init__(self, manager: Manager, driver: NodeDriver, options: OperatorOptions | None = None,
                 *, clock: Clock | None = None) -> None:
        self.manager = manager
        self.driver = driver
        self.options = options or OperatorOptions()
        inf = manager.informers
        self.machine_informer = inf.informer(MACHINE)
        self.mpv_informer = inf.informer(MPV)
        self.node_informer = inf.informer(NODE)
        if self.node_informer.transform in (None, strip_managed_fields):
            self.node_informer.transform = slim_node  # 10,000 full Nodes would dominate the memory
        self.cm_informer = inf.informer(CONFIGMAP, label_selector=NODE_LABEL)
        bind = getattr(driver, "bind", None)  # driver selection per Machine (kokpit.nodes.agent.RoutedDriver)
        if bind is not None:
            bind(lambda n: next(iter(self.machine_informer.store.by_index("node", n)), None),
                 lambda n: self.node_informer.store.get_by_name(n))
        for informer, indexers in ((self.machine_informer, INDEXERS_MACHINE), (self.mpv_informer, INDEXERS_MPV),
                                   (self.cm_informer, INDEXERS_CM)):
            for name, fn in indexers.items():
                with contextlib.suppress(ValueError):  # already added by another user of the informer
                    informer.add_indexer(name, fn)
        self.controller: Controller = manager.controller("machine", self._reconcile,
                                                         workers=self.options.workers,
                                                         needs_leader_election=False)
        self.poller = NodeStatePoller(driver, self._wake_node, fast_interval=self.options.fast_poll,
                                      slow_interval=self.options.slow_poll,
                                      batch_size=self.options.batch_size, clock=clock)
        self.recorder = EventRecorder(manager.client, "machine-operator", clock=clock)
        self.reconciler = MachineReconciler(
            manager.client, driver, machines=self.machine_informer.store, mpvs=self.mpv_informer.store,
            nodes=self.node_informer.store, configmaps=self.cm_informer.store, poller=self.poller,
            recorder=self.recorder, options=self.options, clock=clock)
        machines = self.machine_informer.store
        self.controller.for_(self.machine_informer)
        # every Machine's node is tracked from the start; its first reconcile fetches the reports of all
        # not-yet-polled nodes in one batch (NodeStatePoller.get)
        self.machine_informer.add_event_handler(Handlers(add=self._track_new))
        self.controller.watches(self.mpv_informer, lambda o: [
            Request.for_object(m) for m in machines.by_index("mpv", str(o["metadata"]["name"]))])
        self.controller.watches(self.cm_informer, lambda o: [
            Request.for_object(m) for n in _cm_node(o) for m in machines.by_index("node", n)])
        self.node_informer.add_event_handler(Handlers(
            add=lambda o: self._wake_node(o["metadata"]["name"]),
            update=lambda old, new: self._wake_node(new["metadata"]["name"])
            if _node_significant(old) != _node_significant(new) else None,
            delete=lambda o: self._wake_node(o["metadata"]["name"])))
        manager.add_runnable(self.poller.run)
        if self.options.risk is not None:  # a permit's answer wakes the Machines of its nodes at once
            self._answers: dict[str, tuple[Any, ...]] = {}
            self.options.risk.permits.add_listener(self._wake_targets)
        # a MachinePackageVersion a Machine asks for or still runs cannot be deleted under it
        mpvs = self.mpv_informer.store
        self.protection = InUseProtector(manager.client, MPV, mpvs, lambda n: mpv_users(machines, n),
                                         user_kind="Machines", recorder=self.recorder, clock=clock)
        self.protector = manager.controller("mpv-protection", self.protection.reconcile, workers=2,
                                            needs_leader_election=False)
        self.protector.for_(self.mpv_informer)
        self.protector.watches(self.machine_informer, lambda o: [  # users matter only to a held deletion
            Request("", p) for p in machine_mpvs(o)
            if (m := mpvs.get_by_name(p)) is not None and m["metadata"].get("deletionTimestamp")])
        if self.options.create_machines_for_nodes:
            self.creator = manager.controller("machine-creator", self._reconcile_node, workers=1,
                                              needs_leader_election=False)
            self.creator.for_(self.node_informer)
            self.creator.watches(self.machine_informer,
                                 lambda o: [Request("", n) for n in _machine_node(o)])

    async def _reconcile(self, req: Request) -> Result | None:
        return await self.reconciler.reconcile(req)

    async def _reconcile_node(self, req: Request) -> Result | None:
        try:
            return await self.reconciler.reconcile_node(req)
        except (ApiError, TransportError, DriverError) as e:
            log.warning("machine for node %s: %s", req.name, e)
            return Result(requeue=True)

    def _track_new(self, machine: Obj) -> None:
        for node in _machine_node(machine):
            if node not in self.poller.tracked:
                # not active: nothing is in flight before its first reconcile, and fast-polling every node of
                # a backlog (10,000 Machines created at once) cost the operator and the simulator a third of
                # their CPU re-reading reports nobody was waiting for (bench/fleet.py)
                self.poller.track(node, active=False)

    def _wake_targets(self, permit: Obj) -> None:
        """Wake the permit's nodes when its answer changed — not when only finished targets were added (this
        operator wrote those itself; a shared permit of 1,000 nodes gets one such change per node)."""
        name = str(permit["metadata"]["name"])
        st = permit.get("status") or {}
        answer = (st.get("state"), len(st.get("grantedTargets") or ()), repr(st.get("reasons")), st.get("retryAfter"))
        if self._answers.get(name) == answer:
            return
        if st.get("state") in (PermitState.RELEASED.value, PermitState.EXPIRED.value):
            self._answers.pop(name, None)
        else:
            self._answers[name] = answer
        # the granted nodes first: their budget stays spent while they wait (behind 10,000 Machines after a
        # restart, which made every kill -9 of the operator stall a throttled wave for as long as a resync)
        granted = set(st.get("grantedTargets") or ()) if st.get("state") == PermitState.GRANTED.value else set()
        finished = st.get("targetOutcomes") or {}
        for node in (permit.get("spec") or {}).get("targets") or ():
            self._wake_node(str(node), urgent=node in granted and node not in finished)

    def _wake_node(self, node: str, *, urgent: bool = False) -> None:
        add = self.controller.queue.add_urgent if urgent else self.controller.queue.add
        for m in self.machine_informer.store.by_index("node", node):
            add(Request.for_object(m))

    async def run(self) -> None:
        await self.manager.run()

    def stop(self) -> None:
        self.manager.stop()
