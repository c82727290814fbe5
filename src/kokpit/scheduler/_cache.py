"""The scheduler's view of the cluster: per-node accounting kept incrementally from informer events.

Scheduling one pod must not walk every pod in the cluster: each node carries its requested cpu/memory,
its pod count, the labels of its pods (for anti-affinity) and per-owner counts (for spreading), updated
as pods are bound, assumed, or go away.  An *assumed* pod is one this scheduler has just decided to bind:
it counts on its node at once, so the next decision, made before the informer shows the binding, does not
double-book the node (kube-scheduler's assume/forget).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.podutil import controller_ref, is_active, parse_quantity, pod_requests

__all__ = ["ZONE_LABEL", "NodeInfo", "PodInfo", "SchedulerCache"]

Obj = dict[str, Any]
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_MAX_PODS = 110


@dataclass
class PodInfo:
    """What a placed pod contributes to its node."""

    key: str
    namespace: str
    labels: dict[str, str]
    cpu: float
    mem: float
    owner: str  # controller uid ("" without one)
    anti_affinity: list[Obj]  # its required pod anti-affinity terms (checked against incoming pods)
    priority: int = 0  # spec.priority (set by the API server's Priority admission)
    uid: str = ""
    created: str = ""  # creationTimestamp: among victims of equal priority the older is more important

    @property
    def wide_anti_affinity(self) -> bool:
        """A required anti-affinity term over a domain wider than one node (zone, rack)."""
        return any(t.get("topologyKey") != "kubernetes.io/hostname" for t in self.anti_affinity)

    @property
    def nz_cpu(self) -> float:
        """Requests as scoring counts them: a pod asking for nothing counts as 100m cpu and 200 MB
        (kube-scheduler's non-zero defaults), so pods without requests still spread by load."""
        return self.cpu or 0.1

    @property
    def nz_mem(self) -> float:
        return self.mem or 200 * 1024 * 1024

    @classmethod
    def of(cls, key: str, pod: Obj) -> PodInfo:
        meta = pod.get("metadata") or {}
        cpu, mem = pod_requests(pod)
        ref = controller_ref(pod) or {}
        terms = ((((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        return cls(key, str(meta.get("namespace") or ""), dict(meta.get("labels") or {}), cpu, mem,
                   str(ref.get("uid") or ""), list(terms), int((pod.get("spec") or {}).get("priority") or 0),
                   str(meta.get("uid") or ""), str(meta.get("creationTimestamp") or ""))


@dataclass
class NodeInfo:
    """One node: its object, what it can hold and what is placed on it."""

    name: str
    node: Obj
    cpu: float = 0.0
    mem: float = 0.0
    max_pods: int = DEFAULT_MAX_PODS
    zone: str = ""
    req_cpu: float = 0.0
    req_mem: float = 0.0
    nz_cpu: float = 0.0
    nz_mem: float = 0.0
    pods: dict[str, PodInfo] = field(default_factory=dict)
    owners: Counter[str] = field(default_factory=Counter)
    with_anti_affinity: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    hard_taints: list[Obj] = field(default_factory=list)  # NoSchedule and NoExecute taints
    nominated: dict[str, PodInfo] = field(default_factory=dict)  # pending pods that preempted room here
    _alloc: Obj | None = None

    def set_node(self, node: Obj) -> None:
        """Take the node's new object; what filters read is computed here once, not per decision (the
        object changes every status heartbeat, so allocatable is re-parsed only when it changed)."""
        self.node = node
        status = node.get("status") or {}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        if alloc != self._alloc:
            self._alloc = alloc
            self.cpu = parse_quantity(alloc.get("cpu")) if "cpu" in alloc else float("inf")
            self.mem = parse_quantity(alloc.get("memory")) if "memory" in alloc else float("inf")
            self.max_pods = int(parse_quantity(alloc.get("pods"))) if "pods" in alloc else DEFAULT_MAX_PODS
        self.labels = dict((node.get("metadata") or {}).get("labels") or {})
        self.zone = str(self.labels.get(ZONE_LABEL) or "")
        spec = node.get("spec") or {}
        self.unschedulable = bool(spec.get("unschedulable"))
        self.hard_taints = [t for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]

    def add(self, p: PodInfo) -> None:
        self.pods[p.key] = p
        self.req_cpu += p.cpu
        self.req_mem += p.mem
        self.nz_cpu += p.nz_cpu
        self.nz_mem += p.nz_mem
        if p.owner:
            self.owners[p.owner] += 1
        if p.anti_affinity:
            self.with_anti_affinity += 1

    def remove(self, key: str) -> PodInfo | None:
        p = self.pods.pop(key, None)
        if p is None:
            return None
        self.req_cpu -= p.cpu
        self.req_mem -= p.mem
        self.nz_cpu -= p.nz_cpu
        self.nz_mem -= p.nz_mem
        if p.owner:
            self.owners[p.owner] -= 1
            if self.owners[p.owner] <= 0:
                del self.owners[p.owner]
        if p.anti_affinity:
            self.with_anti_affinity -= 1
        return p


class SchedulerCache:
    """Nodes by name (in a stable order for round-robin sampling) and where every placed pod is."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.order: list[str] = []
        self._index: dict[str, int] = {}
        self.placed: dict[str, str] = {}  # pod key -> node name (bound or assumed)
        self.assumed: set[str] = set()
        self.zone_owners: dict[str, Counter[str]] = {}  # zone -> owner uid -> pods
        self.nominations: dict[str, str] = {}  # pending pod key -> its status.nominatedNodeName
        self.priorities: Counter[int] = Counter()  # placed pods by priority (is anything preemptible?)
        self.zone_anti_affinity_pods = 0  # placed pods with a required anti-affinity term beyond hostname

    # ------------------------------------------------------------------ nodes
    def upsert_node(self, node: Obj) -> NodeInfo:
        name = str((node.get("metadata") or {}).get("name"))
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name, node)
            self._index[name] = len(self.order)
            self.order.append(name)
            info.set_node(node)
            return info
        old_zone = info.zone
        info.set_node(node)
        if old_zone != info.zone:
            for owner, n in info.owners.items():
                self._zone_add(old_zone, owner, -n)
                self._zone_add(info.zone, owner, n)
        return info

    def remove_node(self, name: str) -> None:
        info = self.nodes.pop(name, None)
        if info is None:
            return
        i = self._index.pop(name)
        last = self.order.pop()
        if last != name:
            self.order[i] = last
            self._index[last] = i
        for owner, n in info.owners.items():
            self._zone_add(info.zone, owner, -n)
        for p in info.pods.values():
            if p.wide_anti_affinity:
                self.zone_anti_affinity_pods -= 1
            self.priorities[p.priority] -= 1
            if self.priorities[p.priority] <= 0:
                del self.priorities[p.priority]
        # pods keep their placement record: if the node comes back their accounting is rebuilt from events

    # ------------------------------------------------------------------ pods
    def _zone_add(self, zone: str, owner: str, n: int) -> None:
        if not owner:
            return
        c = self.zone_owners.setdefault(zone, Counter())
        c[owner] += n
        if c[owner] <= 0:
            del c[owner]

    def place(self, key: str, pod: Obj, node_name: str, *, assumed: bool = False) -> None:
        """Count ``pod`` on ``node_name`` (replacing an earlier placement of the same key)."""
        self.unplace(key)
        info = self.nodes.get(node_name)
        self.placed[key] = node_name
        if assumed:
            self.assumed.add(key)
        if info is None:
            return
        p = PodInfo.of(key, pod)
        info.add(p)
        self.priorities[p.priority] += 1
        if p.wide_anti_affinity:
            self.zone_anti_affinity_pods += 1
        self._zone_add(info.zone, p.owner, 1)

    def unplace(self, key: str) -> None:
        node_name = self.placed.pop(key, None)
        self.assumed.discard(key)
        if node_name is None:
            return
        info = self.nodes.get(node_name)
        if info is None:
            return
        p = info.remove(key)
        if p is not None:
            if p.wide_anti_affinity:
                self.zone_anti_affinity_pods -= 1
            self.priorities[p.priority] -= 1
            if self.priorities[p.priority] <= 0:
                del self.priorities[p.priority]
            self._zone_add(info.zone, p.owner, -1)

    def has_lower_priority(self, priority: int) -> bool:
        """Whether any placed pod has a lower priority (else preemption cannot help)."""
        return any(p < priority for p in self.priorities)

    def nominate(self, key: str, pod: Obj | None, node_name: str) -> None:
        """Keep room on ``node_name`` for a pending pod whose preemption freed it (status.nominatedNodeName):
        pods of no higher priority may not take it meanwhile.  An empty name, or None, drops it."""
        old = self.nominations.pop(key, None)
        if old is not None and old in self.nodes:
            self.nodes[old].nominated.pop(key, None)
        if pod is None or not node_name:
            return
        self.nominations[key] = node_name
        info = self.nodes.get(node_name)
        if info is not None:
            info.nominated[key] = PodInfo.of(key, pod)

    def observe_pod(self, key: str, pod: Obj | None) -> bool:
        """Apply an informer view of a pod; True when resources on some node were freed."""
        node_name = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
        if pod is None or not node_name or not is_active(pod):
            freed = key in self.placed
            if key not in self.assumed or pod is None or not is_active(pod):
                self.unplace(key)
                return freed
            return False  # assumed and the informer has not caught up yet: keep the assumption
        if self.placed.get(key) == node_name and key not in self.assumed:
            return False
        self.place(key, pod, node_name)
        return False
