"""Scale check of the node simulator: N simulated nodes against a fresh embedded API server.

Reports registration time, then steady-state CPU% and RSS of the simulator and CPU% of the API server over a
window (from /proc/<pid>/stat and /proc/<pid>/status), and how many Leases were renewed in the last lease
period.  Usage: ``python bench/simulator_scale.py --nodes 2000 --window 60``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import LEASE, Client

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


async def fresh_leases(kubeconfig: Path, period: float) -> tuple[int, int]:
    async with Client.from_kubeconfig(kubeconfig) as c:
        items = (await c.list(LEASE, "kube-node-lease")).items
    now = dt.datetime.now(dt.UTC)
    fresh = sum(1 for lz in items
                if (now - dt.datetime.fromisoformat(lz["spec"]["renewTime"].replace("Z", "+00:00"))).total_seconds()
                <= period * 1.1 + 1)
    return fresh, len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--lease-period", type=float, default=10.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="simscale-"))
    api = ApiServerProcess(tmp / "api").start()
    assert api.proc is not None
    sim_log = open(tmp / "sim.log", "wb")
    sim = subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", "simulator", "--kubeconfig", str(api.kubeconfig),
                            "--nodes", str(args.nodes), "--lease-period", f"{args.lease_period}s",
                            "--driver-port", "0", "--data-dir", str(tmp / "sim")],
                           stdout=subprocess.PIPE, stderr=sim_log)
    try:
        t0 = time.monotonic()
        assert sim.stdout is not None
        line = sim.stdout.readline().decode()
        wall = time.monotonic() - t0
        print(f"simulator: {line.strip()} (process start to registered: {wall:.1f}s)")
        time.sleep(min(10.0, args.lease_period))  # let the first renewal round spread out
        s0, a0, w0 = cpu_seconds(sim.pid), cpu_seconds(api.proc.pid), time.monotonic()
        time.sleep(args.window)
        s1, a1, w1 = cpu_seconds(sim.pid), cpu_seconds(api.proc.pid), time.monotonic()
        el = w1 - w0
        fresh, total = asyncio.run(fresh_leases(api.kubeconfig, args.lease_period))
        print(f"window {el:.0f}s, {args.nodes} nodes, lease period {args.lease_period}s")
        print(f"simulator CPU {100 * (s1 - s0) / el:.1f}%  RSS {rss_mb(sim.pid):.0f} MB")
        print(f"apiserver CPU {100 * (a1 - a0) / el:.1f}%  RSS {rss_mb(api.proc.pid):.0f} MB")
        print(f"leases renewed within one period: {fresh}/{total}")
        print(f"load average: {Path('/proc/loadavg').read_text().strip()}")
    finally:
        sim.terminate()
        try:
            sim.wait(15)
        except subprocess.TimeoutExpired:
            sim.kill()
        sim_log.close()
        api.stop()


if __name__ == "__main__":
    main()
