"""Server-side Tables: kubectl's columns, kube's cell logic, CRD printer columns, ages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kokpit.apiserver.builtins import builtin_resource_types
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.resources import PrinterColumn, ResourceType
from kokpit.apiserver.tables import (
    human_duration,
    jsonpath_values,
    row_for_watch,
    to_table,
    validate_jsonpath,
)

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rt(kind: str, group: str = "") -> ResourceType:
    return next(r for r in builtin_resource_types() if r.kind == kind and r.group == group)


def _cells(kind: str, obj: dict[str, Any], group: str = "") -> list[Any]:
    table = to_table(_rt(kind, group), [obj], now=NOW)
    return list(table["rows"][0]["cells"])


def _columns(kind: str, group: str = "", priority: int | None = 0) -> list[str]:
    table = to_table(_rt(kind, group), [], now=NOW)
    return [c["name"] for c in table["columnDefinitions"] if priority is None or c["priority"] == priority]


# ----------------------------------------------------------------------------------- durations

@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1.5, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (4 * 3600, "4h"),
        (4 * 3600 + 30 * 60, "4h30m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (8 * 86400 - 1, "7d23h"),
        (45 * 86400, "45d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (800 * 86400, "2y70d"),
        (8 * 365 * 86400, "8y"),
        (20 * 365 * 86400, "20y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# ----------------------------------------------------------------------------------- table shape

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ts(300), "resourceVersion": "42"},
    "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
    "status": {
        "phase": "Running", "podIPs": [{"ip": "10.1.0.5"}],
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": False, "restartCount": 0, "state": {"running": {}}},
        ],
    },
}


def test_table_shape_and_include_object() -> None:
    rt = _rt("Pod")
    table = to_table(rt, [POD], now=NOW, resource_version="99", continue_token="tok")
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "99", "continue": "tok"}
    first = table["columnDefinitions"][0]
    assert first == {"name": "Name", "type": "string", "format": "name",
                     "description": first["description"], "priority": 0}
    for col in table["columnDefinitions"]:
        assert set(col) == {"name", "type", "format", "description", "priority"}
    row = table["rows"][0]
    assert len(row["cells"]) == len(table["columnDefinitions"])
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": POD["metadata"]}
    assert to_table(rt, [POD], now=NOW, include_object="Object")["rows"][0]["object"] is POD
    assert "object" not in to_table(rt, [POD], now=NOW, include_object="None")["rows"][0]
    assert to_table(rt, [], now=NOW)["metadata"] == {}
    with pytest.raises(APIError) as e:
        to_table(rt, [POD], now=NOW, include_object="Everything")
    assert e.value.code == 400


def test_row_for_watch() -> None:
    table = row_for_watch(_rt("Pod"), POD, now=NOW)
    assert table["kind"] == "Table"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert len(table["rows"]) == 1
    assert table["rows"][0]["cells"][0] == "web-1"
    assert "columnDefinitions" in table
    assert "columnDefinitions" not in row_for_watch(_rt("Pod"), POD, now=NOW, include_headers=False)


# ----------------------------------------------------------------------------------- pods

def test_pod_columns() -> None:
    assert _columns("Pod") == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert _columns("Pod", priority=1) == ["IP", "Node", "Nominated Node", "Readiness Gates"]


def test_pod_ready_and_wide_cells() -> None:
    assert _cells("Pod", POD) == ["web-1", "1/2", "Running", "0", "5m", "10.1.0.5", "n1", "<none>", "<none>"]


def _pod(status: dict[str, Any], spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "creationTimestamp": ts(60), **meta},
            "spec": spec or {"containers": [{"name": "c"}]}, "status": status}


@pytest.mark.parametrize(
    ("pod", "ready", "status", "restarts"),
    [
        (_pod({"phase": "Pending"}, {"containers": [{"name": "c"}]}), "0/1", "Pending", "0"),
        (_pod({}), "0/1", "", "0"),
        (_pod({"phase": "Pending", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}), "0/1", "ContainerCreating", "0"),
        (_pod({"phase": "Running", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 5,
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ts(120)}},
             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}), "0/1", "CrashLoopBackOff", "5 (2m ago)"),
        (_pod({"phase": "Succeeded", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}), "0/1", "Completed", "0"),
        (_pod({"phase": "Failed", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 137}}}]}), "0/1", "ExitCode:137", "0"),
        (_pod({"phase": "Failed", "containerStatuses": [
            {"name": "c", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "signal": 9}}}]}), "0/1", "Signal:9", "0"),
        (_pod({"phase": "Running", "containerStatuses": [
            {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]},
            deletionTimestamp=ts(1)), "1/1", "Terminating", "0"),
        (_pod({"phase": "Succeeded"}, deletionTimestamp=ts(1)), "0/1", "Succeeded", "0"),
        (_pod({"phase": "Running", "reason": "NodeLost"}, deletionTimestamp=ts(1)), "0/1", "Unknown", "0"),
        (_pod({"phase": "Failed", "reason": "Evicted"}), "0/1", "Evicted", "0"),
        (_pod({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "ready": False, "restartCount": 0, "state": {"running": {}}}]},
            {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]}), "0/1", "Init:0/1", "0"),
        (_pod({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "ready": False, "restartCount": 2,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
            {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]}),
         "0/1", "Init:CrashLoopBackOff", "2"),
        (_pod({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]},
            {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]}),
         "0/1", "Init:ExitCode:3", "0"),
        # a native sidecar (restartable init container) counts toward READY
        (_pod({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
               "initContainerStatuses": [
                   {"name": "side", "ready": True, "started": True, "restartCount": 1,
                    "state": {"running": {}}}],
               "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]},
            {"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}),
         "2/2", "Running", "1"),
        # one container done, another still running: back to Running/NotReady
        (_pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
            {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
            {"containers": [{"name": "a"}, {"name": "b"}]}), "1/2", "NotReady", "0"),
        (_pod({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
         "0/1", "SchedulingGated", "0"),
    ],
)
def test_pod_status_like_kubectl(pod: dict[str, Any], ready: str, status: str, restarts: str) -> None:
    cells = _cells("Pod", pod)
    assert cells[1:4] == [ready, status, restarts]
    assert cells[4] == "60s"


def test_pod_row_conditions_and_readiness_gates() -> None:
    done = _pod({"phase": "Succeeded"})
    assert to_table(_rt("Pod"), [done], now=NOW)["rows"][0]["conditions"][0]["type"] == "Completed"
    assert "conditions" not in to_table(_rt("Pod"), [POD], now=NOW)["rows"][0]
    gated = _pod({"phase": "Running", "conditions": [{"type": "kokpit.io/ok", "status": "True"}]},
                 {"containers": [{"name": "c"}],
                  "readinessGates": [{"conditionType": "kokpit.io/ok"}, {"conditionType": "other"}]})
    assert _cells("Pod", gated)[-1] == "1/2"


# ----------------------------------------------------------------------------------- nodes

def _node(conditions: list[dict[str, str]], labels: dict[str, str] | None = None,
          unschedulable: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "creationTimestamp": ts(51 * 3600), "labels": labels or {}},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"conditions": conditions,
                       "addresses": [{"type": "Hostname", "address": "n1"},
                                     {"type": "InternalIP", "address": "192.168.1.10"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Ubuntu 24.04",
                                    "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://2.0"}}}


READY = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]


def test_node_columns_and_cells() -> None:
    assert _columns("Node") == ["Name", "Status", "Roles", "Age", "Version"]
    assert _columns("Node", priority=1) == ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version",
                                            "Container-Runtime"]
    labels = {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
              "node-role.kubernetes.io/": "x", "kubernetes.io/role": "edge"}
    assert _cells("Node", _node(READY, labels)) == [
        "n1", "Ready", "control-plane,edge,worker", "2d3h", "v1.37.0",
        "192.168.1.10", "<none>", "Ubuntu 24.04", "6.8.0", "containerd://2.0"]


@pytest.mark.parametrize(
    ("conditions", "unschedulable", "status"),
    [
        (READY, False, "Ready"),
        (READY, True, "Ready,SchedulingDisabled"),
        ([{"type": "Ready", "status": "False"}], False, "NotReady"),
        ([{"type": "Ready", "status": "Unknown"}], True, "NotReady,SchedulingDisabled"),
        ([], False, "Unknown"),
        ([{"type": "DiskPressure", "status": "True"}], True, "Unknown,SchedulingDisabled"),
    ],
)
def test_node_status(conditions: list[dict[str, str]], unschedulable: bool, status: str) -> None:
    cells = _cells("Node", _node(conditions, unschedulable=unschedulable))
    assert cells[1] == status
    assert cells[2] == "<none>"


def test_node_without_info() -> None:
    cells = _cells("Node", {"metadata": {"name": "bare"}})
    assert cells == ["bare", "Unknown", "<none>", "<unknown>", "", "<none>", "<none>", "<unknown>",
                     "<unknown>", "<unknown>"]


# ----------------------------------------------------------------------------------- other kinds

def test_small_core_kinds() -> None:
    meta = {"name": "x", "creationTimestamp": ts(5)}
    assert _columns("Namespace") == ["Name", "Status", "Age"]
    assert _cells("Namespace", {"metadata": meta, "status": {"phase": "Active"}}) == ["x", "Active", "5s"]
    assert _columns("ConfigMap") == ["Name", "Data", "Age"]
    assert _cells("ConfigMap", {"metadata": meta, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}) == [
        "x", 3, "5s"]
    assert _columns("Secret") == ["Name", "Type", "Data", "Age"]
    assert _cells("Secret", {"metadata": meta, "type": "Opaque", "data": {"k": "dg=="}}) == [
        "x", "Opaque", 1, "5s"]
    assert _columns("ServiceAccount") == ["Name", "Secrets", "Age"]
    assert _cells("ServiceAccount", {"metadata": meta}) == ["x", 0, "5s"]
    assert _columns("Lease", "coordination.k8s.io") == ["Name", "Holder", "Age"]
    assert _cells("Lease", {"metadata": meta, "spec": {"holderIdentity": "op-1"}}, "coordination.k8s.io") == [
        "x", "op-1", "5s"]


def test_services() -> None:
    assert _columns("Service") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    svc = {"metadata": {"name": "api", "creationTimestamp": ts(10)},
           "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.10"], "selector": {"b": "2", "a": "1"},
                    "ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}
    assert _cells("Service", svc) == ["api", "NodePort", "10.96.0.10", "<none>", "443:30443/TCP,53/UDP", "10s",
                                      "a=1,b=2"]
    lb: dict[str, Any] = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11"}}
    assert _cells("Service", lb)[2:5] == ["10.96.0.11", "<pending>", "<none>"]
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example"}]}}
    assert _cells("Service", lb)[3] == "1.2.3.4,lb.example"
    ext = {"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "db.example"}}
    assert _cells("Service", ext)[2:4] == ["<none>", "db.example"]


def test_events_core_and_events_k8s_io() -> None:
    assert _columns("Event") == ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert _columns("Event", priority=1) == ["Subobject", "Source", "First Seen", "Count", "Name"]
    core = {"metadata": {"name": "web.1", "creationTimestamp": ts(600)},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{c}"},
            "reason": "Started", "message": "  Started container c\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ts(600), "lastTimestamp": ts(30), "count": 4}
    assert _cells("Event", core) == ["30s", "Normal", "Started", "pod/web", "spec.containers{c}", "kubelet, n1",
                                     "Started container c", "10m", 4, "web.1"]
    new = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "m.1"},
           "eventTime": ts(90), "reportingController": "kokpit", "reportingInstance": "op-1",
           "regarding": {"kind": "Machine"}, "reason": "Installed", "note": "ok", "type": "Normal"}
    assert _cells("Event", new, "events.k8s.io") == ["90s", "Normal", "Installed", "machine", "", "kokpit, op-1",
                                                     "ok", "90s", 1, "m.1"]
    series = dict(new, series={"count": 7, "lastObservedTime": ts(3)})
    cells = _cells("Event", series, "events.k8s.io")
    assert (cells[0], cells[8]) == ("3s", 7)
    # no Name column first for events: kubectl's NAME-less event listing
    first = to_table(_rt("Event"), [], now=NOW)["columnDefinitions"][0]
    assert first["format"] == ""


def test_workloads() -> None:
    template = {"spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:2"}],
                         "nodeSelector": {"kubernetes.io/os": "linux"}}}
    selector = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    meta = {"name": "web", "creationTimestamp": ts(3600)}
    assert _columns("Deployment", "apps") == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    d = {"metadata": meta, "spec": {"replicas": 3, "selector": selector, "template": template},
         "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert _cells("Deployment", d, "apps") == ["web", "2/3", 3, 2, "60m", "a,b", "img:1,img:2", "app=web,tier"]
    assert _columns("StatefulSet", "apps") == ["Name", "Ready", "Age"]
    s = {"metadata": meta, "spec": {"replicas": 1, "template": template}, "status": {}}
    assert _cells("StatefulSet", s, "apps") == ["web", "0/1", "60m", "a,b", "img:1,img:2"]
    assert _columns("DaemonSet", "apps") == ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available",
                                             "Node Selector", "Age"]
    ds = {"metadata": meta, "spec": {"selector": selector, "template": template},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert _cells("DaemonSet", ds, "apps") == ["web", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "60m", "a,b",
                                               "img:1,img:2", "app=web,tier"]


def test_crd_created_at() -> None:
    crd_rt = _rt("CustomResourceDefinition", "apiextensions.k8s.io")
    table = to_table(crd_rt, [{"metadata": {"name": "machines.kokpit.io",
                                            "creationTimestamp": "2026-01-01T00:00:00Z"}}], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
    assert table["columnDefinitions"][1]["type"] == "date"
    assert table["rows"][0]["cells"] == ["machines.kokpit.io", "2026-01-01T00:00:00Z"]


# ----------------------------------------------------------------------------------- custom resources

def _cr_type(columns: tuple[PrinterColumn, ...] = ()) -> ResourceType:
    return ResourceType("kokpit.io", "v1alpha1", "Machine", "machines", "machine", False,
                        printer_columns=columns, strategic_merge=False, crd_name="machines.kokpit.io")


MACHINE = {
    "apiVersion": "kokpit.io/v1alpha1", "kind": "Machine",
    "metadata": {"name": "m1", "creationTimestamp": ts(7200), "labels": {"app.kubernetes.io/name": "m"}},
    "spec": {"nodeName": "n1", "packages": ["containerd-2.0", "kubelet-1.37"], "replicas": 3, "paused": False},
    "status": {"phase": "Ready", "lastSeen": ts(20), "ratio": 0.5,
               "conditions": [{"type": "Installed", "status": "True"},
                              {"type": "Ready", "status": "False", "reason": "Probing"}]},
}


def test_custom_resource_printer_columns() -> None:
    rt = _cr_type((
        PrinterColumn("Node", "string", ".spec.nodeName"),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Reason", "string", ".status.conditions[?(@.type == 'Ready')].reason", priority=1),
        PrinterColumn("First", "string", ".spec.packages[0]"),
        PrinterColumn("Last", "string", ".spec.packages[-1]"),
        PrinterColumn("Replicas", "integer", ".spec.replicas"),
        PrinterColumn("Paused", "boolean", ".spec.paused"),
        PrinterColumn("Ratio", "number", ".status.ratio"),
        PrinterColumn("Seen", "date", ".status.lastSeen"),
        PrinterColumn("Missing", "string", ".status.nothing.here"),
        PrinterColumn("WrongType", "integer", ".spec.nodeName"),
        PrinterColumn("Label", "string", ".metadata.labels.app\\.kubernetes\\.io/name"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ))
    table = to_table(rt, [MACHINE], now=NOW)
    defs = table["columnDefinitions"]
    assert [c["name"] for c in defs][:3] == ["Name", "Node", "Ready"]
    assert defs[0]["format"] == "name"
    assert defs[3]["priority"] == 1
    assert table["rows"][0]["cells"] == ["m1", "n1", "False", "Probing", "containerd-2.0", "kubelet-1.37", 3,
                                         False, 0.5, "20s", None, None, "m", "120m"]


def test_custom_resource_default_columns() -> None:
    table = to_table(_cr_type(), [MACHINE], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["columnDefinitions"][1]["type"] == "date"
    assert table["rows"][0]["cells"] == ["m1", "120m"]


def test_jsonpath_subset() -> None:
    assert jsonpath_values(MACHINE, ".metadata.name") == ["m1"]
    assert jsonpath_values(MACHINE, "{.metadata.name}") == ["m1"]
    assert jsonpath_values(MACHINE, "$.spec['nodeName']") == ["n1"]
    assert jsonpath_values(MACHINE, ".status.conditions[*].type") == ["Installed", "Ready"]
    assert jsonpath_values(MACHINE, '.status.conditions[?(@.status!="True")].type') == ["Ready"]
    assert jsonpath_values(MACHINE, ".status.conditions[?(@.reason)].type") == ["Ready"]
    assert jsonpath_values(MACHINE, ".spec.replicas") == [3]
    assert jsonpath_values(MACHINE, ".spec.packages[5]") == []
    assert jsonpath_values({"a": [{"n": 1}, {"n": 5}]}, ".a[?(@.n > 2)].n") == [5]
    assert validate_jsonpath(".spec.x") is None
    for bad in ("spec.x", ".spec[", ".a[?(x==1)]", ".a..b", ".a[1:2]"):
        assert validate_jsonpath(bad) is not None, bad


def test_custom_type_with_table_cells_hook() -> None:
    rt = _cr_type((PrinterColumn("Name", format="name"), PrinterColumn("Phase")))
    rt.table_cells = lambda obj: [obj["metadata"]["name"], obj["status"]["phase"]]
    table = to_table(rt, [MACHINE], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Phase"]
    assert table["rows"][0]["cells"] == ["m1", "Ready"]
