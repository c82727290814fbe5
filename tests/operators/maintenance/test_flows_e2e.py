"""Maintenance flows end to end through real processes (issue 15 item 4): a NodeFault opens a flow that
isolates the node under a risk-center permit, labels its pods for migration, evicts what is left at the
deadline, repairs the node through the simulator, verifies and gives it back — each flow type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.operators.maintenance.conftest import Fleet, cond, eventually, fast_policy, report_fault

from kokpit.api.maintenance import MIGRATE_LABEL, TAINT_KEY
from kokpit.client import POD, Client, Kind, NotFoundError
from kokpit.operators.maintenance import NODE_FAULT
from kokpit.runtime.permits import PERMIT

Obj = dict[str, Any]


REPLICASET = Kind("apps", "v1", "ReplicaSet", "replicasets")


async def make_pod(c: Client, name: str, node: str, *, owned: bool) -> Obj:
    """A pod bound to ``node``; ``owned``: controlled by a ReplicaSet (a real one: the garbage collector
    removes pods whose owner does not exist) that no controller-manager scales here."""
    meta: Obj = {"name": name, "namespace": "default", "labels": {"app": name}}
    if owned:
        rs = await c.create(REPLICASET, {"metadata": {"name": f"{name}-rs", "namespace": "default"}, "spec": {
            "replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                                    "uid": rs["metadata"]["uid"], "controller": True}]
    out: Obj = await c.create(POD, {"metadata": meta,
                                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]}})
    return out


async def running(c: Client, *names: str) -> bool:
    pods = [await c.get(POD, n, "default") for n in names]
    return all((p.get("status") or {}).get("phase") == "Running" for p in pods)


async def test_reboot_flow_isolates_migrates_drains_reboots_verifies_and_restores(
        fleet_factory: Callable[..., Awaitable[Fleet]]) -> None:
    fleet = await fleet_factory(nodes=3)
    c, node = fleet.c, fleet.nodes[0]
    try:
        await make_pod(c, "web-1", node, owned=True)
        await make_pod(c, "bare-1", node, owned=False)
        await eventually(lambda: running(c, "web-1", "bare-1"), 20, "the pods running")
        assert fleet.sim is not None and fleet.sim.book is not None
        fleet.sim.book.fault(node, "hang")  # the host stops answering; a reboot clears it
        await report_fault(c, node, "kernel-deadlock", "reboot")

        # isolated: cordoned + tainted, under a granted node-isolate permit
        async def isolated() -> Obj | None:
            n = await fleet.node(node)
            taints = [t for t in n["spec"].get("taints") or [] if t["key"] == TAINT_KEY]
            return n if n["spec"].get("unschedulable") and taints else None

        await eventually(isolated, 30, "the node cordoned and tainted")
        flow = await fleet.flow_of(node)
        assert flow is not None and flow["spec"]["flow"] == "reboot"
        # pods labelled to be migrated, with reason and deadline
        pod = await eventually(lambda: _labelled(fleet, "web-1"), 20, "web-1 labelled to be migrated")
        ann = pod["metadata"]["annotations"]
        assert ann["kokpit.io/migration-deadline"] and node in ann["kokpit.io/migration-reason"]
        assert ann["kokpit.io/maintenance-flow"] == flow["metadata"]["name"]

        done = await eventually(lambda: fleet.completed(node), 60, "the flow completed")
        st = done["status"]
        assert [s["name"] for s in st["steps"]] == ["Isolate", "Migrate", "Drain", "Repair", "Verify", "Restore"]
        assert all(s["outcome"] == "Succeeded" for s in st["steps"]), st["steps"]
        assert cond(done, "Verified")["status"] == "True"
        assert st["history"][0]["action"] == "Reboot" and st["history"][0]["outcome"] == "Succeeded"
        pods = {p["name"]: p["action"] for p in st["pods"]}
        assert pods == {"web-1": "Evicted", "bare-1": "Deleted"}, st["pods"]
        # the bare pod is gone, deleted by the flow; the node is schedulable again, untainted
        n = await fleet.node(node)
        assert not n["spec"].get("unschedulable")
        assert not [t for t in n["spec"].get("taints") or [] if t["key"] == TAINT_KEY]
        assert (n["metadata"].get("annotations") or {}).get("kokpit.io/cordoned-by") is None
        # exactly one reboot happened on the host, and it cleared the hang
        acts = await fleet.actions(node)
        assert acts.count("reboot-started") == 1 and acts.count("reboot-done") == 1, acts
        # the fault is resolved by the flow; every permit is released Succeeded
        fault = await c.get(NODE_FAULT, f"{node}.kernel-deadlock")
        assert fault["status"]["state"] == "Resolved"
        assert fault["status"]["resolution"]["by"] == f"maintenance-flow/{done['metadata']['name']}"
        async def released() -> list[Obj] | None:
            mine = [p for p in (await c.list(PERMIT, "default")).items
                    if p["spec"]["holder"] == "maintenance-flow/c1"]
            states = {(p["status"].get("state"), p["status"].get("outcome")) for p in mine}
            return mine if states == {("Released", "Succeeded")} else None

        mine = await eventually(released, 30, "every permit of the flow released Succeeded")
        assert {p["spec"]["operation"] for p in mine} == {"node-isolate", "node-drain", "node-reboot"}
        # the flow's times are in the operator's histograms (they were empty while the reconcile's view of the
        # flow lacked its creationTimestamp)
        m = await asyncio.to_thread(fleet.metrics)
        assert m["kokpit_maintenance_time_to_isolate_seconds_count"] >= 1
        assert m["kokpit_maintenance_time_to_repair_seconds_count"] >= 1
        assert 0 < m["kokpit_maintenance_time_to_isolate_seconds_sum"] <= m[
            "kokpit_maintenance_time_to_repair_seconds_sum"]
    except BaseException:
        print(fleet.operator_log())
        raise


async def _labelled(fleet: Fleet, name: str) -> Obj | None:
    try:
        p: Obj = await fleet.c.get(POD, name, "default")
    except NotFoundError:
        return None
    return p if (p["metadata"].get("labels") or {}).get(MIGRATE_LABEL) == "true" else None


async def test_component_restart_and_hardware_ticket_flows(fleet_factory: Callable[..., Awaitable[Fleet]]) -> None:
    from tests.operators.maintenance.test_escalation_e2e import kokpit_fault

    # One attempt must be enough here (the test counts one restart): give it a timeout a loaded CI machine
    # meets; escalation after a timeout has its own test.
    policy = fast_policy()
    policy["spec"]["flows"][0]["timeout"] = "40s"
    fleet = await fleet_factory(nodes=3, policy=policy)
    c, a, b = fleet.c, fleet.nodes[0], fleet.nodes[1]
    assert fleet.sim is not None and fleet.sim.book is not None
    book = fleet.sim.book
    try:
        book.fault(a, "component-stop", "kubelet")  # the kubelet stopped: restart it, no drain needed
        await report_fault(c, a, "kubelet-unhealthy", "component-restart", component="kubelet")
        book.fault(b, "hardware")  # a broken disk: a person must replace it
        await report_fault(c, b, "disk-failure", "hardware-repair")

        done = await eventually(lambda: fleet.completed(a), 60, "the component restarted and the node back")
        assert [s["name"] for s in done["status"]["steps"]] == ["Isolate", "Repair", "Verify", "Restore"]
        assert done["status"]["history"][0]["action"] == "ComponentRestart"
        assert "kubelet" in done["status"]["history"][0]["message"]
        assert (await fleet.actions(a)).count("restart-started") == 1

        async def ticket_open() -> Obj | None:
            f = await fleet.flow_of(b)
            return f if cond(f, "Repaired").get("reason") == "TicketOpen" else None

        flow = await eventually(ticket_open, 60, "the hardware repair ticket open")
        assert flow["status"]["ticket"]["id"] and not flow["status"]["ticket"].get("closedAt")
        assert cond(flow, "Migrated")["status"] == "True"  # drained before the person comes
        n = await fleet.node(b)
        assert n["spec"].get("unschedulable")
        book.fault(b, "recover")  # the technician replaced the disk
        res = await asyncio.to_thread(kokpit_fault, fleet, "resolve", b, "--note", "disk replaced, RMA 4711")
        assert res.returncode == 0, res.stderr
        done = await eventually(lambda: fleet.completed(b), 60, "the node verified and given back")
        assert done["status"]["ticket"]["closedAt"] and "RMA 4711" in done["status"]["ticket"]["message"]
        assert done["status"]["humanActions"][0]["note"] == "disk replaced, RMA 4711"
        assert not (await fleet.node(b))["spec"].get("unschedulable")
        repairs = [x for x in await fleet.actions(b) if x.split("-")[0] in ("reboot", "reinstall", "restart")]
        assert not repairs, repairs  # a ticket: no automatic repair ran
    except BaseException:
        print(fleet.operator_log())
        raise
