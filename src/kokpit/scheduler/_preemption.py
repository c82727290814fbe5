"""Preemption (kube-scheduler's DefaultPreemption PostFilter): make room for a pod that fits nowhere by
removing pods of lower priority.

For a pod that may preempt (``preemptionPolicy`` is not Never), every node that failed only for a reason
removing pods can fix (cpu, memory, pod count, anti-affinity) is dry-run: without all its lower-priority
pods, does the pod fit?  If so, victims are given back one by one, the most important first (higher
priority, then older) and — as upstream does — pods whose eviction would violate a PodDisruptionBudget
before the others, keeping every pod the node can keep.  Among the candidate nodes the one chosen has the
fewest PDB violations, then the lowest highest victim priority, the smallest priority sum, the fewest
victims.  Pure functions over the scheduler cache; the scheduler then nominates the node and deletes the
victims.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.podutil import selector_matches
from kokpit.scheduler._cache import NodeInfo, PodInfo, SchedulerCache
from kokpit.scheduler._framework import PodView, filter_node

__all__ = ["RESOLVABLE", "Budget", "Candidate", "Preemption", "budgets_of", "find_candidate", "postfilter_message",
           "without_candidates"]

Obj = dict[str, Any]
RESOLVABLE = frozenset({"Too many pods", "Insufficient cpu", "Insufficient memory",
                        "node(s) didn't match pod anti-affinity rules",
                        "node(s) didn't satisfy existing pods anti-affinity rules"})
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
MIN_CANDIDATES = 100  # upstream minCandidateNodesAbsolute
CANDIDATE_PERCENT = 10  # upstream minCandidateNodesPercentage
_OFFSET = 2**31  # upstream adds MaxInt32+1 to each priority so that fewer victims win among negative ones


@dataclass
class Budget:
    """A PodDisruptionBudget as preemption reads it."""

    namespace: str
    selector: Obj | None
    allowed: int
    disrupted: frozenset[str]  # pod names the eviction API already counted


def budgets_of(pdbs: list[Obj]) -> list[Budget]:
    out = []
    for p in pdbs:
        meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
        out.append(Budget(str(meta.get("namespace") or ""), spec.get("selector"),
                          int(status.get("disruptionsAllowed") or 0),
                          frozenset((status.get("disruptedPods") or {}).keys())))
    return out


@dataclass
class Candidate:
    node: str
    victims: list[PodInfo]
    pdb_violations: int

    def rank(self) -> tuple[int, int, int, int]:
        top = max((v.priority for v in self.victims), default=-_OFFSET)
        return (self.pdb_violations, top, sum(v.priority + _OFFSET for v in self.victims), len(self.victims))


@dataclass
class Preemption:
    """The outcome: a candidate, or why there is none, per node (for the FailedScheduling message)."""

    candidate: Candidate | None
    reasons: Counter[str] = field(default_factory=Counter)


def _more_important_first(p: PodInfo) -> tuple[int, str]:
    return (-p.priority, p.created)


def _violating(pods: list[PodInfo], budgets: list[Budget]) -> set[str]:
    """Keys of pods whose eviction, in this order, would take some budget below zero (upstream
    filterPodsWithPDBViolation)."""
    allowed = [b.allowed for b in budgets]
    out: set[str] = set()
    for p in pods:
        name = p.key.rpartition("/")[2]
        for i, b in enumerate(budgets):
            if b.namespace != p.namespace or not b.selector or name in b.disrupted:
                continue
            if not selector_matches(b.selector, p.labels):
                continue
            allowed[i] -= 1
            if allowed[i] < 0:
                out.add(p.key)
    return out


def _without(info: NodeInfo, drop: set[str]) -> NodeInfo:
    sim = NodeInfo(info.name, info.node, cpu=info.cpu, mem=info.mem, max_pods=info.max_pods, zone=info.zone,
                   labels=info.labels, unschedulable=info.unschedulable, hard_taints=info.hard_taints)
    sim.nominated = info.nominated
    for k, p in info.pods.items():
        if k not in drop:
            sim.add(p)
    return sim


def victims_on(pod: PodView, info: NodeInfo, budgets: list[Budget]) -> Candidate | None:
    """The fewest lower-priority pods to remove from ``info`` so that ``pod`` fits, or None."""
    lower = sorted((p for p in info.pods.values() if p.priority < pod.priority), key=_more_important_first)
    if not lower:
        return None
    sim = _without(info, {p.key for p in lower})
    if filter_node(pod, sim) is not None:
        return None
    violating = _violating(lower, budgets)
    victims: list[PodInfo] = []
    violations = 0
    for p in [q for q in lower if q.key in violating] + [q for q in lower if q.key not in violating]:
        sim.add(p)
        if filter_node(pod, sim) is None:
            continue  # reprieved: the pod fits with this one kept
        sim.remove(p.key)
        victims.append(p)
        violations += p.key in violating
    return Candidate(info.name, victims, violations) if victims else None


def find_candidate(pod: PodView, cache: SchedulerCache, budgets: list[Budget], start: int = 0) -> Preemption:
    """Dry-run preemption over the nodes (from ``start``, round robin) until enough candidates are found;
    the best one by upstream's order, or the reasons none is."""
    out = Preemption(None)
    order = cache.order
    n = len(order)
    want = max(MIN_CANDIDATES, n * CANDIDATE_PERCENT // 100)
    found: list[Candidate] = []
    for i in range(n):
        info = cache.nodes[order[(start + i) % n]]
        why = filter_node(pod, info)
        if why is None or why not in RESOLVABLE:
            out.reasons[NOT_HELPFUL] += 1
            continue
        c = victims_on(pod, info, budgets)
        if c is None:
            out.reasons[NO_VICTIMS] += 1
            continue
        found.append(c)
        if len(found) >= want:
            break
    if found:
        out.candidate = min(found, key=Candidate.rank)
    return out


def without_candidates(reasons: Counter[str]) -> Preemption:
    """The outcome when no placed pod has a lower priority, from the filter reasons alone (no dry run):
    nodes that failed for a resolvable reason have no victims, the others are not helped."""
    out = Preemption(None)
    for why, n in reasons.items():
        out.reasons[NO_VICTIMS if why in RESOLVABLE else NOT_HELPFUL] += n
    return out


def postfilter_message(total: int, pre: Preemption | None) -> str:
    """The part kube-scheduler appends to its FitError after a failed preemption."""
    if pre is None:
        return "preemption: not eligible due to preemptionPolicy=Never."
    parts = sorted(f"{n} {why}" for why, n in pre.reasons.items() if n > 0)
    return f"preemption: 0/{total} nodes are available: {', '.join(parts)}."
