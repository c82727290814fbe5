"""The machine reconcile with a fake driver and a fake clock: planning, failures, bad specs, gates, cordons."""

from __future__ import annotations

from typing import Any

from kokpit.operators.machine import CORDON_ANNOTATION

H = Any  # the Harness from conftest


def _stack(h: H) -> None:
    h.mpv("containerd-1.7", "containerd", "1.7.0")
    h.mpv("kubelet-1.30", "kubelet", "1.30.0", ("containerd",))
    h.mpv("kubelet-1.31", "kubelet", "1.31.0", ("containerd",))
    h.mpv("sysctl-v1", "sysctl", "v1")
    h.mpv("kernel-patch-5", "kernel-patch", "5", ("sysctl",))


async def test_installs_in_dependency_order_and_uncordons(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["kubelet-1.30", "kernel-patch-5", "sysctl-v1", "containerd-1.7"])
    await h.run()
    assert h.cordoned(), "a node whose machine is not ready is cordoned"
    assert h.cond("ComponentsReady")["status"] == "False"
    await h.converge()
    order = [c for _, _, c, _ in h.driver.log]
    assert order.index("containerd") < order.index("kubelet")
    assert order.index("sysctl") < order.index("kernel-patch")
    assert len(order) == 4 and all(a == "install" for _, a, _, _ in h.driver.log)
    comps = h.components()
    assert {c["installState"] for c in comps.values()} == {"Installed"}
    assert {c["runState"] for c in comps.values()} == {"Running"}
    assert comps["kubelet"]["packageVersion"] == "kubelet-1.30"
    for t in ("ComponentsReady", "NodeHealthy", "ReadinessGatesMet", "Ready"):
        assert h.cond(t)["status"] == "True", h.cond(t)
    assert h.status()["componentsReady"] == "4/4"
    assert h.status()["phase"] == "Ready"
    assert h.status()["observedGeneration"] == 1
    assert not h.cordoned()
    node = h.nodes.get_by_name("n1")
    assert CORDON_ANNOTATION not in (node["metadata"].get("annotations") or {})
    # each installed component had its post-change health check, dependencies re-checked before a change
    assert ("n1", "kubelet") in h.driver.health_calls and ("n1", "containerd") in h.driver.health_calls


async def test_idle_reconcile_writes_nothing_and_reads_nothing(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    h.client.calls.clear()
    log = list(h.driver.log)
    for _ in range(3):
        assert await h.run() is None
    assert h.client.calls == [], "idle reconciles write nothing and read only caches"
    assert h.driver.log == log


async def test_upgrade_swaps_version_in_place(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    h.driver.log.clear()
    h.machine(packages=["containerd-1.7", "kubelet-1.31"])
    await h.run()
    assert h.driver.log == [("n1", "install", "kubelet", "1.31.0")]
    assert h.cond("ComponentsReady")["reason"] == "Upgrading"
    assert "1.30.0 → 1.31.0" in h.cond("ComponentsReady")["message"]
    assert h.cordoned(), "upgrading cordons the node"
    await h.converge()
    assert h.components()["kubelet"]["version"] == "1.31.0"
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    assert h.status()["observedGeneration"] == 2
    assert [e["reason"] for e in h.events() if e["reason"] in ("Upgrading", "Installing")] == [
        "Installing", "Installing", "Upgrading"]


async def test_uninstall_in_reverse_dependency_order(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30", "sysctl-v1"])
    await h.converge()
    h.driver.log.clear()
    h.machine(packages=["sysctl-v1"])
    await h.run()
    assert h.cond("ComponentsReady")["reason"] == "Uninstalling"
    assert h.components()["kubelet"]["installState"] == "Uninstalling"
    await h.converge()
    assert h.driver.log == [("n1", "uninstall", "kubelet", "1.30.0"), ("n1", "uninstall", "containerd", "1.7.0")]
    assert set(h.components()) == {"sysctl"}
    assert h.cond("ComponentsReady")["status"] == "True"


async def test_backoff_keeps_growing_when_the_retry_is_seen_in_flight(harness: H) -> None:
    """The real operator is woken while a retry runs (the poller, status writes): seeing the component
    Installing must not make it forget the failures before, or every retry would be "attempt 1"."""
    h = harness
    _stack(h)
    h.driver.fail[("kubelet", "1.30.0")] = "package kubelet-1.30.0 not found in repo"
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    delays = []
    for attempt in (2, 3):
        r = await h.run()
        assert r is not None and r.requeue_after is not None
        delays.append(r.requeue_after)
        await h.clock.advance(r.requeue_after + 0.01)
        await h.run()  # the retry starts
        assert h.components()["kubelet"]["installState"] in ("Installing", "Upgrading")
        await h.run()  # woken while it is in flight
        h.driver.complete()
        await h.run()  # failed again
        assert f"attempt {attempt}" in h.cond("ComponentsReady")["message"]
    r = await h.run()
    assert r is not None and r.requeue_after is not None
    delays.append(r.requeue_after)
    assert delays[0] < delays[1] < delays[2], delays


async def test_a_deleted_machine_leaves_no_memory_behind(harness: H) -> None:
    h = harness
    _stack(h)
    h.driver.fail[("kubelet", "1.30.0")] = "package kubelet-1.30.0 not found in repo"
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    # the failure is remembered in the Machine's status (it goes with the Machine); the passed checks are cached
    assert [f["name"] for f in h.status().get("failures", [])] == ["install/kubelet"]
    assert any(k[0] == "n1" for k in h.rec._health)
    h.machines.delete("n1")
    await h.run()
    assert not [k for k in h.rec._health if k[0] == "n1"] and not h.rec._remembered


async def test_failure_is_recorded_and_retried_with_growing_backoff(harness: H) -> None:
    h = harness
    _stack(h)
    h.driver.fail[("kubelet", "1.30.0")] = "package kubelet-1.30.0 not found in repo"
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    comp = h.components()["kubelet"]
    assert comp["installState"] == "Failed"
    assert "not found in repo" in comp["message"]
    c = h.cond("ComponentsReady")
    assert c["status"] == "False" and c["reason"] == "InstallFailed" and "not found in repo" in c["message"]
    assert h.status()["phase"] == "Failed"
    warnings = h.events("InstallFailed")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    attempts = len([x for x in h.driver.log if x[2] == "kubelet"])
    # before the backoff expires nothing is retried; the reconcile asks to come back when it does
    r1 = await h.run()
    assert r1 is not None and r1.requeue_after is not None and 0 < r1.requeue_after <= 1.0
    assert len([x for x in h.driver.log if x[2] == "kubelet"]) == attempts
    await h.clock.advance(1.01)
    await h.run()  # retry 1 starts
    assert len([x for x in h.driver.log if x[2] == "kubelet"]) == attempts + 1
    h.driver.complete()
    r2 = await h.run()  # fails again: the second backoff is longer
    assert r2 is not None and r2.requeue_after is not None and r2.requeue_after > r1.requeue_after
    assert "attempt 2" in h.cond("ComponentsReady")["message"]
    # lift the failure: the next retry succeeds and the machine recovers
    del h.driver.fail[("kubelet", "1.30.0")]
    await h.clock.advance(r2.requeue_after + 0.01)
    await h.converge()
    assert h.components()["kubelet"]["installState"] == "Installed"
    assert h.cond("Ready")["status"] == "True"


async def test_a_rollback_after_a_failed_upgrade_is_not_held_by_that_versions_backoff(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    h.driver.fail[("kubelet", "1.31.0")] = "kubelet 1.31.0 is broken"
    h.machine(packages=["containerd-1.7", "kubelet-1.31"])
    await h.converge()
    for _ in range(3):  # a few failed attempts: the backoff of 1.31.0 grows
        r = await h.run()
        assert r is not None and r.requeue_after is not None
        await h.clock.advance(r.requeue_after + 0.01)
        await h.run()
        h.driver.complete()
    waiting = await h.run()
    assert h.components()["kubelet"]["installState"] == "Failed"
    assert waiting is not None and waiting.requeue_after is not None and waiting.requeue_after > 1.0
    # back to 1.30 (a rollout's rollback): tried now, without waiting out 1.31.0's backoff
    attempts = len([x for x in h.driver.log if x[2] == "kubelet"])
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.run()
    assert h.driver.log[-1][2:] == ("kubelet", "1.30.0") and len([x for x in h.driver.log if x[2] == "kubelet"]) \
        == attempts + 1
    await h.converge()
    assert h.components()["kubelet"]["installState"] == "Installed" and h.components()["kubelet"]["version"] == \
        "1.30.0"
    assert not [f for f in h.status().get("failures") or [] if f["name"] == "install/kubelet"]


async def test_restart_mid_plan_neither_repeats_nor_loses_a_step(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.run()  # containerd install started
    assert h.driver.log == [("n1", "install", "containerd", "1.7.0")]
    h.new_reconciler()  # the operator died and came back: no memory
    await h.run()
    assert h.driver.log == [("n1", "install", "containerd", "1.7.0")], "in-flight step not redone"
    h.driver.complete()
    h.new_reconciler()
    await h.converge()
    assert h.driver.log == [("n1", "install", "containerd", "1.7.0"), ("n1", "install", "kubelet", "1.30.0")]


async def test_bad_specs_give_clear_conditions_and_touch_nothing(make_harness: Any) -> None:
    cases = {
        "missing": (["containerd-1.7", "kubelet-9"], "MissingPackageVersion", "kubelet-9 not found"),
        "duplicate": (["containerd-1.7", "kubelet-1.30", "kubelet-1.31"], "DuplicateComponent",
                      "component kubelet comes from 2 packages (kubelet-1.30, kubelet-1.31)"),
        "missing-dep": (["kubelet-1.30"], "MissingDependency", "kubelet (kubelet-1.30) depends on containerd"),
        "cycle": (["a-1", "b-1"], "DependencyCycle", "dependency cycle a → b → a"),
    }
    for name, (packages, reason, text) in cases.items():
        h = make_harness()
        _stack(h)
        h.mpv("a-1", "a", "1", ("b",))
        h.mpv("b-1", "b", "1", ("a",))
        h.machine(packages=packages)
        await h.run()
        c = h.cond("ComponentsReady")
        assert (c["status"], c["reason"]) == ("False", reason), name
        assert text in c["message"], (name, c["message"])
        assert h.driver.log == [], name
        assert h.status()["phase"] == "Invalid"
        assert not h.cordoned(), f"{name}: a spec mistake never cordons the node"
        warnings = [e for e in h.events(reason) if e["type"] == "Warning"]
        assert len(warnings) == 1 and text in warnings[0]["message"], (name, h.events())
        await h.run()  # looked at again: no second Warning for the same mistake, still nothing done
        assert len([e for e in h.events(reason) if e["type"] == "Warning"]) == 1, name
        assert h.driver.log == [] and not h.cordoned(), name


async def test_a_spec_mistake_holds_a_healthy_node_exactly_as_it_is(harness: H) -> None:
    """Issue 13: a Machine naming a missing MachinePackageVersion, or two packages for one component,
    used to cordon a healthy node; it must hold it as it is (no cordon, no uninstall) and say why."""
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    installed = list(h.driver.log)
    for packages, reason in ((["containerd-1.7", "kubelet-9"], "MissingPackageVersion"),
                             (["containerd-1.7", "kubelet-1.30", "kubelet-1.31"], "DuplicateComponent"),
                             (["kubelet-1.30"], "MissingDependency")):
        h.machine(packages=packages)
        for _ in range(3):
            await h.run()
        c = h.cond("ComponentsReady")
        assert (c["status"], c["reason"]) == ("False", reason)
        assert h.status()["phase"] == "Invalid"
        assert h.driver.log == installed, "nothing installed or uninstalled"
        assert not h.cordoned(), "the healthy node stays schedulable"
        r = h.cond("Ready")
        assert (r["status"], r["reason"]) == ("False", reason), "status never claims the spec is held"
        assert any(e["type"] == "Warning" for e in h.events(reason)), h.events()
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])  # fixed: back to normal, nothing to do
    await h.converge()
    assert h.cond("ComponentsReady")["status"] == "True" and h.status()["phase"] == "Ready"
    assert h.driver.log == installed and not h.cordoned()


async def test_readiness_gates_and_cordon_rules(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7"], gates=["NetworkReady"])
    await h.converge()
    g = h.cond("ReadinessGatesMet")
    assert (g["status"], g["reason"]) == ("False", "GateNotReported") and "NetworkReady" in g["message"]
    assert h.cordoned()
    h.report("n1", "cni-operator", {"NetworkReady": '{"status":"True","reason":"CNIUp","message":"ok"}'})
    await h.run()
    assert h.cond("NetworkReady")["source"] == "cni-operator"
    assert h.cond("NetworkReady")["reason"] == "CNIUp"
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    h.report("n1", "cni-operator", {"NetworkReady": "False"})
    await h.run()
    assert h.cond("ReadinessGatesMet")["reason"] == "GateNotTrue" and h.cordoned()
    h.report("n1", "cni-operator", {"NetworkReady": "true"})
    await h.run()
    assert not h.cordoned()
    # a person's cordon always wins
    h.machine(packages=["containerd-1.7"], gates=["NetworkReady"], unschedulable=True)
    await h.run()
    assert h.cordoned() and h.cond("Ready")["status"] == "True" and h.status()["phase"] == "Cordoned"
    h.machine(packages=["containerd-1.7"], gates=["NetworkReady"], unschedulable=False)
    await h.run()
    assert not h.cordoned()
    # a Node cordoned by someone else (kubectl cordon) is left alone even when kokpit finds it ready
    h.node("n1", unschedulable=True)
    await h.run()
    assert h.cordoned()
    # node NotReady → cordoned by kokpit, and uncordoned when Ready again
    h.node("n1", ready="False")
    await h.run()
    assert h.cond("Ready")["reason"] == "NodeNotReady" and h.cordoned()
    # report removed → its condition disappears and the gate is unmet again
    h.configmaps.delete("default/cni-operator-n1")
    h.node("n1")
    await h.run()
    assert all(c["type"] != "NetworkReady" for c in h.status()["conditions"])
    assert h.cond("ReadinessGatesMet")["reason"] == "GateNotReported"


async def test_unhealthy_dependency_blocks_the_next_change(harness: H) -> None:
    h = harness
    _stack(h)
    h.driver.unhealthy[("n1", "containerd")] = "socket not answering"
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    assert [c for _, _, c, _ in h.driver.log] == ["containerd"], "kubelet waits for a healthy containerd"
    assert h.cond("NodeHealthy")["reason"] == "HealthCheckFailed"
    assert "socket not answering" in h.cond("ComponentsReady")["message"]
    assert h.events("HealthCheckFailed")
    del h.driver.unhealthy[("n1", "containerd")]
    await h.clock.advance(120)
    await h.converge()
    assert [c for _, _, c, _ in h.driver.log] == ["containerd", "kubelet"]
    assert h.cond("Ready")["status"] == "True"


async def test_unreachable_node_is_not_touched(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7"])
    h.driver.unreachable.add("n1")
    r = await h.run()
    assert h.driver.log == []
    assert (h.cond("NodeHealthy")["status"], h.cond("NodeHealthy")["reason"]) == ("Unknown", "NodeUnreachable")
    assert h.cond("ComponentsReady")["status"] == "Unknown"
    assert r is not None and r.requeue_after is not None
    assert h.cordoned()


async def test_losing_the_driver_does_not_cordon_a_ready_node(harness: H) -> None:
    """No report is not a bad report: a driver outage must not cordon the fleet (the Node's own Ready
    condition still cordons a host that is really down)."""
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7"])
    await h.converge()
    assert not h.cordoned()
    h.driver.unreachable.add("n1")
    await h.run()
    assert h.cond("NodeHealthy")["status"] == "Unknown"
    assert h.cond("ComponentsReady")["status"] == "True"
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    h.node("n1", ready="False")
    await h.run()
    assert h.cordoned()


async def test_machine_for_node_only_with_flag(make_harness: Any) -> None:
    from kokpit.runtime import Request

    off = make_harness()
    off.node("n9")
    off.driver.add_node("n9")
    await off.rec.reconcile_node(Request("", "n9"))
    assert off.machines.get_by_name("n9") is None
    on = make_harness(create_machines_for_nodes=True)
    _stack(on)
    on.node("n9")
    on.driver.add_node("n9")
    await on.driver.start("n9", __import__("kokpit.nodes").nodes.ComponentAction.INSTALL,
                          __import__("kokpit.nodes").nodes.ComponentSpec("containerd", "1.7.0"))
    on.driver.complete()
    await on.rec.reconcile_node(Request("", "n9"))
    m = on.machines.get_by_name("n9")
    assert m is not None and m["spec"] == {"nodeName": "n9", "packages": ["containerd-1.7"]}, m


async def test_poller_batches_and_wakes_only_changed_nodes(harness: H) -> None:
    from kokpit.operators.machine import NodeStatePoller

    h = harness
    for i in range(2500):
        h.driver.add_node(f"n{i}")
    woken: list[str] = []
    p = NodeStatePoller(h.driver, woken.append, batch_size=1000, clock=h.clock)
    for i in range(2500):
        p.track(f"n{i}", active=False)
    assert len(await p.poll_once(full=True)) == 2500
    assert h.driver.batch_calls == [1000, 1000, 500]
    woken.clear()
    await h.driver.start("n7", __import__("kokpit.nodes").nodes.ComponentAction.INSTALL,
                         __import__("kokpit.nodes").nodes.ComponentSpec("containerd", "1.7.0"))
    p.track("n7", active=True)
    h.driver.batch_calls.clear()
    assert await p.poll_once() == ["n7"]  # fast tick: only the active node is asked
    assert h.driver.batch_calls == [1] and woken == ["n7"]


async def test_restart_does_not_rerun_post_checks_but_editing_an_mpv_is_seen(harness: H) -> None:
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    assert h.components()["kubelet"]["healthCheckedVersion"] == "1.30.0"
    h.new_reconciler()
    h.driver.health_calls.clear()
    h.client.calls.clear()
    await h.run()
    assert h.driver.health_calls == [] and h.client.writes() == []
    # an MPV edited in place (new resourceVersion) is resolved again: now kubelet needs something missing
    m = h.mpvs.get_by_name("kubelet-1.30")
    m = {**m, "metadata": {**m["metadata"], "resourceVersion": "2"},
         "spec": {**m["spec"], "dependsOn": ["containerd", "cni"]}}
    h.mpvs.put(m)
    await h.run()
    assert h.cond("ComponentsReady")["reason"] == "MissingDependency"
    assert "depends on cni" in h.cond("ComponentsReady")["message"]


async def test_first_reports_are_fetched_in_one_batch(harness: H) -> None:
    h = harness
    _stack(h)
    for i in range(5):
        h.machine(f"m{i}", packages=["containerd-1.7"])
        h.poller.track(f"m{i}", active=True)
    from kokpit.runtime import Request

    await h.rec.reconcile(Request("", "m0"))
    await h.rec.reconcile(Request("", "m3"))
    assert h.driver.batch_calls == [5], "one states() call for every tracked node not yet polled"


async def test_without_a_health_check_the_report_is_the_check(harness: H) -> None:
    h = harness
    h.mpv("containerd-1.7", "containerd", "1.7.0", health=False)
    h.mpv("kubelet-1.30", "kubelet", "1.30.0", ("containerd",), health=False)
    h.driver.stopped.add(("n1", "containerd"))  # installs fine but does not run
    h.machine(packages=["containerd-1.7", "kubelet-1.30"])
    await h.converge()
    assert h.driver.health_calls == [], "no healthCheck configured: no driver health calls"
    assert [c for _, _, c, _ in h.driver.log] == ["containerd"], "kubelet waits for a running containerd"
    assert h.cond("NodeHealthy")["status"] == "False"
    assert h.cond("ComponentsReady")["status"] == "False"


async def test_zero_latency_plan_runs_in_one_reconcile_with_one_write(make_harness: Any) -> None:
    h = make_harness(auto=True)
    _stack(h)
    h.machine(packages=["containerd-1.7", "kubelet-1.30", "sysctl-v1"])

    class Instant:  # the driver completes every action before answering, like the simulator at latency 0
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def start(self, *a: Any) -> Any:
            await self.inner.start(*a)
            self.inner.complete()
            return (await self.inner.state(a[0])).components.get(a[2].name) or await self.inner.start(*a)

    h.driver = Instant(h.driver)
    h.new_reconciler()
    await h.run()
    assert [c for _, _, c, _ in h.driver.log] == ["containerd", "kubelet", "sysctl"]
    assert h.cond("Ready")["status"] == "True"
    assert h.client.writes("machines") == [("patch/status", "machines", "n1")]
    assert h.client.writes("nodes") == [], "never cordoned: the machine was ready at its first write"


async def test_readiness_gates_trust_only_their_sources(harness: H) -> None:
    """Issue 13: a malformed report from a second source overrode a valid one and cordoned the node."""
    h = harness
    _stack(h)
    h.machine(packages=["containerd-1.7"], gates=["NetworkReady"])
    m = h.machines.get_by_name("n1")
    assert m is not None
    m["spec"]["readinessGates"] = [{"conditionType": "NetworkReady", "sources": ["cni-operator"]}]
    h.machines.put(m)
    h.report("n1", "cni-operator", {"NetworkReady": '{"status":"True","reason":"CNIUp"}'})
    await h.converge()
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    assert not [c for c in h.status()["conditions"] if c["type"] == "ReportsTrusted"], "nothing flagged yet"
    # another source says False (and a malformed value): ignored, flagged, the node stays schedulable
    h.report("n1", "rogue", {"NetworkReady": "False"}, ns="team-a")
    h.report("n1", "broken", {"NetworkReady": "{not json"}, ns="team-b")
    await h.run()
    assert h.cond("Ready")["status"] == "True" and not h.cordoned()
    assert h.cond("NetworkReady")["source"] == "cni-operator"
    t = h.cond("ReportsTrusted")
    assert (t["status"], t["reason"]) == ("False", "UntrustedSource")
    assert "rogue" in t["message"] and "team-a/rogue-n1" in t["message"] and "broken" in t["message"]
    assert len([e for e in h.events("UntrustedSource") if e["type"] == "Warning"]) == 1
    await h.run()
    assert len(h.events("UntrustedSource")) == 1, "flagged once, not on every reconcile"
    # the trusted source going False still cordons: trust filters who may speak, not what they say
    h.report("n1", "cni-operator", {"NetworkReady": "False"})
    await h.run()
    assert h.cordoned() and h.cond("ReadinessGatesMet")["reason"] == "GateNotTrue"
    # the rogue reports removed: the flag clears
    h.configmaps.delete("team-a/rogue-n1")
    h.configmaps.delete("team-b/broken-n1")
    h.report("n1", "cni-operator", {"NetworkReady": "True"})
    await h.run()
    assert h.cond("ReportsTrusted")["status"] == "True" and not h.cordoned()
    # a gate without sources trusts everyone (as before): the pessimistic report wins
    h.machine(packages=["containerd-1.7"], gates=["NetworkReady"])
    h.report("n1", "rogue", {"NetworkReady": "False"}, ns="team-a")
    await h.run()
    assert h.cordoned() and h.cond("NetworkReady")["source"] == "rogue"
