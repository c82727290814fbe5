"""Filters and scores: where a pod may run and where it runs best, with kube-scheduler's wording.

Filters (each answers None when the node fits, else the reason kube-scheduler prints): the node's
``spec.unschedulable``, taints against tolerations, nodeSelector and required node affinity, requested
cpu/memory/pod count against allocatable (less what nominated pods of at least the same priority have
booked), pod topology spread constraints, required pod (anti-)affinity (hostname terms here, per node;
wider domains and the spread counts in :mod:`._topology`).  Scores: least allocated (cpu and memory),
spreading of a controller's pods across nodes and zones (kube's default constraints in spirit), soft
spread constraints and preferred pod (anti-)affinity.

The search stops after enough feasible nodes (``percentageOfNodesToScore``: adaptive, 50% of nodes minus
one point per 125 nodes, at least 5%, at least 100 nodes), starting where the previous search ended, so a
decision costs the same at 100 and at 10,000 nodes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.podutil import (
    match_node_selector_term,
    required_node_terms,
    tolerates,
)
from kokpit.scheduler._cache import NodeInfo, PodInfo, SchedulerCache
from kokpit.scheduler._topology import HOSTNAME_LABEL, Topology, needs_topology, term_matches

__all__ = ["HOSTNAME_LABEL", "Decision", "best_node", "failure_message", "feasible_to_find", "schedule"]

Obj = dict[str, Any]
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
MIN_FEASIBLE = 100


def feasible_to_find(n: int) -> int:
    """How many feasible nodes to find before scoring (kube-scheduler's numFeasibleNodesToFind)."""
    if n < MIN_FEASIBLE:
        return n
    pct = max(5, 50 - n // 125)
    return max(MIN_FEASIBLE, n * pct // 100)


def _anti_terms(spec: Obj) -> list[Obj]:
    return list((((spec.get("affinity") or {}).get("podAntiAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution")) or [])


@dataclass
class PodView:
    """The parts of the pod being scheduled that every filter reads (computed once per attempt).

    Filtering visits hundreds of nodes per decision, so the pod's side of every check is prepared here:
    its nodeSelector and required node terms, and a memo of which taints (by key, value and effect) its
    tolerations accept — nodes of a fleet carry the same few taints."""

    key: str
    namespace: str
    labels: dict[str, str]
    spec: Obj
    tolerations: list[Obj]
    cpu: float
    mem: float
    owner: str
    anti_terms: list[Obj]
    tolerates_unschedulable: bool
    node_selector: list[tuple[str, Any]] = field(default_factory=list)
    node_terms: list[Obj] | None = None
    priority: int = 0
    preempts: bool = True  # preemptionPolicy PreemptLowerPriority (the default) rather than Never
    nominated_node: str = ""  # status.nominatedNodeName: where an earlier preemption made room
    topology: Topology | None = None  # spread constraints and zone-wide (anti-)affinity, when it has any
    _tolerated: dict[tuple[Any, Any, Any], bool] = field(default_factory=dict)

    @classmethod
    def of(cls, key: str, pod: Obj) -> PodView:
        info = PodInfo.of(key, pod)
        spec = pod.get("spec") or {}
        tols = list(spec.get("tolerations") or [])
        return cls(key, info.namespace, info.labels, spec, tols, info.cpu, info.mem, info.owner,
                   [t for t in _anti_terms(spec) if t.get("topologyKey") == HOSTNAME_LABEL],
                   tolerates(tols, UNSCHEDULABLE_TAINT), list((spec.get("nodeSelector") or {}).items()),
                   required_node_terms(spec), info.priority, spec.get("preemptionPolicy") != "Never",
                   str((pod.get("status") or {}).get("nominatedNodeName") or ""))

    def tolerates(self, taint: Obj) -> bool:
        k = (taint.get("key"), taint.get("value"), taint.get("effect"))
        ok = self._tolerated.get(k)
        if ok is None:
            ok = self._tolerated[k] = tolerates(self.tolerations, taint)
        return ok

    def matches_node(self, info: NodeInfo) -> bool:
        """nodeSelector and required node affinity (terms ORed) admit the node."""
        labels = info.labels
        for k, v in self.node_selector:
            if labels.get(k) != v:
                return False
        terms = self.node_terms
        return terms is None or any(match_node_selector_term(t, info.node) for t in terms)


def filter_node(pod: PodView, info: NodeInfo) -> str | None:
    """None when the pod fits the node, else kube-scheduler's reason."""
    if info.unschedulable and not pod.tolerates_unschedulable:
        return "node(s) were unschedulable"
    for taint in info.hard_taints:
        if not pod.tolerates(taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
    if not pod.matches_node(info):
        return "node(s) didn't match Pod's node affinity/selector"
    n, cpu, mem = len(info.pods), info.req_cpu, info.req_mem
    if info.nominated:  # room an earlier preemption freed for a pod of at least this priority stays booked
        for other in info.nominated.values():
            if other.key != pod.key and other.priority >= pod.priority:
                n, cpu, mem = n + 1, cpu + other.cpu, mem + other.mem
    if n + 1 > info.max_pods:
        return "Too many pods"
    if pod.cpu and cpu + pod.cpu > info.cpu + 1e-9:
        return "Insufficient cpu"
    if pod.mem and mem + pod.mem > info.mem + 0.5:
        return "Insufficient memory"
    top = pod.topology
    if top is not None and top.spreads:
        why = top.filter_spread(info)
        if why is not None:
            return why
    if pod.anti_terms:
        for other in info.pods.values():
            if any(term_matches(t, pod.namespace, other.namespace, other.labels) for t in pod.anti_terms):
                return "node(s) didn't match pod anti-affinity rules"
    if info.with_anti_affinity:
        for other in info.pods.values():
            if any(t.get("topologyKey") == HOSTNAME_LABEL
                   and term_matches(t, other.namespace, pod.namespace, pod.labels) for t in other.anti_affinity):
                return "node(s) didn't satisfy existing pods anti-affinity rules"
    if top is not None:
        return top.filter_affinity(info)
    return None


_NO_OWNERS: Counter[str] = Counter()
_INF = float("inf")


def best_node(pod: PodView, feasible: list[NodeInfo], cache: SchedulerCache) -> NodeInfo:
    """The highest-scoring feasible node (the first one on a tie).

    Least allocated: the share of cpu and memory left after placing the pod (0..100 each, averaged; the
    pod share of the node when it declares neither).  Spread, for pods with a controller: fewer pods of the
    same controller on the node (1/3) and in its zone (2/3) score higher, up to 100 more."""
    want_cpu, want_mem = pod.cpu or 0.1, pod.mem or 209715200
    owner = pod.owner
    zone_owners = cache.zone_owners
    zone_count: dict[str, int] = {}
    max_node = max_zone = 0
    if owner:
        for i in feasible:
            max_node = max(max_node, i.owners.get(owner, 0))
            if i.zone not in zone_count:
                zone_count[i.zone] = (zone_owners.get(i.zone) or _NO_OWNERS).get(owner, 0)
        max_zone = max(zone_count.values(), default=0)
    best, best_score = feasible[0], -1.0
    for info in feasible:
        total, parts = 0.0, 0
        cap = info.cpu
        if cap and cap != _INF:
            total += max(0.0, (cap - info.nz_cpu - want_cpu) / cap) * 100
            parts += 1
        cap = info.mem
        if cap and cap != _INF:
            total += max(0.0, (cap - info.nz_mem - want_mem) / cap) * 100
            parts += 1
        if parts:
            score = total / parts
        else:
            score = max(0.0, (info.max_pods - len(info.pods) - 1) / max(1, info.max_pods)) * 100
        if owner:
            node_spread = 100 * (1 - info.owners.get(owner, 0) / max_node) if max_node else 100
            if info.zone and max_zone:
                score += node_spread / 3 + 2 * (100 * (1 - zone_count[info.zone] / max_zone)) / 3
            else:
                score += node_spread
        if pod.topology is not None:
            score += pod.topology.score(info)
        if score > best_score:
            best, best_score = info, score
    return best


@dataclass
class Decision:
    node: str | None
    evaluated: int
    reasons: Counter[str]


def _candidate_names(pod: PodView, cache: SchedulerCache) -> list[str] | None:
    """Node names the pod's required node affinity pins it to (a DaemonSet pod's metadata.name term)."""
    terms = required_node_terms(pod.spec)
    if not terms:
        return None
    names: set[str] = set()
    for t in terms:
        fields = [f for f in t.get("matchFields") or [] if f.get("key") == "metadata.name"
                  and f.get("operator") == "In"]
        if not fields:
            return None
        names.update(str(v) for v in fields[0].get("values") or [])
    return [n for n in names if n in cache.nodes and any(match_node_selector_term(t, cache.nodes[n].node)
                                                         for t in terms)]


class Sampler:
    """Round-robin start point shared across decisions (kube-scheduler's nextStartNodeIndex)."""

    def __init__(self) -> None:
        self.next_start = 0


def schedule(pod: PodView, cache: SchedulerCache, sampler: Sampler) -> Decision:
    """Pick the best feasible node for ``pod`` or say, per reason, why none fits."""
    reasons: Counter[str] = Counter()
    if pod.topology is None and needs_topology(pod.spec, cache):
        pod.topology = Topology.of(pod, cache, pod.matches_node)
    nominated = cache.nodes.get(pod.nominated_node) if pod.nominated_node else None
    if nominated is not None and filter_node(pod, nominated) is None:
        return Decision(nominated.name, 1, reasons)  # the room its preemption made (kube's evaluateNominatedNode)
    pinned = _candidate_names(pod, cache)
    feasible: list[NodeInfo] = []
    evaluated = 0
    if pinned is not None:
        for name in pinned:
            info = cache.nodes[name]
            evaluated += 1
            why = filter_node(pod, info)
            if why is None:
                feasible.append(info)
            else:
                reasons[why] += 1
        reasons["node(s) didn't match Pod's node affinity/selector"] += len(cache.nodes) - evaluated
    else:
        order = cache.order
        n = len(order)
        want = feasible_to_find(n)
        start = sampler.next_start % n if n else 0
        for i in range(n):
            info = cache.nodes[order[(start + i) % n]]
            evaluated += 1
            why = filter_node(pod, info)
            if why is None:
                feasible.append(info)
                if len(feasible) >= want:
                    break
            else:
                reasons[why] += 1
        if n:
            sampler.next_start = (start + evaluated) % n
    if not feasible:
        return Decision(None, evaluated, reasons)
    return Decision(best_node(pod, feasible, cache).name, evaluated, reasons)


def failure_message(total: int, reasons: Counter[str]) -> str:
    """``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable.`` (kube's FitError)."""
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{n} {why}" for why, n in reasons.items() if n > 0)
    return f"0/{total} nodes are available: {', '.join(parts)}."
