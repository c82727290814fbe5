"""A small fleet for the maintenance-flow tests, through real processes: an API server (meta and business at
once, as in the risk center's tests), the risk center, a simulator with its durable hosts, and
``kokpit machine-operator`` (with the maintenance flows) as a child process a test may kill -9."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kokpit._lib.clock import format_time
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import CRD, NODE, SECRET, AlreadyExistsError, Client, NotFoundError
from kokpit.operators.faults.catalog import install_defaults
from kokpit.operators.machine import MACHINE, MPV
from kokpit.operators.maintenance import FLOW, NODE_FAULT, POLICY
from kokpit.operators.risk import CLUSTER, CenterOptions, run_center
from kokpit.runtime.permits import RISK_POLICY
from kokpit.simulator import Simulator, SimulatorOptions

Obj = dict[str, Any]
PREFIX = "mf-"
FAST_CENTER = CenterOptions(gate_interval=0.2, probe_interval=0.3, probe_timeout=5.0, status_interval=0.2,
                            observe_interval=0.3, resync=2.0)


async def eventually(fn: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition") -> Any:
    """Await ``fn()`` until it returns something truthy; fail with ``what`` (and the last value) after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except NotFoundError as e:
            last = e
        else:
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def cond(obj: Obj | None, type_: str) -> Obj:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def nodefault_crd() -> Obj:
    """NodeFault's CRD: the event center's own (kokpit.api.fault) once it is there, else a stand-in of the
    same wire shape (the flows depend on the shape, not the code)."""
    try:
        from kokpit.api import fault  # type: ignore[attr-defined]
        from kokpit.api.crdgen import crd_for
        return crd_for(fault.NodeFault)
    except ImportError:
        any_obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "nodefaults.kokpit.io"},
                "spec": {"group": "kokpit.io", "scope": "Cluster",
                         "names": {"kind": "NodeFault", "listKind": "NodeFaultList", "plural": "nodefaults",
                                   "singular": "nodefault"},
                         "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                       "subresources": {"status": {}},
                                       "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                           "spec": any_obj, "status": any_obj}}}}]}}


def fast_policy(**over: Any) -> Obj:
    """MaintenancePolicy ``default`` with durations a test can wait for."""
    steps_all = ["Isolate", "Migrate", "Drain", "Repair", "Verify", "Restore"]
    spec: Obj = {
        "flows": [
            {"name": "component-restart", "repair": "ComponentRestart",
             "steps": ["Isolate", "Repair", "Verify", "Restore"], "timeout": "6s", "maxAttempts": 2},
            {"name": "reboot", "repair": "Reboot", "steps": steps_all, "timeout": "8s", "maxAttempts": 1},
            {"name": "reinstall", "repair": "Reinstall", "steps": steps_all, "timeout": "20s", "maxAttempts": 1},
            {"name": "hardware-repair", "repair": "HardwareRepair", "steps": steps_all, "timeout": "1h",
             "maxAttempts": 1},
        ],
        "migrationDeadline": "2s",
        "storm": {"maxFaulty": "100%", "window": "10m"},  # tests with 3 nodes fault 2: no storm
    }
    spec.update(over)
    return {"apiVersion": POLICY.api_version, "kind": POLICY.kind, "metadata": {"name": "default"}, "spec": spec}


async def report_fault(c: Client, node: str, type_: str, flow: str, *, component: str = "",
                       reporter: str = "test-agent/1") -> Obj:
    """A NodeFault as the event center writes it for an agent's report: Active and Accepted."""
    name = f"{node}.{type_}" + (f".{component}" if component else "")
    now = format_time(__import__("datetime").datetime.now(__import__("datetime").UTC))
    body: Obj = {"apiVersion": NODE_FAULT.api_version, "kind": NODE_FAULT.kind, "metadata": {"name": name,
                 "labels": {"kokpit.io/node": node, "kokpit.io/fault-type": type_}},
                 "spec": {"nodeName": node, "type": type_, **({"component": component} if component else {})}}
    await install_defaults(c)  # the API server refuses a fault of a type not in the catalog (a 422)
    with contextlib.suppress(AlreadyExistsError):
        await c.create(NODE_FAULT, body)
    status = {"state": "Active", "severity": "Major", "category": "System", "flow": flow, "count": 1,
              "firstSeen": now, "lastSeen": now, "reporter": reporter, "message": f"{type_} on {node}",
              "sources": [{"reporter": reporter, "kind": "Agent", "firstSeen": now, "lastSeen": now, "count": 1}],
              "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                              "lastTransitionTime": now}]}
    out: Obj = await c.patch(NODE_FAULT, name, {"status": status}, subresource="status")
    return out


class Fleet:
    """Everything a flow test needs; ``start_operator``/``kill_operator`` run the flow controller's process."""

    def __init__(self, apiserver: ApiServerProcess, client: Client, tmp: Path, nodes: int) -> None:
        self.apiserver = apiserver
        self.c = client
        self.tmp = tmp
        self.nodes = [f"{PREFIX}{i:05d}" for i in range(1, nodes + 1)]
        self.sim: Simulator | None = None
        self.center_task: asyncio.Task[None] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "operator.log"
        self.metrics_port = free_port()

    async def start(self, *, repair_seconds: float = 0.5, policy: Obj | None = None,
                    isolate_limit: Obj | None = None) -> Fleet:
        c = self.c
        await install_crds(c)
        await c.apply(CRD, nodefault_crd(), field_manager="test", force=True)
        await eventually(lambda: _crd_ready(c, "nodefaults.kokpit.io"), 20, "NodeFault CRD")
        raw = await asyncio.to_thread(Path(self.apiserver.kubeconfig).read_bytes)
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": "default"}, "spec": {"packageVersion": "v1"}})
        await c.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": "default"},
                                "data": {"value": base64.b64encode(raw).decode()}})
        for name, ops, limit in (("isolate", ["node-isolate", "node-drain"],
                                  isolate_limit or {"maxUnavailable": "50%"}),
                                 ("repairs", ["node-reboot", "node-reinstall", "component-upgrade"],
                                  {"maxConcurrent": 2})):
            await c.create(RISK_POLICY, {"metadata": {"name": name},
                                         "spec": {"operations": ops, "scope": {"allClusters": True}, **limit}})
        await c.create(POLICY, policy or fast_policy())
        self.center_task = asyncio.get_running_loop().create_task(run_center(
            self.apiserver.kubeconfig, FAST_CENTER, http_port=None, handle_signals=False, leader_election=False))
        self.sim = Simulator(SimulatorOptions(nodes=len(self.nodes), driver_port=0, name_prefix=PREFIX,
                                              lease_period=1.0, repair_seconds=repair_seconds,
                                              data_dir=self.tmp / "sim"), c)
        await self.sim.start()
        for name, comp, ver, deps in (("containerd-1.7", "containerd", "1.7.0", []),
                                      ("kubelet-1.30", "kubelet", "1.30.0", ["containerd"])):
            await c.create(MPV, {"metadata": {"name": name}, "spec": {"component": comp, "version": ver,
                                                                      "dependsOn": deps}})
        for n in self.nodes:
            await c.create(MACHINE, {"metadata": {"name": n},
                                     "spec": {"nodeName": n, "packages": ["containerd-1.7", "kubelet-1.30"]}})
        self.start_operator()
        await eventually(self.all_ready, 60, "every Machine Ready")
        return self

    async def all_ready(self) -> bool:
        for n in self.nodes:
            m = await self.c.get(MACHINE, n)
            if cond(m, "Ready").get("status") != "True":
                return False
        return True

    def start_operator(self) -> None:
        assert self.sim is not None and self.sim.client_tls is not None
        tls = self.sim.client_tls
        kc = str(self.apiserver.kubeconfig)
        args = [sys.executable, "-m", "kokpit.cli.main", "machine-operator", "--kubeconfig", kc,
                "--driver-url", self.sim.driver_url, "--driver-ca-file", str(tls.ca_file),
                "--driver-client-certificate", str(tls.cert_file), "--driver-client-key", str(tls.key_file),
                "--fast-poll", "0.1", "--slow-poll", "1", "--workers", "8",
                "--risk-kubeconfig", kc, "--risk-cluster", "c1",
                "--maintenance-verify-grace", "0.5", "--maintenance-poll", "0.3", "-v",
                "--metrics-port", str(self.metrics_port),
                "--metrics-token-file", str(self.apiserver.data_dir / "tokens.json")]
        out = open(self.log, "ab")  # the child writes it until it ends
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()

    def kill_operator(self) -> None:
        """kill -9 of the flow controller's process (the machine operator with the maintenance flows)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    async def flow_of(self, node: str) -> Obj | None:
        items = (await self.c.list(FLOW)).items
        mine = [f for f in items if f["spec"]["nodeName"] == node]
        return sorted(mine, key=lambda f: f["metadata"]["creationTimestamp"])[-1] if mine else None

    async def completed(self, node: str) -> Obj | None:
        f = await self.flow_of(node)
        return f if f is not None and cond(f, "Completed").get("status") == "True" else None

    async def node(self, node: str) -> Obj:
        out: Obj = await self.c.get(NODE, node)
        return out

    async def actions(self, node: str) -> list[str]:
        assert self.sim is not None and self.sim.book is not None
        return [e["event"] for e in self.sim.book.host(node).log]

    async def stop(self) -> None:
        self.kill_operator()
        if self.sim is not None:
            await self.sim.stop()
        if self.center_task is not None:
            self.center_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.center_task

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics (HTTPS, the API server's read-only token) as ``{series: value}``."""
        token = json.loads((self.apiserver.data_dir / "tokens.json").read_text())["readonly"]
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        req = urllib.request.Request(f"https://127.0.0.1:{self.metrics_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def operator_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


async def _crd_ready(c: Client, name: str) -> bool:
    crd = await c.get(CRD, name)
    return any(x.get("type") == "Established" and x.get("status") == "True"
               for x in (crd.get("status") or {}).get("conditions") or [])


@pytest.fixture
async def fleet_factory(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Fleet]]]:
    fleets: list[Fleet] = []
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as c:
        async def make(nodes: int = 3, **kw: Any) -> Fleet:
            f = Fleet(apiserver, c, tmp_path, nodes)
            fleets.append(f)
            return await f.start(**kw)

        try:
            yield make
        finally:
            for f in fleets:
                await f.stop()
