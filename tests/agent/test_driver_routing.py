"""Driver selection per cluster or per Machine (issue 19): which driver and which agent endpoint a node gets,
and a router that sends every node to its driver — the machine operator sees one NodeDriver either way."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.nodes import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    InstallState,
    NodeState,
)
from kokpit.nodes.agent import AGENT, SIMULATOR, AgentDriver, DriverRouter, machine_route
from kokpit.nodes.mtls import TLSFiles


def node(*addrs: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"addresses": [{"type": t, "address": a} for t, a in addrs]}}


def test_machine_route() -> None:
    m_agent = {"spec": {"driver": {"name": "agent"}}}
    assert machine_route(None, None, default_driver=SIMULATOR) == (SIMULATOR, "")
    assert machine_route({"spec": {}}, node(("InternalIP", "10.0.0.5")), default_driver=AGENT) == \
        (AGENT, "https://10.0.0.5:9750")
    assert machine_route(m_agent, node(("Hostname", "n1"), ("InternalIP", "fd00::5")), default_driver=SIMULATOR,
                         agent_port=9999) == (AGENT, "https://[fd00::5]:9999")
    explicit = {"spec": {"driver": {"name": "agent", "endpoint": "https://127.0.0.1:4242"}}}
    assert machine_route(explicit, node(("InternalIP", "10.0.0.5")), default_driver=SIMULATOR) == \
        (AGENT, "https://127.0.0.1:4242")
    assert machine_route({"spec": {"driver": {"name": "simulator"}}}, None, default_driver=AGENT) == (SIMULATOR, "")
    assert machine_route(m_agent, None, default_driver=SIMULATOR) == (AGENT, "")  # not known yet


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, Any]] = []

    async def state(self, n: str) -> NodeState:
        self.calls.append(("state", n))
        return NodeState(n, True, {}, self.name)

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        self.calls.append(("states", tuple(nodes)))
        return {n: NodeState(n, True, {}, self.name) for n in nodes}

    async def start(self, n: str, action: ComponentAction, c: ComponentSpec) -> ComponentState:
        self.calls.append(("start", n))
        return ComponentState(c.name, c.version, InstallState.INSTALLING)

    async def health(self, n: str, component: str) -> HealthResult:
        return HealthResult(True, self.name)

    async def close(self) -> None:
        self.calls.append(("close", None))


async def test_router_sends_each_node_to_its_driver() -> None:
    sim, agent = Recording("sim"), Recording("agent")
    router = DriverRouter({SIMULATOR: sim, AGENT: agent},
                          lambda n: {"a1": AGENT, "a2": AGENT, "x": "ssh"}.get(n, SIMULATOR))
    got = await router.states(["s1", "a1", "s2", "a2", "x"])
    assert {n: s.message for n, s in got.items() if s.reachable} == {"s1": "sim", "s2": "sim", "a1": "agent",
                                                                       "a2": "agent"}
    assert not got["x"].reachable and "'ssh' is not configured" in got["x"].message
    assert sim.calls == [("states", ("s1", "s2"))] and agent.calls == [("states", ("a1", "a2"))]
    await router.start("a1", ComponentAction.INSTALL, ComponentSpec("c", "1"))
    assert agent.calls[-1] == ("start", "a1")
    assert (await router.health("s1", "c")).message == "sim"
    with pytest.raises(DriverError) as ei:
        await router.start("x", ComponentAction.INSTALL, ComponentSpec("c", "1"))
    assert not ei.value.retryable
    await router.close()
    assert sim.calls[-1] == ("close", None) and agent.calls[-1] == ("close", None)


async def test_agent_driver_without_endpoint_reports_unreachable(driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    d = AgentDriver(lambda n: {"b": "http://127.0.0.1:1"}.get(n), tls=driver_pki[1])
    try:
        got = await d.states(["a"])
        assert not got["a"].reachable and "no node agent endpoint" in got["a"].message
        with pytest.raises(DriverError) as ei:
            await d.start("b", ComponentAction.INSTALL, ComponentSpec("c", "1"))
        assert "not https://" in str(ei.value) and not ei.value.retryable
        st = await d.state("a")
        assert not st.reachable
    finally:
        await d.close()


def test_fault_checker_sees_a_stopped_component(tmp_path: Any) -> None:
    from kokpit.agent import FaultChecker
    from kokpit.nodes import RunState

    comps = {"kubelet": ComponentState("kubelet", "1.37.0", InstallState.INSTALLED, RunState.STOPPED),
             "containerd": ComponentState("containerd", "1.7", InstallState.INSTALLED, RunState.RUNNING)}
    faults = FaultChecker(min_free_percent=0, min_free_bytes=0).observe(str(tmp_path), str(tmp_path / "s"), comps)
    assert faults == {"ComponentDown": "not running: kubelet 1.37.0"}
    full = FaultChecker(min_free_percent=100.1).observe(str(tmp_path), str(tmp_path / "s"), {})
    assert set(full) == {"DiskFull"}
