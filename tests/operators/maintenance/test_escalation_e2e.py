"""Escalation to a person and back (issue 15 item 4): a repair that is not verified within its timeout
escalates to the next stronger one; after the last the flow is ManualRequired — the node stays isolated, a
condition and a Warning Event say so — and `kokpit fault resolve|retry` (run as the real CLI, credentials
from KUBECONFIG) finishes it, recorded on the flow with who, when and the note."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.operators.faults.test_e2e import Receiver, free_port
from tests.operators.maintenance.conftest import Fleet, cond, eventually, fast_policy, report_fault

from kokpit.api.maintenance import TAINT_KEY
from kokpit.client import EVENT
from kokpit.operators.machine import MACHINE
from kokpit.operators.maintenance import NODE_FAULT
from kokpit.runtime.faultreports import FAULTSUBSCRIPTION

Obj = dict[str, Any]


def kokpit_fault(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kokpit.cli.main", "fault", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(fleet.apiserver.kubeconfig)})


async def manual(fleet: Fleet, node: str) -> Obj | None:
    f = await fleet.flow_of(node)
    return f if f is not None and cond(f, "ManualRequired").get("status") == "True" else None


@pytest.mark.timeout(360)  # two escalations of 4 s timeouts, two people, a webhook: 120 s ran out at load 20
async def test_escalation_to_manual_required_then_resolve_and_retry(
        fleet_factory: Callable[..., Awaitable[Fleet]]) -> None:
    policy = fast_policy(escalation=["reboot", "reinstall"])
    for f in policy["spec"]["flows"]:
        if f["name"] in ("reboot", "reinstall"):
            f["timeout"] = "4s"
    # two broken nodes of three: under the default test budget (maxUnavailable 50% = 1 node) the risk center
    # short-circuits as MachineHealthCheck's maxUnhealthy does — a node that is down is not isolated while more
    # are down than allowed — so this test of escalation gives the budget room for both
    fleet = await fleet_factory(nodes=3, policy=policy, isolate_limit={"maxUnavailable": 2})
    c = fleet.c
    a, b = fleet.nodes[0], fleet.nodes[1]
    assert fleet.sim is not None and fleet.sim.book is not None
    # the person on call subscribes to escalations only: a real local HTTP receiver
    receiver = Receiver(free_port())
    await receiver.start()
    await c.create(FAULTSUBSCRIPTION, {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultSubscription",
                                       "metadata": {"name": "on-call"},
                                       "spec": {"url": f"http://127.0.0.1:{receiver.port}/page",
                                                "states": ["ManualRequired"]}})
    try:
        for n in (a, b):  # a disk that is really broken: neither a reboot nor a reinstall helps
            fleet.sim.book.fault(n, "hardware")
            await report_fault(c, n, "disk-failure", "reboot")
        flow_a = await eventually(lambda: manual(fleet, a), 90, f"{a} handed to a person")
        await eventually(lambda: manual(fleet, b), 30, f"{b} handed to a person")
        hist = [(h["flow"], h["outcome"]) for h in flow_a["status"]["history"]]
        assert hist == [("reboot", "TimedOut"), ("reinstall", "TimedOut")], hist
        assert "a person must finish it" in cond(flow_a, "ManualRequired")["message"]
        node = await fleet.node(a)  # the node stays isolated
        assert node["spec"].get("unschedulable") and [t for t in node["spec"]["taints"] if t["key"] == TAINT_KEY]
        async def reasons() -> set[tuple[str, str]] | None:  # Events are written after the status they tell of
            events = (await c.list(EVENT, "default",
                                   field_selector=f"involvedObject.name={flow_a['metadata']['name']}")).items
            got = {(e["type"], e["reason"]) for e in events}
            return got if {("Warning", "ManualRequired"), ("Warning", "Escalated")} <= got else None

        await eventually(reasons, 30, "the Warning Events ManualRequired and Escalated")
        acts = await fleet.actions(a)
        assert acts.count("reboot-started") == 1 and acts.count("reinstall-started") == 1, acts
        # ... and a webhook says so: the person learns it without watching the cluster
        async def paged() -> list[Obj] | None:
            got = [x for x in receiver.bodies if x["fault"]["spec"]["nodeName"] == a]
            return got or None
        page = (await eventually(paged, 30, f"the escalation of {a} POSTed to the subscription"))[0]
        assert page["type"] == "ManualRequired" and page["id"].endswith(
            f"/ManualRequired@{page['fault']['status']['firstSeen']}")
        assert page["fault"]["status"]["manualRequired"]["maintenanceFlow"] == flow_a["metadata"]["name"]
        assert "a person must finish it" in page["fault"]["status"]["manualRequired"]["message"]
        assert {x["fault"]["spec"]["nodeName"] for x in receiver.bodies} <= {a, b}  # escalations only
        marked = (await c.list(NODE_FAULT, label_selector={"kokpit.io/manual-required": "true"})).items
        assert a in {f["spec"]["nodeName"] for f in marked}  # watchers can select them too

        # a person replaces the disk of `a` and says so: the flow verifies (the machine operator reinstalls
        # the components the OS reinstall wiped) and gives the node back
        fleet.sim.book.fault(a, "recover")
        res = await asyncio.to_thread(kokpit_fault, fleet, "resolve", a, "--note", "replaced the disk")
        assert res.returncode == 0, res.stderr
        assert "Resolve of node" in res.stdout and "recorded" in res.stdout, res.stdout
        done = await eventually(lambda: fleet.completed(a), 60, f"{a} verified and given back")
        human = done["status"]["humanActions"]
        assert [(h["action"], h["note"]) for h in human] == [("Resolve", "replaced the disk")]
        assert human[0]["user"] and human[0]["at"] and not human[0]["user"].startswith("unknown")
        assert cond(done, "Completed")["reason"] == "Completed"
        m = await c.get(MACHINE, a)
        assert cond(m, "ComponentsReady")["status"] == "True"
        assert not (await fleet.node(a))["spec"].get("unschedulable")

        # `b`: the fault goes away by itself meanwhile; a person asks to retry: the reboot runs again
        fleet.sim.book.fault(b, "recover")
        res = await asyncio.to_thread(kokpit_fault, fleet, "retry", b, "--note", "cable reseated")
        assert res.returncode == 0, res.stderr
        done_b = await eventually(lambda: fleet.completed(b), 60, f"{b} repaired after the retry")
        assert [h["action"] for h in done_b["status"]["humanActions"]] == ["Retry"]
        assert done_b["status"]["history"][-1]["flow"] == "reboot"
        assert done_b["status"]["history"][-1]["outcome"] == "Succeeded"
        assert (await fleet.actions(b)).count("reboot-started") == 2
        fault_b = next(f for f in (await c.list(NODE_FAULT)).items if f["spec"]["nodeName"] == b)
        assert fault_b["status"]["state"] == "Resolved"
        assert not [x for x in receiver.bodies if x["type"] != "ManualRequired"]

        # bad input: a node without an open flow is refused with a message saying what to check
        res = await asyncio.to_thread(kokpit_fault, fleet, "resolve", fleet.nodes[2])
        assert res.returncode != 0 and "no open maintenance flow" in res.stderr, (res.stdout, res.stderr)
    except BaseException:
        print(fleet.operator_log())
        raise
    finally:
        await receiver.stop()
