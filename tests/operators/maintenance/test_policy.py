"""The flow controller's pure decisions: which flow a set of faults starts with, escalation, the storm
breaker (trips on arrivals, closes on what is still open), and which faults a flow acts on."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from kokpit._lib.clock import format_time
from kokpit.api.maintenance import MaintenancePolicySpec, default_policy_spec
from kokpit.operators.maintenance._policy import active_faults, escalate, resolve_limit, starting_flow, storm

Obj = dict[str, Any]
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def fault(name: str, type_: str, flow: str, state: str = "Active", accepted: bool = True) -> Obj:
    return {"metadata": {"name": name}, "spec": {"nodeName": "n1", "type": type_},
            "status": {"state": state, "flow": flow, "conditions": [
                {"type": "Accepted", "status": "True" if accepted else "False"}]}}


_IDS = itertools.count()


def flow(age_s: float, completed: bool = False) -> Obj:
    """A flow on a node of its own."""
    conds = [{"type": "Completed", "status": "True"}] if completed else []
    i = next(_IDS)
    return {"metadata": {"name": f"flow-{i}", "creationTimestamp": format_time(NOW - dt.timedelta(seconds=age_s))},
            "spec": {"policy": "default", "nodeName": f"node-{i}"}, "status": {"conditions": conds}}


def test_the_strongest_fault_picks_the_flow_and_routes_override_the_catalog() -> None:
    spec = default_policy_spec()
    faults = [fault("a", "kubelet-unhealthy", "component-restart"), fault("b", "disk-failure", "hardware-repair")]
    assert starting_flow(spec, faults)[0] == "hardware-repair"
    routed = MaintenancePolicySpec.model_validate({**spec.to_wire(), "faultTypes": [
        {"type": "disk-failure", "flow": "reinstall"}]})
    assert starting_flow(routed, faults)[0] == "reinstall"
    assert starting_flow(spec, [fault("c", "mystery", "")])[0] == "reboot"  # defaultFlow


def test_only_active_accepted_repairable_faults_count() -> None:
    got = active_faults([fault("a", "t", "reboot"), fault("b", "t", "reboot", state="Expired"),
                         fault("c", "t", "reboot", accepted=False), fault("d", "t", "none")])
    assert [f["metadata"]["name"] for f in got] == ["a"]


def test_escalation_retries_then_escalates_then_hands_to_a_person() -> None:
    spec = default_policy_spec()
    e = escalate(spec, "component-restart", 1, 0, "timed out")
    assert (e.flow, e.attempt, e.level) == ("component-restart", 2, 0)  # maxAttempts 2
    e = escalate(spec, "component-restart", 2, 0, "timed out")
    assert (e.flow, e.attempt, e.level) == ("reboot", 1, 1) and "escalating from component-restart" in e.message
    e = escalate(spec, "hardware-repair", 1, 3, "timed out")
    assert e.flow is None and "a person must finish it" in e.message


def test_storm_trips_on_arrivals_and_closes_when_few_remain_open() -> None:
    spec = MaintenancePolicySpec.model_validate({**default_policy_spec().to_wire(),
                                                 "storm": {"maxFaulty": "20%", "window": "10m"}})
    assert resolve_limit("20%", 10) == 2 and resolve_limit(3, 10) == 3 and resolve_limit("33%", 6) == 1
    calm = [flow(30), flow(60)]
    assert not storm(spec, calm, 10, False, NOW).open
    burst = [flow(5) for _ in range(3)]
    s = storm(spec, burst, 10, False, NOW)
    assert s.open and s.arrivals == 3 and s.limit == 2 and "fault storm" in s.message
    # arrivals older than the window do not trip it; once open it stays open while more than 2 are open
    old = [flow(3600) for _ in range(3)]
    assert not storm(spec, old, 10, False, NOW).open
    assert storm(spec, old, 10, True, NOW).open
    assert not storm(spec, [flow(5, completed=True) for _ in range(3)] + [flow(5)], 10, True, NOW).open


def node_fault(node: str, age_s: float, state: str = "Active", flow: str = "reboot") -> Obj:
    f = fault(f"{node}-kernel-deadlock", "kernel-deadlock", flow, state=state)
    f["spec"]["nodeName"] = node
    f["status"]["firstSeen"] = format_time(NOW - dt.timedelta(seconds=age_s))
    return f


def test_storm_counts_faulty_nodes_from_the_event_center_before_their_flows_exist() -> None:
    """In a storm flows are opened only as fast as they can be written: the breaker counts the faults the
    event center holds, one per node however many faults and flows it has."""
    spec = MaintenancePolicySpec.model_validate({**default_policy_spec().to_wire(),
                                                 "storm": {"maxFaulty": "20%", "window": "10m"}})
    faults = [node_fault(f"n{i}", 5) for i in range(3)]
    s = storm(spec, [], 10, False, NOW, faults)
    assert s.open and (s.arrivals, s.faulty) == (3, 3)
    # the same three nodes with a flow each and a second fault each: still three nodes
    flows = [{**flow(5), "spec": {"policy": "default", "nodeName": f"n{i}"}} for i in range(3)]
    again = faults + [{**node_fault(f"n{i}", 5), "metadata": {"name": f"n{i}-disk"}} for i in range(3)]
    s = storm(spec, flows, 10, False, NOW, again)
    assert (s.arrivals, s.faulty) == (3, 3)
    # reports the event center has not judged yet count (a storm outruns it); one it refused does not
    unjudged = [node_fault(f"u{i}", 5) for i in range(3)]
    for f in unjudged:
        f["status"]["conditions"] = []
    s = storm(spec, [], 10, False, NOW, unjudged)
    assert s.open and s.faulty == 3
    refused = node_fault("r", 5)
    refused["status"]["conditions"] = [{"type": "Accepted", "status": "False"}]
    assert storm(spec, [], 10, False, NOW, [*unjudged[:2], refused]).arrivals == 2
    # faults that are over, observe-only or older than the window do not trip it

    calm = [node_fault("a", 5, state="Resolved"), node_fault("b", 5, flow="none"), *[
        node_fault(f"o{i}", 3600) for i in range(3)]]
    s = storm(spec, [], 10, False, NOW, calm)
    assert not s.open and s.arrivals == 0 and s.faulty == 3
    # but once open, old faults still active hold it open (the fleet is not back)
    assert storm(spec, [], 10, True, NOW, calm).open
