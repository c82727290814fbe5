"""The node agent's NodeFault reports (unit level, a fake API client): which faults map to which catalog
types and components, refresh and clear, and the first look after a restart clearing what the agent may have
reported before and no longer sees (by deterministic name, no list).  The real agent process against a real
API server is ``test_agent_faults_tls.py``."""

from __future__ import annotations

from typing import Any

from kokpit.agent._faults import COMPONENT_DOWN, DISK_FULL, NodeFaultReporter, fault_reports, possible_reports
from kokpit.client import ApiError, NotFoundError
from kokpit.nodes.driver import ComponentState, InstallState, RunState

Obj = dict[str, Any]


def comp(name: str, run: RunState, install: InstallState = InstallState.INSTALLED) -> ComponentState:
    return ComponentState(name=name, version="1.0", install_state=install, run_state=run)


def test_faults_map_to_catalog_types_and_components() -> None:
    comps = {"kubelet": comp("kubelet", RunState.STOPPED), "containerd": comp("containerd", RunState.RUNNING),
             "log-agent": comp("log-agent", RunState.STOPPED),
             "half": comp("half", RunState.STOPPED, InstallState.INSTALLING)}
    got = fault_reports({DISK_FULL: "/ has 1 MiB free", COMPONENT_DOWN: "not running: kubelet 1.0"}, comps)
    assert set(got) == {("disk-pressure", ""), ("kubelet-unhealthy", "kubelet"),
                        ("component-unhealthy", "log-agent")}
    assert got[("disk-pressure", "")] == ("DiskFull", "/ has 1 MiB free")
    assert got[("kubelet-unhealthy", "kubelet")][0] == "ComponentNotRunning"
    assert ("container-runtime-unhealthy", "containerd") in possible_reports(comps)


class FakeApi:
    """Just enough of the client for FaultReporter: get / create / update_status of NodeFaults."""

    def __init__(self) -> None:
        self.objs: dict[str, Obj] = {}
        self.refuse: set[str] = set()
        self.gets: list[str] = []

    async def get(self, kind: Any, name: str) -> Obj:
        self.gets.append(name)
        if name not in self.objs:
            raise NotFoundError(404, {"message": "not found"})
        return self.objs[name]

    async def create(self, kind: Any, body: Obj) -> Obj:
        if body["spec"]["type"] in self.refuse:
            raise ApiError(422, {"message": "spec.type: Not found", "code": 422})
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        self.objs[body["metadata"]["name"]] = body
        return body

    async def update_status(self, kind: Any, body: Obj) -> Obj:
        cur = self.objs[body["metadata"]["name"]]
        cur["status"] = body["status"]
        cur["metadata"]["resourceVersion"] = str(int(cur["metadata"]["resourceVersion"]) + 1)
        return cur


def source(api: FakeApi, name: str) -> Obj:
    return next(s for s in api.objs[name]["status"]["sources"] if s["reporter"] == "node-agent/n1")


async def test_reports_refresh_and_clear_and_a_restart_clears_what_is_gone() -> None:
    api = FakeApi()
    rep = NodeFaultReporter(api, ttl_seconds=90)  # type: ignore[arg-type]
    comps = {"kubelet": comp("kubelet", RunState.STOPPED)}
    seen = fault_reports({DISK_FULL: "full"}, comps)
    assert await rep.report("n1", seen, possible_reports(comps))
    assert source(api, "n1.disk-pressure")["ttlSeconds"] == 90
    assert source(api, "n1.kubelet-unhealthy.kubelet")["kind"] == "Agent"
    assert await rep.report("n1", seen, possible_reports(comps))
    assert source(api, "n1.disk-pressure")["count"] == 2  # a heartbeat
    # the disk was cleaned: cleared, the fault Resolved by the agent
    seen = fault_reports({}, comps)
    assert await rep.report("n1", seen, possible_reports(comps))
    assert api.objs["n1.disk-pressure"]["status"]["state"] == "Resolved"
    assert api.objs["n1.kubelet-unhealthy.kubelet"]["status"]["state"] == "Active"

    # a restarted agent remembers nothing: its first look clears the kubelet fault that went away meanwhile
    api.gets.clear()
    fresh = NodeFaultReporter(api, ttl_seconds=90)  # type: ignore[arg-type]
    comps = {"kubelet": comp("kubelet", RunState.RUNNING)}
    assert await fresh.report("n1", fault_reports({}, comps), possible_reports(comps))
    assert api.objs["n1.kubelet-unhealthy.kubelet"]["status"]["state"] == "Resolved"
    assert "n1.readonly-filesystem" in api.gets and "n1.readonly-filesystem" not in api.objs  # a GET, no write
    api.gets.clear()
    assert await fresh.report("n1", fault_reports({}, comps), possible_reports(comps))
    assert api.gets == []  # afterwards only what it reported is looked at

    # a type the catalog lacks is refused (422): logged, reported as not ok, never raised
    api.refuse.add("readonly-filesystem")
    assert not await fresh.report("n1", fault_reports({"ReadonlyFilesystem": "ro"}, comps), set())
