"""Placement relative to other pods across topology domains: pod topology spread constraints and inter-pod
(anti-)affinity by any ``topologyKey`` (zone, rack, ...), kube-scheduler's PodTopologySpread and
InterPodAffinity plugins read as behaviour.

A domain is one value of a node label (``topology.kubernetes.io/zone=a``).  What a decision needs is counted
once per decision from the cache (:class:`Topology`), then every node is judged from those counts:

- **spread** (``topologySpreadConstraints``): matching pods (same namespace, the constraint's selector plus
  its ``matchLabelKeys``) per domain over the nodes that count (they carry the key and, under the default
  ``nodeAffinityPolicy: Honor``, pass the pod's nodeSelector/affinity).  ``DoNotSchedule`` refuses a node
  where placing the pod would make ``count + 1 - min`` exceed ``maxSkew`` (min is 0 while fewer domains than
  ``minDomains`` exist); ``ScheduleAnyway`` only scores (fewer matching pods, higher score).  A node without
  the key cannot host a DoNotSchedule pod.
- **required pod affinity**: every term needs a matching pod in the node's domain — unless no pod matches the
  term anywhere and the pod matches it itself (the first pod of a group);
- **required pod anti-affinity** (the pod's own terms, and symmetrically the terms of pods already placed):
  no matching pod in the node's domain.  Hostname terms stay on the per-node fast path of
  :mod:`._framework`; this module handles the others.
- **preferred** affinity/anti-affinity terms add/subtract their weight where the domain has matching pods.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.podutil import selector_matches
from kokpit.scheduler._cache import NodeInfo, SchedulerCache

__all__ = ["HOSTNAME_LABEL", "SPREAD_MISMATCH", "SPREAD_MISSING_LABEL", "Topology", "needs_topology", "term_matches"]

Obj = dict[str, Any]
HOSTNAME_LABEL = "kubernetes.io/hostname"
SPREAD_MISMATCH = "node(s) didn't match pod topology spread constraints"
SPREAD_MISSING_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
AFFINITY_MISMATCH = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY_MISMATCH = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"


def _affinity(spec: Obj, kind: str) -> Obj:
    return ((spec.get("affinity") or {}).get(kind) or {})


def needs_topology(spec: Obj, cache: SchedulerCache) -> bool:
    """Whether a decision for a pod with this spec needs :class:`Topology` at all (most do not)."""
    return bool(spec.get("topologySpreadConstraints") or _affinity(spec, "podAffinity")
                or any(t.get("topologyKey") != HOSTNAME_LABEL for t in
                       _affinity(spec, "podAntiAffinity").get("requiredDuringSchedulingIgnoredDuringExecution") or [])
                or _affinity(spec, "podAntiAffinity").get("preferredDuringSchedulingIgnoredDuringExecution")
                or cache.zone_anti_affinity_pods)


def term_matches(term: Obj, term_ns: str, pod_ns: str, labels: dict[str, str]) -> bool:
    """A PodAffinityTerm of a pod in ``term_ns`` selects a pod in ``pod_ns`` with ``labels``: its namespaces
    are the ``namespaces`` listed plus those its ``namespaceSelector`` selects (``{}``: all), or the term's
    own namespace when it names neither.  The scheduler keeps no Namespace cache, so a non-empty selector is
    matched against the one label every namespace carries, ``kubernetes.io/metadata.name``."""
    namespaces = term.get("namespaces") or []
    ns_sel = term.get("namespaceSelector")
    if ns_sel is None and not namespaces:
        in_ns = pod_ns == term_ns
    else:
        in_ns = pod_ns in namespaces or (ns_sel is not None and selector_matches(
            ns_sel, {"kubernetes.io/metadata.name": pod_ns}))
    return in_ns and selector_matches(term.get("labelSelector"), labels)


@dataclass
class _Spread:
    key: str
    max_skew: int
    hard: bool
    counts: Counter[str]
    min_count: int
    self_match: int


@dataclass
class Topology:
    """Everything a decision needs about other pods' whereabouts, counted once."""

    spreads: list[_Spread] = field(default_factory=list)
    affinity: list[tuple[str, set[str] | None]] = field(default_factory=list)  # key -> domains (None: any)
    anti: list[tuple[str, set[str]]] = field(default_factory=list)  # key -> forbidden domains (own terms)
    existing_anti: set[tuple[str, str]] = field(default_factory=set)  # (key, value) others forbid
    preferred: list[tuple[str, set[str], int]] = field(default_factory=list)  # key, domains, +/- weight

    @classmethod
    def of(cls, pod: Any, cache: SchedulerCache, eligible: Any) -> Topology:
        """``pod`` is the PodView; ``eligible(info)`` says whether a node passes its node selection."""
        top = cls()
        spec, ns, labels = pod.spec, pod.namespace, pod.labels
        nodes = list(cache.nodes.values())
        for c in spec.get("topologySpreadConstraints") or []:
            key = str(c.get("topologyKey") or "")
            sel: Obj = dict(c.get("labelSelector") or {})
            extra = {k: labels[k] for k in c.get("matchLabelKeys") or [] if k in labels}
            if extra:
                sel["matchLabels"] = {**(sel.get("matchLabels") or {}), **extra}
            honor = (c.get("nodeAffinityPolicy") or "Honor") == "Honor"
            counts: Counter[str] = Counter()
            for info in nodes:
                domain = info.labels.get(key)
                if domain is None or (honor and not eligible(info)):
                    continue
                counts[domain] += sum(1 for p in info.pods.values()
                                      if p.namespace == ns and selector_matches(sel, p.labels))
            min_domains = int(c.get("minDomains") or 1)
            low = min(counts.values(), default=0) if len(counts) >= min_domains else 0
            top.spreads.append(_Spread(key, int(c.get("maxSkew") or 1),
                                       (c.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule",
                                       counts, low, int(selector_matches(sel, labels))))
        aff = _affinity(spec, "podAffinity")
        for term in aff.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            key = str(term.get("topologyKey") or "")
            domains = _domains(nodes, key, term, ns)
            top.affinity.append((key, None if not domains and term_matches(term, ns, ns, labels) else domains))
        anti = _affinity(spec, "podAntiAffinity")
        for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            key = str(term.get("topologyKey") or "")
            if key != HOSTNAME_LABEL:
                top.anti.append((key, _domains(nodes, key, term, ns)))
        for sign, terms in ((1, aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
                            (-1, anti.get("preferredDuringSchedulingIgnoredDuringExecution") or [])):
            for wt in terms:
                term = wt.get("podAffinityTerm") or {}
                key = str(term.get("topologyKey") or "")
                top.preferred.append((key, _domains(nodes, key, term, ns), sign * int(wt.get("weight") or 1)))
        if cache.zone_anti_affinity_pods:
            for info in nodes:
                if not info.with_anti_affinity:
                    continue
                for other in info.pods.values():
                    for t in other.anti_affinity:
                        key = str(t.get("topologyKey") or "")
                        if key != HOSTNAME_LABEL and key in info.labels and term_matches(
                                t, other.namespace, ns, labels):
                            top.existing_anti.add((key, info.labels[key]))
        return top

    def filter_spread(self, info: NodeInfo) -> str | None:
        """PodTopologySpread's filter (kube runs it before InterPodAffinity's)."""
        labels = info.labels
        for s in self.spreads:
            if not s.hard:
                continue
            domain = labels.get(s.key)
            if domain is None:
                return SPREAD_MISSING_LABEL
            if s.counts.get(domain, 0) + s.self_match - s.min_count > s.max_skew:
                return SPREAD_MISMATCH
        return None

    def filter_affinity(self, info: NodeInfo) -> str | None:
        """InterPodAffinity's filter for topology keys other than the hostname."""
        labels = info.labels
        for key, domains in self.affinity:
            value = labels.get(key)
            if value is None or (domains is not None and value not in domains):
                return AFFINITY_MISMATCH
        for key, forbidden in self.anti:
            if labels.get(key) in forbidden:
                return ANTI_AFFINITY_MISMATCH
        for key, value in self.existing_anti:
            if labels.get(key) == value:
                return EXISTING_ANTI_AFFINITY
        return None

    def score(self, info: NodeInfo) -> float:
        """Up to 100 for soft spreading (fewer matching pods in the domain) plus preferred term weights."""
        total = 0.0
        soft = [s for s in self.spreads if not s.hard]
        for s in soft:
            top = max(s.counts.values(), default=0) + 1
            total += 100 * (top - s.counts.get(info.labels.get(s.key, ""), 0)) / top / len(soft)
        for key, domains, weight in self.preferred:
            if info.labels.get(key) in domains:
                total += weight
        return total


def _domains(nodes: list[NodeInfo], key: str, term: Obj, ns: str) -> set[str]:
    """Values of ``key`` on nodes that hold a pod the term selects."""
    out: set[str] = set()
    for info in nodes:
        value = info.labels.get(key)
        if value is None or value in out:
            continue
        if any(term_matches(term, ns, p.namespace, p.labels) for p in info.pods.values()):
            out.add(value)
    return out
