"""The rollout controller's pure decisions: target order, which Machines a package change applies to and what
their packages become (forward and back, per component), and what a target's status says."""

from __future__ import annotations

from typing import Any

from kokpit.api.rollout import PackageChange, TargetOrder
from kokpit.operators.rollout._faults import fault_names_rollout
from kokpit.operators.rollout._plan import (
    cluster_health,
    cluster_verdict,
    limit_of,
    machine_health,
    machine_packages_after,
    machine_previous,
    machine_spec_is,
    machine_verdict,
    order_targets,
)
from kokpit.operators.rollout._schedule import seconds

Obj = dict[str, Any]
COMPS = {"kubelet-1.30": "kubelet", "kubelet-1.31": "kubelet", "containerd-1.7": "containerd", "ne-1.8": "node-exporter"}
VERSIONS = {"kubelet-1.30": "1.30.0", "kubelet-1.31": "1.31.0", "containerd-1.7": "1.7.0", "ne-1.8": "1.8.0"}


def machine(packages: list[str], comps: list[Obj] | None = None, failures: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": "m"}, "spec": {"nodeName": "m", "packages": packages},
            "status": {"components": comps or [], "failures": failures or []}}


def test_order_priority_then_spread_across_zones_then_name() -> None:
    items = [("a", {"zone": "z1"}), ("b", {"zone": "z1"}), ("c", {"zone": "z2"}), ("d", {"zone": "z2", "prio": "5"}),
             ("e", {"zone": "z3", "prio": "10"}), ("f", {})]
    assert order_targets(items, TargetOrder()) == ["a", "b", "c", "d", "e", "f"]
    assert order_targets(items, TargetOrder(priority_label="prio")) == ["e", "d", "a", "b", "c", "f"]
    assert order_targets(items, TargetOrder(topology_label="zone")) == ["f", "a", "c", "e", "b", "d"]
    assert order_targets(items, TargetOrder(priority_label="prio", topology_label="zone")) == \
        ["e", "d", "f", "a", "c", "b"]


def test_which_machines_a_change_applies_to() -> None:
    replace = [PackageChange(component="kubelet", from_="kubelet-1.30", to="kubelet-1.31")]
    assert machine_previous(machine(["containerd-1.7", "kubelet-1.30"]), replace, COMPS) == {"kubelet": "kubelet-1.30"}
    assert machine_previous(machine(["containerd-1.7", "kubelet-1.31"]), replace, COMPS) is None  # already there
    assert machine_previous(machine(["containerd-1.7"]), replace, COMPS) is None  # has no kubelet
    add = [PackageChange(component="node-exporter", to="ne-1.8")]
    assert machine_previous(machine(["kubelet-1.30"]), add, COMPS) == {"node-exporter": ""}
    assert machine_previous(machine(["kubelet-1.30", "ne-1.8"]), add, COMPS) is None
    remove = [PackageChange(component="node-exporter")]
    assert machine_previous(machine(["kubelet-1.30", "ne-1.8"]), remove, COMPS) == {"node-exporter": "ne-1.8"}
    assert machine_previous(machine(["kubelet-1.30"]), remove, COMPS) is None
    # no from: any version is replaced
    anyv = [PackageChange(component="kubelet", to="kubelet-1.31")]
    assert machine_previous(machine(["kubelet-1.30"]), anyv, COMPS) is None  # add-only semantics without from
    assert machine_previous(machine([]), anyv, COMPS) == {"kubelet": ""}


def test_packages_forward_and_back_touch_only_the_changed_components() -> None:
    pk = ["containerd-1.7", "kubelet-1.30"]
    fwd = machine_packages_after(pk, {"kubelet": "kubelet-1.31", "node-exporter": "ne-1.8"}, COMPS)
    assert sorted(fwd) == ["containerd-1.7", "kubelet-1.31", "ne-1.8"]
    # a person added containerd elsewhere meanwhile: the rollback of kubelet leaves it as it is
    back = machine_packages_after(["containerd-1.7", "kubelet-1.31", "ne-1.8"],
                                  {"kubelet": "kubelet-1.30", "node-exporter": ""}, COMPS)
    assert sorted(back) == ["containerd-1.7", "kubelet-1.30"]
    m = machine(["containerd-1.7", "kubelet-1.31"])
    assert machine_spec_is(m, {"kubelet": "kubelet-1.31"}, {"kubelet": "kubelet-1.30"}, COMPS) == "wanted"
    assert machine_spec_is(m, {"kubelet": "kubelet-1.30"}, {"kubelet": "kubelet-1.31"}, COMPS) == "previous"
    assert machine_spec_is(machine(["kubelet-1.29"]), {"kubelet": "kubelet-1.31"}, {"kubelet": "kubelet-1.30"},
                           {**COMPS, "kubelet-1.29": "kubelet"}) == "other"


def test_machine_verdicts() -> None:
    want = {"kubelet": "kubelet-1.31"}
    row = {"name": "kubelet", "version": "1.31.0", "packageVersion": "kubelet-1.31", "installState": "Installed",
           "runState": "Running"}
    assert machine_verdict(machine(["kubelet-1.31"], [row]), want, VERSIONS).done
    assert not machine_verdict(machine(["kubelet-1.31"], [{**row, "installState": "Upgrading"}]), want, VERSIONS).done
    assert not machine_verdict(machine(["kubelet-1.31"], [{**row, "packageVersion": "kubelet-1.30",
                                                            "version": "1.30.0"}]), want, VERSIONS).done
    v = machine_verdict(machine(["kubelet-1.31"], [{**row, "installState": "Failed", "message": "exit 1"}]),
                        want, VERSIONS)
    assert v.failed and "exit 1" in v.failed
    v = machine_verdict(machine(["kubelet-1.31"], [{**row, "runState": "Stopped"}]), want, VERSIONS)
    assert v.failed and "not running" in v.failed
    v = machine_verdict(machine(["kubelet-1.31"], [row], [{"name": "health/kubelet", "count": 2,
                                                          "message": "probe failed"}]), want, VERSIONS)
    assert v.failed and "probe failed" in v.failed
    assert machine_verdict(machine([], []), {"node-exporter": ""}, VERSIONS).done  # removed
    assert not machine_verdict(machine([], [{"name": "node-exporter", "installState": "Uninstalling"}]),
                               {"node-exporter": ""}, VERSIONS).done


def test_cluster_verdicts() -> None:
    c = {"metadata": {"generation": 2}, "spec": {"packageVersion": "v2"},
         "status": {"observedGeneration": 2, "packageVersion": "v2",
                    "conditions": [{"type": "UpToDate", "status": "True"}]}}
    assert cluster_verdict(c, "v2").done
    assert not cluster_verdict({**c, "status": {**c["status"], "observedGeneration": 1}}, "v2").done
    failed = cluster_verdict({**c, "status": {**c["status"], "failedPackageVersion": "v2", "packageVersion": "v1"}},
                             "v2")
    assert failed.failed and not failed.done


def test_limits_and_durations() -> None:
    assert limit_of(3, 100) == 3 and limit_of("10%", 15) == 1 and limit_of("0%", 100) == 0
    assert seconds("1h30m") == 5400 and seconds("250ms") == 0.25 and seconds(None) == 0


def test_fault_attribution_by_rollout_or_permit() -> None:
    f = {"spec": {"nodeName": "n1", "possiblyCausedBy": [{"kind": "Rollout", "namespace": "default", "name": "kb"}]}}
    assert fault_names_rollout(f, "default", "kb", set())
    assert not fault_names_rollout(f, "other", "kb", set())
    g = {"status": {"possiblyCausedBy": [{"kind": "Permit", "name": "c1-component-upgrade-abc"}]}}
    assert fault_names_rollout(g, "default", "kb", {"default/c1-component-upgrade-abc"})
    assert not fault_names_rollout(g, "default", "kb", {"default/another"})
    assert fault_names_rollout({"spec": {"possiblyCausedBy": "rollout/default/kb"}}, "default", "kb", set())


def _cond(t: str, status: str = "True", reason: str = "", message: str = "") -> Obj:
    return {"type": t, "status": status, "reason": reason, "message": message}


def test_machine_health_reads_ready_components_and_node() -> None:
    healthy = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [
        _cond("Ready"), _cond("ComponentsReady"), _cond("NodeHealthy")]}}
    assert machine_health(healthy) == ""
    gates = {**healthy, "status": {**healthy["status"], "conditions": [
        _cond("Ready", "False", "GatesNotMet", "ReadinessGatesMet is not True"), _cond("ComponentsReady"),
        _cond("NodeHealthy")]}}
    assert machine_health(gates) == "Ready=False GatesNotMet: ReadinessGatesMet is not True"
    unreachable = {**healthy, "status": {**healthy["status"], "conditions": [
        _cond("Ready"), _cond("ComponentsReady"), _cond("NodeHealthy", "Unknown", "NodeUnreachable", "gone")]}}
    assert machine_health(unreachable) == "NodeHealthy=Unknown NodeUnreachable: gone"
    assert machine_health({"metadata": {}, "status": {}}) == "Ready is not reported"
    # the machine operator has not looked at the current spec yet: no verdict
    assert machine_health({**gates, "metadata": {"generation": 3}}) is None


def test_cluster_health_reads_availability_release_and_components() -> None:
    ok = {"metadata": {"generation": 4}, "status": {
        "observedGeneration": 4, "conditions": [_cond("Available"), _cond("UpToDate"), _cond("Degraded", "False")],
        "components": [{"name": "kube-apiserver", "replicas": 1, "readyReplicas": 1, "healthy": True}]}}
    assert cluster_health(ok) == ""
    down = {**ok, "status": {**ok["status"], "conditions": [_cond("Available", "False", "ProbeFailed", "no answer"),
                                                            _cond("UpToDate")]}}
    assert cluster_health(down) == "Available=False ProbeFailed: no answer"
    degraded = {**ok, "status": {**ok["status"], "conditions": [
        _cond("Available"), _cond("UpToDate"), _cond("Degraded", "True", "RestartLoop", "etcd restarts")]}}
    assert cluster_health(degraded) == "Degraded RestartLoop: etcd restarts"
    sick = {**ok, "status": {**ok["status"], "components": [
        {"name": "kube-scheduler", "replicas": 2, "readyReplicas": 1, "healthy": False, "message": "crash"}]}}
    assert cluster_health(sick) == "component kube-scheduler: 1/2 ready, unhealthy: crash"
    assert cluster_health({**down, "metadata": {"generation": 5}}) is None
