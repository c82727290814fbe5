"""kube-apiserver's table printers: the columns and cell logic of every built-in kind (a Pod's STATUS, a Node's
ROLES, ages like ``3m2s``) and of custom resources (their additionalPrinterColumns), in one dispatch table."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kokpit.apiserver.builtins import events_v1_to_core_event
from kokpit.apiserver.jsonpath import jsonpath_values
from kokpit.apiserver.resources import PrinterColumn, ResourceType
from kokpit.apiserver.selectors import label_selector_from_dict

__all__ = ["column_definitions", "human_duration", "printer_for"]

_Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------- durations


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: precise when young, coarse when old."""
    s = int(seconds)  # truncates toward zero, as Go's int(d.Seconds())
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    """translateTimestampSince: `<unknown>` for a zero timestamp."""
    t = _parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


def _age(obj: _Obj, now: datetime) -> str:
    return _since((obj.get("metadata") or {}).get("creationTimestamp"), now)


def _name(obj: _Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")



# ------------------------------------------------------------------------------------------- printers


@dataclass(frozen=True)
class _Printer:
    columns: tuple[PrinterColumn, ...]
    cells: Callable[[_Obj, datetime], list[Any]]
    conditions: Callable[[_Obj], list[_Obj]] | None = None


def _col(name: str, type_: str = "string", description: str = "", priority: int = 0,
         format_: str = "") -> PrinterColumn:
    return PrinterColumn(name=name, type=type_, format=format_, description=description, priority=priority)


_NAME_COL = _col("Name", format_="name", description="Name must be unique within a namespace.")
_AGE_COL = _col("Age", description="CreationTimestamp is a timestamp representing the server time when this "
                                   "object was created.")


def _containers_images(spec: _Obj) -> tuple[str, str]:
    containers = spec.get("containers") or []
    return (",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers))


def _format_labels(labels: dict[str, Any] | None) -> str:
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _selector_string(sel: Any) -> str:
    try:
        return str(label_selector_from_dict(sel if isinstance(sel, dict) else None))
    except Exception:
        return "<invalid>"


# --- pods


def _is_restartable_init(c: _Obj | None) -> bool:
    return bool(c) and c is not None and c.get("restartPolicy") == "Always"


def _cond_true(status: _Obj, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


def _later(a: datetime | None, b: Any) -> datetime | None:
    t = _parse_time(b)
    if t is None:
        return a
    return t if a is None or t > a else a


def _terminated_reason(term: _Obj, prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + str(term["reason"])
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode', 0)}"


def _pod_cells(pod: _Obj, now: datetime) -> list[Any]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    containers = spec.get("containers") or []
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(containers) + sum(1 for c in init_specs.values() if _is_restartable_init(c))
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    initializing = False
    n_init = len(spec.get("initContainers") or [])
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        last_term = (cs.get("lastState") or {}).get("terminated")
        restarts += int(cs.get("restartCount") or 0)
        if last_term:
            last_restart = _later(last_restart, last_term.get("finishedAt"))
        sidecar = _is_restartable_init(init_specs.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            if last_term:
                last_sidecar_restart = _later(last_sidecar_restart, last_term.get("finishedAt"))
        term = state.get("terminated")
        waiting = state.get("waiting")
        if term is not None and int(term.get("exitCode") or 0) == 0:
            continue
        if sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break

    if not initializing or _cond_true(status, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            restarts += int(cs.get("restartCount") or 0)
            last_term = (cs.get("lastState") or {}).get("terminated")
            if last_term:
                last_restart = _later(last_restart, last_term.get("finishedAt"))
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif term is not None:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _cond_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"

    ips = status.get("podIPs") or []
    pod_ip = (ips[0].get("ip") if ips and isinstance(ips[0], dict) else None) or status.get("podIP") or "<none>"
    gates = spec.get("readinessGates") or []
    gates_str = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in reversed(status.get("conditions") or [])}
        true = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gates_str = f"{true}/{len(gates)}"
    return [_name(pod), f"{ready}/{total}", reason, restarts_str, _age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gates_str]


def _pod_conditions(pod: _Obj) -> list[_Obj]:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


_POD = _Printer(
    (_NAME_COL,
     _col("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
     _col("Status", description="The aggregate status of the containers in this pod."),
     _col("Restarts", description="The number of times the containers in this pod have been restarted and "
                                  "when the last container in this pod has restarted."),
     _AGE_COL,
     _col("IP", priority=1, description="podIP address allocated to the pod."),
     _col("Node", priority=1, description="NodeName indicates in which node this pod is scheduled."),
     _col("Nominated Node", priority=1, description="nominatedNodeName is set when this pod preempts other "
                                                    "pods on the node."),
     _col("Readiness Gates", priority=1, description="If specified, all readiness gates will be evaluated "
                                                     "for pod readiness.")),
    _pod_cells, _pod_conditions)

# --- nodes


def _node_roles(labels: dict[str, Any]) -> str:
    roles = set()
    for k, v in labels.items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(str(v))
    return ",".join(sorted(roles)) or "<none>"


def _node_address(status: _Obj, type_: str) -> str:
    for a in status.get("addresses") or []:
        if a.get("type") == type_:
            return str(a.get("address") or "")
    return "<none>"


def _node_cells(node: _Obj, now: datetime) -> list[Any]:
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond
    states = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}
    return [_name(node), ",".join(states), _node_roles((node.get("metadata") or {}).get("labels") or {}),
            _age(node, now), info.get("kubeletVersion") or "",
            _node_address(status, "InternalIP"), _node_address(status, "ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


_NODE = _Printer(
    (_NAME_COL, _col("Status", description="The status of the node"),
     _col("Roles", description="The roles of the node"), _AGE_COL,
     _col("Version", description="Kubelet Version reported by the node."),
     _col("Internal-IP", priority=1, description="List of addresses reachable to the node."),
     _col("External-IP", priority=1, description="List of addresses reachable to the node."),
     _col("OS-Image", priority=1, description="OS Image reported by the node from /etc/os-release."),
     _col("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
     _col("Container-Runtime", priority=1, description="ContainerRuntime Version reported by the node.")),
    _node_cells)

# --- small core kinds

_NAMESPACE = _Printer(
    (_NAME_COL, _col("Status", description="The status of the namespace"), _AGE_COL),
    lambda o, now: [_name(o), (o.get("status") or {}).get("phase") or "", _age(o, now)])

_CONFIGMAP = _Printer(
    (_NAME_COL, _col("Data", "integer", "Data contains the configuration data."), _AGE_COL),
    lambda o, now: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o, now)])

_SECRET = _Printer(
    (_NAME_COL, _col("Type", description="Used to facilitate programmatic handling of secret data."),
     _col("Data", "integer", "Data contains the secret data."), _AGE_COL),
    lambda o, now: [_name(o), o.get("type") or "", len(o.get("data") or {}), _age(o, now)])

_SERVICEACCOUNT = _Printer(
    (_NAME_COL, _col("Secrets", "integer", "Secrets is a list of the secrets in the same namespace."),
     _AGE_COL),
    lambda o, now: [_name(o), len(o.get("secrets") or []), _age(o, now)])

_LEASE = _Printer(
    (_NAME_COL, _col("Holder", description="holderIdentity contains the identity of the holder of a current "
                                           "lease."), _AGE_COL),
    lambda o, now: [_name(o), (o.get("spec") or {}).get("holderIdentity") or "", _age(o, now)])

# --- services


def _service_external_ip(spec: _Obj, status: _Obj) -> str:
    type_ = spec.get("type") or "ClusterIP"
    external = [str(x) for x in spec.get("externalIPs") or []]
    if type_ in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if type_ == "LoadBalancer":
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        lb = [str(i.get("ip") or i.get("hostname") or "") for i in ingress]
        lb = [x for x in lb if x]
        return ",".join(lb + external) or "<pending>"
    if type_ == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_cells(svc: _Obj, now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or []
    cluster_ip = (ips[0] if ips else None) or spec.get("clusterIP") or "<none>"
    ports = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            ports.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            ports.append(f"{p.get('port')}/{proto}")
    return [_name(svc), spec.get("type") or "", cluster_ip, _service_external_ip(spec, svc.get("status") or {}),
            ",".join(ports) or "<none>", _age(svc, now), _format_labels(spec.get("selector"))]


_SERVICE = _Printer(
    (_NAME_COL, _col("Type", description="type determines how the Service is exposed."),
     _col("Cluster-IP", description="clusterIP is the IP address of the service."),
     _col("External-IP", description="externalIPs is a list of IP addresses for which nodes in the cluster "
                                     "will also accept traffic for this service."),
     _col("Port(s)", description="The list of ports that are exposed by this service."), _AGE_COL,
     _col("Selector", priority=1, description="Route service traffic to pods with label keys and values "
                                              "matching this selector.")),
    _service_cells)

# --- events


def _event_cells(ev: _Obj, now: datetime) -> list[Any]:
    if "regarding" in ev or str(ev.get("apiVersion", "")).startswith("events.k8s.io/"):
        ev = events_v1_to_core_event(ev)
    first = _since(ev.get("firstTimestamp"), now) if ev.get("firstTimestamp") else _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now) if ev.get("lastTimestamp") else first
    count = int(ev.get("count") or 0)
    series = ev.get("series")
    if series:
        last = _since(series.get("lastObservedTime"), now)
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    involved = ev.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingComponent") or ""
    instance = source.get("host") or ev.get("reportingInstance") or ""
    source_str = f"{component}, {instance}" if instance else component
    return [last, ev.get("type") or "", ev.get("reason") or "", target, involved.get("fieldPath") or "",
            source_str, str(ev.get("message") or "").strip(), first, count, _name(ev)]


_EVENT = _Printer(
    (_col("Last Seen", description="The time at which the most recent occurrence of this event was recorded."),
     _col("Type", description="Type of this event (Normal, Warning), new types could be added in the future"),
     _col("Reason", description="This should be a short, machine understandable string that gives the reason "
                                "for the transition into the object's current status."),
     _col("Object", description="The object that this event is about."),
     _col("Subobject", priority=1, description="The field of the object this event is about."),
     _col("Source", priority=1, description="The component reporting this event."),
     _col("Message", description="A human-readable description of the status of this operation."),
     _col("First Seen", priority=1, description="The time at which the event was first recorded."),
     _col("Count", "integer", priority=1, description="The number of times this event has occurred."),
     _col("Name", priority=1, format_="name", description="Name must be unique within a namespace.")),
    _event_cells)

# --- workloads


def _deployment_cells(d: _Obj, now: datetime) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    containers, images = _containers_images((spec.get("template") or {}).get("spec") or {})
    replicas = spec.get("replicas", 1)
    return [_name(d), f"{int(status.get('readyReplicas') or 0)}/{int(replicas or 0)}",
            int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0), _age(d, now),
            containers, images, _selector_string(spec.get("selector"))]


_DEPLOYMENT = _Printer(
    (_NAME_COL, _col("Ready", description="Number of the pod with ready state"),
     _col("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have "
                                   "the desired template spec."),
     _col("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) "
                                  "targeted by this deployment."), _AGE_COL,
     _col("Containers", priority=1, description="Names of each container in the template."),
     _col("Images", priority=1, description="Images referenced by each container in the template."),
     _col("Selector", priority=1, description="Label selector for pods.")),
    _deployment_cells)


def _statefulset_cells(s: _Obj, now: datetime) -> list[Any]:
    spec, status = s.get("spec") or {}, s.get("status") or {}
    containers, images = _containers_images((spec.get("template") or {}).get("spec") or {})
    replicas = spec.get("replicas", 1)
    return [_name(s), f"{int(status.get('readyReplicas') or 0)}/{int(replicas or 0)}", _age(s, now),
            containers, images]


_STATEFULSET = _Printer(
    (_NAME_COL, _col("Ready", description="Number of the pod with ready state"), _AGE_COL,
     _col("Containers", priority=1, description="Names of each container in the template."),
     _col("Images", priority=1, description="Images referenced by each container in the template.")),
    _statefulset_cells)


def _daemonset_cells(ds: _Obj, now: datetime) -> list[Any]:
    spec, status = ds.get("spec") or {}, ds.get("status") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers, images = _containers_images(pod_spec)
    return [_name(ds), int(status.get("desiredNumberScheduled") or 0),
            int(status.get("currentNumberScheduled") or 0), int(status.get("numberReady") or 0),
            int(status.get("updatedNumberScheduled") or 0), int(status.get("numberAvailable") or 0),
            _format_labels(pod_spec.get("nodeSelector")), _age(ds, now), containers, images,
            _selector_string(spec.get("selector"))]


_DAEMONSET = _Printer(
    (_NAME_COL,
     _col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
     _col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed "
                                "to run the daemon pod."),
     _col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or "
                              "more of the daemon pod running and ready."),
     _col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
     _col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or "
                                  "more of the daemon pod running and available."),
     _col("Node Selector", description="NodeSelector is a selector which must be true for the pod to fit on "
                                       "a node."), _AGE_COL,
     _col("Containers", priority=1, description="Names of each container in the template."),
     _col("Images", priority=1, description="Images referenced by each container in the template."),
     _col("Selector", priority=1, description="A label query over pods that are managed by the daemon set.")),
    _daemonset_cells)


def _replicaset_cells(rs: _Obj, now: datetime) -> list[Any]:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    containers, images = _containers_images((spec.get("template") or {}).get("spec") or {})
    return [_name(rs), int(spec.get("replicas", 1) or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), _age(rs, now), containers, images,
            _selector_string(spec.get("selector"))]


_REPLICASET = _Printer(
    (_NAME_COL, _col("Desired", "integer", "Number of desired pods."),
     _col("Current", "integer", "Number of actual replicas."),
     _col("Ready", "integer", "Number of ready replicas."), _AGE_COL,
     _col("Containers", priority=1, description="Names of each container in the template."),
     _col("Images", priority=1, description="Images referenced by each container in the template."),
     _col("Selector", priority=1, description="Label selector for pods.")),
    _replicaset_cells)


def _job_cells(job: _Obj, now: datetime) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    state = ("Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True"
             else "Suspended" if conds.get("Suspended") == "True" else "Running")
    completions = spec.get("completions")
    done = f"{int(status.get('succeeded') or 0)}/{completions if completions is not None else 1}"
    start, end = _parse_time(status.get("startTime")), _parse_time(status.get("completionTime"))
    duration = human_duration(((end or now) - start).total_seconds()) if start else ""
    containers, images = _containers_images((spec.get("template") or {}).get("spec") or {})
    return [_name(job), state, done, duration, _age(job, now), containers, images,
            _selector_string(spec.get("selector"))]


_JOB = _Printer(
    (_NAME_COL, _col("Status", description="Status of the job."),
     _col("Completions", description="The desired number of successfully finished pods the job should be "
                                     "run with."),
     _col("Duration", description="Time required to complete the job."), _AGE_COL,
     _col("Containers", priority=1, description="Names of each container in the template."),
     _col("Images", priority=1, description="Images referenced by each container in the template."),
     _col("Selector", priority=1, description="Label selector for pods.")),
    _job_cells)


def _pdb_cells(pdb: _Obj, now: datetime) -> list[Any]:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    def show(v: Any) -> str:
        return "N/A" if v is None else str(v)
    return [_name(pdb), show(spec.get("minAvailable")), show(spec.get("maxUnavailable")),
            int(status.get("disruptionsAllowed") or 0), _age(pdb, now)]


_PDB = _Printer(
    (_NAME_COL, _col("Min Available", description="The minimum number of pods that must be available."),
     _col("Max Unavailable", description="The maximum number of pods that may be unavailable."),
     _col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
     _AGE_COL),
    _pdb_cells)


_PRIORITYCLASS = _Printer(
    (_NAME_COL, _col("Value", "integer", "Value is the integer value of this priority class."),
     _col("Global-Default", "boolean", "GlobalDefault specifies whether this PriorityClass should be considered "
                                       "as the default priority."), _AGE_COL,
     _col("PreemptionPolicy", description="PreemptionPolicy is the Policy for preempting pods with lower "
                                           "priority.")),
    lambda pc, now: [_name(pc), int(pc.get("value") or 0), bool(pc.get("globalDefault")), _age(pc, now),
                     pc.get("preemptionPolicy") or ""])


def _pvc_cells(pvc: _Obj, now: datetime) -> list[Any]:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    capacity = str((status.get("capacity") or {}).get("storage") or "")
    modes = ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                      "ReadWriteOncePod": "RWOP"}.get(m, m) for m in status.get("accessModes") or [])
    return [_name(pvc), status.get("phase") or "", spec.get("volumeName") or "", capacity, modes,
            spec.get("storageClassName") or "", spec.get("volumeAttributesClassName") or "<unset>", _age(pvc, now),
            spec.get("volumeMode") or ""]


_PVC = _Printer(
    (_NAME_COL, _col("Status", description="Phase represents the current phase of PersistentVolumeClaim."),
     _col("Volume", description="VolumeName is the binding reference to the PersistentVolume backing this "
                                "claim."),
     _col("Capacity", description="Capacity represents the actual resources of the underlying volume."),
     _col("Access Modes", description="AccessModes contains the actual access modes the volume backing the PVC "
                                      "has."),
     _col("StorageClass", description="StorageClassName is the name of the StorageClass required by the claim."),
     _col("VolumeAttributesClass", description="Name of the VolumeAttributesClass used by this claim."),
     _AGE_COL,
     _col("VolumeMode", priority=1, description="volumeMode defines what type of volume is required by the "
                                                "claim.")),
    _pvc_cells)


def _created_at(obj: _Obj) -> str | None:
    t = _parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


_CRD = _Printer(
    (_NAME_COL, _col("Created At", "date", "CreationTimestamp is a timestamp representing the server time "
                                           "when this object was created.")),
    lambda o, now: [_name(o), _created_at(o)])

_PRINTERS: dict[tuple[str, str], _Printer] = {
    ("", "Pod"): _POD,
    ("", "Node"): _NODE,
    ("", "Namespace"): _NAMESPACE,
    ("", "ConfigMap"): _CONFIGMAP,
    ("", "Secret"): _SECRET,
    ("", "Service"): _SERVICE,
    ("", "ServiceAccount"): _SERVICEACCOUNT,
    ("", "Event"): _EVENT,
    ("events.k8s.io", "Event"): _EVENT,
    ("coordination.k8s.io", "Lease"): _LEASE,
    ("apps", "Deployment"): _DEPLOYMENT,
    ("apps", "StatefulSet"): _STATEFULSET,
    ("apps", "DaemonSet"): _DAEMONSET,
    ("apps", "ReplicaSet"): _REPLICASET,
    ("batch", "Job"): _JOB,
    ("policy", "PodDisruptionBudget"): _PDB,
    ("scheduling.k8s.io", "PriorityClass"): _PRIORITYCLASS,
    ("", "PersistentVolumeClaim"): _PVC,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _CRD,
}

# --- custom resources

_DEFAULT_CR_COLUMNS = (PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp",
                                     description=_AGE_COL.description),)


def _json_cell(col: PrinterColumn, value: Any, now: datetime) -> Any:
    """kube's cellForJSONValue: a typed cell, or None when the value does not fit the column type."""
    if value is None:
        return None
    t = col.type
    if t == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, int | float):
            return str(value)
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if t == "integer":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return None
    if t == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if t == "boolean":
        return value if isinstance(value, bool) else None
    if t == "date":
        if isinstance(value, str):
            parsed = _parse_time(value)
            if parsed is None:
                return "<invalid>"
            return human_duration((now - parsed).total_seconds())
        return None
    return None


def _custom_printer(rt: ResourceType) -> _Printer:
    columns = rt.printer_columns or _DEFAULT_CR_COLUMNS

    def cells(obj: _Obj, now: datetime) -> list[Any]:
        out: list[Any] = [_name(obj)]
        for col in columns:
            try:
                found = jsonpath_values(obj, col.json_path)
            except ValueError:
                found = []
            out.append(_json_cell(col, found[0], now) if found else None)
        return out

    return _Printer((_NAME_COL, *columns), cells)


def printer_for(rt: ResourceType) -> _Printer:
    if rt.table_cells is not None:
        fn = rt.table_cells
        return _Printer(rt.printer_columns, lambda obj, _now: fn(obj))
    if rt.crd_name is None:
        printer = _PRINTERS.get((rt.group, rt.kind))
        if printer is not None:
            return printer
    return _custom_printer(rt)


def column_definitions(rt: ResourceType) -> list[_Obj]:
    """The Table columnDefinitions for `rt` (also what a watch's first event carries)."""
    return [{"name": c.name, "type": c.type, "format": c.format, "description": c.description,
             "priority": c.priority} for c in printer_for(rt).columns]
