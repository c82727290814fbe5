"""Fleet benchmark (issue 4): embedded API server + node simulator + machine operator at 10,000 nodes.

Why: the simulator is how kokpit measures scale, and the issue sets fleet-level targets on this 2-core
machine — empty → all Machines converged and a kubelet swap across the fleet each < 60 s, steady CPU of the
three processes together < 1.5 cores, operator RSS < 500 MB — then asks what breaks first on the way to
50,000 nodes.  One run measures all of it against fresh processes, so the figures compare like with like.

What happens, all on 127.0.0.1 in a temporary directory (every process is stopped at the end, even on
error):
1. start the API server (ApiServerProcess), install the CRDs (kokpit.api.install_crds), create the
   MachinePackageVersions (containerd, kubelet v1 and v2, a kernel patch, a sysctl profile);
2. start ``kokpit simulator --nodes N --lease-period 10s --install-seconds 0`` and wait until every Node
   and Lease is registered, then start ``kokpit machine-operator`` against it;
3. **convergence**: create one Machine per node (containerd, kubelet-v1, kernel patch, sysctl) and watch
   Machines and Nodes from this process until every Machine has all components Installed + Running at the
   wanted versions, condition Ready True, and its Node is schedulable;
4. **steady state**: CPU (cores; /proc/<pid>/stat utime+stime) of each process over a window, RSS (VmRSS)
   and peak RSS (VmHWM), and how many Leases were renewed within one period at its end;
5. **swap**: merge-patch every Machine's ``spec.packages`` from kubelet-v1 to kubelet-v2 and watch until
   every Node's ``status.nodeInfo.kubeletVersion`` is v2 (and every Machine converged again).
Every 5 s a progress line records converged counts and each process's CPU over the interval, so a run that
misses a target shows which process saturated; warnings and errors in the processes' logs are counted.

    .venv/bin/python bench/fleet.py --docs          # N=10,000, figures into docs/benchmarks.md
    .venv/bin/python bench/fleet.py --quick         # N=1,000
    .venv/bin/python bench/fleet.py --nodes 50000 --steady 30 --timeout 900
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    bounded,
    cores,
    cpu_seconds,
    fmt_cores,
    log_issues,
    machine_load,
    ok,
    replace_section,
    scrape_metrics,
    status_mb,
    stop_children_on_sigterm,
    stop_processes,
    tail_file,
)
from _common import (
    follow as _follow,
)
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import LEASE, NODE, Client
from kokpit.operators.machine import MACHINE, MPV
from kokpit.simulator import node_names

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Fleet (bench/fleet.py)"
PREFIX = "sim-"
PROGRESS_EVERY = 5.0

K1, K2 = "1.36.2", "1.37.0"
BASE = ["containerd-1.7", "kubelet-v1", "kernel-patch-2026-11", "sysctl-fleet"]
SWAPPED = ["containerd-1.7", "kubelet-v2", "kernel-patch-2026-11", "sysctl-fleet"]
WANT1 = {"containerd": "1.7.22", "kubelet": K1, "kernel-patch": "2026-11", "sysctl": "v3"}
WANT2 = {**WANT1, "kubelet": K2}


def mpvs(health_checks: bool) -> list[dict[str, Any]]:
    """The MachinePackageVersions of the fleet: what a real node stack declares."""
    def hc(unit: str) -> dict[str, Any]:
        return {"type": "systemd", "unit": unit} if health_checks else {"type": "none"}

    def kubelet(name: str, version: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {
            "component": "kubelet", "version": version, "dependsOn": ["containerd"],
            "package": {"type": "deb", "name": "kubelet", "version": f"{version}-1.1"},
            "install": {"method": "package", "packageManager": "apt"},
            "config": {"files": [{"path": "/etc/default/kubelet", "content": "KUBELET_EXTRA_ARGS=--max-pods=110\n"}]},
            "healthCheck": hc("kubelet.service")}}

    return [
        {"metadata": {"name": "containerd-1.7"}, "spec": {
            "component": "containerd", "version": "1.7.22",
            "package": {"type": "deb", "name": "containerd.io", "version": "1.7.22-1"},
            "install": {"method": "package", "packageManager": "apt"},
            "config": {"files": [{"path": "/etc/containerd/config.toml", "content": "version = 2\n",
                                  "mode": "0644"}]},
            "healthCheck": hc("containerd.service")}},
        kubelet("kubelet-v1", K1),
        kubelet("kubelet-v2", K2),
        {"metadata": {"name": "kernel-patch-2026-11"}, "spec": {
            "component": "kernel-patch", "version": "2026-11",
            "package": {"type": "binary", "name": "livepatch-2026-11", "version": "2026-11"},
            "install": {"method": "script", "script": "kpatch load /var/lib/kpatch/livepatch-2026-11.ko",
                        "versionProbe": "kpatch list | grep -q livepatch-2026-11 && echo 2026-11"}}},
        {"metadata": {"name": "sysctl-fleet"}, "spec": {
            "component": "sysctl", "version": "v3", "package": {"type": "none"},
            "install": {"method": "config"},
            "config": {"sysctl": {"net.ipv4.ip_forward": "1", "vm.max_map_count": "262144",
                                  "fs.inotify.max_user_watches": "524288"}}}},
    ]


# ---------------------------------------------------------------------------------------------- /proc








class Procs:
    """The measured processes by role; CPU snapshots and deltas."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {"bench": os.getpid()}

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(p) for k, p in self.pids.items()}

    def rss(self) -> dict[str, tuple[float, float]]:
        return {k: (status_mb(p, "VmRSS"), status_mb(p, "VmHWM")) for k, p in self.pids.items()}






# ---------------------------------------------------------------------------------------------- tracker
@dataclass
class Tracker:
    """The fleet as this process sees it through watches: a compact summary per Machine and per Node."""

    n: int
    machines: dict[str, tuple[bool, int, int, tuple[tuple[str, str, str, str], ...]]] = field(default_factory=dict)
    nodes: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name -> (schedulable, kubeletVersion)
    events: int = 0
    errors: list[str] = field(default_factory=list)

    def count_event(self) -> None:
        self.events += 1

    def see_machine(self, obj: dict[str, Any], deleted: bool = False) -> None:
        name = obj["metadata"]["name"]
        if deleted:
            self.machines.pop(name, None)
            return
        st = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        comps = tuple(sorted((str(c.get("name")), str(c.get("version")), str(c.get("installState")),
                              str(c.get("runState"))) for c in st.get("components") or []))
        gen = int(obj["metadata"].get("generation") or 0)
        self.machines[name] = (ready, gen, int(st.get("observedGeneration") or 0), comps)

    def see_node(self, obj: dict[str, Any], deleted: bool = False) -> None:
        name = obj["metadata"]["name"]
        if deleted:
            self.nodes.pop(name, None)
            return
        sched = not (obj.get("spec") or {}).get("unschedulable")
        kv = str(((obj.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "")
        self.nodes[name] = (sched, kv)

    def converged(self, want: dict[str, str]) -> int:
        wanted = tuple(sorted((c, v, "Installed", "Running") for c, v in want.items()))
        ok = 0
        for name, (ready, gen, seen, comps) in self.machines.items():
            if ready and seen >= gen and comps == wanted and self.nodes.get(name, (False, ""))[0]:
                ok += 1
        return ok

    def kubelets(self, version: str) -> int:
        want = f"v{version}"
        return sum(1 for name, (_s, kv) in self.nodes.items() if kv == want and name in self.machines)


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Phase:
    name: str
    seconds: float | None  # None: not reached within the timeout
    done: int
    total: int
    cpu: dict[str, float]  # cores over the phase
    writes_s: float = 0.0  # client writes issued by this process per second (creates/patches)
    extra: str = ""


@dataclass
class Result:
    nodes: int
    registration_s: float = 0.0
    registration_cpu: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    steady_cpu: dict[str, float] = field(default_factory=dict)
    steady_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    steady_window: float = 0.0
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)
    leases_fresh: tuple[int, int] = (0, 0)
    progress: list[str] = field(default_factory=list)
    log_issues: dict[str, Counter[str]] = field(default_factory=dict)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    load_before: str = ""
    load_headline: str = ""
    load_after: str = ""
    aborted: str = ""


# ---------------------------------------------------------------------------------------------- helpers
def request_totals(api: ApiServerProcess) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` by (verb, resource) from the server's /metrics."""
    out: Counter[tuple[str, str]] = Counter()
    try:
        status, body = api.request("GET", "/metrics")
    except Exception:  # a saturated server may not answer in time: the counts are a bonus
        return out
    if status != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("resource"):
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            out[(labels.get("verb", ""), labels["resource"] + sub)] += int(float(line.rsplit(" ", 1)[1]))
    return out






def steady_rates(counts: Counter[tuple[str, str]], seconds: float) -> str:
    """The requests of the steady window as rates, largest first: what the servers' steady CPU is spent on."""
    if not counts or seconds <= 0:
        return "-"
    return ", ".join(f"{verb} {res} {n / seconds:,.0f}" for (verb, res), n in counts.most_common(8))


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = Procs()
        self.res = Result(nodes=args.nodes)
        self.api: ApiServerProcess | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.op: subprocess.Popen[bytes] | None = None
        self.tracker = Tracker(args.nodes)
        self.metrics_port = 0
        self._last_metrics: dict[str, float] = {}

    def operator_metrics(self) -> str:
        """Machine queue depth and mean reconcile time since the last call, from the operator's /metrics."""
        try:
            assert self.api is not None
            _, text = scrape_metrics(self.metrics_port, self.api.data_dir / "tokens.json")
        except OSError:
            return "operator metrics n/a"
        vals: dict[str, float] = {}
        for line in text.splitlines():
            for key in ('kokpit_workqueue_depth{name="machine"}',
                        'kokpit_reconcile_duration_seconds_sum{controller="machine"}',
                        'kokpit_reconcile_duration_seconds_count{controller="machine"}'):
                if line.startswith(key + " "):
                    vals[key.split("{")[0]] = float(line.rsplit(" ", 1)[1])
        prev, self._last_metrics = self._last_metrics, vals
        n = vals.get("kokpit_reconcile_duration_seconds_count", 0.0) - prev.get("kokpit_reconcile_duration_seconds_count", 0.0)
        t = vals.get("kokpit_reconcile_duration_seconds_sum", 0.0) - prev.get("kokpit_reconcile_duration_seconds_sum", 0.0)
        mean = f"{1000 * t / n:.0f} ms" if n else "-"
        return f"queue {vals.get('kokpit_workqueue_depth', 0):.0f}, {n:.0f} reconciles, mean {mean}"

    # ---------------------------------------------------------------- processes
    def start_api(self) -> ApiServerProcess:
        self.api = ApiServerProcess(self.tmp / "api").start(timeout=60)
        assert self.api.proc is not None
        self.procs.pids["apiserver"] = self.api.proc.pid
        return self.api

    def start_simulator(self) -> tuple[str, float]:
        assert self.api is not None
        cmd = [sys.executable, "-m", "kokpit.cli.main", "simulator", "--kubeconfig", str(self.api.kubeconfig),
               "--nodes", str(self.args.nodes), "--lease-period", f"{self.args.lease_period}s",
               "--install-seconds", "0", "--driver-port", "0", "--data-dir", str(self.tmp / "sim"),
               "--name-prefix", PREFIX]
        t0 = time.monotonic()
        c0 = self.procs.cpu()
        with open(self.tmp / "simulator.log", "wb") as log:  # the child keeps its own copy of the fd
            self.sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.pids["simulator"] = self.sim.pid
        assert self.sim.stdout is not None
        line = self.sim.stdout.readline().decode()
        m = re.search(r"driver at (\S+)", line)
        if not m:
            raise RuntimeError(f"simulator did not start: {line!r}\n{self.tail('simulator.log')}")
        secs = time.monotonic() - t0
        self.res.registration_cpu = cores(c0, self.procs.cpu(), secs)
        return m.group(1), secs

    def start_operator(self, driver_url: str) -> None:
        assert self.api is not None
        self.metrics_port = free_port()
        cmd = [sys.executable, "-m", "kokpit.cli.main", "machine-operator", "--kubeconfig",
               str(self.api.kubeconfig), "--driver-url", driver_url, "--workers", str(self.args.workers),
               "--driver-tls-dir", str(self.tmp / "sim" / "pki" / "client"),
               "--metrics-port", str(self.metrics_port), "--metrics-token-file",
               str(self.api.data_dir / "tokens.json"), *(self.args.operator_arg or [])]
        with open(self.tmp / "operator.log", "wb") as log:
            self.op = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.pids["operator"] = self.op.pid

    def tail(self, name: str) -> str:
        return tail_file(self.tmp / name)

    def stop_all(self) -> None:
        stop_processes([self.op, self.sim])
        if self.api is not None:
            self.api.stop()

    def check_alive(self) -> None:
        for name, p in (("simulator", self.sim), ("operator", self.op)):
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.tail(name + '.log')}")
        if self.api is not None and self.api.proc is not None and self.api.proc.poll() is not None:
            raise RuntimeError(f"apiserver exited:\n{self.api.log_tail()}")

    # ---------------------------------------------------------------- phases
    async def wait_for(self, label: str, count: Any, target: int, timeout: float, t0: float,
                       c0: dict[str, float]) -> float | None:
        """Poll ``count()`` until it reaches ``target``; a progress line every few seconds."""
        last_t, last_c = time.monotonic(), self.procs.cpu()
        while True:
            done = count()
            now = time.monotonic()
            if done >= target:
                return now - t0
            if now - t0 > timeout:
                return None
            if now - last_t >= PROGRESS_EVERY:
                c = self.procs.cpu()
                line = (f"{label} t={now - t0:5.1f}s {done}/{target}  cpu[{fmt_cores(cores(last_c, c, now - last_t))}]"
                        f"  watch events {self.tracker.events}  op: {self.operator_metrics()}")
                print(line, flush=True)
                self.res.progress.append(line)
                last_t, last_c = now, c
                self.check_alive()
            await asyncio.sleep(0.2)

    def profile(self, phase: str) -> None:
        """With --profile DIR: py-spy (raw collapsed stacks) of each process for 20 s, in the background."""
        if self.args.profile is None:
            return
        spy = Path(sys.executable).parent / "py-spy"
        self.args.profile.mkdir(parents=True, exist_ok=True)
        for role in ("apiserver", "simulator", "operator"):
            pid = self.procs.pids.get(role)
            if pid is not None:
                subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", "20", "-r", "50", "-f", "raw", "-o",
                                  str(self.args.profile / f"{phase}-{role}.raw")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def run(self) -> Result:
        a = self.args
        res = self.res
        res.load_before = machine_load()
        print(f"machine: {res.load_before}", flush=True)
        api = self.start_api()
        client = Client.from_kubeconfig(api.kubeconfig, field_manager="bench-fleet", timeout=120.0)
        follow: list[asyncio.Task[None]] = []
        try:
            await install_crds(client)
            for m in mpvs(a.health_checks):
                await client.create(MPV, {"apiVersion": MPV.api_version, "kind": MPV.kind, **m})
            url, secs = self.start_simulator()
            res.registration_s = secs
            print(f"simulator: {a.nodes} nodes registered in {secs:.1f}s; cpu during registration "
                  f"[{fmt_cores(res.registration_cpu)}]", flush=True)
            follow = [asyncio.create_task(_follow(client, NODE, self.tracker.see_node, self.tracker.count_event)),
                      asyncio.create_task(_follow(client, MACHINE, self.tracker.see_machine,
                                                  self.tracker.count_event))]
            self.start_operator(url)
            await asyncio.sleep(3.0)  # imports, informers' initial lists
            self.check_alive()
            if a.headline_after:
                await self.wait_until(a.headline_after)
            res.load_headline = machine_load()
            print(f"machine at measurement start: {res.load_headline}", flush=True)
            names = node_names(PREFIX, a.nodes)
            req0 = request_totals(api)

            # -- convergence
            c0, t0 = self.procs.cpu(), time.monotonic()

            async def create(i: int) -> None:
                n = names[i]
                await client.create(MACHINE, {"apiVersion": MACHINE.api_version, "kind": MACHINE.kind,
                                              "metadata": {"name": n}, "spec": {"nodeName": n, "packages": BASE}})

            creates = asyncio.create_task(bounded(a.nodes, a.concurrency, create))
            self.profile("converge")
            secs_c = await self.wait_for("converge", lambda: self.tracker.converged(WANT1), a.nodes, a.timeout,
                                         t0, c0)
            created_s = await self.finish_writes(creates, t0)
            el = time.monotonic() - t0
            res.phases.append(Phase("empty → all converged", secs_c, self.tracker.converged(WANT1), a.nodes,
                                    cores(c0, self.procs.cpu(), el), a.nodes / created_s if created_s else 0.0,
                                    f"Machine creates took {created_s:.1f}s"))
            print(f"converged: {secs_c} ({self.tracker.converged(WANT1)}/{a.nodes}); creates {created_s:.1f}s",
                  flush=True)
            if secs_c is None:
                res.aborted = "convergence timed out"

            # -- steady state
            if a.steady > 0:
                await asyncio.sleep(a.settle)
                s0, w0 = self.procs.cpu(), time.monotonic()
                sreq0 = request_totals(api)
                self.profile("steady")
                await asyncio.sleep(a.steady)
                self.check_alive()
                res.steady_window = time.monotonic() - w0
                res.steady_requests = request_totals(api) - sreq0
                res.steady_cpu = cores(s0, self.procs.cpu(), res.steady_window)
                res.rss = self.procs.rss()
                res.leases_fresh = await fresh_leases(client, a.lease_period)
                print(f"steady: {res.steady_window:.0f}s cpu[{fmt_cores(res.steady_cpu)}] leases fresh "
                      f"{res.leases_fresh[0]}/{res.leases_fresh[1]}; requests/s "
                      f"{steady_rates(res.steady_requests, res.steady_window)}", flush=True)

            # -- swap
            if not a.no_swap and secs_c is not None:
                c0, t0 = self.procs.cpu(), time.monotonic()

                async def swap(i: int) -> None:
                    await client.patch(MACHINE, names[i], {"spec": {"packages": SWAPPED}})

                patches = asyncio.create_task(bounded(a.nodes, a.concurrency, swap))
                self.profile("swap")
                secs_k = await self.wait_for("swap", lambda: self.tracker.kubelets(K2), a.nodes, a.timeout, t0, c0)
                secs_m = None
                if secs_k is not None:
                    secs_m = await self.wait_for("swap-machines", lambda: self.tracker.converged(WANT2), a.nodes,
                                                 max(30.0, a.timeout - secs_k), t0, c0)
                patched_s = await self.finish_writes(patches, t0)
                el = time.monotonic() - t0
                res.phases.append(Phase("kubelet swap: every Node's kubeletVersion v2", secs_k,
                                        self.tracker.kubelets(K2), a.nodes, cores(c0, self.procs.cpu(), el),
                                        a.nodes / patched_s if patched_s else 0.0,
                                        f"Machine patches took {patched_s:.1f}s; every Machine converged again "
                                        f"at {'—' if secs_m is None else f'{secs_m:.1f}s'}"))
                print(f"swap: kubelets {secs_k}, machines {secs_m}; patches {patched_s:.1f}s", flush=True)
            res.requests = request_totals(api) - req0
            if not res.rss:
                res.rss = self.procs.rss()
            else:  # peaks over the whole run
                res.rss = {k: (v[0], self.procs.rss().get(k, v)[1]) for k, v in res.rss.items()}
        finally:
            res.load_after = machine_load()
            for t in follow:
                t.cancel()
            for t in follow:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await client.close()
        return res

    async def finish_writes(self, task: asyncio.Task[float], t0: float) -> float:
        """Seconds from ``t0`` until the bench's last write of the phase was answered."""
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            except TimeoutError:
                task.cancel()
                return float("nan")
        return task.result() - t0

    async def wait_until(self, hhmm: str) -> None:
        h, m = (int(x) for x in hhmm.split(":"))
        now = dt.datetime.now(dt.UTC)
        at = now.replace(hour=h, minute=m, second=0, microsecond=0)
        if at > now:
            print(f"waiting until {hhmm} UTC for the headline measurement", flush=True)
            await asyncio.sleep((at - now).total_seconds())


async def fresh_leases(client: Client, period: float) -> tuple[int, int]:
    now = dt.datetime.now(dt.UTC)
    fresh = total = 0
    async for page in client.list_pages(LEASE, "kube-node-lease", limit=1000):
        for lz in page.items:
            total += 1
            rt = (lz.get("spec") or {}).get("renewTime")
            if rt and (now - dt.datetime.fromisoformat(rt.replace("Z", "+00:00"))).total_seconds() <= period * 1.1 + 1:
                fresh += 1
    return fresh, total


# ---------------------------------------------------------------------------------------------- report


def report_lines(args: argparse.Namespace, res: Result) -> list[str]:
    roles = ["apiserver", "simulator", "operator"]
    out = [f"N = {res.nodes:,} simulated nodes, lease period {args.lease_period:g} s, install latency 0, "
           f"operator --workers {args.workers}, {args.concurrency} concurrent Machine writes from the bench, "
           f"health checks {'on (systemd, containerd and kubelet)' if args.health_checks else 'off'}.",
           f"Load: before {res.load_before}; at measurement start {res.load_headline}; after {res.load_after}.",
           "",
           f"Simulator start → {res.nodes:,} Nodes and Leases registered: {res.registration_s:.1f} s "
           f"(cores: {fmt_cores(res.registration_cpu)}).", "",
           "| phase | time | reached | bench writes/s | CPU cores: apiserver / simulator / operator / bench | notes |",
           "|---|---:|---:|---:|---|---|"]
    for p in res.phases:
        t = "not reached" if p.seconds is None else f"**{p.seconds:.1f} s**"
        cpu = " / ".join(f"{p.cpu.get(k, float('nan')):.2f}" for k in [*roles, "bench"])
        out.append(f"| {p.name} | {t} | {p.done:,}/{p.total:,} | {p.writes_s:,.0f} | {cpu} | {p.extra} |")
    if res.steady_cpu:
        total = sum(res.steady_cpu.get(k, 0.0) for k in roles)
        conv_done = all(p.seconds is not None for p in res.phases if p.name.startswith("empty"))
        title = (f"Steady state ({res.steady_window:.0f} s window after convergence, {args.settle:g} s settle):"
                 if conv_done else f"{res.steady_window:.0f} s window after the convergence phase timed out (the "
                 "fleet was still converging: not a steady state):")
        out += ["", title, "",
                "| process | CPU (cores) | RSS | peak RSS (VmHWM) |", "|---|---:|---:|---:|"]
        for k in [*roles, "bench"]:
            rss, hwm = res.rss.get(k, (float("nan"), float("nan")))
            out.append(f"| {k} | {res.steady_cpu.get(k, float('nan')):.2f} | {rss:.0f} MB | {hwm:.0f} MB |")
        out.append(f"| **three together** | **{total:.2f}** | | |")
        out += ["", f"API requests/s in the steady window: {steady_rates(res.steady_requests, res.steady_window)}."]
        out += ["", f"Leases renewed within one period (+10% +1 s) at the end of the window: "
                    f"{res.leases_fresh[0]:,}/{res.leases_fresh[1]:,}."]
    if res.requests:
        top = ", ".join(f"{v} {r}: {n:,}" for (v, r), n in res.requests.most_common(10))
        out += ["", f"API requests during the measured phases (server's apiserver_request_total): {top}."]
    for name, c in res.log_issues.items():
        if c:
            top = "; ".join(f"{n}× `{m}`" for m, n in c.most_common(4))
            out.append(f"- {name} log: {sum(c.values()):,} warnings/errors — {top}")
        else:
            out.append(f"- {name} log: no warnings or errors")
    if res.aborted:
        out.append(f"- run ended early: {res.aborted}")
    conv = next((p for p in res.phases if p.name.startswith("empty")), None)
    swap = next((p for p in res.phases if p.name.startswith("kubelet")), None)
    if res.nodes == 10_000:
        out += ["", "Targets (issue 4, N=10,000):"]
        if conv:
            out.append(f"- convergence < 60 s: {conv.seconds and round(conv.seconds, 1)} s — "
                       f"{ok(conv.seconds is not None and conv.seconds < 60)}")
        if swap:
            out.append(f"- full kubelet swap < 60 s: {swap.seconds and round(swap.seconds, 1)} s — "
                       f"{ok(swap.seconds is not None and swap.seconds < 60)}")
        if res.steady_cpu:
            total = sum(res.steady_cpu.get(k, 0.0) for k in roles)
            out.append(f"- steady CPU of the three < 1.5 cores: {total:.2f} — {ok(total < 1.5)}")
        if res.rss:
            hwm = res.rss.get("operator", (0.0, float("nan")))[1]
            out.append(f"- operator RSS < 500 MB: peak {hwm:.0f} MB — {ok(hwm < 500)}")
    if res.progress:
        out += ["", "<details><summary>progress (every 5 s: converged/total, CPU cores over the interval)</summary>",
                "", "```", *res.progress, "```", "", "</details>"]
    return out


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, help="simulated nodes (default 10,000)")
    p.add_argument("--quick", action="store_true", help="1,000 nodes, 20 s steady window")
    p.add_argument("--docs", action="store_true", help="write the section into docs/benchmarks.md")
    p.add_argument("--docs-file", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--docs-sub", metavar="TITLE", help="write the run as the subsection '### TITLE' of the section "
                                                       "(e.g. the push beyond 10,000 nodes)")
    p.add_argument("--lease-period", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=64, help="operator --workers")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent Machine creates/patches")
    p.add_argument("--steady", type=float, help="steady-state window in seconds (default 60; 0: skip)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds between convergence and the window")
    p.add_argument("--timeout", type=float, default=600.0, help="give up on a phase after S seconds")
    p.add_argument("--no-swap", action="store_true")
    p.add_argument("--operator-arg", action="append", metavar="ARG",
                   help="an extra argument for kokpit machine-operator (repeatable), e.g. --operator-arg=--no-faults")
    p.add_argument("--no-health-checks", dest="health_checks", action="store_false",
                   help="MPVs without health checks (no driver health calls)")
    p.add_argument("--note", action="append", help="a line of notes appended to the docs section (repeatable)")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each process for 20 s per phase")
    p.add_argument("--headline-after", metavar="HH:MM", help="start measuring (after setup) at this UTC time")
    args = p.parse_args(argv)
    if args.nodes is None:
        args.nodes = 1000 if args.quick else 10_000
    if args.steady is None:
        args.steady = 20.0 if args.quick else 60.0
    return args


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    stop_children_on_sigterm()
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/fleet.py", *(sys.argv[1:] if argv is None else argv)])
    # SIGTERM ends the run like Ctrl-C, so every process is still stopped
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-fleet-") as d:
        tmp = Path(d)
        bench = Bench(args, tmp)
        try:
            res = asyncio.run(bench.run())
        except BaseException:
            for name in ("simulator.log", "operator.log"):
                print(f"--- {name} (tail) ---\n{bench.tail(name)}", file=sys.stderr)
            if bench.api is not None:
                print(f"--- apiserver (tail) ---\n{bench.api.log_tail()}", file=sys.stderr)
            raise
        finally:
            bench.stop_all()
        res.log_issues = {n: log_issues(tmp / f"{n}.log", rf"{PREFIX}\d+") for n in ("simulator", "operator")}
        if args.profile is not None:  # keep the logs beside the profiles
            for n in ("simulator.log", "operator.log"):
                if (tmp / n).exists():
                    shutil.copy(tmp / n, args.profile / n)
            if bench.api is not None and bench.api.log_path.exists():
                shutil.copy(bench.api.log_path, args.profile / "apiserver.log")
        if bench.api is not None:
            res.log_issues["apiserver"] = log_issues(bench.api.log_path, rf"{PREFIX}\d+")
    lines = report_lines(args, res)
    if args.note:
        lines += ["", *args.note]
    print()
    print("\n".join(lines))
    if args.docs:
        replace_section(args.docs_file, SECTION, command, "API server, simulator, operator and bench on the same "
                        f"machine, shared with other workloads ({res.load_headline})", lines, args.docs_sub)
        print(f"\nwritten to {args.docs_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
