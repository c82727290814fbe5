"""The rollout controller's decisions as pure functions of plain objects: which objects a Rollout targets and
in what order, what a target's spec becomes (forward and back), and what its observed state says.

Nothing here does I/O or reads a clock, so every rule is unit-tested with plain dicts; the reconciler only
feeds it informer caches and writes what it answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kokpit._lib.podutil import selector_matches
from kokpit.api.risk import LabelSelector
from kokpit.api.rollout import PackageChange, RolloutSpec, TargetOrder

__all__ = [
    "MachineVerdict",
    "change_hash",
    "change_text",
    "cluster_health",
    "cluster_verdict",
    "forward_wanted",
    "limit_of",
    "machine_health",
    "machine_packages_after",
    "machine_previous",
    "machine_spec_is",
    "machine_verdict",
    "matches",
    "order_targets",
    "selects_cluster",
]

Obj = dict[str, Any]


def matches(sel: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (None matches nothing; an empty selector everything)."""
    return selector_matches(sel.to_wire() if sel is not None else None, labels)


def limit_of(value: int | str, total: int) -> int:
    """An integer, or a percentage of ``total`` rounded down (a failure budget, a batch's in-flight cap)."""
    if isinstance(value, int):
        return value
    return int(value.rstrip("%")) * total // 100


def selects_cluster(names: Sequence[str], selector: LabelSelector | None, cluster: Obj) -> bool:
    meta = cluster.get("metadata") or {}
    return str(meta.get("name")) in names or matches(selector, meta.get("labels") or {})


def change_hash(spec: RolloutSpec) -> str:
    """Identifies what a revision changes (spec.target): a new value is a new revision."""
    raw = json.dumps(spec.target.to_wire(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _one_change(p: PackageChange) -> str:
    if p.to is None:
        return f"remove {p.component}" + (f" ({p.from_})" if p.from_ else "")
    if p.from_ is None:
        return f"add {p.to}"
    return f"{p.from_} → {p.to}"


def change_text(spec: RolloutSpec) -> tuple[str, str]:
    """(the change in words, the to-version column)."""
    t = spec.target
    if t.clusters is not None:
        return f"clusters → {t.clusters.package_version}", t.clusters.package_version
    assert t.machines is not None
    parts = [_one_change(p) for p in t.machines.packages]
    to = ",".join(p.to or f"-{p.component}" for p in t.machines.packages)
    return "machines: " + ", ".join(parts), to


# ------------------------------------------------------------------------------------------------ order
_NUM = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def _priority(labels: Mapping[str, str], label: str | None) -> tuple[int, float, str]:
    if not label or label not in labels:
        return (1, 0.0, "")
    v = labels[label]
    return (0, -float(v), "") if _NUM.match(v) else (0, 0.0, v)


def order_targets(items: Iterable[tuple[str, Mapping[str, str]]], order: TargetOrder) -> list[str]:
    """Target names (with their labels) in the order they are taken: by priority (higher first, unlabeled
    last), then round-robin across the topology label's values (so every batch spreads across failure
    domains), then by name."""
    groups: dict[tuple[int, float, str], list[tuple[str, Mapping[str, str]]]] = {}
    for name, labels in items:
        groups.setdefault(_priority(labels, order.priority_label), []).append((name, labels))
    out: list[str] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda x: x[0])
        if not order.topology_label:
            out += [n for n, _ in members]
            continue
        domains: dict[str, list[str]] = {}
        for n, labels in members:
            domains.setdefault(labels.get(order.topology_label, ""), []).append(n)
        queues = [domains[d] for d in sorted(domains)]
        i = 0
        while any(queues):
            q = queues[i % len(queues)]
            if q:
                out.append(q.pop(0))
            i += 1
    return out


# ------------------------------------------------------------------------------------------------ machines
def _components(packages: Iterable[str], mpv_component: Mapping[str, str]) -> dict[str, str]:
    """component → MPV name of a Machine's spec.packages (unknown MPVs keep their own name as component)."""
    return {mpv_component.get(p, f"?{p}"): p for p in packages}


def machine_previous(machine: Obj, changes: Sequence[PackageChange], mpv_component: Mapping[str, str]
                     ) -> dict[str, str] | None:
    """Per changed component, the MPV the Machine runs now ("" when it has none) — or None when the change
    does not apply to this Machine (replace/remove of a version it does not run, add of a component it has,
    or nothing would change)."""
    have = _components((machine.get("spec") or {}).get("packages") or [], mpv_component)
    prev: dict[str, str] = {}
    applies = False
    for c in changes:
        cur = have.get(c.component, "")
        prev[c.component] = cur
        if c.from_ is not None and cur != c.from_:
            return None
        if c.from_ is None and c.to is not None and cur:
            return None  # add: only Machines without the component
        if c.to is None and not cur:
            return None  # remove: only Machines with it
        applies |= cur != (c.to or "")
    return prev if applies else None


def machine_packages_after(packages: Sequence[str], wanted: Mapping[str, str],
                           mpv_component: Mapping[str, str]) -> list[str]:
    """spec.packages with each component of ``wanted`` set to its MPV ("" removes it); others as they are."""
    out = [p for p in packages if mpv_component.get(p, f"?{p}") not in wanted]
    out += [v for v in wanted.values() if v]
    return out


def forward_wanted(changes: Sequence[PackageChange]) -> dict[str, str]:
    return {c.component: c.to or "" for c in changes}


@dataclass(frozen=True)
class MachineVerdict:
    """What a Machine's status says about the components a rollout set: done, failed (why) or in flight."""

    done: bool = False
    failed: str = ""
    spec_is: str = "wanted"  # wanted | previous | other (someone else changed it)


def machine_spec_is(machine: Obj, wanted: Mapping[str, str], previous: Mapping[str, str],
                    mpv_component: Mapping[str, str]) -> str:
    have = _components((machine.get("spec") or {}).get("packages") or [], mpv_component)
    now = {c: have.get(c, "") for c in wanted}
    if now == dict(wanted):
        return "wanted"
    if now == {c: previous.get(c, "") for c in wanted}:
        return "previous"
    return "other"


def machine_verdict(machine: Obj, wanted: Mapping[str, str], mpv_version: Mapping[str, str]) -> MachineVerdict:
    """Whether the Machine runs ``wanted`` (component → MPV, "" absent): every wanted component Installed and
    Running from that MPV (health-checked when it has a check), every removed one gone.  Failed: an install
    that failed, a failing health check, a component that stopped."""
    status = machine.get("status") or {}
    comps = {str(c.get("name")): c for c in status.get("components") or []}
    failures = {str(f.get("name")): f for f in status.get("failures") or []}
    ok = True
    for comp, mpv in wanted.items():
        cur = comps.get(comp)
        if not mpv:
            ok &= cur is None
            continue
        rec = failures.get(f"install/{comp}") or failures.get(f"health/{comp}")
        if rec is not None and int(rec.get("count") or 0) > 0:
            return MachineVerdict(failed=f"{comp}: {rec.get('name')} failed {rec.get('count')}x: "
                                         f"{rec.get('message') or ''}".strip())
        if cur is None:
            ok = False
            continue
        if cur.get("installState") == "Failed":
            return MachineVerdict(failed=f"{comp}: install failed: {cur.get('message') or ''}".strip())
        at = cur.get("packageVersion") == mpv and cur.get("installState") == "Installed" \
            and (mpv not in mpv_version or cur.get("version") == mpv_version[mpv])
        if at and cur.get("runState") == "Stopped":
            return MachineVerdict(failed=f"{comp}: not running: {cur.get('message') or ''}".strip())
        ok &= at and cur.get("runState") == "Running"
    return MachineVerdict(done=ok)


# ------------------------------------------------------------------------------------------------ clusters
def cluster_verdict(cluster: Obj, cpv: str) -> MachineVerdict:
    """Whether a Cluster runs ``cpv``: status.packageVersion is it and UpToDate is True; failed when the
    cluster operator recorded the release as failed (and rolled it back)."""
    spec = cluster.get("spec") or {}
    status = cluster.get("status") or {}
    spec_is = "wanted" if spec.get("packageVersion") == cpv else "other"
    if status.get("failedPackageVersion") == cpv:
        return MachineVerdict(failed=f"the cluster operator reports release {cpv} failed and rolled it back",
                              spec_is=spec_is)
    gen = (cluster.get("metadata") or {}).get("generation")
    current = gen is None or status.get("observedGeneration") == gen
    up = any(c.get("type") == "UpToDate" and c.get("status") == "True" for c in status.get("conditions") or [])
    return MachineVerdict(done=current and up and status.get("packageVersion") == cpv, spec_is=spec_is)


# ------------------------------------------------------------------------------------------------ health
def _failing(conditions: Sequence[Obj], types: Sequence[str]) -> str:
    """The first condition of ``types`` that is not True, in words ("" when all are)."""
    by_type = {str(c.get("type")): c for c in conditions}
    for t in types:
        c = by_type.get(t)
        if c is None:
            return f"{t} is not reported"
        if c.get("status") != "True":
            return f"{t}={c.get('status')} {c.get('reason') or ''}: {c.get('message') or ''}".strip(": ")
    return ""


def machine_health(machine: Obj) -> str | None:
    """The analysis' health check of one updated Machine: "" healthy; why not, in words; None while the
    machine operator has not looked at its current spec yet (no verdict).  Ready is the machine operator's
    summary of the node's Ready condition, ComponentsReady (installed, running, health checks passing),
    NodeHealthy and the full readiness gates (synced Condition ConfigMaps)."""
    meta, status = machine.get("metadata") or {}, machine.get("status") or {}
    gen, seen = meta.get("generation"), status.get("observedGeneration")
    if gen is not None and seen is not None and int(seen) < int(gen):
        return None
    return _failing(status.get("conditions") or [], ("Ready", "ComponentsReady", "NodeHealthy"))


def cluster_health(cluster: Obj) -> str | None:
    """The analysis' health check of one released Cluster: "" healthy; why not; None while the cluster
    operator has not observed its current spec.  Available (the API server answers), UpToDate, not Degraded,
    and every control-plane component healthy with its replicas ready."""
    meta, status = cluster.get("metadata") or {}, cluster.get("status") or {}
    gen, seen = meta.get("generation"), status.get("observedGeneration")
    if gen is not None and seen is not None and int(seen) < int(gen):
        return None
    conds = status.get("conditions") or []
    why = _failing(conds, ("Available", "UpToDate"))
    if why:
        return why
    degraded = next((c for c in conds if c.get("type") == "Degraded" and c.get("status") == "True"), None)
    if degraded is not None:
        return f"Degraded {degraded.get('reason') or ''}: {degraded.get('message') or ''}".strip(": ")
    for comp in status.get("components") or []:
        if not comp.get("healthy") or int(comp.get("readyReplicas") or 0) < int(comp.get("replicas") or 0):
            return (f"component {comp.get('name')}: {comp.get('readyReplicas', 0)}/{comp.get('replicas', 0)} ready"
                    f"{', unhealthy' if not comp.get('healthy') else ''}"
                    f"{': ' + comp['message'] if comp.get('message') else ''}")
    return ""
