"""Maintenance-flow benchmark (issue 15 figures): a fault wave and a fault storm through real processes.

What runs, all on 127.0.0.1 in a temporary directory (every process is stopped at the end, even on error):
an API server (meta and business cluster at once, as in the tests), ``kokpit risk-center``, ``kokpit
simulator --repair-seconds 0`` (zero simulated repair latency), and ``kokpit machine-operator`` with the
maintenance flows and ``--risk-kubeconfig``.  Risk policies: node-isolate and node-drain ``maxUnavailable:
10%`` per cluster (the shipped default), reboot/reinstall/component-upgrade ``maxConcurrent: 10%``.

1. **wave**: 1% of the nodes faulted at once, mixed types — a stopped kubelet (component-restart), a hung host
   (reboot), a corrupted OS (reinstall: every component is installed again by the machine operator) — each a
   NodeFault as the event center writes it; measured until every flow is Completed and every node is
   schedulable and untainted again: total time, time to isolate / to repair (the flows' own histograms), the
   machine-operator process's CPU, and the most nodes isolated at any sample against the budget.
2. **storm**: 50% of the nodes faulted (hung) within 10 s: the breaker trips (MaintenancePolicy storm
   ``maxFaulty: 30%``); the most nodes isolated at any sample (0.2 s) never exceeds the node-isolate budget;
   then the faults clear (the simulator recovers the hosts, the reporters clear their NodeFaults) and the time
   until every node is back is measured.

    .venv/bin/python bench/maintenance.py --docs            # 1,000 nodes (this machine), into docs/benchmarks.md
    .venv/bin/python bench/maintenance.py --nodes 10000 --timeout 3600
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    bounded,
    cpu_seconds,
    machine_load,
    ok,
    replace_section,
    scrape_metrics,
    stop_children_on_sigterm,
    stop_processes,
    tail_file,
)
from kokpit.api import install_crds
from kokpit.api.maintenance import TAINT_KEY, default_policy_spec
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import NODE, SECRET, Client
from kokpit.nodes.mtls import TLSFiles
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.faults.catalog import install_defaults
from kokpit.operators.machine import MACHINE, MPV
from kokpit.operators.maintenance import FLOW, POLICY
from kokpit.operators.risk import CLUSTER
from kokpit.runtime import is_true
from kokpit.runtime.faultreports import NODEFAULT as NODE_FAULT
from kokpit.runtime.permits import RISK_POLICY
from kokpit.simulator import node_names

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Maintenance flows (bench/maintenance.py)"
PREFIX = "sim-"
Obj = dict[str, Any]
# (flow, fault type, what the simulator injects, component): the hosts report kernel-deadlock and os-corrupted
# themselves and stop once a reboot / reinstall clears them, as agents do; a stopped kubelet is found by the
# fault detector.  (Reports written by this script instead stayed live through the repair, or, written as a
# bare status without sources, expired before their flow opened: a wave node without a flow at 10,000 nodes.)
KINDS = (("component-restart", "kubelet-unhealthy", "component-stop", "kubelet"),
         ("reboot", "kernel-deadlock", "kernel-deadlock", ""),
         ("reinstall", "os-corrupted", "os-corrupted", ""))


class Watcher:
    """Nodes and flows as this process sees them through watches; samples the isolated count."""

    def __init__(self) -> None:
        self.tainted: set[str] = set()
        self.unschedulable: set[str] = set()
        self.flows: dict[str, tuple[str, bool]] = {}  # name -> (node, completed)
        self.faulty: set[str] = set()  # nodes with an Active NodeFault (the event center's word)
        self._faults: dict[str, tuple[str, bool]] = {}  # name -> (node, active)
        self.max_isolated = 0

    def see_node(self, o: Obj, deleted: bool = False) -> None:
        n = o["metadata"]["name"]
        spec = o.get("spec") or {}
        for s, on in ((self.tainted, any(t.get("key") == TAINT_KEY for t in spec.get("taints") or [])),
                      (self.unschedulable, bool(spec.get("unschedulable")))):
            (s.add if on and not deleted else s.discard)(n)
        self.max_isolated = max(self.max_isolated, len(self.tainted))

    def see_flow(self, o: Obj, deleted: bool = False) -> None:
        if deleted:
            self.flows.pop(o["metadata"]["name"], None)
            return
        done = is_true((o.get("status") or {}).get("conditions"), "Completed")
        self.flows[o["metadata"]["name"]] = (o["spec"]["nodeName"], done)

    def see_fault(self, o: Obj, deleted: bool = False) -> None:
        name, node = o["metadata"]["name"], str(o["spec"].get("nodeName") or "")
        self._faults[name] = (node, not deleted and (o.get("status") or {}).get("state") == "Active")
        self.faulty = {n for n, active in self._faults.values() if active}

    def open_flows(self) -> int:
        return sum(1 for _, d in self.flows.values() if not d)


async def follow(c: Client, kind: Any, see: Any) -> None:
    while True:
        lst = await c.list(kind)
        for o in lst.items:
            see(o)
        with contextlib.suppress(Exception):
            async for ev in c.watch_resumable(kind, resource_version=lst.resource_version, timeout_seconds=300):
                if ev.type != "BOOKMARK":
                    see(ev.object, ev.type == "DELETED")


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api: ApiServerProcess | None = None
        self.metrics_port = free_port()
        self.lines: list[str] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "wb") as log:
            p = subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", *args], stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = p
        return p

    def stop(self) -> None:
        stop_processes(list(self.procs.values()), wait=15)
        if self.api is not None:
            self.api.stop()

    def say(self, line: str) -> None:
        print(line, flush=True)

    async def setup(self, c: Client) -> tuple[SimulatorDriver, list[str]]:
        a, kc = self.args, str(self.api.kubeconfig) if self.api else ""
        await install_crds(c)
        await install_defaults(c)  # the API server refuses a NodeFault of a type not in the catalog
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": "default"}, "spec": {"packageVersion": "v1"}})
        raw = await asyncio.to_thread(Path(kc).read_bytes)
        await c.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": "default"},
                                "data": {"value": base64.b64encode(raw).decode()}})
        for name, ops, lim in (("isolate", ["node-isolate", "node-drain"], {"maxUnavailable": "10%"}),
                               ("repairs", ["node-reboot", "node-reinstall", "component-upgrade"],
                                {"maxConcurrent": "10%"})):
            await c.create(RISK_POLICY, {"metadata": {"name": name}, "spec": {
                "operations": ops, "scope": {"allClusters": True}, **lim}})
        spec = default_policy_spec().to_wire()
        spec["migrationDeadline"] = "0s"
        await c.create(POLICY, {"metadata": {"name": "default"}, "spec": spec})
        for name, comp, ver, deps in (("containerd-1.7", "containerd", "1.7.0", []),
                                      ("kubelet-1.30", "kubelet", "1.30.0", ["containerd"])):
            await c.create(MPV, {"metadata": {"name": name}, "spec": {"component": comp, "version": ver,
                                                                      "dependsOn": deps}})
        self.spawn("risk-center", "risk-center", "--kubeconfig", kc, "--no-leader-elect", "--gate-interval", "1")
        self.spawn("simulator", "simulator", "--kubeconfig", kc, "--nodes", str(a.nodes), "--lease-period", "10s",
                   "--install-seconds", "0", "--repair-seconds", "0", "--driver-port", "0",
                   "--data-dir", str(self.tmp / "sim"), "--name-prefix", PREFIX)
        url_file = self.tmp / "sim" / "driver-url"
        deadline = time.monotonic() + 300
        while not url_file.is_file():
            if time.monotonic() > deadline or self.procs["simulator"].poll() is not None:
                raise RuntimeError("simulator did not start:\n" + tail_file(self.tmp / "simulator.log"))
            await asyncio.sleep(0.5)
        url = url_file.read_text().strip()
        self.spawn("operator", "machine-operator", "--kubeconfig", kc, "--driver-url", url,
                   "--driver-tls-dir", str(self.tmp / "sim" / "pki" / "client"), "--risk-kubeconfig", kc,
                   "--risk-cluster", "c1", "--maintenance-verify-grace", "1", "--maintenance-poll", "1",
                   "--metrics-port", str(self.metrics_port), "--metrics-token-file",
                   str(self.api.data_dir / "tokens.json") if self.api else "")
        nodes = node_names(PREFIX, a.nodes)
        await bounded(len(nodes), 32, lambda i: c.create(MACHINE, {"metadata": {"name": nodes[i]}, "spec": {
            "nodeName": nodes[i], "packages": ["containerd-1.7", "kubelet-1.30"]}}))
        driver = SimulatorDriver(url, tls=TLSFiles.in_dir(self.tmp / "sim" / "pki" / "client"), timeout=30)
        return driver, nodes

    async def ready(self, c: Client, n: int) -> None:
        t0 = time.monotonic()
        while True:
            items = (await c.list(MACHINE)).items
            got = sum(1 for m in items if is_true((m.get("status") or {}).get("conditions"), "Ready"))
            if got >= n:
                self.say(f"fleet ready: {got} Machines in {time.monotonic() - t0:.0f} s")
                return
            if time.monotonic() - t0 > self.args.timeout:
                raise RuntimeError(f"only {got}/{n} Machines Ready")
            await asyncio.sleep(2)

    def flow_sums(self) -> dict[str, float] | str:
        """The flows' histogram sums and counts from the operator's /metrics, or why they cannot be read."""
        try:
            assert self.api is not None
            code, text = scrape_metrics(self.metrics_port, self.api.data_dir / "tokens.json")
        except OSError:
            return "metrics n/a"
        if code != 200:
            return f"metrics: HTTP {code}"
        vals = {}
        for line in text.splitlines():
            m = re.match(r"(kokpit_maintenance_time_to_(isolate|repair)_seconds_(sum|count)) (\S+)", line)
            if m:
                vals[m.group(1)] = float(m.group(4))
        return vals

    def flow_metrics(self, before: dict[str, float] | str) -> str:
        """Mean time to isolate / repair of the flows that finished since ``before`` (the histograms are the
        process's own, cumulative: flows opened earlier — in a loaded setup, for nodes whose Lease lagged —
        are not this phase's)."""
        now = self.flow_sums()
        if isinstance(now, str):
            return now
        base = before if isinstance(before, dict) else {}
        out = []
        for what in ("isolate", "repair"):
            key = f"kokpit_maintenance_time_to_{what}_seconds"
            n = now.get(f"{key}_count", 0.0) - base.get(f"{key}_count", 0.0)
            if n:
                s = now.get(f"{key}_sum", 0.0) - base.get(f"{key}_sum", 0.0)
                out.append(f"mean time to {what} {s / n:.1f} s over {n:.0f} flows")
        return "; ".join(out) or "flow histograms: no samples in the operator's /metrics"

    async def until_back(self, w: Watcher, nodes: set[str], flows_before: set[str],
                         every_node_a_flow: bool = True) -> float | None:
        """Until every new flow is done and none of `nodes` is isolated.  In a wave every faulty node gets a
        flow; in a storm the breaker rightly opens none for nodes beyond its limit (`every_node_a_flow`
        False), which a bench waiting for them would count as never back (seen at 10,000 nodes)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.args.timeout:
            new = {k: v for k, v in w.flows.items() if k not in flows_before}
            done = all(d for _, d in new.values()) and (
                not every_node_a_flow or {n for n, _ in new.values()} >= nodes)
            if done and not (nodes & (w.tainted | w.unschedulable)):
                return time.monotonic() - t0
            await asyncio.sleep(0.2)
        return None

    async def run(self) -> None:
        a = self.args
        self.api = ApiServerProcess(self.tmp / "api").start(timeout=60)
        async with Client.from_kubeconfig(self.api.kubeconfig, field_manager="bench") as c:
            driver, nodes = await self.setup(c)
            await self.ready(c, len(nodes))
            w = Watcher()
            tasks = [asyncio.create_task(follow(c, NODE, w.see_node)), asyncio.create_task(follow(c, FLOW, w.see_flow)),
                     asyncio.create_task(follow(c, NODE_FAULT, w.see_fault))]
            try:
                await asyncio.sleep(2)
                budget = len(nodes) // 10
                op = self.procs["operator"].pid
                # ------------------------------------------------------------ wave
                k = max(3, int(len(nodes) * a.fraction))
                wave = nodes[1::max(1, len(nodes) // k)][:k]
                before = set(w.flows)
                w.max_isolated = len(w.tainted)
                sums = self.flow_sums()
                c0, t0 = cpu_seconds(op), time.monotonic()

                async def fault(i: int) -> None:
                    _flow, _type, sim, comp = KINDS[i % len(KINDS)]
                    await driver.fault(wave[i], sim, comp)

                await bounded(len(wave), 16, fault)
                secs = await self.until_back(w, set(wave), before)
                cpu = (cpu_seconds(op) - c0) / max(1e-9, time.monotonic() - t0)
                self.lines += [
                    f"- **wave**: {len(wave)} nodes ({a.fraction:.0%} of {len(nodes)}) faulted at once, a third "
                    "each component-restart, reboot, reinstall: every flow completed and every node back in "
                    f"**{secs:.1f} s** {ok(secs is not None)}" if secs is not None else
                    f"- **wave**: {len(wave)} nodes NOT all back within {a.timeout} s",
                    f"  - {self.flow_metrics(sums)}",
                    f"  - machine-operator process (machine operator + flows) CPU over the wave: {cpu:.2f} cores",
                    f"  - most nodes isolated at any sample: {w.max_isolated} (node-isolate budget {budget}) "
                    f"{ok(w.max_isolated <= budget)}"]
                self.say("\n".join(self.lines))
                # ------------------------------------------------------------ storm
                m = int(len(nodes) * a.storm)
                stormy = [n for n in nodes if n not in wave][:m]
                before = set(w.flows)
                w.max_isolated = len(w.tainted)
                sums = self.flow_sums()
                t0 = time.monotonic()
                pace = a.storm_seconds / max(1, m)

                async def storm_fault(i: int) -> None:
                    # paced from the storm's start: a sleep of i * pace inside a bounded slot added up to
                    # 397 s for 5,000 nodes instead of the 10 s asked for
                    await asyncio.sleep(max(0.0, t0 + i * pace - time.monotonic()))
                    await driver.fault(stormy[i], "kernel-deadlock")  # the host reports it

                await bounded(m, 64, storm_fault)
                injected = time.monotonic() - t0
                reported_at_injected = len(w.faulty & set(stormy))
                tripped, trip_s = None, None
                st: Obj = {}
                while time.monotonic() - t0 < 60:
                    p = await c.get(POLICY, "default")
                    st = (p.get("status") or {}).get("storm") or {}
                    if st.get("open"):
                        tripped, trip_s = st, time.monotonic() - t0
                        break
                    await asyncio.sleep(0.5)
                reported_at_trip = len(w.faulty & set(stormy))
                await asyncio.sleep(a.hold)  # the storm lasts a while
                held = len(w.tainted)
                t1 = time.monotonic()
                await bounded(m, 32, lambda i: driver.fault(stormy[i], "recover"))  # the hosts clear their reports
                secs = await self.until_back(w, set(stormy), before, every_node_a_flow=False)
                flowed = len({n for k, (n, _) in w.flows.items() if k not in before} & set(stormy))
                self.lines += [
                    f"- **storm**: {m} nodes ({a.storm:.0%}) faulted within {injected:.1f} s: breaker "
                    f"{'tripped' if tripped else 'did NOT trip'} {ok(tripped is not None)}"
                    + (f" {trip_s:.1f} s after the storm began ({tripped.get('message', '')[:200]})" if tripped
                       else f" (the policy's storm status after 60 s: {st.get('message', '')[:200]!r})"),
                    f"  - storm nodes with an Active NodeFault (event center): {reported_at_injected} when the "
                    f"injection ended, {reported_at_trip} when the breaker was read open (or after 60 s)",
                    f"  - storm nodes that got a flow: {flowed} of {m} (the breaker opens none beyond its limit)",
                    f"  - most nodes isolated at any sample: {w.max_isolated} (node-isolate budget {budget}, "
                    f"{held} isolated when the storm cleared) {ok(w.max_isolated <= budget)}",
                    f"  - after the faults cleared every node was back in **{secs:.1f} s** {ok(True)}"
                    if secs is not None else f"  - NOT every node back within {a.timeout} s after the faults cleared",
                    f"  - total storm {time.monotonic() - t0:.0f} s (recovery started at {t1 - t0:.0f} s); "
                    f"{self.flow_metrics(sums)}"]
                self.say("\n".join(self.lines[-6:]))  # the storm's lines
            finally:
                for t in tasks:
                    t.cancel()
                await driver.close()


def main() -> None:
    stop_children_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--fraction", type=float, default=0.01, help="Share of nodes in the wave.")
    ap.add_argument("--storm", type=float, default=0.5, help="Share of nodes in the storm.")
    ap.add_argument("--storm-seconds", type=float, default=10.0)
    ap.add_argument("--hold", type=float, default=10.0, help="Seconds the storm lasts after it is injected.")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--docs", action="store_true", help="Write the figures into docs/benchmarks.md.")
    a = ap.parse_args()
    load = machine_load()
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-mf-") as tmp:
        b = Bench(a, Path(tmp))
        try:
            asyncio.run(b.run())
        finally:
            b.stop()
    if a.docs and b.lines:
        cmd = "python bench/maintenance.py --docs" + (f" --nodes {a.nodes}" if a.nodes != 1000 else "")
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION, cmd, f"load before the run: {load}", b.lines)


__all__ = ["main"]

if __name__ == "__main__":
    main()
