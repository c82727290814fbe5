"""Filters and scores: where a pod may run and where it runs best, with kube-scheduler's wording.

Filters (each answers None when the node fits, else the reason kube-scheduler prints): the node's
``spec.unschedulable``, taints against tolerations, nodeSelector and required node affinity, requested
cpu/memory/pod count against allocatable, required pod anti-affinity by hostname (both the incoming pod's
terms and those of pods already on the node).  Scores: least allocated (cpu and memory) and spreading of a
controller's pods across nodes and zones, the defaults of kube-scheduler's profile in spirit.

The search stops after enough feasible nodes (``percentageOfNodesToScore``: adaptive, 50% of nodes minus
one point per 125 nodes, at least 5%, at least 100 nodes), starting where the previous search ended, so a
decision costs the same at 100 and at 10,000 nodes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from kokpit._lib.podutil import (
    match_node_selector_term,
    node_affinity_matches,
    required_node_terms,
    selector_matches,
    tolerates,
)
from kokpit.scheduler._cache import NodeInfo, PodInfo, SchedulerCache

__all__ = ["HOSTNAME_LABEL", "Decision", "failure_message", "feasible_to_find", "schedule"]

Obj = dict[str, Any]
HOSTNAME_LABEL = "kubernetes.io/hostname"
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


def _term_selects(term: Obj, term_ns: str, ns: str, labels: dict[str, str]) -> bool:
    namespaces = term.get("namespaces") or []
    if term.get("namespaceSelector") is None and ns not in (namespaces or [term_ns]):
        return False
    return selector_matches(term.get("labelSelector"), labels)


@dataclass
class PodView:
    """The parts of the pod being scheduled that every filter reads (computed once per attempt)."""

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

    @classmethod
    def of(cls, key: str, pod: Obj) -> PodView:
        info = PodInfo.of(key, pod)
        spec = pod.get("spec") or {}
        tols = list(spec.get("tolerations") or [])
        return cls(key, info.namespace, info.labels, spec, tols, info.cpu, info.mem, info.owner,
                   [t for t in _anti_terms(spec) if t.get("topologyKey") == HOSTNAME_LABEL],
                   tolerates(tols, UNSCHEDULABLE_TAINT))


def filter_node(pod: PodView, info: NodeInfo) -> str | None:
    """None when the pod fits the node, else kube-scheduler's reason."""
    node = info.node
    nspec = node.get("spec") or {}
    if nspec.get("unschedulable") and not pod.tolerates_unschedulable:
        return "node(s) were unschedulable"
    for taint in nspec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
    if not node_affinity_matches(pod.spec, node):
        return "node(s) didn't match Pod's node affinity/selector"
    if len(info.pods) + 1 > info.max_pods:
        return "Too many pods"
    if pod.cpu and info.req_cpu + pod.cpu > info.cpu + 1e-9:
        return "Insufficient cpu"
    if pod.mem and info.req_mem + pod.mem > info.mem + 0.5:
        return "Insufficient memory"
    if pod.anti_terms:
        for other in info.pods.values():
            if any(_term_selects(t, pod.namespace, other.namespace, other.labels) for t in pod.anti_terms):
                return "node(s) didn't match pod anti-affinity rules"
    if info.with_anti_affinity:
        for other in info.pods.values():
            if any(t.get("topologyKey") == HOSTNAME_LABEL
                   and _term_selects(t, other.namespace, pod.namespace, pod.labels) for t in other.anti_affinity):
                return "node(s) didn't satisfy existing pods anti-affinity rules"
    return None


def _score(pod: PodView, info: NodeInfo, cache: SchedulerCache, max_node: int, max_zone: int) -> float:
    # least allocated: the share of cpu and memory left after placing the pod (0..100 each, averaged)
    parts = []
    for cap, used, want in ((info.cpu, info.nz_cpu, pod.cpu or 0.1), (info.mem, info.nz_mem, pod.mem or 209715200)):
        if cap and cap != float("inf"):
            parts.append(max(0.0, (cap - used - want) / cap) * 100)
    pods_left = max(0.0, (info.max_pods - len(info.pods) - 1) / max(1, info.max_pods)) * 100
    least = sum(parts) / len(parts) if parts else pods_left
    if not pod.owner:
        return least
    # spread: fewer pods of the same controller on the node (1/3) and in its zone (2/3) score higher
    on_node = info.owners.get(pod.owner, 0)
    node_spread = 100 * (1 - on_node / max_node) if max_node else 100
    if info.zone and max_zone:
        zone_count = cache.zone_owners.get(info.zone, Counter()).get(pod.owner, 0)
        spread = node_spread / 3 + 2 * (100 * (1 - zone_count / max_zone)) / 3
    else:
        spread = node_spread
    return least + spread


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
                                                         for t in terms)] or []


class Sampler:
    """Round-robin start point shared across decisions (kube-scheduler's nextStartNodeIndex)."""

    def __init__(self) -> None:
        self.next_start = 0


def schedule(pod: PodView, cache: SchedulerCache, sampler: Sampler) -> Decision:
    """Pick the best feasible node for ``pod`` or say, per reason, why none fits."""
    reasons: Counter[str] = Counter()
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
    max_node = max((i.owners.get(pod.owner, 0) for i in feasible), default=0) if pod.owner else 0
    max_zone = max((cache.zone_owners.get(i.zone, Counter()).get(pod.owner, 0) for i in feasible),
                   default=0) if pod.owner else 0
    best = max(feasible, key=lambda i: _score(pod, i, cache, max_node, max_zone))
    return Decision(best.name, evaluated, reasons)


def failure_message(total: int, reasons: Counter[str]) -> str:
    """``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable.`` (kube's FitError)."""
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{n} {why}" for why, n in reasons.items() if n > 0)
    return f"0/{total} nodes are available: {', '.join(parts)}."
