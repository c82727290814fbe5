"""The built-in kinds the embedded server serves, described as kube-apiserver describes them.

kubectl, the official client, lightkube and kopf decide what to do from discovery (verbs, short names,
categories, subresources), from the fields they may select on, and from the defaults the server fills in
(a Pod read back has `restartPolicy: Always`, a Secret has `type: Opaque`). Keeping all of that for the
built-in kinds in one catalogue means every layer reads the same facts, and the facts are checked here against
what a real server answers.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from kokpit.apiserver import semantics
from kokpit.apiserver.resources import ALL_VERBS, ResourceType

__all__ = [
    "builtin_resource_types",
    "core_event_to_events_v1",
    "default_daemonset",
    "default_deployment",
    "default_namespace",
    "default_node",
    "default_pod",
    "default_pod_spec",
    "default_secret",
    "default_service",
    "default_statefulset",
    "events_v1_to_core_event",
    "path_getter",
    "pod_qos_class",
    "subresource_info",
]

_Obj = dict[str, Any]
_Getter = Callable[[_Obj], str]

# ------------------------------------------------------------------------------------- field selectors


def path_getter(*path: str) -> _Getter:
    """A field selector value: the scalar at ``path`` as kube formats it (booleans ``true``/``false``,
    integers in decimal), ``""`` when absent (CRD selectableFields evaluate an absent field the same way)."""

    def get(obj: _Obj) -> str:
        cur: Any = obj
        for p in path:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(p)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


def _bool_getter(*path: str) -> _Getter:
    inner = path_getter(*path)

    def get(obj: _Obj) -> str:
        return inner(obj) or "false"

    return get


def _pod_ip(obj: _Obj) -> str:
    status = obj.get("status") or {}
    ips = status.get("podIPs") or []
    if ips and isinstance(ips[0], dict) and ips[0].get("ip"):
        return str(ips[0]["ip"])
    return str(status.get("podIP") or "")


_POD_FIELDS: dict[str, _Getter] = {
    "spec.nodeName": path_getter("spec", "nodeName"),
    "spec.restartPolicy": path_getter("spec", "restartPolicy"),
    "spec.schedulerName": path_getter("spec", "schedulerName"),
    "spec.serviceAccountName": path_getter("spec", "serviceAccountName"),
    "spec.hostNetwork": _bool_getter("spec", "hostNetwork"),
    "status.phase": path_getter("status", "phase"),
    "status.podIP": _pod_ip,
    "status.nominatedNodeName": path_getter("status", "nominatedNodeName"),
}


def _core_event_source(obj: _Obj) -> str:
    return path_getter("source", "component")(obj) or str(obj.get("reportingComponent") or "")


_INVOLVED_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")

_CORE_EVENT_FIELDS: dict[str, _Getter] = {
    **{f"involvedObject.{f}": path_getter("involvedObject", f) for f in _INVOLVED_FIELDS},
    "reason": path_getter("reason"),
    "reportingComponent": path_getter("reportingComponent"),
    "source": _core_event_source,
    "type": path_getter("type"),
}


def _either(served: tuple[str, ...], stored: tuple[str, ...]) -> _Getter:
    """A getter for the events.k8s.io view that also works on the stored core/v1 form."""
    a, b = path_getter(*served), path_getter(*stored)

    def get(obj: _Obj) -> str:
        return a(obj) if served[0] in obj else b(obj)

    return get


# events.k8s.io/v1 accepts the same selectors under its own field names (kube's field label conversion).
_EVENTS_V1_FIELDS: dict[str, _Getter] = {
    **{f"regarding.{f}": _either(("regarding", f), ("involvedObject", f)) for f in _INVOLVED_FIELDS},
    "reason": path_getter("reason"),
    "reportingController": _either(("reportingController",), ("reportingComponent",)),
    "type": path_getter("type"),
}

_SERVICE_FIELDS: dict[str, _Getter] = {
    "spec.clusterIP": path_getter("spec", "clusterIP"),
    "spec.type": path_getter("spec", "type"),
}

# ------------------------------------------------------------------------------------- events view

# (events.k8s.io/v1 field, core/v1 field); the rest (eventTime, series, action, reason, related, type,
# reportingInstance, metadata) share names.
_EVENT_RENAMES = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
)
_V1_TO_CORE = dict(_EVENT_RENAMES)
_CORE_TO_V1 = {c: v for v, c in _EVENT_RENAMES}


def events_v1_to_core_event(obj: _Obj) -> _Obj:
    """events.k8s.io/v1 Event → the stored core/v1 Event (field by field, as kube converts)."""
    out: _Obj = {"apiVersion": "v1", "kind": "Event"}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or key in _CORE_TO_V1:
            continue  # core-only names never appear in a valid events.k8s.io object
        out[_V1_TO_CORE.get(key, key)] = copy.deepcopy(value)
    return out


def core_event_to_events_v1(obj: _Obj) -> _Obj:
    """Stored core/v1 Event → events.k8s.io/v1 Event."""
    out: _Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or key in _V1_TO_CORE:
            continue
        out[_CORE_TO_V1.get(key, key)] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------------- defaulting

_MEMORY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
                   "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
                   "P": Fraction(10**15), "E": Fraction(10**18)}


def _quantity(q: Any) -> Fraction | None:
    """A resource.Quantity as an exact number (None when unparsable; validation reports that)."""
    if isinstance(q, bool):
        return None
    if isinstance(q, int | float):
        return Fraction(q)
    s = str(q).strip()
    try:
        for suffix, mult in _MEMORY_SUFFIX.items():
            if s.endswith(suffix):
                return Fraction(s[: -len(suffix)]) * mult
        if "e" in s.lower() and not s.endswith(("e", "E")):
            return Fraction(s)
        if s and s[-1] in _DECIMAL_SUFFIX:
            return Fraction(s[:-1]) * _DECIMAL_SUFFIX[s[-1]]
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def pod_qos_class(pod: _Obj) -> str:
    """Guaranteed / Burstable / BestEffort, computed like kube's GetPodQOS (cpu and memory only)."""
    spec = pod.get("spec") or {}
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        res = c.get("resources") or {}
        for name, q in (res.get("requests") or {}).items():
            v = _quantity(q)
            if name in ("cpu", "memory") and v:
                requests[name] = requests.get(name, Fraction(0)) + v
        found: set[str] = set()
        for name, q in (res.get("limits") or {}).items():
            v = _quantity(q)
            if name in ("cpu", "memory") and v:
                found.add(name)
                limits[name] = limits.get(name, Fraction(0)) + v
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(k) == v for k, v in requests.items()) and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged, undigested image; IfNotPresent otherwise (kube's rule)."""
    name, at, _digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    if not tag and not at:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if isinstance(probe, dict):
        probe.setdefault("timeoutSeconds", 1)
        probe.setdefault("periodSeconds", 10)
        probe.setdefault("successThreshold", 1)
        probe.setdefault("failureThreshold", 3)


def _default_container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if not c.get("imagePullPolicy") and isinstance(c.get("image"), str):
        c["imagePullPolicy"] = _image_pull_policy(c["image"])
    res = c.setdefault("resources", {})
    if isinstance(res, dict) and isinstance(res.get("limits"), dict):
        # requests default to limits, which is what makes a limits-only pod Guaranteed
        requests = res.setdefault("requests", {})
        if isinstance(requests, dict):
            for k, v in res["limits"].items():
                requests.setdefault(k, v)
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))


def default_pod_spec(spec: _Obj) -> None:
    """PodSpec defaults that clients read back (also applied to workload templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            _default_container(c)


_DEFAULT_TOLERATION_KEYS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _default_toleration_seconds(spec: _Obj) -> None:
    """The DefaultTolerationSeconds admission plugin (on by default in kube): a new pod tolerates its node
    being not-ready or unreachable for 300 s, then the node lifecycle controller's taint eviction removes
    it, unless it says otherwise."""
    tolerations = spec.setdefault("tolerations", [])
    if not isinstance(tolerations, list):
        return
    for key in _DEFAULT_TOLERATION_KEYS:
        if any(isinstance(t, dict) and (t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"))
               and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            continue
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})


def default_pod(pod: _Obj) -> None:
    spec = pod.setdefault("spec", {})
    if isinstance(spec, dict):
        default_pod_spec(spec)
        if not (pod.get("metadata") or {}).get("uid"):  # admission runs on create only
            _default_toleration_seconds(spec)
    status = pod.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")
        if "qosClass" not in status:
            status["qosClass"] = pod_qos_class(pod)


def _default_template(obj: _Obj) -> None:
    template = (obj.get("spec") or {}).get("template")
    spec = template.get("spec") if isinstance(template, dict) else None
    if isinstance(spec, dict):
        default_pod_spec(spec)


def default_node(node: _Obj) -> None:
    status = node.get("status")
    if isinstance(status, dict) and "capacity" in status and "allocatable" not in status:
        status["allocatable"] = copy.deepcopy(status["capacity"])


def default_namespace(ns: _Obj) -> None:
    # spec.finalizers ["kubernetes"] is left out on purpose: nothing here would remove it.
    name = (ns.get("metadata") or {}).get("name")
    if name:
        ns["metadata"].setdefault("labels", {}).setdefault("kubernetes.io/metadata.name", name)
    status = ns.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Active")


def default_secret(secret: _Obj) -> None:
    """``type`` Opaque; ``stringData`` merged into ``data`` (base64, winning over data for the same key) and
    dropped, as kube-apiserver converts it on every write: it is write-only and never stored.  A stringData
    that is not a map of strings stays for validation to refuse."""
    if not secret.get("type"):
        secret["type"] = "Opaque"
    sd = secret.get("stringData")
    if isinstance(sd, dict) and all(isinstance(v, str) for v in sd.values()):
        data = secret.get("data")
        data = dict(data) if isinstance(data, dict) else {}
        for k, v in sd.items():
            data[k] = base64.b64encode(v.encode()).decode()
        secret["data"] = data
        del secret["stringData"]
    elif sd is None:
        secret.pop("stringData", None)


def default_service(svc: _Obj) -> None:
    """Service defaults; cluster IPs and IP families are the allocator's business, not defaulting."""
    spec = svc.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        cfg = spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {})
        cfg.setdefault("timeoutSeconds", 10800)
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, "") and "port" in port:
                port["targetPort"] = port["port"]
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def default_deployment(obj: _Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(obj)


def default_replicaset(obj: _Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
    _default_template(obj)


def default_job(obj: _Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _default_template(obj)


def default_statefulset(obj: _Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    _default_template(obj)


def default_daemonset(obj: _Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", 1)
        ru.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_template(obj)


def _default_priority_class(pc: _Obj) -> None:
    pc.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _default_pvc(pvc: _Obj) -> None:
    spec = pvc.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    status = pvc.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")


def _default_crd(obj: _Obj) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("conversion", {"strategy": "None"})


# ------------------------------------------------------------------------------------- catalogue

_NO_COLLECTION = tuple(v for v in ALL_VERBS if v != "deletecollection")
_ADMISSION = "admissionregistration.k8s.io"
_ADMISSION_DEFS = "admissionregistration.v1.ValidatingAdmission"


def _schema(definition: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{definition}"}


def builtin_resource_types() -> list[ResourceType]:
    """A fresh list of every built-in resource (fresh so callers may mutate their copies)."""
    types = _builtin_types()
    for rt in types:
        rt.validate_hook = semantics.HOOKS.get((rt.group, rt.kind))
    return types


def _builtin_types() -> list[ResourceType]:
    core = "io.k8s.api.core.v1."
    return [
        ResourceType("", "v1", "Namespace", "namespaces", "namespace", False, short_names=("ns",),
                     verbs=_NO_COLLECTION, subresources=("status",), has_status=True,
                     schema=_schema(core + "Namespace"),
                     field_selectors={"status.phase": path_getter("status", "phase")},
                     default_hook=default_namespace),
        ResourceType("", "v1", "Node", "nodes", "node", False, short_names=("no",), subresources=("status",),
                     has_status=True, schema=_schema(core + "Node"),
                     field_selectors={"spec.unschedulable": _bool_getter("spec", "unschedulable")},
                     default_hook=default_node),
        ResourceType("", "v1", "Pod", "pods", "pod", True, short_names=("po",), categories=("all",),
                     subresources=("status", "eviction", "binding", "log"), has_status=True, has_generation=True,
                     schema=_schema(core + "Pod"), field_selectors=dict(_POD_FIELDS), default_hook=default_pod),
        ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, short_names=("cm",),
                     schema=_schema(core + "ConfigMap")),
        ResourceType("", "v1", "Secret", "secrets", "secret", True, schema=_schema(core + "Secret"),
                     field_selectors={"type": path_getter("type")}, default_hook=default_secret),
        ResourceType("", "v1", "Service", "services", "service", True, short_names=("svc",),
                     categories=("all",), subresources=("status",), has_status=True,
                     schema=_schema(core + "Service"), field_selectors=dict(_SERVICE_FIELDS),
                     default_hook=default_service),
        # storage is out of scope (no provisioner): claims are kept, StatefulSets make one per ordinal
        ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", True,
                     short_names=("pvc",), subresources=("status",), has_status=True,
                     schema=_schema(core + "PersistentVolumeClaim"), default_hook=_default_pvc),
        ResourceType("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True,
                     short_names=("sa",), subresources=("token",), schema=_schema(core + "ServiceAccount")),
        ResourceType("", "v1", "Event", "events", "event", True, short_names=("ev",),
                     schema=_schema(core + "Event"), field_selectors=dict(_CORE_EVENT_FIELDS)),
        ResourceType("events.k8s.io", "v1", "Event", "events", "event", True, short_names=("ev",),
                     schema=_schema("io.k8s.api.events.v1.Event"), field_selectors=dict(_EVENTS_V1_FIELDS),
                     storage_group="", storage_resource="events", storage_version="v1",
                     to_storage=events_v1_to_core_event, from_storage=core_event_to_events_v1),
        ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", True,
                     schema=_schema("io.k8s.api.coordination.v1.Lease")),
        ResourceType("apps", "v1", "Deployment", "deployments", "deployment", True, short_names=("deploy",),
                     categories=("all",), subresources=("status", "scale"), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.api.apps.v1.Deployment"), default_hook=default_deployment),
        ResourceType("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, short_names=("rs",),
                     categories=("all",), subresources=("status", "scale"), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.api.apps.v1.ReplicaSet"), default_hook=default_replicaset),
        ResourceType("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", True,
                     schema=_schema("io.k8s.api.apps.v1.ControllerRevision")),
        ResourceType("batch", "v1", "Job", "jobs", "job", True, categories=("all",), subresources=("status",),
                     has_status=True, has_generation=True, schema=_schema("io.k8s.api.batch.v1.Job"),
                     default_hook=default_job),
        ResourceType("apps", "v1", "StatefulSet", "statefulsets", "statefulset", True, short_names=("sts",),
                     categories=("all",), subresources=("status", "scale"), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.api.apps.v1.StatefulSet"), default_hook=default_statefulset),
        ResourceType("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, short_names=("ds",),
                     categories=("all",), subresources=("status",), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.api.apps.v1.DaemonSet"), default_hook=default_daemonset),
        ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                     "customresourcedefinition", False, short_names=("crd", "crds"),
                     categories=("api-extensions",), subresources=("status",), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."
                                    "CustomResourceDefinition"),
                     default_hook=_default_crd),
        # spec.priority of pods comes from these (apiserver/priority.py); the scheduler preempts by it
        ResourceType("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", False,
                     short_names=("pc",), schema=_schema("io.k8s.api.scheduling.v1.PriorityClass"),
                     default_hook=_default_priority_class),
        # answered, never stored (`kubectl auth can-i`)
        ResourceType("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
                     "selfsubjectaccessreview", False, verbs=("create",),
                     schema=_schema("io.k8s.api.authorization.v1.SelfSubjectAccessReview")),
        # status kept by the controller-manager's disruption controller; pods/eviction checks it
        ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", True,
                     short_names=("pdb",), subresources=("status",), has_status=True, has_generation=True,
                     schema=_schema("io.k8s.api.policy.v1.PodDisruptionBudget")),
        # evaluated in the admission chain (admission_policy.py)
        ResourceType(_ADMISSION, "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
                     "validatingadmissionpolicy", False, categories=("api-extensions",), subresources=("status",),
                     has_status=True, has_generation=True, schema=_schema(f"io.k8s.api.{_ADMISSION_DEFS}Policy")),
        ResourceType(_ADMISSION, "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings",
                     "validatingadmissionpolicybinding", False, categories=("api-extensions",),
                     schema=_schema(f"io.k8s.api.{_ADMISSION_DEFS}PolicyBinding")),
    ]


_STATUS_VERBS = ("get", "patch", "update")


def subresource_info(rt: ResourceType, sub: str) -> tuple[str, str, str, tuple[str, ...]]:
    """(group, version, kind, verbs) of a subresource, as discovery lists it (`pods/eviction` is policy/v1)."""
    if sub == "status":
        return rt.group, rt.version, rt.kind, _STATUS_VERBS
    if sub == "scale":
        return "autoscaling", "v1", "Scale", _STATUS_VERBS
    if sub == "eviction":
        return "policy", "v1", "Eviction", ("create",)
    if sub == "binding":
        return "", "v1", "Binding", ("create",)
    if sub == "log":
        return "", "v1", "Pod", ("get",)
    if sub == "token":
        return "authentication.k8s.io", "v1", "TokenRequest", ("create",)
    raise KeyError(f"{rt.plural}/{sub} is not a known subresource")
