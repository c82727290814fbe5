"""Which objects a Rollout targets, in the order it takes them, each with its previous version.

Run once per revision, when the targets are frozen into status: Clusters of the Rollout's namespace (by name
or selector) that do not run the ClusterPackageVersion yet, or Machines (by selector) of the selected business
clusters that the package change applies to.  An empty answer says why (``Selection.why``) — the rollout
then shows ``Valid=False``/``NoTargets`` rather than completing over nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kokpit.api.rollout import RolloutSpec
from kokpit.operators.rollout._fleet import Business
from kokpit.operators.rollout._plan import machine_previous, matches, order_targets, selects_cluster
from kokpit.runtime import Store

__all__ = ["Selection", "select_targets"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Selection:
    targets: list[Obj]
    why: str = ""


def select_targets(spec: RolloutSpec, namespace: str, clusters: Store, business: Mapping[str, Business]) -> Selection:
    t = spec.target
    if t.clusters is not None:
        ct = t.clusters
        chosen = [c for c in clusters.by_namespace(namespace) if selects_cluster(ct.names, ct.selector, c)]
        missing = sorted(set(ct.names) - {str(c["metadata"]["name"]) for c in chosen})
        todo = {str(c["metadata"]["name"]): c for c in chosen
                if (c.get("spec") or {}).get("packageVersion") != ct.package_version}
        if not todo:
            why = (f"no Cluster in namespace {namespace} matches spec.target.clusters" if not chosen else
                   f"all {len(chosen)} selected Cluster(s) already run {ct.package_version}")
            if missing:
                why += f" (Clusters {', '.join(missing)} do not exist)"
            return Selection([], why)
        order = order_targets(((n, (c["metadata"].get("labels") or {})) for n, c in todo.items()),
                              spec.strategy.order)
        out = [{"name": n, "state": "Pending", "step": -1,
                "previous": {"packageVersion": str(todo[n]["spec"]["packageVersion"])}} for n in order]
        why = f"{len(chosen) - len(todo)} selected Cluster(s) already run {ct.package_version}" \
            if len(chosen) > len(todo) else ""
        if missing:
            why += f"; Clusters {', '.join(missing)} do not exist"
        return Selection(out, why.strip("; "))
    m = t.machines
    assert m is not None
    found: dict[str, Obj] = {}
    labels: dict[str, Mapping[str, str]] = {}
    seen = 0
    for cluster, b in sorted(business.items()):
        comps = b.mpv_components()
        for machine in b.machines.objects():
            meta = machine.get("metadata") or {}
            if not matches(m.machine_selector, meta.get("labels") or {}):
                continue
            seen += 1
            prev = machine_previous(machine, m.packages, comps)
            if prev is None:
                continue
            name = f"{cluster}/{meta['name']}"
            found[name] = {"name": name, "node": str((machine.get("spec") or {}).get("nodeName") or meta["name"]),
                           "state": "Pending", "step": -1, "previous": prev}
            labels[name] = meta.get("labels") or {}
    if not found:
        clusters_txt = ", ".join(sorted(business)) or "no business cluster"
        why = (f"no Machine in {clusters_txt} matches spec.target.machines.machineSelector" if not seen else
               f"the package change applies to none of the {seen} selected Machine(s) in {clusters_txt}")
        return Selection([], why)
    order = order_targets(((n, labels[n]) for n in found), spec.strategy.order)
    skipped = seen - len(found)
    return Selection([found[n] for n in order],
                     f"{skipped} selected Machine(s) already changed or not matching" if skipped else "")
