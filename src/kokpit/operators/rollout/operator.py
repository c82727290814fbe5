"""The rollout controller's wiring: meta-cluster informers (Rollout, Cluster, ClusterPackageVersion, Permit),
the business clusters machine Rollouts reach, one controller and :class:`RolloutReconciler` on a Manager.

Any change that can move a Rollout wakes it: its own object, a Cluster or ClusterPackageVersion of its
namespace, a Permit it holds (by ``spec.holder``), and every Machine, MachinePackageVersion or NodeFault change
in a business cluster it reaches.  The changes that come by the thousand — the Machines of a batch reporting
their progress, and the Rollout's own status writes — wake it at most every :data:`COALESCE` seconds: every
reconcile looks at the whole batch, so one look per burst sees everything a look per event would (kube's Job
and EndpointSlice controllers batch Pod updates the same way).  A change of the Rollout's spec or metadata
wakes it at once.
"""

from __future__ import annotations

import logging
from typing import Any

from kokpit._lib.clock import Clock
from kokpit.api.rollout import RolloutConditionType as CT
from kokpit.operators.rollout._fleet import BusinessClusters
from kokpit.operators.rollout._metrics import RolloutMetrics
from kokpit.operators.rollout._reconciler import ROLLOUT, RolloutOptions, RolloutReconciler
from kokpit.operators.rollout._status import holds_targets
from kokpit.operators.rollout._targets import CLUSTER, CPV
from kokpit.runtime import Controller, EventRecorder, Manager, Request, Result, is_true
from kokpit.runtime.permits import PERMIT, RISK_POLICY

__all__ = ["RolloutController", "moves_with_business"]

log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
HOLDER_PREFIX = "rollout/"
COALESCE = 0.5  # seconds


def _own_write_delay(old: Obj, new: Obj) -> float:
    """At once for a change of spec or metadata; a status write (the controller's own) is batched."""
    o, n = old.get("metadata") or {}, new.get("metadata") or {}
    same = all(o.get(k) == n.get(k) for k in ("generation", "deletionTimestamp", "labels", "annotations"))
    return COALESCE if same and old.get("spec") == new.get("spec") else 0.0


def moves_with_business(rollout: Obj) -> bool:
    """Whether a change in a business cluster can move this machine Rollout: one that has not frozen its
    targets (what it selects from changed), one that still holds them (forward, or rolling back), or an undo
    of a completed one — not one that is over, which the fleet's churn after it would otherwise wake twice a
    second for nothing."""
    st = rollout.get("status") or {}
    if not st.get("targetSets") and not st.get("targets"):
        return True
    conds = st.get("conditions")
    undoing = is_true(conds, CT.COMPLETED) and bool((rollout.get("spec") or {}).get("undo")) \
        and not is_true(conds, CT.ROLLED_BACK)
    return holds_targets(rollout) or undoing


class RolloutController:
    """Wires the rollout controller onto ``manager`` (leader-elected: one controller acts at a time)."""

    def __init__(self, manager: Manager, options: RolloutOptions | None = None, *, clock: Clock | None = None) -> None:
        self.manager = manager
        self.options = options or RolloutOptions()
        inf = manager.informers
        self.rollouts = inf.informer(ROLLOUT)
        self.clusters = inf.informer(CLUSTER)
        self.cpvs = inf.informer(CPV)
        self.permits = inf.informer(PERMIT)
        self.policies = inf.informer(RISK_POLICY)
        self.metrics = RolloutMetrics(manager.registry)
        self.business = BusinessClusters(manager.client, self._business_changed)
        self.recorder = EventRecorder(manager.client, "rollout-controller", clock=clock)
        self.reconciler = RolloutReconciler(
            manager.client, self.recorder, rollouts=self.rollouts.store, clusters=self.clusters.store,
            cpvs=self.cpvs.store, permits=self.permits.store, business=self.business, options=self.options,
            clock=clock, metrics=self.metrics, policies=self.policies.store)
        self.controller: Controller = manager.controller("rollout", self._reconcile, workers=self.options.workers)
        self.controller.watches(self.rollouts, lambda o: [Request.for_object(o)], update_delay=_own_write_delay)
        self.controller.watches(self.clusters, lambda o: self._in_namespace(str(o["metadata"].get("namespace"))))
        self.controller.watches(self.cpvs, lambda _o: [Request.for_object(r) for r in self.rollouts.objects()])
        self.controller.watches(self.permits, self._holder)
        self.controller.watches(self.policies, lambda _o: self._analysing())

    def _in_namespace(self, ns: str) -> list[Request]:
        return [Request.for_object(r) for r in self.rollouts.store.by_namespace(ns)]

    def _holder(self, permit: Obj) -> list[Request]:
        holder = str((permit.get("spec") or {}).get("holder") or "")
        if not holder.startswith(HOLDER_PREFIX):
            return []
        ns, _, name = holder[len(HOLDER_PREFIX):].partition("/")
        return [Request(ns, name)] if name else []

    def _analysing(self) -> list[Request]:
        """Rollouts in an analysis step (a gate reading changed)."""
        out = []
        for r in self.rollouts.objects():
            steps = ((r.get("spec") or {}).get("strategy") or {}).get("steps") or []
            i = int((r.get("status") or {}).get("currentStep") or 0)
            if i < len(steps) and "analysis" in steps[i]:
                out.append(Request.for_object(r))
        return out

    def _business_changed(self, cluster_key: str) -> None:
        ns = cluster_key.split("/", 1)[0]
        for r in self.rollouts.store.by_namespace(ns):
            if ((r.get("spec") or {}).get("target") or {}).get("machines") is not None and moves_with_business(r):
                self.controller.queue.add_after(Request.for_object(r), COALESCE)

    async def _reconcile(self, req: Request) -> Result | None:
        return await self.reconciler.reconcile(req)

    async def close(self) -> None:
        await self.business.close()
