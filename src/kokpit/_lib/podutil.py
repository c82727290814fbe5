"""Pod and node predicates shared by the scheduler and the controller-manager.

The scheduler decides where a pod may run; the DaemonSet controller decides on which nodes a daemon pod
*should* run — by the same rules (label selectors, taints and tolerations, node affinity), so they live in
one place.  Plain functions on decoded JSON objects, as the informer caches hold them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "TERMINAL_PHASES",
    "controller_ref",
    "is_active",
    "is_available",
    "is_ready",
    "match_node_selector_term",
    "node_affinity_matches",
    "parse_quantity",
    "pod_requests",
    "ready_since",
    "required_node_terms",
    "selector_matches",
    "slim_pod",
    "tolerates",
    "untolerated_taint",
]

Obj = dict[str, Any]
TERMINAL_PHASES = ("Succeeded", "Failed")

_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(q: Any) -> float:
    """A resource.Quantity as a float in base units (cores, bytes); 0 for what does not parse."""
    if isinstance(q, int | float) and not isinstance(q, bool):
        return float(q)
    m = _QUANTITY.match(str(q or "").strip())
    if not m or m.group(2) not in _SUFFIX:
        return 0.0
    try:
        return float(m.group(1)) * _SUFFIX[m.group(2)]
    except ValueError:
        return 0.0


def pod_requests(pod: Obj) -> tuple[float, float]:
    """(cpu cores, memory bytes) the pod requests: sum of containers, at least the largest init container."""
    spec = pod.get("spec") or {}

    def req(c: Obj, name: str) -> float:
        return parse_quantity(((c.get("resources") or {}).get("requests") or {}).get(name))

    cpu = sum(req(c, "cpu") for c in spec.get("containers") or [])
    mem = sum(req(c, "memory") for c in spec.get("containers") or [])
    for c in spec.get("initContainers") or []:
        cpu, mem = max(cpu, req(c, "cpu")), max(mem, req(c, "memory"))
    return cpu, mem


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """metav1.LabelSelector semantics: None matches nothing, ``{}`` matches everything."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != str(v):
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), [str(v) for v in e.get("values") or []]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _requirement(value: str | None, op: str, values: list[str]) -> bool:
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def match_node_selector_term(term: Obj, node: Obj) -> bool:
    """One NodeSelectorTerm: all its matchExpressions (labels) and matchFields (metadata.name) hold."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    for e in exprs:
        if not _requirement(labels.get(e.get("key")), str(e.get("operator")), [str(v) for v in e.get("values") or []]):
            return False
    for f in fields:
        value = meta.get("name") if f.get("key") == "metadata.name" else None
        if not _requirement(value, str(f.get("operator")), [str(v) for v in f.get("values") or []]):
            return False
    return True


def required_node_terms(spec: Obj) -> list[Obj] | None:
    """The pod's requiredDuringSchedulingIgnoredDuringExecution node selector terms (None when it has none)."""
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not req:
        return None
    return list(req.get("nodeSelectorTerms") or [])


def node_affinity_matches(spec: Obj, node: Obj) -> bool:
    """nodeSelector and required node affinity (terms are ORed) both admit the node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    terms = required_node_terms(spec)
    return terms is None or any(match_node_selector_term(t, node) for t in terms)


def tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    """Whether any toleration tolerates the taint (v1.Toleration.ToleratesTaint)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" or (op == "Equal" and (t.get("value") or "") == (taint.get("value") or "")):
            return True
    return False


def untolerated_taint(tolerations: Iterable[Obj], taints: Iterable[Obj],
                      effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> Obj | None:
    """The first taint with one of ``effects`` the tolerations do not tolerate, or None."""
    tols = list(tolerations)
    for taint in taints:
        if taint.get("effect") in effects and not tolerates(tols, taint):
            return taint
    return None


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ready_since(pod: Obj) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("lastTransitionTime") or "") or None
    return None


def is_available(pod: Obj, min_ready_seconds: int, now_ts: float) -> bool:
    """Ready for at least ``min_ready_seconds`` (podutil.IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    if not since:
        return False
    try:
        t = dt.datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return t + min_ready_seconds <= now_ts


def is_active(pod: Obj) -> bool:
    """Not terminal and not being deleted (controller.FilterActivePods)."""
    return ((pod.get("status") or {}).get("phase") not in TERMINAL_PHASES
            and not (pod.get("metadata") or {}).get("deletionTimestamp"))


def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


_SLIM_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels", "annotations",
              "ownerReferences", "deletionTimestamp")


def slim_pod(pod: Obj) -> Obj:
    """An informer transform: what the node-level controllers of the machine operator's process read of a Pod.

    The fault detector (pod-start failures: phase, reason, waiting reasons, whether a container started) and
    the maintenance flows (owners, labels, annotations, deletion, phase) share one Pod informer in that
    process, so they share one transform: whichever installs it first, the other finds what it reads.
    A cluster's 100,000 full Pods would otherwise dominate the process's memory."""
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    waiting = [str(((c.get("state") or {}).get("waiting") or {}).get("reason") or "") for c in statuses]
    started = any((c.get("state") or {}).get("running") or (c.get("state") or {}).get("terminated")
                  for c in statuses)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {k: meta[k] for k in _SLIM_META if k in meta},
            "spec": {"nodeName": spec.get("nodeName")},
            "status": {"phase": st.get("phase"), "reason": st.get("reason"), "waiting": waiting,
                       "started": bool(started)}}
