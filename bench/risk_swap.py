"""A fleet-wide kubelet swap through the risk center, with kill -9 of the risk center and of the machine
operator in the middle (issue 14's figures).

Why: a budget is only worth something if it holds while the processes that enforce and spend it die at
random moments, and costs little when it is not binding.  This runs the swap of bench/fleet.py five times on
the same fleet, in the same run, so the ratio carries over whatever else the machine does:

1. **unlimited / limited / limited / unlimited** (ABBA): a RiskPolicy on component-upgrade of
   ``maxConcurrent: 100%``, then ``10%``, ``10%``, ``100%``; every Machine's kubelet goes v1 → v2, v2 → v1,
   v1 → v2, v2 → v1; each the time until every Node reports the kubelet and every Machine converged.  The
   issue's ratio (≤ 1.3×) is the two limited swaps against the two unlimited ones: each policy swaps once in
   each direction, and the run's drift (10,000 Events a swap pile up in the API server) falls on both alike.
   Until 2026-12-08 the bench compared one limited v2 → v1 against one unlimited v1 → v2 swap run before it.
2. **killed**: under the same 10%, v1 → v2 again while this script kills the risk center and the machine
   operator with SIGKILL at random moments (``--kills`` each, at least 5) and starts each again at once, as a
   Deployment would (the issue's figures: no budget violation, the swap completes; its time is printed too).

Two independent views of "in flight", sampled every ``--sample`` seconds and on every change: the risk
center's own (component-upgrade targets granted and not released in the RiskLedger) and the fleet's (Machines
whose status shows a component being installed, upgraded or uninstalled).  A sample over 10% of the nodes is
a budget violation; the issue wants none.

Processes (127.0.0.1, a temporary directory): ``kokpit apiserver`` (meta and business at once: the
Cluster ``c1``'s kubeconfig Secret points back at it), ``kokpit simulator``, ``kokpit machine-operator
--risk-kubeconfig``, ``kokpit risk-center``.

    .venv/bin/python bench/risk_swap.py --nodes 1000            # print only
    .venv/bin/python bench/risk_swap.py --nodes 10000 --docs    # record in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import follow, log_issues, machine_load, ok, replace_section, stop_children_on_sigterm, tail_file
from fleet import BASE, K1, K2, PREFIX, SWAPPED, WANT1, WANT2, Tracker, mpvs
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, SECRET, Client
from kokpit.operators.machine import MACHINE, MPV
from kokpit.operators.risk import CLUSTER
from kokpit.operators.risk._ledger import LEDGER, entries
from kokpit.runtime.permits import RISK_POLICY
from kokpit.simulator import node_names

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Risk center: kubelet swap with kill -9 (bench/risk_swap.py)"
POLICY = "swap-budget"
MOVING = ("Installing", "Upgrading", "Uninstalling")


@dataclass
class InFlight:
    """The two views of what is in flight, their maxima and the samples over the limit."""

    limit: int = 0
    ledger: int = 0
    fleet: int = 0
    max_ledger: int = 0
    max_fleet: int = 0
    samples: int = 0
    over: list[str] = field(default_factory=list)

    def sample(self, what: str) -> None:
        self.samples += 1
        self.max_ledger, self.max_fleet = max(self.max_ledger, self.ledger), max(self.max_fleet, self.fleet)
        if self.limit and (self.ledger > self.limit or self.fleet > self.limit):
            self.over.append(f"{what}: ledger {self.ledger}, fleet {self.fleet} > {self.limit}")


class Child:
    """One kokpit process this script may kill -9 and start again."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> Child:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def kill9_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def kokpit(*args: str) -> list[str]:
    return [sys.executable, "-m", "kokpit.cli.main", *args]


def start_simulator(api: ApiServerProcess, a: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``kokpit simulator`` with every node registered; returns it and its driver URL."""
    log_path = tmp / "simulator.log"
    with open(log_path, "wb") as log:
        sim = subprocess.Popen(kokpit("simulator", "--kubeconfig", str(api.kubeconfig), "--nodes", str(a.nodes),
                                      "--lease-period", "10s", "--install-seconds", str(a.install_seconds),
                                      "--driver-port", "0", "--data-dir", str(tmp / "sim"), "--name-prefix", PREFIX),
                               stdout=subprocess.PIPE, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert sim.stdout is not None
    line = sim.stdout.readline().decode()
    m = re.search(r"driver at (\S+)", line)
    if not m:
        raise RuntimeError(f"simulator did not start: {line!r}\n{tail_file(log_path)}")
    return sim, m.group(1)


class SwapBench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.a, self.tmp = args, tmp
        self.tracker = Tracker(args.nodes)
        self.flight = InFlight()
        self.names = node_names(PREFIX, args.nodes)
        self.children: list[Child] = []
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    # ------------------------------------------------------------------ watching
    def see_machine(self, obj: dict[str, Any], deleted: bool = False) -> None:
        self.tracker.see_machine(obj, deleted)

    def see_ledger(self, obj: dict[str, Any], deleted: bool = False) -> None:
        if deleted:
            return
        self.flight.ledger = len({t for e in entries(obj) if not e.get("releasedAt")
                                  and e.get("operation") == "component-upgrade" for t in e.get("targets") or ()})
        self.flight.sample("ledger")

    async def sample_fleet(self) -> None:
        while True:
            self.flight.fleet = sum(1 for _r, _g, _s, comps in self.tracker.machines.values()
                                    if any(c[2] in MOVING for c in comps))
            self.flight.sample("fleet")
            await asyncio.sleep(self.a.sample)

    # ------------------------------------------------------------------ phases
    async def wait(self, label: str, done: Any, t0: float) -> float | None:
        last = 0.0
        while True:
            n = done()
            now = time.monotonic()
            if n >= self.a.nodes:
                return now - t0
            if now - t0 > self.a.timeout:
                return None
            if now - last >= 10:
                last = now
                print(f"{label} t={now - t0:5.0f}s {n}/{self.a.nodes} in flight: ledger {self.flight.ledger}, "
                      f"fleet {self.flight.fleet} (max {self.flight.max_ledger}/{self.flight.max_fleet}); "
                      f"kills {', '.join(f'{c.name} {c.kills}' for c in self.children)}", flush=True)
                for c in self.children:
                    if not c.alive():
                        raise RuntimeError(f"{c.name} exited:\n{tail_file(c.log)}")
            await asyncio.sleep(0.2)

    async def swap(self, client: Client, label: str, packages: list[str], want: dict[str, str], kubelet: str,
                   kills: list[tuple[float, Child]]) -> float | None:
        t0 = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def patch(n: str) -> None:
            async with sem:
                await client.patch(MACHINE, n, {"spec": {"packages": packages}})

        writes = asyncio.gather(*(patch(n) for n in self.names))
        killer = asyncio.create_task(self.kill_at(kills, t0))
        try:
            secs = await self.wait(label, lambda: min(self.tracker.kubelets(kubelet), self.tracker.converged(want)),
                                   t0)
        finally:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer
            await writes
        return secs

    async def set_limit(self, client: Client, value: str) -> None:
        """Set the policy's maxConcurrent and give the risk center's informer time to see it."""
        await client.patch(RISK_POLICY, POLICY, {"spec": {"maxConcurrent": value}})
        await asyncio.sleep(2.0)

    async def kill_at(self, kills: list[tuple[float, Child]], t0: float) -> None:
        for at, child in kills:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            child.kill9_and_restart()
            print(f"  kill -9 {child.name} at t={time.monotonic() - t0:.1f}s (#{child.kills})", flush=True)

    async def run(self) -> dict[str, Any]:
        a = self.a
        load_before = machine_load()
        api = ApiServerProcess(self.tmp / "api").start(timeout=60)
        client = Client.from_kubeconfig(api.kubeconfig, field_manager="bench-risk-swap", timeout=120.0)
        tasks: list[asyncio.Task[Any]] = []
        sim: subprocess.Popen[bytes] | None = None
        try:
            await install_crds(client)
            for m in mpvs(True):
                await client.create(MPV, {"apiVersion": MPV.api_version, "kind": MPV.kind, **m})
            raw = api.kubeconfig.read_bytes()  # the business cluster c1 is this server too
            await client.create(CLUSTER, {"metadata": {"name": "c1", "namespace": "default"},
                                          "spec": {"packageVersion": "v1"}})
            await client.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": "default"},
                                         "data": {"value": base64.b64encode(raw).decode()}})
            await client.create(RISK_POLICY, {"metadata": {"name": POLICY}, "spec": {
                "operations": ["component-upgrade"], "scope": {"allClusters": True}, "maxConcurrent": "100%"}})
            sim, driver_url = await asyncio.to_thread(start_simulator, api, a, self.tmp)
            center = Child("risk-center", kokpit("risk-center", "--kubeconfig", str(api.kubeconfig),
                                                 "--no-leader-elect"), self.tmp / "risk-center.log").start()
            op = Child("machine-operator", kokpit(
                "machine-operator", "--kubeconfig", str(api.kubeconfig), "--driver-url", driver_url,
                "--driver-tls-dir", str(self.tmp / "sim" / "pki" / "client"), "--workers", str(a.workers),
                "--risk-kubeconfig", str(api.kubeconfig), "--risk-cluster", "c1", "--risk-namespace", "default"),
                self.tmp / "machine-operator.log").start()
            self.children = [center, op]
            tasks = [asyncio.create_task(follow(client, MACHINE, self.see_machine)),
                     asyncio.create_task(follow(client, NODE, self.tracker.see_node)),
                     asyncio.create_task(follow(client, LEDGER, self.see_ledger)),
                     asyncio.create_task(self.sample_fleet())]
            sem = asyncio.Semaphore(32)

            async def create(n: str) -> None:
                async with sem:
                    await client.create(MACHINE, {"apiVersion": MACHINE.api_version, "kind": MACHINE.kind,
                                                  "metadata": {"name": n}, "spec": {"nodeName": n,
                                                                                    "packages": BASE}})

            t0 = time.monotonic()
            await asyncio.gather(*(create(n) for n in self.names))
            conv = await self.wait("converge", lambda: self.tracker.converged(WANT1), t0)
            if conv is None:
                raise RuntimeError("the fleet did not converge")
            self.say(f"- {a.nodes:,} Machines converged (first installs ask nothing) in {conv:.0f} s")
            limit = a.nodes // 10
            # ABBA: unlimited, limited, limited, unlimited — each policy swaps once in each direction and the
            # drift of the run (Events piling up in the API server) falls on both alike.
            times: dict[tuple[str, str], float] = {}
            limited_flights: list[InFlight] = []
            for mode, (label, packages, want, kubelet) in (
                    ("unlimited", ("v1 → v2", SWAPPED, WANT2, K2)), ("limited", ("v2 → v1", BASE, WANT1, K1)),
                    ("limited", ("v1 → v2", SWAPPED, WANT2, K2)), ("unlimited", ("v2 → v1", BASE, WANT1, K1))):
                await self.set_limit(client, "100%" if mode == "unlimited" else "10%")
                self.flight = InFlight(limit=limit if mode == "limited" else 0)
                secs = await self.swap(client, f"{mode} {label}", packages, want, kubelet, [])
                if secs is None:
                    raise RuntimeError(f"the {mode} swap {label} timed out")
                times[mode, label] = secs
                if mode == "limited":
                    limited_flights.append(self.flight)
                self.say(f"- {mode} (maxConcurrent {'100%' if mode == 'unlimited' else f'10% = {limit:,} nodes'}): "
                         f"{label} on every node in **{secs:.0f} s**; in flight at most "
                         f"{self.flight.max_ledger:,} (ledger) / {self.flight.max_fleet:,} (fleet)"
                         + (f", {len(self.flight.over)} violations" if mode == "limited" else ""))
            free = times["unlimited", "v1 → v2"] + times["unlimited", "v2 → v1"]
            limited = times["limited", "v1 → v2"] + times["limited", "v2 → v1"]
            ratio = limited / free
            self.say(f"- limited / unlimited, both directions each: {limited:.0f} s / {free:.0f} s = "
                     f"**{ratio:.2f}×** (v1 → v2 alone {times['limited', 'v1 → v2'] / times['unlimited', 'v1 → v2']:.2f}×, "
                     f"v2 → v1 alone {times['limited', 'v2 → v1'] / times['unlimited', 'v2 → v1']:.2f}×)")
            await self.set_limit(client, "10%")
            self.flight = InFlight(limit=limit)
            rng = random.Random(a.seed)
            span = max(10.0, times["limited", "v1 → v2"] * 0.8)
            kills = sorted([(rng.uniform(0.05, 1.0) * span, center) for _ in range(a.kills)]
                           + [(rng.uniform(0.05, 1.0) * span, op) for _ in range(a.kills)], key=lambda x: x[0])
            killed = await self.swap(client, "killed", SWAPPED, WANT2, K2, kills)
            f = self.flight
            self.say(f"- maxConcurrent 10% with kill -9: v1 → v2 on every node in "
                     f"**{'—' if killed is None else f'{killed:.0f} s'}** "
                     f"({(killed or float('nan')) / times['unlimited', 'v1 → v2']:.2f}× the unlimited v1 → v2); "
                     f"kill -9 of the risk center "
                     f"{center.kills}×, of the machine operator {op.kills}×")
            flights = [*limited_flights, f]
            over = [o for fl in flights for o in fl.over]
            self.say(f"- in flight at most **{max(fl.max_ledger for fl in flights):,}** (risk center's ledger) and "
                     f"**{max(fl.max_fleet for fl in flights):,}** (Machines installing/upgrading) of {limit:,}, over "
                     f"{sum(fl.samples for fl in flights):,} samples of the three limited swaps; "
                     f"**{len(over)} budget violations**" + (f" (first: {over[0]})" if over else ""))
            issues = {c.name: log_issues(c.log) for c in self.children}
            self.say("- errors/warnings in the logs: " + "; ".join(
                f"{k}: {sum(v.values())}" + (" (" + "; ".join(f"{n}× {m}" for m, n in v.most_common(3)) + ")"
                                             if v else "") for k, v in issues.items()))
            self.say(f"- Targets (issue 14): never over {limit:,} in flight: {ok(not over)}; "
                     f"≤ 1.3× the unlimited swap: {ok(ratio <= 1.3)} ({ratio:.2f}×); "
                     f"≥ 5 kills of each: {ok(center.kills >= 5 and op.kills >= 5)}; the swap with kills "
                     f"completes: {ok(killed is not None)}")
            self.say(f"- Load: before {load_before}; after {machine_load()}.")
            return {"free": free, "limited": limited, "killed": killed, "violations": len(over)}
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for c in self.children:
                c.stop()
            if sim is not None:
                sim.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sim.wait(30)
            with contextlib.suppress(Exception):
                await client.close()
            api.stop()


def main() -> int:
    stop_children_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--kills", type=int, default=5, help="kill -9 of each process during the limited swap")
    p.add_argument("--install-seconds", type=float, default=1.0, help="simulated install time of a package")
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--sample", type=float, default=0.2, help="seconds between fleet samples")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--docs", action="store_true", help="record the run in docs/benchmarks.md")
    p.add_argument("--keep-logs", help="copy the processes' logs into this directory at the end")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="risk-swap-") as tmp:
        bench = SwapBench(a, Path(tmp))
        try:
            asyncio.run(bench.run())
        except RuntimeError as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
        finally:
            if a.keep_logs:
                Path(a.keep_logs).mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, Path(a.keep_logs) / log.name)
    if a.docs:
        cmd = f".venv/bin/python bench/risk_swap.py --nodes {a.nodes} --kills {a.kills} --install-seconds " \
              f"{a.install_seconds:g}"
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION, cmd, "API server, simulator, machine operator, "
                        "risk center and this script on the same machine", bench.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
