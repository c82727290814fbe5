"""The machine operator in-process against the real embedded API server, nodes reached through a driver.

The driver is the in-memory fake here (actions finish on the next poll); test_simulator_e2e.py runs the same
flows against the real simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, EVENT, NODE, Client, NotFoundError
from kokpit.nodes import NodeDriver
from kokpit.operators.machine import MACHINE, MPV, MachineOperator, OperatorOptions
from kokpit.runtime import Manager

from .conftest import FakeDriver

Obj = dict[str, Any]

FAST = OperatorOptions(workers=4, fast_poll=0.05, slow_poll=0.5, retry_base=0.2, retry_cap=2.0,
                       progress_requeue=0.5, health_ttl=5.0)


async def wait_for(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    """Poll ``fn`` until it returns a truthy value, failing with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except NotFoundError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def cond(m: Obj, t: str) -> Obj:
    for c in (m.get("status") or {}).get("conditions") or []:
        if c["type"] == t:
            return dict(c)
    return {}


@dataclass
class Env:
    client: Client
    driver: Any
    operator: MachineOperator

    async def machine(self, name: str) -> Obj:
        return await self.client.get(MACHINE, name)

    async def node(self, name: str) -> Obj:
        return await self.client.get(NODE, name)

    async def mpv(self, name: str, component: str, version: str, *deps: str) -> None:
        await self.client.create(MPV, {"metadata": {"name": name},
                                       "spec": {"component": component, "version": version,
                                                "dependsOn": list(deps)}})

    async def set_machine(self, name: str, packages: list[str], gates: list[str] | None = None,
                          unschedulable: bool = False) -> None:
        spec = {"nodeName": name, "packages": packages,
                "readinessGates": [{"conditionType": g} for g in gates or []], "unschedulable": unschedulable}
        try:
            await self.client.patch(MACHINE, name, {"spec": spec})
        except NotFoundError:
            await self.client.create(MACHINE, {"metadata": {"name": name}, "spec": spec})

    async def wait_cond(self, name: str, t: str, status: str, reason: str | None = None,
                        timeout: float = 15.0) -> Obj:
        async def check() -> Obj | None:
            m = await self.machine(name)
            c = cond(m, t)
            ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
            return m if ok else None
        out: Obj = await wait_for(check, f"{name} {t}={status} {reason or ''}", timeout)
        return out

    async def wait_schedulable(self, name: str, schedulable: bool, timeout: float = 15.0) -> None:
        async def check() -> bool:
            n = await self.node(name)
            return bool((n.get("spec") or {}).get("unschedulable")) != schedulable
        await wait_for(check, f"node {name} schedulable={schedulable}", timeout)


async def make_node(client: Client, name: str, ready: bool = True) -> None:
    await client.create(NODE, {"metadata": {"name": name}})
    await client.patch(NODE, name, {"status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady",
         "message": "ok", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}, subresource="status")


@contextlib.asynccontextmanager
async def running_operator(apiserver: ApiServerProcess, driver: NodeDriver,
                           options: OperatorOptions = FAST) -> AsyncIterator[Env]:
    client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="machine-operator-test")
    await install_crds(client)
    manager = Manager(client, http_port=None, handle_signals=False)
    op = MachineOperator(manager, driver, options)
    task = asyncio.get_running_loop().create_task(manager.run())
    try:
        await asyncio.wait_for(manager.synced.wait(), 10)
        yield Env(client, driver, op)
    finally:
        manager.stop()
        await asyncio.wait_for(task, 10)
        await client.close()


async def _stack(env: Env) -> None:
    await env.mpv("containerd-1.7", "containerd", "1.7.0")
    await env.mpv("kubelet-1.30", "kubelet", "1.30.0", "containerd")
    await env.mpv("kubelet-1.31", "kubelet", "1.31.0", "containerd")
    await env.mpv("sysctl-v1", "sysctl", "v1")


async def test_operator_converges_gates_upgrades_uninstalls_and_recovers(apiserver: ApiServerProcess) -> None:
    driver = FakeDriver(auto=True)
    async with running_operator(apiserver, driver) as env:
        c = env.client
        await _stack(env)
        for n in ("w1", "w2"):
            driver.add_node(n)
            await make_node(c, n)
            await env.set_machine(n, ["containerd-1.7", "kubelet-1.30", "sysctl-v1"])
        # converge: all Installed + Running, nodes schedulable
        for n in ("w1", "w2"):
            m = await env.wait_cond(n, "Ready", "True")
            comps = {x["name"]: x for x in m["status"]["components"]}
            assert {x["installState"] for x in comps.values()} == {"Installed"}
            assert {x["runState"] for x in comps.values()} == {"Running"}
            assert m["status"]["componentsReady"] == "3/3"
            await env.wait_schedulable(n, True)
        # idle: no status write when nothing changes
        rv = (await env.machine("w1"))["metadata"]["resourceVersion"]
        await env.operator.reconciler.reconcile(__import__("kokpit.runtime").runtime.Request("", "w1"))
        assert (await env.machine("w1"))["metadata"]["resourceVersion"] == rv

        # a readiness gate without a report keeps the node cordoned
        await env.set_machine("w1", ["containerd-1.7", "kubelet-1.30", "sysctl-v1"], gates=["NetworkReady"])
        await env.wait_cond("w1", "ReadinessGatesMet", "False", "GateNotReported")
        await env.wait_schedulable("w1", False)
        cm = {"metadata": {"name": "cni-w1", "namespace": "kube-system",
                           "labels": {"kokpit.io/node": "w1", "kokpit.io/condition-source": "cni"}},
              "data": {"NetworkReady": '{"status": "True", "reason": "Up", "message": "routes installed"}'}}
        await c.create(CONFIGMAP, cm)
        m = await env.wait_cond("w1", "Ready", "True")
        assert cond(m, "NetworkReady")["source"] == "cni"
        await env.wait_schedulable("w1", True)
        await c.patch(CONFIGMAP, "cni-w1", {"data": {"NetworkReady": "False"}}, "kube-system")
        await env.wait_cond("w1", "ReadinessGatesMet", "False", "GateNotTrue")
        await env.wait_schedulable("w1", False)
        await c.patch(CONFIGMAP, "cni-w1", {"data": {"NetworkReady": "True"}}, "kube-system")
        await env.wait_schedulable("w1", True)

        # swapping the kubelet MPV upgrades the node
        await env.set_machine("w2", ["containerd-1.7", "kubelet-1.31", "sysctl-v1"])

        async def upgraded() -> bool:
            m = await env.machine("w2")
            comps = {x["name"]: x for x in m["status"]["components"]}
            return comps["kubelet"]["version"] == "1.31.0" and cond(m, "Ready").get("status") == "True"
        await wait_for(upgraded, "kubelet 1.31 on w2")
        assert ("w2", "install", "kubelet", "1.31.0") in driver.log

        # removing a component uninstalls it
        await env.set_machine("w2", ["containerd-1.7", "kubelet-1.31"])

        async def uninstalled() -> bool:
            m = await env.machine("w2")
            return [x["name"] for x in m["status"]["components"]] == ["containerd", "kubelet"] and \
                cond(m, "Ready").get("status") == "True"
        await wait_for(uninstalled, "sysctl uninstalled from w2")
        assert driver.log.count(("w2", "uninstall", "sysctl", "v1")) == 1

        # an injected install failure shows Failed with a message, and recovers when lifted
        driver.fail[("kubelet", "1.31.0")] = "checksum mismatch for kubelet-1.31.0.rpm"
        await env.set_machine("w1", ["containerd-1.7", "kubelet-1.31", "sysctl-v1"], gates=["NetworkReady"])
        m = await env.wait_cond("w1", "ComponentsReady", "False", "InstallFailed")
        comps = {x["name"]: x for x in m["status"]["components"]}
        assert comps["kubelet"]["installState"] == "Failed"
        assert "checksum mismatch" in comps["kubelet"]["message"]
        assert m["status"]["phase"] == "Failed"
        await env.wait_schedulable("w1", False)

        async def warning_event() -> bool:
            evs = (await c.list(EVENT, "default")).items
            return any(e["reason"] == "InstallFailed" and e["type"] == "Warning" and
                       e["involvedObject"]["name"] == "w1" for e in evs)
        await wait_for(warning_event, "InstallFailed Warning event")
        del driver.fail[("kubelet", "1.31.0")]
        await env.wait_cond("w1", "Ready", "True")
        await env.wait_schedulable("w1", True)
        # no step was ever started twice while it was in flight or done
        done = [x for x in driver.log if x[0] == "w2"]
        assert len(done) == len(set(done)), done


async def test_bad_specs_and_person_cordon(apiserver: ApiServerProcess) -> None:
    driver = FakeDriver(auto=True)
    async with running_operator(apiserver, driver) as env:
        await _stack(env)
        await env.mpv("a-1", "a", "1", "b")
        await env.mpv("b-1", "b", "1", "a")
        cases = {
            "m1": (["containerd-1.7", "kubelet-2.0"], "MissingPackageVersion", "kubelet-2.0 not found"),
            "m2": (["containerd-1.7", "kubelet-1.30", "kubelet-1.31"], "DuplicateComponent", "kubelet"),
            "m3": (["a-1", "b-1"], "DependencyCycle", "a → b → a"),
            "m4": (["kubelet-1.30"], "MissingDependency", "depends on containerd"),
        }
        for name, (pk, _, _) in cases.items():
            driver.add_node(name)
            await make_node(env.client, name)
            await env.set_machine(name, pk)
        for name, (_, reason, text) in cases.items():
            m = await env.wait_cond(name, "ComponentsReady", "False", reason)
            assert text in cond(m, "ComponentsReady")["message"]
            assert m["status"]["phase"] == "Invalid"

            async def warned(name: str = name, reason: str = reason) -> bool:
                evs = (await env.client.list(EVENT, "default")).items
                return any(e["reason"] == reason and e["type"] == "Warning" and
                           e["involvedObject"]["name"] == name for e in evs)
            await wait_for(warned, f"{reason} Warning Event on {name}")
        for name in cases:  # a spec mistake never cordons a node
            node = await env.client.get(NODE, name)
            assert not (node.get("spec") or {}).get("unschedulable"), name
        assert driver.log == [], "nothing changes on a node whose spec is wrong"
        # fixing the spec converges; then a person's cordon wins over readiness
        await env.set_machine("m1", ["containerd-1.7", "kubelet-1.30"])
        await env.wait_cond("m1", "Ready", "True")
        await env.wait_schedulable("m1", True)
        await env.set_machine("m1", ["containerd-1.7", "kubelet-1.30"], unschedulable=True)
        await env.wait_schedulable("m1", False)
        assert cond(await env.machine("m1"), "Ready")["status"] == "True"
        await env.set_machine("m1", ["containerd-1.7", "kubelet-1.30"], unschedulable=False)
        await env.wait_schedulable("m1", True)


async def test_machines_created_for_nodes_only_when_asked(apiserver: ApiServerProcess) -> None:
    driver = FakeDriver(auto=True)
    driver.add_node("x1")
    async with running_operator(apiserver, driver) as env:
        await make_node(env.client, "x1")

        async def seen_and_idle() -> bool:  # the operator has seen the Node and has nothing left to do
            node = env.operator.node_informer.store.get_by_name("x1")
            return node is not None and len(env.operator.controller.queue) == 0
        await wait_for(seen_and_idle, "the operator to see Node x1 and go idle")
        with pytest.raises(NotFoundError):
            await env.machine("x1")
    opts = OperatorOptions(**{**FAST.__dict__, "create_machines_for_nodes": True})
    async with running_operator(apiserver, driver, opts) as env:
        m = await wait_for(lambda: env.machine("x1"), "Machine x1 created")
        assert m["spec"]["nodeName"] == "x1" and m["spec"]["packages"] == []
        await env.wait_cond("x1", "Ready", "True")


async def test_a_package_version_in_use_cannot_vanish(apiserver: ApiServerProcess) -> None:
    """Issue 13: deleting a MachinePackageVersion a Machine still uses is held by a protection finalizer,
    with a condition naming the users, and completes when the last user has moved off."""
    driver = FakeDriver(auto=True)
    async with running_operator(apiserver, driver) as env:
        await env.mpv("containerd-2.0", "containerd", "2.0.0")
        await env.mpv("containerd-2.1", "containerd", "2.1.0")
        await env.mpv("unused-1", "unused", "1")
        for name in ("p1", "p2"):
            driver.add_node(name)
            await make_node(env.client, name)
            await env.set_machine(name, ["containerd-2.0"])
        for name in ("p1", "p2"):
            await env.wait_cond(name, "Ready", "True")

        async def finalized(name: str) -> bool:
            mpv = await env.client.get(MPV, name)
            return "kokpit.io/in-use-protection" in (mpv["metadata"].get("finalizers") or [])
        for name in ("containerd-2.0", "containerd-2.1", "unused-1"):
            await wait_for(lambda name=name: finalized(name), f"{name} protected")  # type: ignore[misc]
        # an unused one goes at once
        await env.client.delete(MPV, "unused-1")

        async def gone(name: str) -> bool:
            try:
                await env.client.get(MPV, name)
            except NotFoundError:
                return True
            return False
        await wait_for(lambda: gone("unused-1"), "unused-1 deleted")
        # one in use is held, says by whom, and warns
        await env.client.delete(MPV, "containerd-2.0")

        async def held() -> Obj | None:
            mpv = await env.client.get(MPV, "containerd-2.0")
            c = cond(mpv, "Deleting")
            return mpv if c.get("status") == "True" and c.get("reason") == "InUse" else None
        mpv = await wait_for(held, "containerd-2.0 held with Deleting=True")
        assert "Machines p1, p2" in cond(mpv, "Deleting")["message"]

        async def warned() -> bool:
            evs = (await env.client.list(EVENT, "")).items
            return any(e["reason"] == "InUse" and e["type"] == "Warning" and
                       e["involvedObject"]["name"] == "containerd-2.0" for e in evs)
        await wait_for(warned, "InUse Warning Event")
        # the Machines keep working with it while the deletion waits
        m = await env.machine("p1")
        assert cond(m, "ComponentsReady")["status"] == "True"
        # the first moves off: still held, by the second only
        await env.set_machine("p1", ["containerd-2.1"])

        async def only_p2() -> bool:
            c = cond(await env.client.get(MPV, "containerd-2.0"), "Deleting")
            return "Machines p2 " in c.get("message", "") and "p1" not in c.get("message", "")
        await wait_for(only_p2, "containerd-2.0 held by p2 only")
        # the last moves off (and its node stops running the old version): the deletion completes
        await env.set_machine("p2", ["containerd-2.1"])
        await wait_for(lambda: gone("containerd-2.0"), "containerd-2.0 deleted once unused", timeout=30)
        for name in ("p1", "p2"):
            m = await env.wait_cond(name, "Ready", "True")
            assert {c["version"] for c in m["status"]["components"]} == {"2.1.0"}
