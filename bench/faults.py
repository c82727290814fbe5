"""Node fault discovery benchmark (issue 15): agent report → NodeFault, silent fault → detected, detector CPU.

What happens, all on 127.0.0.1 in a temporary directory (every process is stopped at the end, even on
error):
1. the API server (ApiServerProcess) with the CRDs; ``kokpit simulator --nodes N`` (its hosts report injected
   faults as NodeFaults, TTL 60 s, refreshed every 20 s); ``kokpit machine-operator`` with its fault
   controllers (``--faults``, ``--lease-grace G``); wait for every Node and the default catalog;
2. **steady state**: the operator's CPU over ``--steady`` seconds with N healthy nodes and no Machines (what
   is measured is the fault controllers — event center, detector with its Lease scan and informers — plus the
   idle machine operator; every Lease renewal of the fleet reaches it);
3. **agent-reported**: inject ``--faults`` faults of the simulator's reported types on distinct nodes through
   the node driver, and watch NodeFaults and Nodes from this process: inject → NodeFault written (the host's
   report), → accepted by the event center (catalog severity and flow copied, Accepted=True) and → the node
   cordoned by its maintenance flow (for types whose flow repairs): p50/p99/max;
4. **silent**: ``hang`` ``--silent`` hosts (they stop renewing their Lease) and time, for each, the
   node-unreachable NodeFault of the episode the hang caused (its ``firstSeen``, the detector's first report)
   against the Lease's last renewal + the grace period (target ≤ 2 s after).

    .venv/bin/python bench/faults.py --docs              # N=1,000 (what the shared machine allows)
    .venv/bin/python bench/faults.py --quick             # N=200, shorter
    .venv/bin/python bench/faults.py --nodes 10000 --docs   # a quiet machine
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, machine_load, replace_section, stop_processes, tail_file
from kokpit._lib.clock import parse_time
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import LEASE, NODE, Client, ResourceExpiredError
from kokpit.nodes.mtls import TLSFiles
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.runtime.faultreports import FAULTTYPE, NODEFAULT
from kokpit.simulator import REPORTED_FAULTS

PREFIX = "fb-"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def until(pred: Any, timeout: float) -> None:
    """Poll ``pred`` every 0.1 s until it holds or ``timeout`` seconds passed."""
    for _ in range(int(timeout * 10)):
        if pred():
            return
        await asyncio.sleep(0.1)


class Run:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.api: ApiServerProcess | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.op: subprocess.Popen[bytes] | None = None
        self.written: dict[str, float] = {}  # NodeFault name → monotonic time first seen
        self.accepted: dict[str, float] = {}
        self.seen_obj: dict[str, dict[str, Any]] = {}
        self.cordoned: dict[str, float] = {}  # Node name → monotonic time first seen cordoned by a flow
        # set once a follower's first list is read and its watch resumes from it: a fault injected before
        # would be timed with that list's transfer (seconds for 10,000 Nodes), not with the system's reaction
        self.synced: dict[str, asyncio.Event] = {"faults": asyncio.Event(), "nodes": asyncio.Event()}

    def start(self) -> str:
        a = self.args
        self.api = ApiServerProcess(self.tmp / "api").start(timeout=120)
        cmd = [sys.executable, "-m", "kokpit.cli.main", "simulator", "--kubeconfig", str(self.api.kubeconfig),
               "--nodes", str(a.nodes), "--lease-period", f"{a.lease_period}s", "--install-seconds", "0",
               "--driver-port", "0", "--data-dir", str(self.tmp / "sim"), "--name-prefix", PREFIX]
        with open(self.tmp / "simulator.log", "wb") as log:
            self.sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env={**os.environ,
                                                                                     "PYTHONUNBUFFERED": "1"})
        assert self.sim.stdout is not None
        line = self.sim.stdout.readline().decode()
        m = re.search(r"driver at (\S+)", line)
        if not m:
            raise RuntimeError(f"simulator did not start: {line!r}\n{tail_file(self.tmp / 'simulator.log')}")
        url = m.group(1)
        cmd = [sys.executable, "-m", "kokpit.cli.main", "machine-operator", "--kubeconfig", str(self.api.kubeconfig),
               "--driver-url", url, "--driver-tls-dir", str(self.tmp / "sim" / "pki" / "client"),
               "--lease-grace", f"{a.lease_grace}s", "--faults"]
        with open(self.tmp / "operator.log", "wb") as log:
            self.op = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return url

    def stop(self) -> None:
        stop_processes([self.op, self.sim], wait=30)
        if self.api is not None:
            self.api.stop()

    def see(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        st = obj.get("status") or {}
        if st.get("state") == "Active":
            self.written.setdefault(name, now)
            self.seen_obj[name] = obj
            if st.get("severity") and any(c.get("type") == "Accepted" and c.get("status") == "True"
                                          for c in st.get("conditions") or []):
                self.accepted.setdefault(name, now)

    def see_node(self, obj: dict[str, Any]) -> None:
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        if (obj.get("spec") or {}).get("unschedulable") and \
                str(ann.get("kokpit.io/cordoned-by", "")).startswith("maintenance-flow/"):
            self.cordoned.setdefault(obj["metadata"]["name"], time.monotonic())

    async def follow(self, c: Client, kind: Any = NODEFAULT) -> None:
        see = self.see if kind is NODEFAULT else self.see_node
        while True:
            lst = await c.list(kind)
            for o in lst.items:
                see(o)
            self.synced["faults" if kind is NODEFAULT else "nodes"].set()
            try:
                async for ev in c.watch_resumable(kind, resource_version=lst.resource_version, timeout_seconds=300):
                    if ev.type in ("ADDED", "MODIFIED"):
                        see(ev.object)
            except ResourceExpiredError:
                continue


async def main(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-faults-") as d:
        tmp = Path(d)
        r = Run(args, tmp)
        try:
            url = r.start()
            assert r.api is not None and r.op is not None
            c = Client.from_kubeconfig(r.api.kubeconfig, field_manager="bench-faults")
            await install_crds(c)
            t0 = time.monotonic()
            while len((await c.list(FAULTTYPE)).items) < 13 or \
                    len((await c.list(LEASE, "kube-node-lease")).items) < args.nodes:
                if time.monotonic() - t0 > args.timeout:
                    raise RuntimeError(f"fleet not up:\n{tail_file(tmp / 'operator.log')}")
                await asyncio.sleep(1)
            await asyncio.sleep(args.settle)
            # 2. steady state
            c0, w0 = cpu_seconds(r.op.pid), time.monotonic()
            await asyncio.sleep(args.steady)
            steady = (cpu_seconds(r.op.pid) - c0) / (time.monotonic() - w0)
            print(f"steady: operator {steady:.3f} cores with {args.nodes} healthy nodes", flush=True)
            follower = asyncio.get_running_loop().create_task(r.follow(c))
            node_follower = asyncio.get_running_loop().create_task(r.follow(c, NODE))
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in r.synced.values())), args.timeout)
            flow_of = {t["metadata"]["name"]: t["spec"]["flow"] for t in (await c.list(FAULTTYPE)).items}
            tls = TLSFiles.in_dir(tmp / "sim" / "pki" / "client")
            drv = SimulatorDriver(url, tls=tls, timeout=30.0)
            names = [f"{PREFIX}{i:05d}" for i in range(1, args.nodes + 1)]
            try:
                # 3. agent-reported
                injected: dict[str, float] = {}
                for i in range(args.faults):
                    node, kind = names[i * 7 % len(names)], REPORTED_FAULTS[i % len(REPORTED_FAULTS)]
                    injected[f"{node}.{kind}"] = time.monotonic()
                    await drv.fault(node, kind)
                    await asyncio.sleep(args.spacing)
                await until(lambda: all(n in r.accepted for n in injected), args.timeout)
                written = [r.written[n] - t for n, t in injected.items() if n in r.written]
                acc = [r.accepted[n] - t for n, t in injected.items() if n in r.accepted]
                print(f"reported: {len(written)}/{len(injected)} written p50 {pct(written, 50):.3f}s p99 "
                      f"{pct(written, 99):.3f}s; accepted p50 {pct(acc, 50):.3f}s p99 {pct(acc, 99):.3f}s", flush=True)
                # → cordoned by the maintenance flow (types whose catalog flow repairs; "none" only records)
                isolating = {n.split(".", 1)[0]: t for n, t in injected.items()
                             if flow_of.get(n.split(".", 1)[1], "none") != "none"}
                await until(lambda: all(n in r.cordoned for n in isolating), args.timeout)
                cordon = [r.cordoned[n] - t for n, t in isolating.items() if n in r.cordoned]
                print(f"cordoned: {len(cordon)}/{len(isolating)} p50 {pct(cordon, 50):.3f}s p99 "
                      f"{pct(cordon, 99):.3f}s", flush=True)
                # 4. silent
                hung = [names[(i * 13 + 5) % len(names)] for i in range(args.silent)]
                hung_at = time.time()
                for n in hung:
                    await drv.fault(n, "hang")
                want = [f"{n}.node-unreachable" for n in hung]

                def episode_after_hang(w: str) -> bool:
                    # the episode the hang caused (a node whose Lease lagged at start-up may have had one before)
                    st = (r.seen_obj.get(w) or {}).get("status") or {}
                    return st.get("state") == "Active" and parse_time(str(st.get("firstSeen"))).timestamp() > hung_at
                await until(lambda: all(episode_after_hang(w) for w in want), args.timeout)
                over: list[float] = []
                for n, w in zip(hung, want, strict=True):
                    if not episode_after_hang(w):
                        continue
                    lease = await c.get(LEASE, n, "kube-node-lease")
                    renewed = parse_time(lease["spec"]["renewTime"]).timestamp()
                    detected = parse_time(str(r.seen_obj[w]["status"]["firstSeen"])).timestamp()  # the detector's report
                    over.append(detected - renewed - args.lease_grace)
                print(f"silent: {len(over)}/{len(hung)} detected; after lease+grace p50 {pct(over, 50):.2f}s "
                      f"max {max(over) if over else float('nan'):.2f}s", flush=True)
            finally:
                for task in (follower, node_follower):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await drv.close()
                await c.close()
            lines = [
                f"N = {args.nodes:,} simulated nodes (Lease period {args.lease_period:g} s), one API server, one "
                f"simulator and one `kokpit machine-operator --faults --lease-grace {args.lease_grace:g}s` process; "
                f"load before: {args.load_before}.",
                "",
                "| figure | value |",
                "|---|---|",
                f"| steady state: operator CPU with {args.nodes:,} healthy nodes (fault controllers + idle machine "
                f"operator; every Lease renewal reaches it) | {steady:.3f} cores |",
                f"| agent-reported fault → NodeFault written (host's report), {len(written)}/{args.faults} | p50 "
                f"{pct(written, 50) * 1000:.0f} ms, p99 {pct(written, 99) * 1000:.0f} ms, max "
                f"{max(written) * 1000 if written else float('nan'):.0f} ms |",
                f"| agent-reported fault → accepted by the event center (severity, flow, Accepted=True) | p50 "
                f"{pct(acc, 50) * 1000:.0f} ms, p99 {pct(acc, 99) * 1000:.0f} ms |",
                f"| agent-reported fault → node cordoned by its maintenance flow (types whose flow repairs; no risk "
                f"center, so no permit round trips), {len(cordon)}/{len(isolating)} | p50 {pct(cordon, 50) * 1000:.0f} ms,"
                f" p99 {pct(cordon, 99) * 1000:.0f} ms (target p99 < 1 s) |",
                f"| silent fault (host hangs) → node-unreachable NodeFault, after Lease renewal + grace, "
                f"{len(over)}/{args.silent} | p50 {pct(over, 50):.2f} s, max {max(over) if over else float('nan'):.2f} s "
                "(target ≤ 2 s) |",
            ]
        finally:
            r.stop()
    return lines


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--faults", type=int, default=60)
    p.add_argument("--silent", type=int, default=5)
    p.add_argument("--lease-period", type=float, default=10.0)
    p.add_argument("--lease-grace", type=float, default=40.0)
    p.add_argument("--steady", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=15.0)
    p.add_argument("--spacing", type=float, default=0.05, help="Seconds between injections.")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--quick", action="store_true", help="N=200, 20 faults, 2 silent, shorter windows.")
    p.add_argument("--docs", action="store_true", help="Write the figures into docs/benchmarks.md.")
    a = p.parse_args()
    if a.quick:
        a.nodes, a.faults, a.silent, a.steady, a.settle = 200, 20, 2, 10.0, 5.0
    return a


if __name__ == "__main__":
    args = parse()
    args.load_before = machine_load()
    out = asyncio.run(main(args))
    print("\n".join(out))
    if args.docs:
        cmd = "python bench/faults.py " + " ".join(a for a in sys.argv[1:])
        replace_section(DOCS, "## Node faults (issue 15)", cmd.strip(), f"shared with other sessions ({args.load_before})",
                        out, sub=f"N = {args.nodes:,}")
