"""End to end through real processes: the embedded API server, the node simulator (its hosts report injected
faults) and ``kokpit machine-operator`` with its fault controllers, killed with SIGKILL in the middle.

Each test starts a fresh server, simulator and operator; timings are short (reports with a TTL of seconds,
a lease grace of 4 s) so expiry, detection and retention happen within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NODE, POD, ApiError, Client
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.runtime.faultreports import FAULTSUBSCRIPTION, FAULTTYPE, NODEFAULT, FaultReport, FaultReporter
from kokpit.simulator import Simulator, SimulatorOptions

from ..machine.test_operator_integration import wait_for

Obj = dict[str, Any]
NODES = ["f-00001", "f-00002", "f-00003"]
LEASE_GRACE = 4.0


@dataclass
class Stack:
    client: Client
    sim: Simulator
    driver: SimulatorDriver
    apiserver: ApiServerProcess
    tmp: Path
    proc: subprocess.Popen[bytes] | None = None

    def start_operator(self) -> None:
        assert self.sim.client_tls is not None
        cmd = [sys.executable, "-m", "kokpit.cli.main", "machine-operator", "--kubeconfig",
               str(self.apiserver.kubeconfig), "--driver-url", self.sim.driver_url, "--driver-tls-dir",
               str(self.sim.client_tls.ca_file.parent), "--fast-poll", "0.1", "--slow-poll", "0.5",
               "--create-machines-for-nodes", "--fault-retention", "6s", "--lease-grace", f"{LEASE_GRACE:g}s",
               # the same server plays the meta cluster: Permits of Cluster default/c1 name possible causes
               "--risk-kubeconfig", str(self.apiserver.kubeconfig), "--risk-cluster", "c1"]
        log = (self.tmp / "operator.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop_operator(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        p = self.tmp / "operator.log"
        return p.read_text()[-4000:] if p.exists() else ""

    async def fault(self, name: str, ok: Any, what: str, timeout: float = 20.0) -> Obj:
        async def check() -> Obj | None:
            f = await self.client.get(NODEFAULT, name)
            return f if ok(f) else None
        try:
            out: Obj = await wait_for(check, what, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log:\n{self.log()}") from None
        return out


def state(f: Obj) -> str:
    return str((f.get("status") or {}).get("state") or "")


def accepted(f: Obj) -> bool:
    """Active and taken in by the event center (catalog fields copied, Accepted=True)."""
    return state(f) == "Active" and bool((f.get("status") or {}).get("severity"))


def cond(f: Obj, t: str) -> Obj:
    return next((c for c in (f.get("status") or {}).get("conditions") or [] if c.get("type") == t), {})


@contextlib.asynccontextmanager
async def stack(apiserver: ApiServerProcess, tmp: Path) -> AsyncIterator[Stack]:
    client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="faults-test")
    await install_crds(client)
    sim = Simulator(SimulatorOptions(kubeconfig=Path(apiserver.kubeconfig), nodes=len(NODES), driver_port=0,
                                     name_prefix="f-", install_seconds=0.1, lease_period=1.0,
                                     data_dir=tmp / "sim", fault_report_ttl=4, fault_report_refresh=1.0))
    await sim.start()
    assert sim.client_tls is not None
    driver = SimulatorDriver(sim.driver_url, tls=sim.client_tls)
    s = Stack(client, sim, driver, apiserver, tmp)
    s.start_operator()
    try:
        # the operator installs the default catalog
        await wait_for(lambda: _has_catalog(client), "the default fault catalog", 120)
        yield s
    finally:
        s.stop_operator()
        await driver.close()
        await sim.stop()
        await client.close()


async def _negate(fn: Any) -> bool:
    return await fn() is None


async def _has_catalog(client: Client) -> bool:
    return len((await client.list(FAULTTYPE)).items) >= 13


async def test_injected_faults_npd_signals_and_repeated_reports(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as s:
        c = s.client
        n1, _n2, n3 = NODES
        # a change in flight on n2: a granted risk-center Permit (as the risk center writes it)
        from kokpit.operators.faults._permits import PERMIT

        await c.create(PERMIT, {"metadata": {"name": "upgrade-kubelet-n2", "namespace": "default"},
                                "spec": {"operation": "component-upgrade", "cluster": "c1", "targets": [_n2],
                                         "holder": "machine-operator/c1", "reason": "kubelet 1.31 → 1.32"}})
        await c.patch(PERMIT, "upgrade-kubelet-n2", {"status": {"state": "Granted", "grantedTargets": [_n2],
                                                                "grantedAt": "2026-12-07T01:00:00Z"}},
                      "default", subresource="status")
        # every reported simulator fault type becomes a NodeFault with the catalog's severity and flow
        from kokpit.simulator import REPORTED_FAULTS

        for i, kind in enumerate(REPORTED_FAULTS):
            await s.driver.fault(NODES[i % 3], kind)
        for i, kind in enumerate(REPORTED_FAULTS):
            node = NODES[i % 3]
            f = await s.fault(f"{node}.{kind}", lambda f: state(f) == "Active" and f["status"].get("severity")
                              and f["metadata"]["labels"].get("kokpit.io/fault-state") == "Active", f"{kind} on {node}")
            src = f["status"]["sources"][0]
            assert src["reporter"] == f"simulator/{node}" and src["kind"] == "Agent" and src["ttlSeconds"] == 4
            assert cond(f, "Accepted")["status"] == "True" and f["status"]["flow"]
            assert f["metadata"]["labels"]["kokpit.io/node"] == node
        # the faults on n2 name the change in flight; the others name nothing
        f = await s.fault(f"{_n2}.memory-ecc", lambda f: f["status"].get("possiblyCausedBy"), "possibly caused by")
        [cause] = f["status"]["possiblyCausedBy"]
        assert cause["kind"] == "Permit" and cause["name"] == "upgrade-kubelet-n2" and cause["namespace"] == "default"
        assert cause["operation"] == "component-upgrade" and cond(f, "CauseSuspected")["status"] == "True"
        assert not (await c.get(NODEFAULT, f"{n1}.disk-failure"))["status"].get("possiblyCausedBy")
        # heartbeats: the simulator refreshes while the fault lasts (count grows, one object)
        await s.fault(f"{n1}.disk-failure", lambda f: f["status"]["count"] >= 3, "refreshed reports")
        # label selectors see the state
        active = (await c.list(NODEFAULT, label_selector={"kokpit.io/fault-state": "Active",
                                                          "kokpit.io/node": n1})).items
        assert {f["spec"]["type"] for f in active} == {k for i, k in enumerate(REPORTED_FAULTS) if i % 3 == 0}
        # lifted: every reporter cleared it → Resolved
        await s.driver.fault(n1, "recover")
        f = await s.fault(f"{n1}.disk-failure", lambda f: state(f) == "Resolved", "resolved after recover")
        assert f["status"]["resolution"]["reason"] == "ReportCleared"

        # a person (or any agent) reporting the same fault twice: one object, count 2, provenance kept
        rep = FaultReporter(c)
        await rep.report(FaultReport(n3, "disk-failure", "smartd/n3", message="sdb: reallocated sectors", ttl_seconds=60))
        await rep.report(FaultReport(n3, "disk-failure", "smartd/n3", message="sdb: more sectors", ttl_seconds=60))
        f = await c.get(NODEFAULT, f"{n3}.disk-failure")
        assert f["status"]["count"] == 2 and f["status"]["sources"][0]["count"] == 2
        assert f["status"]["sources"][0]["message"] == "sdb: more sectors"
        assert [x["metadata"]["name"] for x in (await c.list(NODEFAULT, label_selector={
            "kokpit.io/fault-type": "disk-failure", "kokpit.io/node": n3})).items] == [f"{n3}.disk-failure"]

        # node-problem-detector: exactly what NPD writes — a Node condition ...
        now = "2026-12-07T01:00:00Z"
        await c.patch(NODE, n3, {"status": {"conditions": [
            {"type": "KernelDeadlock", "status": "True", "reason": "DockerHung",
             "message": "task docker:7 blocked for more than 300 seconds.", "lastHeartbeatTime": now,
             "lastTransitionTime": now}]}}, patch_type="strategic", subresource="status")
        f = await s.fault(f"{n3}.kernel-deadlock", accepted, "NPD KernelDeadlock")
        assert f["status"]["sources"][0]["reporter"] == "node-condition/KernelDeadlock"
        assert f["status"]["sources"][0]["kind"] == "NodeProblemDetector" and f["status"]["severity"] == "Critical"
        # ... and an Event on the Node (source kernel-monitor, involvedObject uid = the node's name)
        from kokpit._lib.clock import RealClock, format_time

        t = format_time(RealClock().now())
        await c.create(EVENT, {"metadata": {"name": f"{n3}.npd1", "namespace": "default"},
                               "involvedObject": {"kind": "Node", "name": n3, "uid": n3},
                               "reason": "MemoryReadError", "message": "CE memory read error on DIMM A1",
                               "type": "Warning", "source": {"component": "kernel-monitor", "host": n3},
                               "firstTimestamp": t, "lastTimestamp": t, "count": 1})
        f = await s.fault(f"{n3}.memory-ecc", accepted, "NPD MemoryReadError event")
        assert f["status"]["sources"][0]["reporter"] == f"kernel-monitor/{n3}"
        # NPD turns the condition False → the fault is resolved
        await c.patch(NODE, n3, {"status": {"conditions": [
            {"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock",
             "message": "kernel has no deadlock", "lastHeartbeatTime": now, "lastTransitionTime": now}]}},
            patch_type="strategic", subresource="status")
        await s.fault(f"{n3}.kernel-deadlock", lambda f: state(f) == "Resolved", "NPD condition cleared")
        # a Warning Event on the Node says what was found
        evs = (await c.list(EVENT, field_selector=f"involvedObject.kind=Node,involvedObject.name={n3}")).items
        assert any(e["reason"] == "FaultReported" and "kernel-deadlock" in e["message"] for e in evs)
        # the memory-ecc Event was counted once, even though the detector saw it again on every resync
        assert (await c.get(NODEFAULT, f"{n3}.memory-ecc"))["status"]["count"] == 1


async def test_bad_reports_expiry_retention_and_kill9(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as s:
        c = s.client
        n1 = NODES[0]
        rep = FaultReporter(c)
        # unknown type and unknown node: certainly wrong when written, so a 422 naming the field
        for report, field in ((FaultReport(n1, "flux-capacitor", "person/alice", message="?"), "spec.type"),
                              (FaultReport("no-such-node", "disk-failure", "person/alice"), "spec.nodeName")):
            with pytest.raises(ApiError) as ei:
                await rep.report(report)
            assert ei.value.code == 422 and [x.get("field") for x in ei.value.status["details"]["causes"]] == [
                field], ei.value.message
        # what turns wrong later (the FaultType or the Node deleted after the report was accepted): a condition
        # naming the field, state Invalid, a Warning Event
        await c.create(FAULTTYPE, {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultType",
                                   "metadata": {"name": "flux-capacitor"},
                                   "spec": {"category": "Hardware", "severity": "Minor", "flow": "none"}})
        await c.create(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ghost"}})
        await rep.report(FaultReport(n1, "flux-capacitor", "person/alice", message="?"))
        await rep.report(FaultReport("ghost", "disk-failure", "person/alice"))
        await s.fault(f"{n1}.flux-capacitor", accepted, "a custom type accepted")
        await s.fault("ghost.disk-failure", accepted, "a fault of a node that exists accepted")
        await c.delete(FAULTTYPE, "flux-capacitor")
        await c.delete(NODE, "ghost")
        f = await s.fault(f"{n1}.flux-capacitor", lambda f: state(f) == "Invalid", "type gone: Invalid")
        assert cond(f, "Accepted")["reason"] == "UnknownFaultType" and "spec.type" in cond(f, "Accepted")["message"]
        f = await s.fault("ghost.disk-failure", lambda f: state(f) == "Invalid", "node gone: Invalid")
        assert cond(f, "Accepted")["reason"] == "NodeNotFound" and "spec.nodeName" in cond(f, "Accepted")["message"]

        async def warned() -> set[str] | None:
            evs = (await c.list(EVENT, field_selector="involvedObject.kind=NodeFault")).items
            seen = {(e["involvedObject"]["name"], e["reason"]) for e in evs if e["type"] == "Warning"}
            want = {(f"{n1}.flux-capacitor", "UnknownFaultType"), ("ghost.disk-failure", "NodeNotFound")}
            return None if want <= seen else seen or {"no Warning Events"}
        try:
            await wait_for(lambda: _negate(warned), "Warning Events for the faults that turned invalid", 30)
        except AssertionError as e:
            raise AssertionError(f"{e}: {await warned()}\n{s.log()}") from None

        # a report that is not refreshed expires after its TTL (disk-pressure: its flow is none, so no maintenance
        # flow resolves it meanwhile); the operator is killed -9 before the deadline
        # and the restarted one decides from what the API holds
        await rep.report(FaultReport(n1, "disk-pressure", "df-exporter/f1", ttl_seconds=3, message="/var 97% full"))
        f = await s.fault(f"{n1}.disk-pressure", lambda f: state(f) == "Active" and f["status"].get("expiresAt"),
                          "active with a deadline")
        s.kill9()
        await asyncio.sleep(3.5)  # the deadline passes while no operator runs
        assert state(await c.get(NODEFAULT, f"{n1}.disk-pressure")) == "Active"
        s.start_operator()
        # the restarted process must start (its Python start alone took ~20 s at load 24), sync and decide
        f = await s.fault(f"{n1}.disk-pressure", lambda f: state(f) == "Expired", "expired after the restart", 90)
        assert f["status"]["lastSeen"] and f["status"]["endedAt"]
        # kept as history for the retention period (6 s), then deleted
        await s.fault(f"{n1}.disk-pressure", lambda f: f["metadata"]["labels"].get("kokpit.io/fault-state") == "Expired",
                      "the state label follows")

        async def gone() -> bool:
            return not [x for x in (await c.list(NODEFAULT)).items if x["metadata"]["name"] == f"{n1}.disk-pressure"]
        await wait_for(gone, "deleted after the retention period", 30)
        # a report after expiry would have opened a new episode on the same name; now a fresh object
        await rep.report(FaultReport(n1, "disk-pressure", "df-exporter/f1", ttl_seconds=60))
        assert (await c.get(NODEFAULT, f"{n1}.disk-pressure"))["status"]["count"] == 1


async def test_silent_node_and_stopped_component_are_detected(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as s:
        c = s.client
        n1, n2 = NODES[0], NODES[1]
        # a host that hangs stops renewing its Lease: node-unreachable within the grace period (+ the scan)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await s.driver.fault(n1, "hang")
        f = await s.fault(f"{n1}.node-unreachable", lambda f: state(f) == "Active", "lease-based detection",
                          LEASE_GRACE + 15)
        took = loop.time() - t0
        reporters = {x["reporter"] for x in f["status"]["sources"]}
        assert "fault-detector/lease" in reporters, f["status"]
        print(f"silent fault detected after {took:.2f}s (grace {LEASE_GRACE}s)")
        await s.driver.fault(n1, "recover")
        await s.fault(f"{n1}.node-unreachable", lambda f: state(f) == "Resolved", "cleared when the lease renews", 20)

        # a managed component stopped on the host: the machine operator sees it through the node driver, the
        # detector reads that from the Machine (no second poll of the host)
        from kokpit.operators.machine import MACHINE, MPV

        await c.create(MPV, {"metadata": {"name": "containerd-1.7"}, "spec": {"component": "containerd",
                                                                               "version": "1.7.0"}})
        await c.patch(MACHINE, n2, {"spec": {"packages": ["containerd-1.7"]}})

        async def running() -> bool:
            m = await c.get(MACHINE, n2)
            return any(x["name"] == "containerd" and x.get("runState") == "Running"
                       for x in (m.get("status") or {}).get("components") or [])
        await wait_for(running, "containerd running on n2", 30)
        await s.driver.fault(n2, "component-stop", "containerd")
        f = await s.fault(f"{n2}.container-runtime-unhealthy.containerd", lambda f: state(f) == "Active",
                          "stopped containerd detected", 30)
        assert f["spec"]["component"] == "containerd"
        assert f["status"]["sources"][0]["reporter"] == "fault-detector/machine"

        # the business signal: pods fail to start on one node while they start everywhere else
        n3 = NODES[2]
        await s.driver.fault(n3, "pod-start-failure")
        for i in range(6):
            for n in (n1, n3):
                await c.create(POD, {"metadata": {"name": f"w-{n}-{i}", "namespace": "default"},
                                     "spec": {"nodeName": n, "containers": [{"name": "app", "image": "app:1"}]}})
        f = await s.fault(f"{n3}.pod-start-failures", lambda f: state(f) == "Active", "pod start failures on n3", 40)
        assert f["status"]["sources"][0]["reporter"] == "fault-detector/pod-starts"
        assert "failed to start on this node" in f["status"]["message"]
        assert not [x for x in (await c.list(NODEFAULT, label_selector={"kokpit.io/fault-type": "pod-start-failures"})
                                ).items if x["spec"]["nodeName"] != n3]


class Receiver:
    """A real local HTTP receiver (asyncio server) recording the JSON bodies it is POSTed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[Obj] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await r.readexactly(length) if length else b""
                self.bodies.append(json.loads(body))
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_subscription_retries_while_the_receiver_is_down(apiserver: ApiServerProcess,
                                                                        tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as s:
        c = s.client
        port = free_port()  # nothing listens yet: the receiver is down
        await c.create(FAULTSUBSCRIPTION, {"metadata": {"name": "pager"}, "spec": {
            "url": f"http://127.0.0.1:{port}/hooks/faults", "minSeverity": "Major",
            "retry": {"maxAttempts": 50, "initialBackoffSeconds": 0.2, "maxBackoffSeconds": 1}}})
        await s.driver.fault(NODES[2], "os-corrupted")
        await s.driver.fault(NODES[2], "clock-skew")  # Minor: not delivered

        async def failing() -> Obj | None:
            sub = await c.get(FAULTSUBSCRIPTION, "pager")
            st = sub.get("status") or {}
            return sub if st.get("failedAttempts", 0) >= 2 else None
        sub = await wait_for(failing, "failed attempts recorded", 30)
        assert cond(sub, "Ready")["status"] == "False", sub["status"]
        assert sub["status"]["lastError"].startswith(f"{NODES[2]}.os-corrupted: "), sub["status"]
        # meanwhile nothing else is blocked: the event center keeps working
        await s.fault(f"{NODES[2]}.os-corrupted", lambda f: state(f) == "Active", "fault active while the hook fails")
        # a kill -9 of the deliverer keeps the attempts it made
        attempts = {d["fault"]: d["attempts"] for d in sub["status"]["deliveries"]}
        s.kill9()
        s.start_operator()
        receiver = Receiver(port)
        await receiver.start()
        try:
            async def delivered() -> Obj | None:
                sub = await c.get(FAULTSUBSCRIPTION, "pager")
                return sub if (sub.get("status") or {}).get("delivered", 0) >= 1 else None
            sub = await wait_for(delivered, "delivered once the receiver is up", 40)
            d = next(x for x in sub["status"]["deliveries"] if x["fault"] == f"{NODES[2]}.os-corrupted")
            assert d["delivered"] and d["attempts"] > attempts.get(d["fault"], 0) >= 1
            assert cond(sub, "Ready")["status"] == "True"
            got = [b for b in receiver.bodies if b["fault"]["metadata"]["name"] == f"{NODES[2]}.os-corrupted"]
            assert got and got[0]["kind"] == "NodeFaultEvent" and got[0]["type"] == "Active"
            assert all(b["fault"]["spec"]["type"] != "clock-skew" for b in receiver.bodies)
            # the Resolved transition is delivered too
            await s.driver.fault(NODES[2], "recover")

            async def resolved_delivered() -> bool:
                return any(b["type"] == "Resolved" and b["fault"]["metadata"]["name"] == f"{NODES[2]}.os-corrupted"
                           for b in receiver.bodies)
            await wait_for(resolved_delivered, "the Resolved transition delivered", 30)
        finally:
            await receiver.stop()
