"""The two target kinds behind one interface: what a target runs, what it should run, and how to change it.

:class:`ClusterTargets` releases Clusters of the meta cluster to a ClusterPackageVersion (the cluster operator
does the release); :class:`MachineTargets` changes ``spec.packages`` of Machines in business clusters (the
machine operator does the install).  Either way the rollout only edits the target's spec — guarded by the
target's resourceVersion, so a concurrent edit by a person is never overwritten — and reads its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kokpit.api.machine import GROUP, VERSION
from kokpit.api.risk import OperationType
from kokpit.api.rollout import RolloutSpec
from kokpit.client import Client, Kind
from kokpit.operators.rollout._fleet import MACHINE, Business
from kokpit.operators.rollout._plan import (
    MachineVerdict,
    cluster_health,
    cluster_verdict,
    forward_wanted,
    machine_health,
    machine_packages_after,
    machine_spec_is,
    machine_verdict,
)

__all__ = ["CLUSTER", "CPV", "ClusterTargets", "MachineTargets", "Mark", "Observed", "TargetKindOps"]

Obj = dict[str, Any]
Mark = dict[str, tuple[int, int]] | None  # business cluster -> (its connection, its change count)
CLUSTER = Kind(GROUP, VERSION, "Cluster", "clusters")
CPV = Kind(GROUP, VERSION, "ClusterPackageVersion", "clusterpackageversions", namespaced=False)


@dataclass(frozen=True)
class Observed:
    """One target as last seen: its object (None: not found or its cluster unreachable, ``why`` says which),
    whether its spec is the wanted, the previous or another value, and what its status says."""

    obj: Obj | None
    spec_is: str = "other"
    verdict: MachineVerdict = field(default_factory=MachineVerdict)
    why: str = ""


class TargetKindOps(Protocol):
    op: OperationType

    def observe(self, target: Obj, back: bool) -> Observed: ...

    async def change(self, target: Obj, obj: Obj, back: bool) -> None: ...

    def permit_scope(self, target: Obj) -> tuple[str, str]: ...

    def mark(self) -> Mark:
        """Where the caches stand now, for :meth:`changed_since` in a later reconcile."""

    def changed_since(self, target: Obj, mark: Mark) -> bool:
        """Whether what :meth:`observe` reads of ``target`` may have changed since ``mark`` (True when it
        cannot tell)."""

    def health(self, target: Obj) -> str | None:
        """The analysis' health check of an updated target: "" healthy, why not, or None (no verdict yet)."""


class ClusterTargets:
    """Targets are Clusters (names) of the Rollout's namespace; the change is spec.packageVersion."""

    op = OperationType.CONTROL_PLANE_RELEASE

    def __init__(self, client: Client, namespace: str, clusters: Any, cpv: str) -> None:
        self.client = client
        self.namespace = namespace
        self.clusters = clusters  # the Cluster informer's Store
        self.cpv = cpv

    def wanted(self, target: Obj, back: bool) -> str:
        return str((target.get("previous") or {}).get("packageVersion", "")) if back else self.cpv

    def observe(self, target: Obj, back: bool) -> Observed:
        obj = self.clusters.get_by_name(target["name"], self.namespace)
        if obj is None:
            return Observed(None, why=f"Cluster {self.namespace}/{target['name']} does not exist")
        want = self.wanted(target, back)
        prev = str((target.get("previous") or {}).get("packageVersion", ""))
        now = (obj.get("spec") or {}).get("packageVersion")
        spec_is = "wanted" if now == want else "previous" if now == (self.cpv if back else prev) else "other"
        return Observed(obj, spec_is, cluster_verdict(obj, want))

    async def change(self, target: Obj, obj: Obj, back: bool) -> None:
        rv = obj["metadata"].get("resourceVersion")
        await self.client.patch(CLUSTER, target["name"], {"metadata": {"resourceVersion": rv},
                                                          "spec": {"packageVersion": self.wanted(target, back)}},
                                self.namespace)

    def permit_scope(self, target: Obj) -> tuple[str, str]:
        return target["name"], "control-plane"

    def mark(self) -> Mark:
        return None

    def changed_since(self, target: Obj, mark: Mark) -> bool:
        return True  # a few thousand Clusters at most: each is looked at on every reconcile

    def health(self, target: Obj) -> str | None:
        obj = self.clusters.get_by_name(target["name"], self.namespace)
        if obj is None:
            return f"Cluster {self.namespace}/{target['name']} does not exist"
        return cluster_health(obj)


class MachineTargets:
    """Targets are ``cluster/machine``; the change sets each changed component's MachinePackageVersion."""

    op = OperationType.COMPONENT_UPGRADE

    def __init__(self, spec: RolloutSpec, business: Mapping[str, Business]) -> None:
        assert spec.target.machines is not None
        self.forward = forward_wanted(spec.target.machines.packages)
        self.business = business  # cluster name -> its connection (reachable ones only)

    def wanted(self, target: Obj, back: bool) -> dict[str, str]:
        prev = target.get("previous") or {}
        return {c: str(prev.get(c, "")) for c in self.forward} if back else self.forward

    def _where(self, target: Obj) -> tuple[str, str]:
        cluster, machine = str(target["name"]).split("/", 1)
        return cluster, machine

    def observe(self, target: Obj, back: bool) -> Observed:
        cluster, machine = self._where(target)
        b = self.business.get(cluster)
        if b is None:
            return Observed(None, why=f"business cluster {cluster} cannot be reached")
        obj = b.machine(machine)
        if obj is None:
            return Observed(None, why=f"Machine {machine} does not exist in cluster {cluster}")
        comps = b.mpv_components()
        want = self.wanted(target, back)
        other = self.wanted(target, not back)
        spec_is = machine_spec_is(obj, want, other, comps)
        return Observed(obj, spec_is, machine_verdict(obj, want, b.mpv_versions()))

    async def change(self, target: Obj, obj: Obj, back: bool) -> None:
        cluster, machine = self._where(target)
        b = self.business[cluster]
        packages = machine_packages_after((obj.get("spec") or {}).get("packages") or [],
                                          self.wanted(target, back), b.mpv_components())
        rv = obj["metadata"].get("resourceVersion")
        await b.client.patch(MACHINE, machine, {"metadata": {"resourceVersion": rv}, "spec": {"packages": packages}})

    def permit_scope(self, target: Obj) -> tuple[str, str]:
        cluster, machine = self._where(target)
        return cluster, str(target.get("node") or machine)

    def mark(self) -> Mark:
        return {name: (b.opened, b.seq) for name, b in self.business.items()}

    def changed_since(self, target: Obj, mark: Mark) -> bool:
        cluster, machine = self._where(target)
        b = self.business.get(cluster)
        at = None if mark is None else mark.get(cluster)
        if b is None or at is None or at[0] != b.opened:
            return True  # unreachable, or a connection (and caches) other than the one the mark was taken on
        return b.changed_since(at[1], machine, str(target.get("node") or machine))

    def health(self, target: Obj) -> str | None:
        cluster, machine = self._where(target)
        b = self.business.get(cluster)
        if b is None:
            return f"business cluster {cluster} cannot be reached"
        obj = b.machine(machine)
        if obj is None:
            return f"Machine {machine} does not exist in cluster {cluster}"
        return machine_health(obj)
