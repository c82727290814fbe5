"""How the maintenance controllers are woken (no server: the informers' handlers are called directly).

In a storm the storm controller rewrites a policy's breaker counts every few seconds and every flow asks the
breaker before isolating its node; neither may cost a pass over every flow (that made a storm of N nodes
O(N²) in the 10,000-node profile)."""

from __future__ import annotations

from typing import Any

from lightkube.config.kubeconfig import KubeConfig

from kokpit._lib.clock import FakeClock, format_time
from kokpit.api.maintenance import default_policy_spec
from kokpit.client import Client
from kokpit.operators.maintenance import MaintenanceOperator
from kokpit.operators.maintenance._policy import policy_spec
from kokpit.runtime import Manager

Obj = dict[str, Any]


class _Driver:
    pass


def _policy(rv: str, *, open_: bool = False, faulty: int = 0, max_faulty: str = "50%") -> Obj:
    spec = default_policy_spec().to_wire()
    spec["storm"] = {"maxFaulty": max_faulty, "window": "10m"}
    return {"metadata": {"name": "default", "resourceVersion": rv}, "spec": spec,
            "status": {"storm": {"open": open_, "faultyNodes": faulty}}}


def _flow(name: str, node: str, created: str, *, done: bool = False) -> Obj:
    conds = [{"type": "Completed", "status": "True" if done else "False"}]
    return {"metadata": {"name": name, "namespace": "", "uid": name, "resourceVersion": "1",
                         "creationTimestamp": created},
            "spec": {"nodeName": node, "policy": "default"}, "status": {"conditions": conds}}


def _operator(clock: FakeClock) -> MaintenanceOperator:
    conf = KubeConfig.from_dict({
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"})
    client = Client(conf.get())
    manager = Manager(client, http_port=None, handle_signals=False, clock=clock)
    return MaintenanceOperator(manager, _Driver(), clock=clock, install_default_policy=False)


async def test_policy_count_rewrites_wake_no_flow_but_a_spec_or_breaker_change_wakes_all() -> None:
    clock = FakeClock()
    mo = _operator(clock)
    now = format_time(clock.now())
    for i in range(3):
        f = _flow(f"f{i}", f"n{i}", now, done=(i == 2))
        mo.flow_informer.store.put(f)
    q = mo.flow_controller.queue
    before = _policy("1", faulty=1)
    mo.policy_informer._dispatch_update(before, _policy("2", faulty=2))  # the storm controller's counts
    assert len(q) == 0
    mo.policy_informer._dispatch_update(_policy("2", faulty=2), _policy("3", open_=True, faulty=2))
    assert sorted(r.name for r in q._queue) == ["f0", "f1"]  # the open flows, not the finished one
    while len(q):  # drained as workers would
        q.done(await q.get())
    changed = _policy("4", open_=True, faulty=2, max_faulty="10%")
    mo.policy_informer._dispatch_update(_policy("3", open_=True, faulty=2), changed)
    assert len(q) == 2


def _four_nodes_limit_two(clock: FakeClock) -> MaintenanceOperator:
    mo = _operator(clock)
    for i in range(4):
        mo.node_informer.store.put({"metadata": {"name": f"n{i}", "namespace": "", "resourceVersion": "1"}})
    mo.policy_informer.store.put(_policy("1", max_faulty="50%"))  # limit 2 of 4 nodes
    return mo


async def test_storm_verdict_is_kept_until_a_flow_opens_or_closes() -> None:
    clock = FakeClock()
    mo = _four_nodes_limit_two(clock)
    now = format_time(clock.now())
    storm = mo.storm
    for i in range(2):
        f = _flow(f"f{i}", f"n{i}", now)
        mo.flow_informer.store.put(f)
        mo.flow_informer._dispatch_add(f)
    assert storm.is_open("default") is False
    assert policy_spec(mo.policy_informer.store.get_by_name("default"))[0] is not None  # a real verdict
    # a flow at work rewrites its status: no count moves, the verdict is not recomputed
    calls = 0
    real = storm.flows.list

    def counting() -> list[Obj]:
        nonlocal calls
        calls += 1
        return real()

    storm.flows.list = counting  # type: ignore[method-assign]
    old = _flow("f0", "n0", now)
    new = {**old, "status": {"conditions": old["status"]["conditions"], "phase": "x"}}
    mo.flow_informer._dispatch_update(old, new)
    assert storm.is_open("default") is False and calls == 0
    # a third flow appears: more than 2 of 4 nodes started a flow within the window
    f = _flow("f2", "n2", now)
    mo.flow_informer.store.put(f)
    mo.flow_informer._dispatch_add(f)
    assert storm.is_open("default") is True and calls == 1
    # a second later the count is taken again even when nothing moved (arrivals age out of the window)
    clock._t += 1.5
    assert storm.is_open("default") is True and calls == 2


def _fault(node: str, created: str, *, state: str = "Active", count: int = 1) -> Obj:
    return {"metadata": {"name": f"{node}-kernel-deadlock", "namespace": "", "resourceVersion": str(count)},
            "spec": {"nodeName": node, "type": "kernel-deadlock"},
            "status": {"state": state, "flow": "reboot", "firstSeen": created, "count": count,
                       "conditions": [{"type": "Accepted", "status": "True"}]}}


async def test_storm_counts_faults_as_they_arrive_but_not_their_heartbeats() -> None:
    clock = FakeClock()
    mo = _four_nodes_limit_two(clock)
    now = format_time(clock.now())
    storm, sq = mo.storm, mo.storm_controller.queue
    for i in range(3):  # three nodes faulty, no flow opened yet
        f = _fault(f"n{i}", now)
        mo.fault_informer.store.put(f)
        mo.fault_informer._dispatch_add(f)
    assert storm.is_open("default") is True
    assert sq._waiting_ready  # the storm controller is woken (after its half-second debounce)
    sq._waiting_ready.clear()
    sq._waiting.clear()
    # a heartbeat refresh of an active fault moves nothing: no wake-up
    old = mo.fault_informer.store.get_by_name("n0-kernel-deadlock")
    assert old is not None
    new = _fault("n0", now, count=2)
    mo.fault_informer.store.put(new)
    mo.fault_informer._dispatch_update(old, new)
    assert not sq._waiting_ready and len(sq) == 0
    # two faults resolve: one node faulty of a limit of 2; the breaker closes once the count is taken again
    for i in (1, 2):
        old = mo.fault_informer.store.get_by_name(f"n{i}-kernel-deadlock")
        new = _fault(f"n{i}", now, state="Resolved", count=3)
        mo.fault_informer.store.put(new)
        mo.fault_informer._dispatch_update(old, new)
    assert sq._waiting_ready
    clock._t += 0.3
    mo.policy_informer.store.put(_policy("2", open_=True, max_faulty="50%"))
    assert storm.is_open("default") is False
