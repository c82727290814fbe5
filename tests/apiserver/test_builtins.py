"""The built-in catalogue: discovery facts as kube-apiserver serves them, the events view, defaulting."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kokpit.apiserver.builtins import (
    builtin_resource_types,
    core_event_to_events_v1,
    default_deployment,
    default_pod,
    default_service,
    events_v1_to_core_event,
    pod_qos_class,
    subresource_info,
)
from kokpit.apiserver.resources import ALL_VERBS, ResourceType

DEFS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema/v1.37.0-local/_definitions.json"


def _rt(kind: str, group: str = "") -> ResourceType:
    return next(r for r in builtin_resource_types() if r.kind == kind and r.group == group)


NO_DELETECOLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")

# (group, plural, kind, namespaced, short names, categories, verbs, subresources)
EXPECTED = [
    ("", "namespaces", "Namespace", False, ("ns",), (), NO_DELETECOLLECTION, ("status",)),
    ("", "nodes", "Node", False, ("no",), (), ALL_VERBS, ("status",)),
    ("", "pods", "Pod", True, ("po",), ("all",), ALL_VERBS, ("status", "eviction", "binding", "log")),
    ("", "configmaps", "ConfigMap", True, ("cm",), (), ALL_VERBS, ()),
    ("", "secrets", "Secret", True, (), (), ALL_VERBS, ()),
    ("", "services", "Service", True, ("svc",), ("all",), ALL_VERBS, ("status",)),
    ("", "serviceaccounts", "ServiceAccount", True, ("sa",), (), ALL_VERBS, ("token",)),
    ("", "events", "Event", True, ("ev",), (), ALL_VERBS, ()),
    ("events.k8s.io", "events", "Event", True, ("ev",), (), ALL_VERBS, ()),
    ("coordination.k8s.io", "leases", "Lease", True, (), (), ALL_VERBS, ()),
    ("apps", "deployments", "Deployment", True, ("deploy",), ("all",), ALL_VERBS, ("status", "scale")),
    ("apps", "replicasets", "ReplicaSet", True, ("rs",), ("all",), ALL_VERBS, ("status", "scale")),
    ("apps", "controllerrevisions", "ControllerRevision", True, (), (), ALL_VERBS, ()),
    ("batch", "jobs", "Job", True, (), ("all",), ALL_VERBS, ("status",)),
    ("apps", "statefulsets", "StatefulSet", True, ("sts",), ("all",), ALL_VERBS, ("status", "scale")),
    ("apps", "daemonsets", "DaemonSet", True, ("ds",), ("all",), ALL_VERBS, ("status",)),
    ("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", False,
     ("crd", "crds"), ("api-extensions",), ALL_VERBS, ("status",)),
    ("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, (), (),
     ("create",), ()),
    ("policy", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), (), ALL_VERBS, ("status",)),
    ("", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), (), ALL_VERBS, ("status",)),
    ("scheduling.k8s.io", "priorityclasses", "PriorityClass", False, ("pc",), (), ALL_VERBS, ()),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False, (),
     ("api-extensions",), ALL_VERBS, ("status",)),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False,
     (), ("api-extensions",), ALL_VERBS, ()),
]


def test_catalogue_matches_kube_discovery() -> None:
    got = {(r.group, r.plural): r for r in builtin_resource_types()}
    assert len(got) == len(EXPECTED) == len(builtin_resource_types())
    for group, plural, kind, namespaced, short, cats, verbs, subs in EXPECTED:
        rt = got[(group, plural)]
        assert rt.version == "v1"
        assert rt.kind == kind
        assert rt.singular == kind.lower()
        assert rt.namespaced is namespaced, plural
        assert rt.short_names == short, plural
        assert rt.categories == cats, plural
        assert set(rt.verbs) == set(verbs), plural
        assert rt.subresources == subs, plural
        assert rt.has_status is ("status" in subs), plural
        assert rt.strategic_merge and rt.crd_name is None


def test_schemas_point_at_existing_definitions() -> None:
    defs = json.loads(DEFS.read_text())["$defs"]
    for rt in builtin_resource_types():
        assert rt.schema is not None
        ref = rt.schema["$ref"]
        assert ref.startswith("#/$defs/")
        name = ref.removeprefix("#/$defs/")
        assert name in defs, name
        assert name.endswith("." + rt.kind)
    assert _rt("Pod").schema == {"$ref": "#/$defs/io.k8s.api.core.v1.Pod"}


def test_catalogue_is_fresh_per_call() -> None:
    a, b = builtin_resource_types(), builtin_resource_types()
    a[0].field_selectors["x"] = lambda o: ""
    assert "x" not in b[0].field_selectors


def test_subresource_info() -> None:
    pods = _rt("Pod")
    assert subresource_info(pods, "eviction") == ("policy", "v1", "Eviction", ("create",))
    assert subresource_info(pods, "binding") == ("", "v1", "Binding", ("create",))
    assert subresource_info(pods, "status") == ("", "v1", "Pod", ("get", "patch", "update"))
    deploy = _rt("Deployment", "apps")
    assert subresource_info(deploy, "scale") == ("autoscaling", "v1", "Scale", ("get", "patch", "update"))
    assert subresource_info(deploy, "status") == ("apps", "v1", "Deployment", ("get", "patch", "update"))
    with pytest.raises(KeyError):
        subresource_info(pods, "exec")


def test_field_selectors_declared() -> None:
    assert set(_rt("Pod").field_selectors) == {
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"}
    assert set(_rt("Secret").field_selectors) == {"type"}
    assert set(_rt("Node").field_selectors) == {"spec.unschedulable"}
    assert set(_rt("Namespace").field_selectors) == {"status.phase"}
    assert "involvedObject.uid" in _rt("Event").field_selectors
    assert "regarding.uid" in _rt("Event", "events.k8s.io").field_selectors
    for rt in builtin_resource_types():
        assert "metadata.name" not in rt.field_selectors


# ----------------------------------------------------------------------------------- events view

V1_EVENT: dict[str, Any] = {
    "apiVersion": "events.k8s.io/v1",
    "kind": "Event",
    "metadata": {"name": "web.1", "namespace": "ns", "resourceVersion": "7"},
    "eventTime": "2026-01-01T00:00:00.000000Z",
    "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
    "reportingController": "kokpit.io/machine-operator",
    "reportingInstance": "op-1",
    "action": "Install",
    "reason": "Installed",
    "regarding": {"kind": "Machine", "name": "m1", "apiVersion": "kokpit.io/v1alpha1", "uid": "u"},
    "related": {"kind": "Node", "name": "n1"},
    "note": "installed containerd",
    "type": "Normal",
    "deprecatedSource": {"component": "x", "host": "h"},
    "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
    "deprecatedLastTimestamp": "2026-01-01T00:01:00Z",
    "deprecatedCount": 3,
}


def test_events_v1_to_core_and_back() -> None:
    original = copy.deepcopy(V1_EVENT)
    core = events_v1_to_core_event(V1_EVENT)
    assert V1_EVENT == original  # input untouched
    assert core == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": V1_EVENT["metadata"],
        "eventTime": V1_EVENT["eventTime"],
        "series": V1_EVENT["series"],
        "reportingComponent": "kokpit.io/machine-operator",
        "reportingInstance": "op-1",
        "action": "Install",
        "reason": "Installed",
        "involvedObject": V1_EVENT["regarding"],
        "related": V1_EVENT["related"],
        "message": "installed containerd",
        "type": "Normal",
        "source": {"component": "x", "host": "h"},
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:01:00Z",
        "count": 3,
    }
    assert core_event_to_events_v1(core) == V1_EVENT
    core["involvedObject"]["name"] = "changed"
    assert V1_EVENT["regarding"]["name"] == "m1"  # deep copies


def test_core_event_as_written_by_kopf_is_viewable() -> None:
    core = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "x-"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "R",
            "source": {"component": "kopf"}, "firstTimestamp": "2026-01-01T00:00:00Z"}
    v1 = core_event_to_events_v1(core)
    assert v1["regarding"] == {"kind": "Pod", "name": "p"}
    assert v1["note"] == "hi"
    assert v1["deprecatedSource"] == {"component": "kopf"}
    assert "message" not in v1 and "involvedObject" not in v1
    assert events_v1_to_core_event(v1) == core


def test_events_view_is_wired_on_the_type() -> None:
    rt = _rt("Event", "events.k8s.io")
    core = _rt("Event")
    assert rt.store_prefix == core.store_prefix == "/core/events/"
    assert rt.to_storage is events_v1_to_core_event
    assert rt.from_storage is core_event_to_events_v1


# ----------------------------------------------------------------------------------- defaulting

@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("localhost:5000/nginx", "Always"),
        ("localhost:5000/nginx:1.0", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        ("registry.k8s.io/pause:3.10@sha256:" + "b" * 64, "IfNotPresent"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    pod = {"spec": {"containers": [{"name": "c", "image": image}]}}
    default_pod(pod)
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_default_pod_fills_what_clients_read_back() -> None:
    pod: dict[str, Any] = {"metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "kokpit:1", "ports": [{"containerPort": 80}],
                                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
                    "initContainers": [{"name": "i", "image": "busybox"}]}}
    default_pod(pod)
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    c = spec["containers"][0]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"][0]["protocol"] == "TCP"
    assert c["readinessProbe"]["periodSeconds"] == 10
    assert spec["initContainers"][0]["imagePullPolicy"] == "Always"
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    # idempotent, and never overrides what the client set
    before = copy.deepcopy(pod)
    default_pod(pod)
    assert pod == before
    custom: dict[str, Any] = {"spec": {"restartPolicy": "Never", "containers": []}, "status": {"phase": "Running"}}
    default_pod(custom)
    assert custom["spec"]["restartPolicy"] == "Never"
    assert custom["status"]["phase"] == "Running"


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ([{}], "BestEffort"),
        ([{"requests": {"cpu": "100m"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),  # requests default to limits
        ([{"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}],
         "Guaranteed"),
        ([{"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
        ([{"limits": {"cpu": "1"}}], "Burstable"),
        ([{"requests": {"ephemeral-storage": "1Gi"}}], "BestEffort"),
    ],
)
def test_qos_class(resources: list[dict[str, object]], qos: str) -> None:
    pod: dict[str, Any] = {"spec": {"containers": [{"name": f"c{i}", "image": "x:1", "resources": r}
                                   for i, r in enumerate(resources)]}}
    default_pod(pod)
    assert pod["status"]["qosClass"] == qos
    assert pod_qos_class(pod) == qos


def test_other_defaults() -> None:
    ns: dict[str, Any] = {"metadata": {"name": "team-a"}}
    _rt("Namespace").default_hook(ns)  # type: ignore[misc]
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert "finalizers" not in ns.get("spec", {})

    secret: dict[str, Any] = {"metadata": {"name": "s"}}
    _rt("Secret").default_hook(secret)  # type: ignore[misc]
    assert secret["type"] == "Opaque"

    svc: dict[str, Any] = {"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "UDP"}]}}
    default_service(svc)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["sessionAffinity"] == "None"
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80},
                                    {"port": 443, "targetPort": "https", "protocol": "UDP"}]
    assert "externalTrafficPolicy" not in svc["spec"]
    lb: dict[str, Any] = {"spec": {"type": "LoadBalancer"}}
    default_service(lb)
    assert lb["spec"]["externalTrafficPolicy"] == "Cluster"

    deploy: dict[str, Any] = {"spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    default_deployment(deploy)
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"

    sts: dict[str, Any] = {"spec": {"template": {"spec": {"containers": []}}}}
    _rt("StatefulSet", "apps").default_hook(sts)  # type: ignore[misc]
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    ds: dict[str, Any] = {"spec": {"template": None}}
    _rt("DaemonSet", "apps").default_hook(ds)  # type: ignore[misc]
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
