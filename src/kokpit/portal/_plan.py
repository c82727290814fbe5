"""Pure decisions of the change process: validating a request, planning it, judging its progress.

No I/O here: every function takes the objects it needs (from the caches), so the rules are unit-tested
without a server and the portal's handlers stay thin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.change import ChangeOperation
from kokpit.api.fault import fault_name

__all__ = ["DEFAULT_APPROVALS", "NODE_OPERATIONS", "RISK_OPERATION", "BadChange", "Progress", "approvals_required",
           "plan", "progress", "requested_fault", "restart_patch", "upgraded_from", "validate"]

Obj = dict[str, Any]

# how many people other than the author must approve, per operation (a ConfigMap may override)
DEFAULT_APPROVALS: dict[str, int] = {op.value: 1 for op in ChangeOperation} | {
    ChangeOperation.NODE_REBOOT.value: 0, ChangeOperation.COMPONENT_RESTART.value: 0}
# the risk-center operation each change draws its budget from ("" for none)
RISK_OPERATION: dict[str, str] = {
    ChangeOperation.CONTROL_PLANE_RELEASE.value: "control-plane-release",
    ChangeOperation.CONTROL_PLANE_RESTART.value: "control-plane-release",  # what the cluster operator asks per Pod
    ChangeOperation.COMPONENT_UPGRADE.value: "component-upgrade",
    ChangeOperation.NODE_REBOOT.value: "node-reboot",
    ChangeOperation.NODE_REINSTALL.value: "node-reinstall",
    ChangeOperation.COMPONENT_RESTART.value: "component-upgrade",  # what the flow's ComponentRestart repair asks
    ChangeOperation.CLUSTER_CREATE.value: "",
}
# node operations are repairs a person asks for: a NodeFault of this type (the fault catalog routes it to its
# maintenance flow), reported with a Person source naming the change, per target node
NODE_OPERATIONS: dict[str, str] = {
    ChangeOperation.NODE_REBOOT.value: "reboot-requested",
    ChangeOperation.NODE_REINSTALL.value: "reinstall-requested",
    ChangeOperation.COMPONENT_RESTART.value: "component-restart-requested",
}
_MACHINE_OPS = (ChangeOperation.COMPONENT_UPGRADE, ChangeOperation.NODE_REBOOT, ChangeOperation.NODE_REINSTALL,
                ChangeOperation.COMPONENT_RESTART)


def requested_fault(spec: Obj, machine: Obj | None, target: str) -> tuple[str, str, str]:
    """(node, fault type, NodeFault name) a node operation reports for ``target`` (a Machine name)."""
    op = str(spec.get("operation") or "")
    node = str(((machine or {}).get("spec") or {}).get("nodeName") or target)
    comp = str(spec.get("component") or "") if op == ChangeOperation.COMPONENT_RESTART else ""
    ftype = NODE_OPERATIONS[op]
    return node, ftype, fault_name(node, ftype, comp)


class BadChange(ValueError):
    """A change that cannot be planned: ``field`` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def approvals_required(operation: str, policy: dict[str, str] | None) -> int:
    raw = (policy or {}).get(operation)
    if raw is not None:
        try:
            return max(0, int(raw))
        except ValueError:
            pass
    return DEFAULT_APPROVALS.get(operation, 1)


def _component_of(mpvs: dict[str, Obj], name: str) -> str:
    return str(((mpvs.get(name) or {}).get("spec") or {}).get("component") or "")


def _listed_once_and_known(targets: list[str], known: dict[str, Obj], kind: str, where: str) -> None:
    if len(set(targets)) != len(targets):
        raise BadChange("spec.targets", "a target is listed twice")
    missing = [t for t in targets if t not in known]
    if missing:
        raise BadChange("spec.targets", f"no {kind} {', '.join(missing[:5])} {where}")


def _validate_wave(spec: Obj, clusters: dict[str, Obj], cpvs: set[str]) -> None:
    """A release of several Clusters (``targets``: Cluster names in the change's namespace)."""
    targets = list(spec.get("targets") or [])
    if spec.get("cluster"):
        raise BadChange("spec.cluster", "name the Clusters either in cluster (one) or in targets (several), "
                        "not both")
    _listed_once_and_known(targets, clusters, "Cluster", "in this namespace")
    if spec.get("version") not in cpvs:
        raise BadChange("spec.version", f"no ClusterPackageVersion {spec.get('version')!r}; releases: "
                        + (", ".join(sorted(cpvs)) or "none"))
    there = [t for t in targets if (clusters[t].get("spec") or {}).get("packageVersion") == spec.get("version")]
    if len(there) == len(targets):
        raise BadChange("spec.version", f"every Cluster listed already wants {spec.get('version')}")


def restart_patch(component: str, asked_at: str) -> Obj:
    """The declarative form of "restart control-plane component C": the Cluster's
    ``spec.controlPlane.restartedAt[C]``, which the cluster operator treats as kubectl treats a Pod template's
    ``restartedAt`` — every replica outdated, replaced one at a time through the risk center.  The time is
    the change's own creation time, so writing it again (a retried approval) restarts nothing twice."""
    return {"spec": {"controlPlane": {"restartedAt": {component: asked_at}}}}


def _validate_restart(spec: Obj, cluster: Obj, components: set[str] | None) -> None:
    comp, name = str(spec.get("component") or ""), spec.get("cluster")
    if not comp:
        raise BadChange("spec.component", "say which control-plane component to restart (kube-apiserver, ...)")
    if components is None:
        raise BadChange("spec.cluster", f"the release Cluster {name} runs is not known to the portal yet: its "
                        "components cannot be checked")
    if comp not in components:
        raise BadChange("spec.component", f"Cluster {name} runs no control-plane component {comp!r}; its "
                        f"components: {', '.join(sorted(components)) or 'none'}")
    if comp == "etcd":
        raise BadChange("spec.component", "etcd members are replaced by the cluster operator's membership walk "
                        "(remove and add, one at a time), not restarted; restart kube-apiserver or another "
                        "component")
    if (cluster.get("spec") or {}).get("paused"):
        raise BadChange("spec.cluster", f"Cluster {name} is paused (spec.paused): the cluster operator would not "
                        "act on the restart; resume it first")


def validate(spec: Obj, *, cluster: Obj | None, cpvs: set[str], machines: dict[str, Obj] | None,
             mpvs: dict[str, Obj] | None, clusters: dict[str, Obj] | None = None,
             components: set[str] | None = None) -> None:
    """Refuse what cannot be done, naming the field (the API server's CEL rules catch missing fields);
    ``components``: those of the release the Cluster wants (a control-plane restart names one)."""
    op = str(spec.get("operation") or "")
    if op not in {o.value for o in ChangeOperation}:
        raise BadChange("spec.operation", f"unknown operation {op!r}; one of "
                        + ", ".join(o.value for o in ChangeOperation))
    if op == ChangeOperation.CONTROL_PLANE_RELEASE and spec.get("targets"):
        _validate_wave(spec, clusters or {}, cpvs)
        return
    if op == ChangeOperation.CLUSTER_CREATE:
        if cluster is not None:
            raise BadChange("spec.cluster", f"Cluster {spec.get('cluster')!r} already exists")
    elif cluster is None:
        raise BadChange("spec.cluster", f"no Cluster {spec.get('cluster')!r} in this namespace")
    if op in (ChangeOperation.CONTROL_PLANE_RELEASE, ChangeOperation.CLUSTER_CREATE):
        if spec.get("version") not in cpvs:
            raise BadChange("spec.version", f"no ClusterPackageVersion {spec.get('version')!r}; releases: "
                            + (", ".join(sorted(cpvs)) or "none"))
        if op == ChangeOperation.CONTROL_PLANE_RELEASE and cluster is not None and \
                (cluster.get("spec") or {}).get("packageVersion") == spec.get("version"):
            raise BadChange("spec.version", f"Cluster {spec.get('cluster')} already wants {spec.get('version')}")
    if op == ChangeOperation.CONTROL_PLANE_RESTART and cluster is not None:
        _validate_restart(spec, cluster, components)
    targets = list(spec.get("targets") or [])
    if op in _MACHINE_OPS:
        if machines is None:
            raise BadChange("spec.cluster", f"the API server of Cluster {spec.get('cluster')} is not readable "
                            "yet: its Machines cannot be checked")
        _listed_once_and_known(targets, machines, "Machine", f"in Cluster {spec.get('cluster')}")
    if op == ChangeOperation.COMPONENT_UPGRADE:
        assert mpvs is not None and machines is not None
        comp, version = str(spec.get("component") or ""), str(spec.get("version") or "")
        if version not in mpvs:
            known = sorted(n for n in mpvs if _component_of(mpvs, n) == comp)
            raise BadChange("spec.version", f"no MachinePackageVersion {version!r} in Cluster "
                            f"{spec.get('cluster')}; of {comp}: {', '.join(known) or 'none'}")
        if _component_of(mpvs, version) != comp:
            raise BadChange("spec.version", f"MachinePackageVersion {version} is of component "
                            f"{_component_of(mpvs, version)!r}, not {comp!r}")
        lacking = [t for t in targets if not any(_component_of(mpvs, p) == comp
                                                 for p in (machines[t].get("spec") or {}).get("packages") or [])]
        if lacking:
            raise BadChange("spec.targets", f"{', '.join(lacking[:5])} run no {comp}: nothing to upgrade there")
        olds = upgraded_from(spec, machines, mpvs)
        if not olds:
            raise BadChange("spec.version", f"every target already runs {version}: nothing to upgrade")
        if len(olds) > 1:
            raise BadChange("spec.targets", f"the targets run different {comp} packages ({', '.join(sorted(olds))}): "
                            "a change replaces one package by another; plan one change per package")
    if op == ChangeOperation.COMPONENT_RESTART:
        assert machines is not None
        comp = str(spec.get("component") or "")
        if not comp:
            raise BadChange("spec.component", "say which component to restart (kubelet, containerd, ...)")
        lacking = [t for t in targets if comp not in
                   {str(c.get("name")) for c in (machines[t].get("status") or {}).get("components") or []}
                   | {_component_of(mpvs or {}, p) for p in (machines[t].get("spec") or {}).get("packages") or []}]
        if lacking:
            raise BadChange("spec.targets", f"{', '.join(lacking[:5])} run no {comp}: nothing to restart there")


def upgraded_from(spec: Obj, machines: dict[str, Obj], mpvs: dict[str, Obj]) -> set[str]:
    """The MachinePackageVersions of the component the targets run now (other than the one wanted)."""
    comp, version = str(spec.get("component") or ""), str(spec.get("version") or "")
    return {p for t in spec.get("targets") or [] if t in machines
            for p in (machines[t].get("spec") or {}).get("packages") or []
            if _component_of(mpvs, p) == comp and p != version}


def _limit(value: Any, total: int) -> int | None:
    if value is None:
        return None
    s = str(value)
    if s.endswith("%"):
        return max(1, math.floor(total * float(s[:-1]) / 100)) if float(s[:-1]) > 0 else 0
    return int(s)


def plan(spec: Obj, *, namespace: str, policies: list[Obj], nodes_in_cluster: int) -> Obj:
    """What the change touches, how many batches the covering risk budgets allow, and which budget it uses."""
    op = str(spec["operation"])
    cluster = str(spec.get("cluster") or "")
    targets = list(spec.get("targets") or [])
    touches: list[Obj]
    if op in _MACHINE_OPS:
        touches = [{"kind": "Machine", "name": t, "cluster": cluster} for t in targets]
        units, pool = len(targets), max(nodes_in_cluster, len(targets))
    elif op == ChangeOperation.CONTROL_PLANE_RELEASE and targets:
        touches = [{"kind": "Cluster", "name": t, "namespace": namespace} for t in targets]
        units, pool = len(targets), len(targets)
        cluster = f"{units} Clusters ({', '.join(targets[:3])}{', ...' if units > 3 else ''})"
    else:
        touches = [{"kind": "Cluster", "name": cluster, "namespace": namespace}]
        units, pool = 1, 1
    risk_op = RISK_OPERATION.get(op, "")
    covering = [p for p in policies if risk_op and risk_op in ((p.get("spec") or {}).get("operations") or [])]
    limits = [x for x in (_limit((p.get("spec") or {}).get("maxConcurrent"), pool) for p in covering) if x]
    batch = min([units, *limits]) if units else 0
    names = ", ".join(sorted(str((p.get("metadata") or {}).get("name")) for p in covering)) or "no policy"
    what = {ChangeOperation.CONTROL_PLANE_RELEASE: f"release Cluster {cluster} to {spec.get('version')}",
            ChangeOperation.CLUSTER_CREATE: f"create Cluster {cluster} on {spec.get('version')} with "
                                            f"{spec.get('nodes') or 0} nodes",
            ChangeOperation.COMPONENT_UPGRADE: f"upgrade {spec.get('component')} to {spec.get('version')} on "
                                               f"{units} node(s) of {cluster}",
            ChangeOperation.NODE_REBOOT: f"reboot {units} node(s) of {cluster}",
            ChangeOperation.NODE_REINSTALL: f"reinstall {units} node(s) of {cluster}",
            ChangeOperation.COMPONENT_RESTART: f"restart {spec.get('component')} on {units} node(s) of {cluster}",
            ChangeOperation.CONTROL_PLANE_RESTART: f"restart {spec.get('component')} of Cluster {cluster}: "
                                                   f"spec.controlPlane.restartedAt.{spec.get('component')} set at "
                                                   "approval; the cluster operator replaces its Pods one at a "
                                                   "time, each with a control-plane-release permit",
            }.get(ChangeOperation(op), op)
    return {"touches": touches[:200], "batches": math.ceil(units / batch) if batch else (1 if units else 0),
            "batchSize": batch, "budget": f"{risk_op}: {names}" if risk_op else "none (not a risky operation)",
            "summary": what}


@dataclass
class Progress:
    done: int = 0
    failed: list[str] = field(default_factory=list)
    total: int = 0
    messages: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # targets a person must finish (ManualRequired)
    started: set[str] = field(default_factory=set)  # node operations: targets whose request was reported

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done + len(self.failed) >= self.total


def _ready(obj: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _node_progress(spec: Obj, machines: dict[str, Obj] | None, faults: dict[str, Obj], flows: dict[str, Obj],
                   reporter: str, recorded: set[str]) -> Progress:
    """A node operation's targets: started once its request was reported (recorded in the change's objects, or
    the change's reporter among the fault's sources), done when the flow resolved that fault, failed when the
    fault expired or was refused, waiting while its flow needs a person."""
    targets = list(spec.get("targets") or [])
    p = Progress(total=len(targets))
    for t in targets:
        _node, _type, name = requested_fault(spec, (machines or {}).get(t), t)
        f = faults.get(name)
        st = (f or {}).get("status") or {}
        ours = any(s.get("reporter") == reporter for s in st.get("sources") or [])
        if name not in recorded and not ours:
            continue
        p.started.add(t)
        if f is None or not ours:
            continue  # reported, not in the cache yet (or a newer episode by someone else: wait for it)
        state = st.get("state")
        flow = flows.get(str(st.get("maintenanceFlow") or ""))
        if state == "Resolved":
            p.done += 1
        elif state in ("Expired", "Invalid"):
            p.failed.append(t)
            why = next((c.get("message") for c in st.get("conditions") or [] if c.get("type") == "Accepted"
                        and c.get("status") == "False"), "") or f"the request {state.lower()} before a flow took it"
            p.messages.append(f"{t}: {why}")
        elif flow is not None and _is(flow, "ManualRequired"):
            p.waiting.append(t)
            p.messages.append(f"{t}: maintenance flow {flow['metadata']['name']} waits for a person "
                              "(resolve or retry it on the Faults and flows page)")
    return p


def _is(obj: Obj, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _restart_progress(spec: Obj, cluster: Obj | None, asked_at: str) -> Progress:
    """Done once the component's status row says every replica runs a restart asked at (or after) this
    change's time and is healthy: the cluster operator's own report, nothing remembered here."""
    p = Progress(total=1)
    if cluster is None:
        p.messages.append("the Cluster does not exist")
        return p
    row: Obj = next((r for r in (cluster.get("status") or {}).get("components") or []
                     if r.get("name") == spec.get("component")), {})
    ran = str(row.get("restartedAt") or "")
    if asked_at and ran >= asked_at and row.get("healthy"):
        p.done = 1
    elif row.get("message"):
        p.messages.append(f"{spec.get('component')}: {row['message']}")
    return p


def progress(spec: Obj, *, cluster: Obj | None, machines: dict[str, Obj] | None,
             faults: dict[str, Obj] | None = None, flows: dict[str, Obj] | None = None, reporter: str = "",
             recorded: set[str] | None = None, asked_at: str = "") -> Progress:
    """How far an executing change got, from the targets' own status (level-triggered: no memory needed);
    ``asked_at``: the change's creation time (a control-plane restart's stamp)."""
    op = str(spec["operation"])
    if op == ChangeOperation.CONTROL_PLANE_RESTART:
        return _restart_progress(spec, cluster, asked_at)
    if op in NODE_OPERATIONS:
        return _node_progress(spec, machines, faults or {}, flows or {}, reporter, recorded or set())
    if op in (ChangeOperation.CONTROL_PLANE_RELEASE, ChangeOperation.CLUSTER_CREATE):
        p = Progress(total=1)
        st = (cluster or {}).get("status") or {}
        if cluster is None:
            p.messages.append("the Cluster does not exist (yet)")
        elif st.get("failedPackageVersion") == spec.get("version"):
            p.failed.append(str(spec.get("cluster")))
            p.messages.append(f"release {spec.get('version')} failed its post-check and was rolled back")
        elif st.get("packageVersion") == spec.get("version") and _ready(cluster):
            p.done = 1
        return p
    if op == ChangeOperation.COMPONENT_UPGRADE:
        targets = list(spec.get("targets") or [])
        p = Progress(total=len(targets))
        comp, version = spec.get("component"), spec.get("version")
        for t in targets:
            m = (machines or {}).get(t)
            if m is None:
                continue
            st = m.get("status") or {}
            row: Obj = next((c for c in st.get("components") or [] if c.get("name") == comp), {})
            fails = next((f for f in st.get("failures") or [] if f.get("name") == f"install/{comp}"), None)
            if row.get("packageVersion") == version and row.get("installState") == "Installed":
                p.done += 1
            elif fails is not None and int(fails.get("count") or 0) >= 3:
                p.failed.append(t)
                p.messages.append(f"{t}: {fails.get('message') or 'install failing'}")
        return p
    return Progress(total=0)
