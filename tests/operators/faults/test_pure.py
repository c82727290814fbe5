"""Pure decisions of the fault controllers: the catalog, what signals call for which fault, causes in
flight, webhook matching and backoff."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kokpit._lib.podutil import slim_pod
from kokpit.api.fault import FaultSubscriptionSpec, FaultType, component_fault_type
from kokpit.operators.faults._business import PodStartRule, pod_start_failures
from kokpit.operators.faults._center import machine_causes
from kokpit.operators.faults._detector import desired_faults, event_time
from kokpit.operators.faults._permits import permit_causes
from kokpit.operators.faults._webhooks import backoff_seconds, delivery_state, event_key, matches, payload
from kokpit.operators.faults.catalog import DEFAULT_TYPES, Catalog, parse_duration

NOW = dt.datetime(2026, 12, 7, 2, 0, 0, tzinfo=dt.UTC)
Obj = dict[str, Any]


def iso(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def catalog() -> Catalog:
    return Catalog.from_objects([{"metadata": {"name": n}, "spec": s} for n, s in DEFAULT_TYPES.items()])


def test_default_catalog_covers_the_issue_and_parses() -> None:
    cat = catalog()
    assert {"disk-failure", "memory-ecc", "nic-down", "gpu-fault", "kernel-deadlock", "readonly-filesystem",
            "clock-skew", "disk-pressure", "os-corrupted", "kubelet-unhealthy", "container-runtime-unhealthy",
            "component-unhealthy", "node-unreachable"} <= set(cat.types)
    flows = {ft.spec.flow for ft in cat.types.values()}
    assert flows <= {"component-restart", "reboot", "reinstall", "hardware-repair", "none"}
    assert all(isinstance(ft, FaultType) for ft in cat.types.values())
    # node-problem-detector's standard conditions all map somewhere
    for cond in ("KernelDeadlock", "ReadonlyFilesystem", "FrequentKubeletRestart", "FrequentContainerdRestart",
                 "FrequentDockerRestart", "CorruptDockerOverlay2"):
        assert cat.by_condition.get((cond, "True")), cond
    assert [s.fault_type for s in cat.signals_for_event("MemoryReadError", "kernel-monitor")] == ["memory-ecc"]
    assert cat.signals_for_event("MemoryReadError", "someone-else") == []
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25 and cat.ttl["node-unreachable"] == 120
    assert component_fault_type("kubelet") == "kubelet-unhealthy"
    assert component_fault_type("containerd") == "container-runtime-unhealthy"
    assert component_fault_type("log-agent") == "component-unhealthy"


def node(conds: list[Obj]) -> Obj:
    return {"metadata": {"name": "n1"}, "status": {"conditions": conds}}


def test_signals_become_the_faults_they_mean() -> None:
    cat = catalog()
    n = node([{"type": "Ready", "status": "True"},
              {"type": "KernelDeadlock", "status": "True", "reason": "DockerHung", "message": "task docker:1 blocked",
               "lastTransitionTime": iso(3)},
              {"type": "FrequentContainerdRestart", "status": "True", "reason": "FrequentContainerdRestart"},
              {"type": "ReadonlyFilesystem", "status": "False", "reason": "FilesystemIsNotReadOnly"}])
    want, stale_in = desired_faults(n, None, None, cat, NOW, 40)
    got = {(d.type, d.component, d.reporter) for d in want}
    assert got == {("kernel-deadlock", "", "node-condition/KernelDeadlock"),
                   ("container-runtime-unhealthy", "containerd", "node-condition/FrequentContainerdRestart")}
    assert stale_in is None
    kd = next(d for d in want if d.type == "kernel-deadlock")
    assert kd.message == "task docker:1 blocked" and kd.reason == "DockerHung" and kd.since is not None

    # Ready Unknown → unreachable; False → not ready
    want, _ = desired_faults(node([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}]),
                             None, None, cat, NOW, 40)
    assert [(d.type, d.reporter) for d in want] == [("node-unreachable", "fault-detector/node-ready")]
    want, _ = desired_faults(node([{"type": "Ready", "status": "False"}]), None, None, cat, NOW, 40)
    assert [d.type for d in want] == ["node-not-ready"]

    # the Lease: fresh → no fault, and when it will go stale; stale → unreachable
    fresh = {"metadata": {"name": "n1"}, "spec": {"renewTime": iso(10)}}
    want, stale_in = desired_faults(node([]), fresh, None, cat, NOW, 40)
    assert want == [] and stale_in is not None and 29 < stale_in <= 30
    stale = {"metadata": {"name": "n1"}, "spec": {"renewTime": iso(41)}}
    want, stale_in = desired_faults(node([]), stale, None, cat, NOW, 40)
    assert [(d.type, d.reporter) for d in want] == [("node-unreachable", "fault-detector/lease")]
    assert stale_in is None and want[0].since is not None and (NOW - want[0].since).total_seconds() < 1.5

    # managed components the machine operator found down or failing their health check
    machine = {"metadata": {"name": "n1"}, "status": {
        "components": [{"name": "kubelet", "installState": "Installed", "runState": "Stopped", "version": "1.31"},
                       {"name": "log-agent", "installState": "Installed", "runState": "Running", "version": "2"},
                       {"name": "containerd", "installState": "Installing", "runState": "Stopped"}],
        "failures": [{"name": "health/log-agent", "message": "http 500", "count": 2, "firstFailureTime": iso(5)}]}}
    want, _ = desired_faults(node([]), None, machine, cat, NOW, 40)
    assert {(d.type, d.component, d.reason) for d in want} == {
        ("kubelet-unhealthy", "kubelet", "ComponentNotRunning"), ("component-unhealthy", "log-agent", "HealthCheckFailed")}


def test_changes_in_flight_are_named() -> None:
    m = {"metadata": {"name": "n1"}, "status": {"components": [
        {"name": "kubelet", "installState": "Upgrading", "version": "1.31", "lastTransitionTime": iso(5)},
        {"name": "containerd", "installState": "Installed", "version": "1.8", "healthCheckedVersion": "1.7",
         "lastTransitionTime": iso(30)},
        {"name": "sysctl", "installState": "Installed", "version": "v1", "healthCheckedVersion": "v1",
         "lastTransitionTime": iso(30)},
        {"name": "old", "installState": "Installed", "version": "2", "lastTransitionTime": iso(7200)}]}}
    causes = machine_causes(m, NOW, 600)
    assert [c["detail"] for c in causes] == ["kubelet upgrading 1.31", "containerd changed to 1.8"]
    assert all(c["kind"] == "Machine" and c["operation"] == "component-upgrade" for c in causes)
    assert machine_causes(None, NOW, 600) == []


def fault(state: str = "Active", severity: str = "Critical", ftype: str = "disk-failure") -> Obj:
    return {"metadata": {"name": f"n1.{ftype}", "labels": {"kokpit.io/node": "n1", "kokpit.io/fault-type": ftype,
                                                           "kokpit.io/severity": severity}},
            "spec": {"nodeName": "n1", "type": ftype}, "status": {"state": state, "severity": severity}}


def test_subscriptions_match_by_selector_type_severity_and_state() -> None:
    spec = FaultSubscriptionSpec.model_validate({"url": "http://127.0.0.1:1/x"})
    assert matches(spec, fault()) and matches(spec, fault("Resolved")) and not matches(spec, fault("Invalid"))
    assert not matches(spec, {"metadata": {"name": "x"}, "spec": {}, "status": {}})  # no state yet
    spec = FaultSubscriptionSpec.model_validate({"url": "http://h/x", "minSeverity": "Major",
                                                 "types": ["disk-failure", "gpu-fault"],
                                                 "selector": {"matchExpressions": [
                                                     {"key": "kokpit.io/node", "operator": "In", "values": ["n1"]}]}})
    assert matches(spec, fault()) and matches(spec, fault(severity="Major"))
    assert not matches(spec, fault(severity="Minor")) and not matches(spec, fault(ftype="nic-down"))
    spec = FaultSubscriptionSpec.model_validate({"url": "http://h/x", "selector": {"matchLabels": {"kokpit.io/node": "n2"}}})
    assert not matches(spec, fault())
    assert [backoff_seconds(a, 1, 10) for a in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_an_escalation_to_a_person_is_delivered_as_its_own_transition() -> None:
    escalated = fault()
    escalated["status"]["firstSeen"] = "2026-12-07T01:00:00Z"
    plain_key = event_key(escalated)
    escalated["status"]["manualRequired"] = {"maintenanceFlow": "n1-abc", "since": "2026-12-07T01:05:00Z"}
    assert delivery_state(escalated) == "ManualRequired"
    assert event_key(escalated) == "ManualRequired@2026-12-07T01:00:00Z" != plain_key  # delivered again
    assert payload("pager", escalated, event_key(escalated))["type"] == "ManualRequired"
    default = FaultSubscriptionSpec.model_validate({"url": "http://h/x"})
    assert matches(default, escalated)  # the default states include it
    only_states = FaultSubscriptionSpec.model_validate({"url": "http://h/x", "states": ["Active", "Resolved"]})
    assert not matches(only_states, escalated)
    only_manual = FaultSubscriptionSpec.model_validate({"url": "http://h/x", "states": ["ManualRequired"]})
    assert matches(only_manual, escalated) and not matches(only_manual, fault())
    resolved = fault("Resolved")
    resolved["status"]["manualRequired"] = escalated["status"]["manualRequired"]
    assert delivery_state(resolved) == "Resolved"  # a person finished it: that is the news


def test_event_time_prefers_the_latest_observation() -> None:
    assert event_time({"lastTimestamp": "2026-12-07T01:00:00Z", "firstTimestamp": "2026-12-07T00:00:00Z"}) == \
        dt.datetime(2026, 12, 7, 1, tzinfo=dt.UTC)
    assert event_time({"series": {"lastObservedTime": "2026-12-07T02:00:00.5Z"}, "eventTime": "2026-12-07T01:00:00Z"}) \
        == dt.datetime(2026, 12, 7, 2, 0, 0, 500000, tzinfo=dt.UTC)
    assert event_time({}) is None


def pod(node: str, outcome: str, age: float = 10) -> Obj:
    st: Obj = {"phase": "Pending", "containerStatuses": []}
    if outcome == "started":
        st = {"phase": "Running", "containerStatuses": [{"state": {"running": {"startedAt": iso(age)}}}]}
    elif outcome == "failed":
        st = {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "CreateContainerError"}}}]}
    return slim_pod({"metadata": {"name": f"p-{node}-{outcome}-{age}", "creationTimestamp": iso(age)},
                     "spec": {"nodeName": node}, "status": st})


def test_business_signal_blames_one_node_not_a_sick_cluster() -> None:
    rule = PodStartRule(window=300, min_failures=3, node_ratio=0.5, cluster_ratio=0.2)
    pods = [pod("bad", "failed") for _ in range(4)] + [pod("bad", "started")] + \
        [pod(n, "started") for n in ("a", "b", "c") for _ in range(5)] + [pod("a", "failed")]
    verdict = pod_start_failures(pods, NOW, rule)
    assert list(verdict) == ["bad"] and "4 of 5 pods" in verdict["bad"]
    # too few failures, or too low a ratio: nothing
    assert pod_start_failures(pods[2:], NOW, rule) == {}
    assert pod_start_failures([*pods, *[pod("bad", "started") for _ in range(6)]], NOW, rule) == {}
    # the whole cluster fails: not one node's fault
    sick = pods + [pod(n, "failed") for n in ("a", "b", "c") for _ in range(3)]
    assert pod_start_failures(sick, NOW, rule) == {}
    # old pods do not count
    assert pod_start_failures([pod("bad", "failed", age=900) for _ in range(9)], NOW, rule) == {}
    # pending pods (not yet started, no failure) count for nothing
    assert pod_start_failures([pod("bad", "pending") for _ in range(9)], NOW, rule) == {}


def test_granted_permits_touching_the_node_are_causes() -> None:
    def permit(name: str, op: str, targets: list[str], state: str = "Granted", cluster: str = "c1") -> Obj:
        return {"metadata": {"name": name, "namespace": "ns"},
                "spec": {"operation": op, "cluster": cluster, "targets": targets, "holder": "h", "reason": "why"},
                "status": {"state": state, "grantedTargets": targets, "grantedAt": iso(60)}}
    permits = [permit("a", "component-upgrade", ["n1", "n2"]), permit("b", "node-reboot", ["n1"], "Queued"),
               permit("c", "node-reboot", ["n1"], cluster="c2"), permit("d", "control-plane-release", ["n1"]),
               permit("e", "node-drain", ["n3"])]
    causes = permit_causes(permits, "c1", "n1")
    assert [(c["name"], c["operation"]) for c in causes] == [("a", "component-upgrade")]
    assert causes[0]["kind"] == "Permit" and causes[0]["namespace"] == "ns" and causes[0]["since"]
