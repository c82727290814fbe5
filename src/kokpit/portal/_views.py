"""What each page shows, computed from the caches as plain data (the JSON API returns exactly this; the
HTML templates render it).  Pure functions of the cache: no I/O, so they are cheap to test and to measure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kokpit.portal._cache import BusinessCache, FleetCache, flow_open
from kokpit.runtime.conditions import find_condition

__all__ = ["SORTS", "FleetQuery", "cluster_view", "fault_row", "fleet_view", "flow_row", "machine_view", "node_faults",
           "open_flow", "risk_view"]

Obj = dict[str, Any]
PAGE = 200


def _cond(obj: Obj, type_: str) -> Obj:
    found = find_condition((obj.get("status") or {}).get("conditions"), type_)
    return dict(found) if found else {"type": type_, "status": "Unknown", "reason": "", "message": ""}


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


@dataclass
class FleetQuery:
    q: str = ""
    health: str = ""  # "", "ready", "notready"
    sort: str = "name"  # one of SORTS
    desc: bool = False
    page: int = 1

    @classmethod
    def parse(cls, params: Any) -> FleetQuery:
        sort = str(params.get("sort") or "name")
        if sort not in SORTS:
            sort = "name"
        health = str(params.get("health") or "")
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            page = 1
        return cls(q=str(params.get("q") or "")[:200], health=health if health in ("ready", "notready") else "",
                   sort=sort, desc=str(params.get("desc") or "") in ("1", "true"), page=page)


@dataclass
class ClusterRow:
    namespace: str
    name: str
    wanted: str
    version: str
    kubernetes: str
    ready: str
    phase: str
    reason: str
    nodes: int | None
    nodes_ready: int | None
    nodes_isolated: int | None
    nodes_repair: int | None
    faults: int | None
    changes: int
    rollouts: int | None
    note: str = ""


def _permits_by_cluster(cache: FleetCache) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in cache.objects("Permit"):
        if (p.get("status") or {}).get("state") == "Granted" and not (p.get("status") or {}).get("outcome"):
            key = f"{_meta(p).get('namespace')}/{(p.get('spec') or {}).get('cluster') or ''}"
            out[key] = out.get(key, 0) + 1
    return out


_DONE = frozenset({"Completed", "Aborted", "RolledBack", "Invalid"})


def _rollouts_by_cluster(cache: FleetCache) -> dict[str, int]:
    """Rollouts still running (a column for people: the phase the rollout controller derives) per
    "<namespace>/<cluster>" they name."""
    out: dict[str, int] = {}
    for r in cache.objects("Rollout"):
        if str((r.get("status") or {}).get("phase") or "Pending") in _DONE:
            continue
        t = (r.get("spec") or {}).get("target") or {}
        names = set((t.get("clusters") or {}).get("names") or []) | set((t.get("machines") or {}).get(
            "clusterNames") or [])
        names |= {str(x.get("name") or "").split("/", 1)[0] for x in (r.get("status") or {}).get("targets") or []}
        ns = _meta(r).get("namespace")
        for n in names:
            if n:
                out[f"{ns}/{n}"] = out.get(f"{ns}/{n}", 0) + 1
    return out


def cluster_row(cache: FleetCache, c: Obj, permits: dict[str, int],
                rollouts: dict[str, int] | None = None) -> ClusterRow:
    meta, spec, st = _meta(c), c.get("spec") or {}, c.get("status") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    version = str(st.get("packageVersion") or "")
    cpv = cache.get("ClusterPackageVersion", version) if version else None
    ready = _cond(c, "Ready")
    bc = cache.cluster_cache(ns, name)
    nodes = ready_n = isolated = repair = faults = None
    note = ""
    if bc is not None and bc.synced:
        counts = bc.counts()
        nodes, ready_n, isolated = counts.total, counts.ready, counts.isolated
        repair, faults = counts.repair, counts.faults
    elif bc is not None:
        note = "reading nodes…"
    else:
        note = cache.business_errors.get(f"{ns}/{name}", "" if st.get("endpoint") else "no endpoint yet")
    return ClusterRow(namespace=ns, name=name, wanted=str(spec.get("packageVersion") or ""), version=version or "-",
                      kubernetes=str(((cpv or {}).get("spec") or {}).get("kubernetesVersion") or "-"),
                      ready=str(ready.get("status")), phase=str(st.get("phase") or ""),
                      reason=str(ready.get("reason") or ""), nodes=nodes, nodes_ready=ready_n,
                      nodes_isolated=isolated, nodes_repair=repair, faults=faults,
                      changes=permits.get(f"{ns}/{name}", 0),
                      rollouts=None if rollouts is None else rollouts.get(f"{ns}/{name}", 0), note=note)


_SORT = {
    "name": lambda r: (r.namespace, r.name),
    "version": lambda r: (r.version, r.name),
    "health": lambda r: (r.ready == "True", r.name),
    "nodes": lambda r: (r.nodes or 0, r.name),
    "ready": lambda r: (r.nodes_ready or 0, r.name),
    "changes": lambda r: (r.changes, r.name),
    "faults": lambda r: (r.faults or 0, r.name),
    "repair": lambda r: (r.nodes_repair or 0, r.name),
}
SORTS = tuple(_SORT)


def fleet_view(cache: FleetCache, query: FleetQuery) -> dict[str, Any]:
    """Every Cluster as a row (filtered, sorted, one page of 200) plus fleet-wide totals for the pictures."""
    permits, rollouts = _permits_by_cluster(cache), _rollouts_by_cluster(cache)
    rows = [cluster_row(cache, c, permits, rollouts) for c in cache.objects("Cluster")]
    versions: dict[str, int] = {}
    kubelets: dict[str, int] = {}
    for r in rows:
        versions[r.version] = versions.get(r.version, 0) + 1
    for bc in cache.business.values():
        if bc.synced:
            for v, n in bc.counts().versions.items():
                kubelets[v] = kubelets.get(v, 0) + n
    total = len(rows)
    ready = sum(1 for r in rows if r.ready == "True")
    q = query.q.lower()
    if q:
        rows = [r for r in rows if q in r.name.lower() or q in r.namespace.lower() or q in r.version.lower()
                or q in r.wanted.lower()]
    if query.health == "ready":
        rows = [r for r in rows if r.ready == "True"]
    elif query.health == "notready":
        rows = [r for r in rows if r.ready != "True"]
    rows.sort(key=_SORT[query.sort], reverse=query.desc)
    matched = len(rows)
    pages = max(1, (matched + PAGE - 1) // PAGE)
    page = min(query.page, pages)
    shown = rows[(page - 1) * PAGE: page * PAGE]
    return {"clusters": [dict(r.__dict__) for r in shown], "matched": matched, "total": total, "ready": ready,
            "page": page, "pages": pages, "versions": versions, "kubeletVersions": kubelets,
            "query": asdict(query)}


def _component_rows(c: Obj) -> list[Obj]:
    return [{"name": x.get("name", ""), "version": x.get("version", ""), "replicas": x.get("replicas", 0),
             "readyReplicas": x.get("readyReplicas", 0), "restarts": x.get("restarts", 0),
             "healthy": bool(x.get("healthy")), "message": x.get("message", ""),
             "restartedAt": x.get("restartedAt", "")}
            for x in (c.get("status") or {}).get("components") or []]


def machine_row(m: Obj, node: Obj | None) -> Obj:
    meta, spec, st = _meta(m), m.get("spec") or {}, m.get("status") or {}
    gates = [g.get("conditionType", "") for g in spec.get("readinessGates") or []]
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    return {"name": meta.get("name", ""), "node": spec.get("nodeName", ""), "phase": st.get("phase") or "",
            "ready": _cond(m, "Ready").get("status"), "components": {x.get("name", ""): x.get("version", "")
                                                                    for x in st.get("components") or []},
            "componentsReady": st.get("componentsReady") or "",
            "gates": {g: (conds.get(g) or {}).get("status", "Unknown") for g in gates},
            "unschedulable": bool(spec.get("unschedulable") or ((node or {}).get("spec") or {}).get("unschedulable")),
            "nodeReady": _cond(node, "Ready").get("status") if node else "Unknown",
            "labels": meta.get("labels") or {}}


def cluster_view(cache: FleetCache, namespace: str, name: str, *, q: str = "", page: int = 1) -> dict[str, Any] | None:
    """One Cluster: conditions, control-plane components, its Machines (filtered, one page) and counts."""
    c = cache.get("Cluster", name, namespace)
    if c is None:
        return None
    row = cluster_row(cache, c, _permits_by_cluster(cache), _rollouts_by_cluster(cache))
    bc = cache.cluster_cache(namespace, name)
    machines: list[Obj] = []
    matched = 0
    if bc is not None:
        ql = q.lower()
        store = bc.machines.store
        for mname in bc.machine_order():
            m = store.get_by_name(mname)
            if m is None:
                continue
            if ql:
                hit = bc.hay.get(mname)
                if hit is None or hit[0] is not m:  # computed again only for a changed Machine
                    hit = (m, " ".join([mname, str((m.get("status") or {}).get("phase") or ""),
                                        *(f"{k}={v}" for k, v in (_meta(m).get("labels") or {}).items())]).lower())
                    bc.hay[mname] = hit
                if ql not in hit[1]:
                    continue
            matched += 1
            if (page - 1) * PAGE < matched <= page * PAGE:
                machines.append(machine_row(m, bc.nodes.store.get_by_name(str((m.get("spec") or {}).get("nodeName")))))
    st = c.get("status") or {}
    return {"cluster": asdict(row), "spec": c.get("spec") or {}, "endpoint": st.get("endpoint") or "",
            "conditions": (st.get("conditions") or []), "components": _component_rows(c), "machines": machines,
            "machinesMatched": matched, "page": page, "pages": max(1, (matched + PAGE - 1) // PAGE),
            "failedPackageVersion": st.get("failedPackageVersion") or "",
            "lastGoodPackageVersion": st.get("lastGoodPackageVersion") or "",
            "releases": sorted(_meta(x).get("name", "") for x in cache.objects("ClusterPackageVersion"))}


def _true(o: Obj, type_: str) -> Obj | None:
    return next((c for c in (o.get("status") or {}).get("conditions") or [] if c.get("type") == type_
                 and c.get("status") == "True"), None)


def open_flow(flows: list[Obj], node: str) -> Obj | None:
    """The node's open MaintenanceFlow (the newest, as ``kokpit fault`` picks it)."""
    mine = [f for f in flows if (f.get("spec") or {}).get("nodeName") == node and flow_open(f)]
    return max(mine, key=lambda f: str(_meta(f).get("creationTimestamp") or "")) if mine else None


def fault_row(ns: str, cluster: str, f: Obj) -> Obj:
    spec, st = f.get("spec") or {}, f.get("status") or {}
    return {"namespace": ns, "cluster": cluster, "name": _meta(f).get("name", ""), "node": spec.get("nodeName", ""),
            "type": spec.get("type", ""), "component": spec.get("component", ""),
            "severity": st.get("severity") or "", "state": st.get("state") or "", "count": st.get("count", 0),
            "firstSeen": st.get("firstSeen") or "", "lastSeen": st.get("lastSeen") or "",
            "reporter": st.get("reporter") or "", "message": st.get("message") or "",
            "flow": st.get("maintenanceFlow") or "",
            "causedBy": [f"{c.get('kind')} {c.get('name')}" for c in st.get("possiblyCausedBy") or []]}


def flow_row(ns: str, cluster: str, f: Obj) -> Obj:
    spec, st = f.get("spec") or {}, f.get("status") or {}
    manual = _true(f, "ManualRequired")
    return {"namespace": ns, "cluster": cluster, "name": _meta(f).get("name", ""), "node": spec.get("nodeName", ""),
            "faultType": spec.get("faultType", ""), "flow": st.get("currentFlow") or spec.get("flow", ""),
            "step": st.get("step") or "", "phase": st.get("phase") or "", "level": st.get("level", 0),
            "attempt": st.get("attempt", 0), "created": _meta(f).get("creationTimestamp") or "",
            "manual": manual is not None, "manualSince": (manual or {}).get("lastTransitionTime") or "",
            "message": (manual or {}).get("message") or "",
            "ticket": (st.get("ticket") or {}).get("id") or "",
            "humanActions": [f"{a.get('action')} by {a.get('user')}" for a in (st.get("humanActions") or [])[-3:]]}


def node_faults(bc: BusinessCache | None, node: str) -> tuple[list[Obj], list[Obj]]:
    """A node's faults (every state, newest first) and its flows (open ones first) — for the Machine page."""
    if bc is None or not node:
        return [], []
    ns = cl = ""
    faults = [fault_row(ns, cl, f) for f in bc.faults.store.list() if (f.get("spec") or {}).get("nodeName") == node]
    faults.sort(key=lambda r: (r["state"] != "Active", r["lastSeen"]), reverse=False)
    flows = [flow_row(ns, cl, f) | {"open": flow_open(f)} for f in bc.flows.store.list()
             if (f.get("spec") or {}).get("nodeName") == node]
    flows.sort(key=lambda r: (not r["open"], r["created"]))
    return faults, flows


def machine_view(cache: FleetCache, namespace: str, cluster: str, name: str) -> dict[str, Any] | None:
    bc = cache.cluster_cache(namespace, cluster)
    if bc is None:
        return None
    m = bc.machines.store.get_by_name(name)
    if m is None:
        return None
    spec, st = m.get("spec") or {}, m.get("status") or {}
    node = bc.nodes.store.get_by_name(str(spec.get("nodeName") or ""))
    gate_types = {g.get("conditionType") for g in spec.get("readinessGates") or []}
    faults, flows = node_faults(bc, str(spec.get("nodeName") or name))
    return {"cluster": cluster, "namespace": namespace, "name": name, "row": machine_row(m, node),
            "packages": spec.get("packages") or [], "components": st.get("components") or [],
            "conditions": [dict(c, gate=c.get("type") in gate_types) for c in st.get("conditions") or []],
            "failures": st.get("failures") or [],
            "nodeConditions": ((node or {}).get("status") or {}).get("conditions") or [],
            "faults": faults, "flows": flows,
            "labels": _meta(m).get("labels") or {}}


def risk_view(cache: FleetCache) -> dict[str, Any]:
    """Policies with their budgets (in use versus limit), gates and breakers, and permits by state."""
    policies = []
    for p in sorted(cache.objects("RiskPolicy"), key=lambda o: str(_meta(o).get("name"))):
        spec, st = p.get("spec") or {}, p.get("status") or {}
        policies.append({"name": _meta(p).get("name"), "operations": spec.get("operations") or [],
                         "paused": bool(spec.get("paused")), "maxConcurrent": spec.get("maxConcurrent"),
                         "maxUnavailable": spec.get("maxUnavailable"), "maxPerWindow": spec.get("maxPerWindow"),
                         "budgets": st.get("budgets") or [], "gates": st.get("gates") or [],
                         "breakers": [b for b in st.get("breakers") or []],
                         "valid": _cond(p, "Valid")})
    states: dict[str, int] = {}
    for p in cache.objects("Permit"):
        s = str((p.get("status") or {}).get("state") or "Pending")
        states[s] = states.get(s, 0) + 1
    return {"policies": policies, "permits": states,
            "paused": any(p["name"] == "kokpit-emergency-stop" and p["paused"] for p in policies)}


@dataclass
class Page:
    """What the base template needs besides the page's own data."""

    title: str
    user: str = ""
    csrf: str = ""
    watch: list[str] = field(default_factory=list)
