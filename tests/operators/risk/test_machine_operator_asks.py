"""Every actor asks: the machine operator takes a component-upgrade Permit before each upgrade, waits while
the risk center queues it (its Machine says RiskPermitted=False, RiskQueued, naming the policy), and releases
it with the post-check's outcome; first installs on new nodes ask nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.operators.risk.conftest import Center, business_is_meta, eventually, policy

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, Client, NotFoundError
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.machine import MACHINE, MPV, MachineOperator, OperatorOptions
from kokpit.operators.machine._risk import machine_gate
from kokpit.operators.risk._ledger import LEDGER, entries
from kokpit.runtime import Manager
from kokpit.runtime.permits import PERMIT, PermitClient
from kokpit.simulator import Simulator, SimulatorOptions

Obj = dict[str, Any]
NODES = ["rk-00001", "rk-00002", "rk-00003"]
FAST = OperatorOptions(workers=4, fast_poll=0.05, slow_poll=0.5, retry_base=0.2, retry_cap=2.0,
                       progress_requeue=0.5, health_ttl=5.0)


def _cond(m: Obj, t: str) -> Obj:
    return next((c for c in (m.get("status") or {}).get("conditions") or [] if c["type"] == t), {})


async def _versions(c: Client) -> dict[str, str]:
    out = {}
    for n in NODES:
        m = await c.get(MACHINE, n)
        comps = {x["name"]: x for x in (m.get("status") or {}).get("components") or []}
        k = comps.get("kubelet") or {}
        out[n] = k.get("version", "") if k.get("installState") == "Installed" else ""
    return out


async def test_machine_operator_upgrades_one_node_at_a_time_through_permits(
        meta: Client, apiserver: ApiServerProcess, tmp_path: Path) -> None:
    await policy(meta, "one-upgrade", operations=["component-upgrade"], maxConcurrent=1)
    worst = 0
    queued_seen: list[Obj] = []
    stop = asyncio.Event()

    async def watch_ledger() -> None:
        nonlocal worst
        listed = await meta.list(LEDGER)
        async for ev in meta.watch(LEDGER, resource_version=listed.resource_version, timeout_seconds=120):
            inflight = [e for e in entries(ev.object) if not e.get("releasedAt")]
            worst = max(worst, len(inflight))
            if stop.is_set():
                return

    fast_while_queued: list[bool] = []

    async def watch_machines() -> None:
        while not stop.is_set():
            for n in NODES:
                with contextlib.suppress(NotFoundError):
                    c = _cond(await meta.get(MACHINE, n), "RiskPermitted")
                    if c.get("reason") == "RiskQueued":
                        if not queued_seen:
                            queued_seen.append(c)
                        if op is not None:  # waiting changes nothing on the node: not polled every fast tick
                            fast_while_queued.append(n in op.poller.active)
            await asyncio.sleep(0.05)

    op: MachineOperator | None = None

    sampler = asyncio.create_task(watch_ledger())
    machines = asyncio.create_task(watch_machines())
    try:
        async with _fleet(meta, apiserver, tmp_path, len(NODES)) as (_driver, op):
            for name, comp, ver, deps in (("containerd-1.7", "containerd", "1.7.0", []),
                                          ("kubelet-1.30", "kubelet", "1.30.0", ["containerd"]),
                                          ("kubelet-1.31", "kubelet", "1.31.0", ["containerd"])):
                await meta.create(MPV, {"metadata": {"name": name},
                                        "spec": {"component": comp, "version": ver, "dependsOn": deps}})
            for n in NODES:
                await meta.create(MACHINE, {"metadata": {"name": n},
                                            "spec": {"nodeName": n, "packages": ["containerd-1.7", "kubelet-1.30"]}})
            await eventually(lambda: _all(meta, "1.30.0"), timeout=60, what="first installs")
            assert (await meta.list(PERMIT, "default")).items == []  # installing on new nodes asks nothing
            for n in NODES:
                await meta.patch(MACHINE, n, {"spec": {"packages": ["containerd-1.7", "kubelet-1.31"]}})
            await eventually(lambda: _all(meta, "1.31.0"), timeout=90, what="the upgrade wave")
            items = await eventually(lambda: _released(meta), timeout=30, what="every permit released")
            # shared permits (the asks of concurrent reconciles go out together): each node finished on its own,
            # once, with its post-check beside its outcome
            outcomes = [(n, o) for p in items for n, o in (p["status"].get("targetOutcomes") or {}).items()]
            assert sorted(outcomes) == [(n, "Succeeded") for n in NODES], [p["status"] for p in items]
            checks = {n: c for p in items for n, c in (p["status"].get("targetChecks") or {}).items()}
            assert set(checks) == set(NODES) and all(c["passed"] for c in checks.values())
            assert {p["spec"]["partial"] for p in items} == {True}
            assert worst == 1, worst  # one upgrade at a time, as the policy says
            assert queued_seen and queued_seen[0]["status"] == "False"
            assert fast_while_queued and fast_while_queued.count(True) <= 2, fast_while_queued  # (a sample may
            # fall between a grant and the status write that follows it)
            assert "one-upgrade" in queued_seen[0]["message"] and "MaxConcurrent" in queued_seen[0]["message"]
            m = await meta.get(MACHINE, NODES[0])
            assert _cond(m, "RiskPermitted").get("status") in (None, "True")
    finally:
        stop.set()
        machines.cancel()
        sampler.cancel()


@contextlib.asynccontextmanager
async def _fleet(meta: Client, apiserver: ApiServerProcess, tmp_path: Path, nodes: int) -> AsyncIterator[
        tuple[SimulatorDriver, MachineOperator]]:
    """A risk center, a simulated fleet and a machine operator that asks it (as cluster c1's actor)."""
    center = Center(apiserver.kubeconfig).start()
    sim = Simulator(SimulatorOptions(nodes=nodes, driver_port=0, name_prefix="rk-", install_seconds=0.4,
                                     lease_period=1.0, data_dir=tmp_path / "sim"), meta)
    await sim.start()
    permits = PermitClient(meta, namespace="default", cluster="c1", holder="machine-operator/c1")
    manager = Manager(meta, http_port=None, handle_signals=False)
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls)
    op = MachineOperator(manager, driver, FAST.__class__(**{**FAST.__dict__,
                                                           "risk": machine_gate(permits, poll=0.5)}))
    task = asyncio.create_task(manager.run())
    try:
        yield driver, op
    finally:
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await permits.close()
        await driver.close()
        await sim.stop()
        await center.stop()


async def _all(meta: Client, version: str) -> bool:
    return set((await _versions(meta)).values()) == {version}


async def _released(meta: Client) -> list[Obj] | None:
    items = (await meta.list(PERMIT, "default")).items
    return items if items and all((p.get("status") or {}).get("state") == "Released" for p in items) else None


async def _unschedulable(meta: Client, node: str) -> bool:
    return bool(((await meta.get(NODE, node)).get("spec") or {}).get("unschedulable"))


async def test_machine_operator_cordons_only_with_a_node_isolate_permit(
        meta: Client, apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """Cordons of its own ask (node-isolate): the first broken node is cordoned and its permit released
    Succeeded; a second broken node would exceed maxUnavailable 1, so it stays schedulable and its Machine
    says RiskQueued naming the policy; once the first recovers (and is uncordoned) the second is cordoned."""
    await policy(meta, "isolate-one", operations=["node-isolate"], maxUnavailable=1)
    await business_is_meta(meta, apiserver, "c1", nodes=0)  # the risk center observes the simulated Nodes
    a, b = NODES[0], NODES[1]
    async with _fleet(meta, apiserver, tmp_path, 2) as (driver, _op):
        await meta.create(MPV, {"metadata": {"name": "containerd-1.7"},
                                "spec": {"component": "containerd", "version": "1.7.0"}})
        for n in (a, b):
            await meta.create(MACHINE, {"metadata": {"name": n},
                                        "spec": {"nodeName": n, "packages": ["containerd-1.7"]}})

        async def ready() -> bool:
            ms = [await meta.get(MACHINE, n) for n in (a, b)]
            return all(_cond(m, "Ready").get("status") == "True" for m in ms)

        await eventually(ready, timeout=60, what="both Machines Ready")
        await driver.fault(a, "component-stop", "containerd")
        await eventually(lambda: _unschedulable(meta, a), timeout=30, what=f"{a} cordoned")
        done = await eventually(lambda: _isolations(meta, a, "Released"), timeout=30, what="a's permit released")
        assert done[0]["status"]["outcome"] == "Succeeded"
        await driver.fault(b, "component-stop", "containerd")

        async def queued() -> Obj | None:
            c = _cond(await meta.get(MACHINE, b), "RiskPermitted")
            return c if c.get("reason") == "RiskQueued" else None

        c = await eventually(queued, timeout=30, what=f"{b}'s cordon queued")
        assert c["status"] == "False" and "isolate-one" in c["message"] and "MaxUnavailable" in c["message"]
        assert not await _unschedulable(meta, b)  # denied: the node stays as it is
        await driver.fault(a, "recover")
        await eventually(lambda: _unschedulable(meta, b), timeout=45, what=f"{b} cordoned once {a} recovered")
        assert not await _unschedulable(meta, a)
        done = await eventually(lambda: _isolations(meta, b, "Released"), timeout=30, what="b's permit released")
        assert done[0]["status"]["outcome"] == "Succeeded"


async def _isolations(meta: Client, node: str, state: str) -> list[Obj] | None:
    items = [p for p in (await meta.list(PERMIT, "default")).items
             if p["spec"]["operation"] == "node-isolate" and p["spec"]["targets"] == [node]
             and (p.get("status") or {}).get("state") == state]
    return items or None
