"""The simulator end to end against the real embedded API server: Nodes, Leases, the node driver, faults,
pods placed by the scheduler, and host state across a simulator restart.

One server per module (each test uses its own node-name prefix and namespace); the simulator runs
in-process and is always stopped by the fixture.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer

from kokpit._lib.metricsserver import scrape
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.cli._simulator import parse_duration
from kokpit.client import EVENT, LEASE, NAMESPACE, NODE, POD, Client, NotFoundError
from kokpit.nodes import ComponentAction, ComponentSpec, DriverError, InstallState, RunState
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.runtime import Manager
from kokpit.scheduler import Scheduler
from kokpit.simulator import LEASE_NAMESPACE, Simulator, SimulatorOptions

T = TypeVar("T")
_prefixes = itertools.count(1)
Starter = Callable[..., Awaitable[Simulator]]


async def eventually(fn: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 8.0,
                     what: str = "condition") -> T:
    """Poll ``fn`` until ``check`` holds (deadline, never a blind sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if check(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def ready_status(node: dict[str, Any]) -> str:
    for c in node["status"]["conditions"]:
        if c["type"] == "Ready":
            return str(c["status"])
    return "missing"


@pytest.fixture
async def client(shared_apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    c = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def start_sim(client: Client, tmp_path: Path) -> AsyncIterator[Starter]:
    """Start simulators (prefix unique per test); every one is stopped at teardown."""
    running: list[Simulator] = []
    prefix = f"t{next(_prefixes)}-"

    async def start(nodes: int = 2, data_dir: Path | None = None, **kw: Any) -> Simulator:
        opts = SimulatorOptions(nodes=nodes, name_prefix=prefix, driver_port=0, lease_period=0.3,
                                data_dir=data_dir or (tmp_path / "sim"), **kw)
        sim = Simulator(opts, client)
        running.append(sim)
        await sim.start()
        return sim

    try:
        yield start
    finally:
        for sim in running:
            await sim.stop()


@pytest.fixture
async def namespace(client: Client, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("_", "-")[:50].lower()
    await client.create(NAMESPACE, {"metadata": {"name": name}})
    return name


def kubelet(version: str) -> ComponentSpec:
    return ComponentSpec(name="kubelet", version=version, source=f"kubelet-{version}")


async def test_nodes_register_ready_and_leases_renew(client: Client, start_sim: Starter) -> None:
    sim = await start_sim(nodes=3)
    names = list(sim.book.hosts) if sim.book else []
    assert len(names) == 3 and names[0].endswith("00001")
    node = await client.get(NODE, names[0])
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == names[0]
    assert labels["kubernetes.io/os"] == "linux" and labels["node.kubernetes.io/instance-type"].startswith("sim.")
    st = node["status"]
    assert {"cpu", "memory", "pods", "ephemeral-storage"} <= set(st["capacity"]) == set(st["allocatable"])
    assert {a["type"] for a in st["addresses"]} == {"InternalIP", "Hostname"}
    assert {c["type"] for c in st["conditions"]} == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure",
                                                      "NetworkUnavailable"}
    assert ready_status(node) == "True"
    assert st["nodeInfo"]["kubeletVersion"] == "" and st["nodeInfo"]["containerRuntimeVersion"] == ""

    lease = await client.get(LEASE, names[1], LEASE_NAMESPACE)
    assert lease["spec"]["holderIdentity"] == names[1]
    assert lease["metadata"]["ownerReferences"][0]["uid"] == (await client.get(NODE, names[1]))["metadata"]["uid"]
    first = lease["spec"]["renewTime"]
    await eventually(lambda: client.get(LEASE, names[1], LEASE_NAMESPACE),
                     lambda lz: lz["spec"]["renewTime"] > first, what="lease renewal")


async def test_driver_install_upgrade_uninstall_follow_node(client: Client, start_sim: Starter) -> None:
    sim = await start_sim(nodes=1, install_seconds=0.4)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        s = await driver.start(name, ComponentAction.INSTALL, kubelet("1.37.0"))
        assert s.install_state == InstallState.INSTALLING
        assert (await driver.state(name)).components["kubelet"].install_state == InstallState.INSTALLING
        done = await eventually(lambda: driver.state(name),
                                lambda ns: ns.components["kubelet"].install_state == InstallState.INSTALLED)
        assert done.components["kubelet"].run_state == RunState.RUNNING
        assert (await driver.health(name, "kubelet")).healthy
        await eventually(lambda: client.get(NODE, name),
                         lambda n: n["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.0", what="kubeletVersion")

        up = await driver.start(name, ComponentAction.INSTALL, kubelet("1.37.1"))
        assert (up.install_state, up.version, up.target_version) == (InstallState.UPGRADING, "1.37.0", "1.37.1")
        await eventually(lambda: client.get(NODE, name),
                         lambda n: n["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.1", what="upgrade")

        rm = await driver.start(name, ComponentAction.UNINSTALL, kubelet("1.37.1"))
        assert rm.install_state == InstallState.UNINSTALLING
        await eventually(lambda: driver.states([name]), lambda m: "kubelet" not in m[name].components)
        await eventually(lambda: client.get(NODE, name),
                         lambda n: n["status"]["nodeInfo"]["kubeletVersion"] == "", what="uninstall")
        with pytest.raises(DriverError) as err:
            await driver.start("no-such-node", ComponentAction.INSTALL, kubelet("1"))
        assert err.value.retryable is False
    finally:
        await driver.close()


async def test_install_failure_injection_and_lift(start_sim: Starter) -> None:
    sim = await start_sim(nodes=1)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        await driver.fault(None, "install-failure", "kubelet", "1.38.0")
        s = await driver.start(name, ComponentAction.INSTALL, kubelet("1.38.0"))
        assert s.install_state == InstallState.FAILED
        assert "kubelet 1.38.0 is configured to fail" in s.message
        assert (await driver.state(name)).components["kubelet"].install_state == InstallState.FAILED
        assert not (await driver.health(name, "kubelet")).healthy
        await driver.fault(None, "recover")
        retry = await driver.start(name, ComponentAction.INSTALL, kubelet("1.38.0"))
        assert retry.install_state == InstallState.INSTALLED and retry.version == "1.38.0"
    finally:
        await driver.close()


async def test_hardware_fault_component_stop_and_recover(client: Client, start_sim: Starter) -> None:
    sim = await start_sim(nodes=2)
    a, b = list(sim.book.hosts) if sim.book else ["", ""]
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        await driver.fault(a, "hardware")
        await eventually(lambda: client.get(NODE, a), lambda n: ready_status(n) == "False", what="NotReady")
        assert (await driver.state(a)).reachable is False
        with pytest.raises(DriverError) as err:
            await driver.start(a, ComponentAction.INSTALL, kubelet("1.37.0"))
        assert err.value.retryable
        await driver.fault(a, "recover")
        await eventually(lambda: client.get(NODE, a), lambda n: ready_status(n) == "True", what="Ready again")
        assert (await driver.state(a)).reachable

        await driver.start(b, ComponentAction.INSTALL, ComponentSpec("containerd", "2.1.0"))
        await driver.fault(b, "component-stop", "containerd")
        st = await driver.state(b)
        assert st.components["containerd"].run_state == RunState.STOPPED
        node = await eventually(lambda: client.get(NODE, b), lambda n: ready_status(n) == "False")
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.1.0"
        await driver.fault(b, "recover")
        assert (await driver.state(b)).components["containerd"].run_state == RunState.RUNNING
        await eventually(lambda: client.get(NODE, b), lambda n: ready_status(n) == "True")
    finally:
        await driver.close()


async def test_hang_stops_lease_and_times_out(client: Client, start_sim: Starter) -> None:
    sim = await start_sim(nodes=1)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=0.5)
    try:
        await driver.fault(name, "hang")
        # let any renewal already in flight land, then the lease must stay still for several periods
        await asyncio.sleep(0.35)
        frozen = (await client.get(LEASE, name, LEASE_NAMESPACE))["spec"]["renewTime"]
        await asyncio.sleep(1.0)  # over three lease periods of 0.3 s
        assert (await client.get(LEASE, name, LEASE_NAMESPACE))["spec"]["renewTime"] == frozen
        assert ready_status(await client.get(NODE, name)) == "True"  # silent: nothing reported
        # a node lifecycle controller would now mark it Unknown; the frozen kubelet does not answer back
        await client.patch_status(NODE, name, {"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
             "message": "Kubelet stopped posting node status."}]}}, patch_type="strategic")
        st = await driver.state(name)
        assert st.reachable is False and "did not answer" in st.message
        with pytest.raises(DriverError, match="did not answer"):
            await driver.start(name, ComponentAction.INSTALL, kubelet("1.37.0"))
        await asyncio.sleep(0.3)
        assert ready_status(await client.get(NODE, name)) == "Unknown"
        await driver.fault(name, "recover")
        await eventually(lambda: client.get(LEASE, name, LEASE_NAMESPACE),
                         lambda lz: lz["spec"]["renewTime"] > frozen, what="renewals resume")
        await eventually(lambda: client.get(NODE, name), lambda n: ready_status(n) == "True",
                         what="kubelet reports Ready again")
        # and a foreign write to a live node's Ready condition is corrected, as kubelet would
        await client.patch_status(NODE, name, {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Manual", "message": "set by hand"}]}},
                                  patch_type="strategic")
        await eventually(lambda: client.get(NODE, name), lambda n: ready_status(n) == "True",
                         what="foreign Ready corrected")
    finally:
        await driver.close()


def pod(name: str, ns: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.fixture
async def scheduler(shared_apiserver: ApiServerProcess) -> AsyncIterator[Scheduler]:
    """The real scheduler (the simulator only plays kubelets), in-process on its own client."""
    c = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    m = Manager(c, http_port=None, handle_signals=False)
    s = Scheduler(m)
    task = asyncio.get_running_loop().create_task(m.run())
    try:
        yield s
    finally:
        m.stop()
        await asyncio.wait_for(task, 10)
        await c.close()


async def test_scheduled_pods_respect_cordon_and_run(client: Client, start_sim: Starter, namespace: str,
                                                     scheduler: Scheduler) -> None:
    sim = await start_sim(nodes=3)
    a, b, c = list(sim.book.hosts) if sim.book else ["", "", ""]
    for other in (await client.list(NODE)).items:  # earlier tests' nodes: this cluster has only these three
        if other["metadata"]["name"] not in (a, b, c):
            await client.delete(NODE, other["metadata"]["name"])
    await client.patch(NODE, a, {"spec": {"unschedulable": True}})
    await client.patch(NODE, c, {"spec": {"unschedulable": True}})
    await eventually(lambda: asyncio.sleep(0, sim.factory.informer(NODE, label_selector="kokpit.io/simulated=true")
                                           .store.get(c)),
                     lambda n: bool(n and n["spec"].get("unschedulable")), what="cordon seen")
    for i in range(4):
        await client.create(POD, pod(f"p{i}", namespace), namespace)

    async def pods() -> list[dict[str, Any]]:
        return (await client.list(POD, namespace)).items

    running = await eventually(pods, lambda ps: len(ps) == 4 and all(p["status"].get("phase") == "Running"
                                                                     for p in ps), what="pods running")
    assert {p["spec"]["nodeName"] for p in running} == {b}  # cordoned nodes got nothing
    p0 = running[0]
    assert p0["status"]["podIP"].startswith("10.") and p0["status"]["startTime"]
    assert p0["status"]["containerStatuses"][0]["ready"] is True
    assert {c["type"]: c["status"] for c in p0["status"]["conditions"]}["Ready"] == "True"

    await client.delete(POD, "p0", namespace)  # graceful: the simulated kubelet finishes it

    async def gone() -> bool:
        try:
            await client.get(POD, "p0", namespace)
        except NotFoundError:
            return True
        return False

    await eventually(gone, bool, what="terminating pod removed")

    await client.patch(NODE, a, {"spec": {"unschedulable": None}})
    await client.create(POD, pod("after-uncordon", namespace), namespace)
    placed = await eventually(lambda: client.get(POD, "after-uncordon", namespace),
                              lambda p: p["status"].get("phase") == "Running")
    assert placed["spec"]["nodeName"] == a  # least pods wins: a has none, b has three

    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        await driver.fault(c, "hardware")
        await client.create(POD, pod("on-broken", namespace, node=c), namespace)
        failed = await eventually(lambda: client.get(POD, "on-broken", namespace),
                                  lambda p: p["status"].get("phase") == "Failed")
        assert failed["status"]["reason"] == "NodeUnhealthy"
    finally:
        await driver.close()


async def test_driver_is_mutual_tls_and_advertised_without_wildcards(client: Client, start_sim: Starter,
                                                                     tmp_path: Path) -> None:
    """The driver URL the Nodes advertise names the bound address over https; a caller without the
    simulator's client certificate gets nothing; a wildcard address is never advertised."""
    sim = await start_sim(nodes=1)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    node = await client.get(NODE, name)
    url = node["metadata"]["annotations"]["kokpit.io/simulator-driver"]
    assert url == sim.driver_url and url.startswith("https://127.0.0.1:")
    anonymous = SimulatorDriver(url, timeout=5)
    try:
        with pytest.raises(DriverError):
            await anonymous.fault(name, "hardware")
    finally:
        await anonymous.close()
    assert sim.book is not None and not sim.book.host(name).hardware  # the refused call did nothing
    with pytest.raises(RuntimeError, match="wildcard"):
        await start_sim(nodes=1, driver_host="0.0.0.0", data_dir=tmp_path / "wild")
    wild = await start_sim(nodes=1, driver_host="0.0.0.0", driver_advertise="127.0.0.1",
                           data_dir=tmp_path / "wild2")
    assert wild.driver_url.startswith("https://127.0.0.1:")


async def test_faults_and_failed_installs_are_warning_events(client: Client, start_sim: Starter) -> None:
    """What a person should see in `kubectl describe node`: injected faults and failed installs as Warning
    Events on the Node, the recovery as a Normal one."""
    sim = await start_sim(nodes=1, install_seconds=0.1)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        await driver.fault(name, "install-failure", "kubelet")
        await driver.start(name, ComponentAction.INSTALL, kubelet("1.36.2"))
        await driver.fault(name, "hardware")
        await driver.fault(name, "recover")
    finally:
        await driver.close()

    async def events() -> dict[str, str]:
        items = (await client.list(EVENT, "default", field_selector=f"involvedObject.name={name}")).items
        return {e["reason"]: e["type"] for e in items}

    got = await eventually(events, lambda ev: {"InstallFailed", "HardwareFault", "FaultsCleared"} <= set(ev))
    assert got["InstallFailed"] == "Warning" and got["HardwareFault"] == "Warning"
    assert got["FaultsCleared"] == "Normal"


async def test_metrics_are_served_to_token_holders_only(client: Client, start_sim: Starter) -> None:
    token = "m" * 32
    sim = await start_sim(nodes=2, metrics_port=0, metrics_tokens=[token])
    assert sim.metrics is not None and sim.metrics.url.startswith("https://127.0.0.1:")
    code, body = await scrape(sim.metrics.url, token)
    assert code == 200 and b"kokpit_simulator_nodes 2.0" in body and b"kokpit_client_requests_total" in body
    assert (await scrape(sim.metrics.url, "n" * 32))[0] == 401


async def test_host_state_survives_restart(client: Client, start_sim: Starter, tmp_path: Path) -> None:
    data = tmp_path / "durable"
    sim = await start_sim(nodes=2, data_dir=data, install_seconds=0.3)
    a, b = list(sim.book.hosts) if sim.book else ["", ""]
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=5)
    try:
        await driver.start(a, ComponentAction.INSTALL, kubelet("1.36.2"))
        await eventually(lambda: driver.state(a),
                         lambda s: s.components["kubelet"].install_state == InstallState.INSTALLED)
        await driver.start(b, ComponentAction.INSTALL, kubelet("1.36.2"))  # still in flight at the stop
        await driver.fault(None, "install-failure", "containerd")
    finally:
        await driver.close()
    await sim.stop()

    again = await start_sim(nodes=2, data_dir=data, install_seconds=0.3)
    driver = SimulatorDriver(again.driver_url, tls=again.client_tls, timeout=5)
    try:
        states = await eventually(lambda: driver.states([a, b]),
                                  lambda m: m[b].components["kubelet"].install_state == InstallState.INSTALLED)
        assert states[a].components["kubelet"].version == "1.36.2"
        s = await driver.start(a, ComponentAction.INSTALL, ComponentSpec("containerd", "2.0.0"))
        assert s.install_state in (InstallState.INSTALLING, InstallState.FAILED)
        await eventually(lambda: driver.state(a),
                         lambda st: st.components["containerd"].install_state == InstallState.FAILED)
        await eventually(lambda: client.get(NODE, b),
                         lambda n: n["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.2")
    finally:
        await driver.close()


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kokpit.cli.main", "simulator", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_fault_and_state_cli(client: Client, start_sim: Starter) -> None:
    sim = await start_sim(nodes=1)
    name = next(iter(sim.book.hosts)) if sim.book else ""
    assert sim.client_tls is not None
    tls = ("--tls-dir", str(sim.client_tls.ca_file.parent))
    code, _, err = await run_cli("fault", "--url", sim.driver_url, "--node", name, "--type", "hardware")
    assert code == 1 and "requires a client certificate" in err  # no credentials, no fault
    code, out, _ = await run_cli("fault", "--url", sim.driver_url, *tls, "--node", name, "--type", "hardware")
    assert code == 0 and json.loads(out) == {"node": name, "hardware": "simulated hardware fault", "hung": False,
                                             "stoppedComponents": [], "installFailures": [], "reported": {},
                                             "podsFail": False}
    await eventually(lambda: client.get(NODE, name), lambda n: ready_status(n) == "False")
    code, out, _ = await run_cli("state", "--url", sim.driver_url, *tls, "--node", name)
    assert code == 0 and json.loads(out)["reachable"] is False
    code, _, err = await run_cli("fault", "--url", sim.driver_url, *tls, "--node", name, "--type", "component-stop",
                                 "--component", "kubelet")
    assert code == 1 and "needs an installed component" in err
    code, _, err = await run_cli("fault", "--url", sim.driver_url, *tls, "--type", "meteor")
    assert code == 1 and "--type must be one of" in err
    code, _, _ = await run_cli("fault", "--url", sim.driver_url, *tls, "--node", name, "--type", "recover")
    assert code == 0
    await eventually(lambda: client.get(NODE, name), lambda n: ready_status(n) == "True")


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("10s", "500ms", "1m", "2.5", "1h")] == [10.0, 0.5, 60.0, 2.5, 3600.0]
    with pytest.raises(typer.BadParameter):
        parse_duration("soon")
