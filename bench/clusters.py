"""Cluster operator scale benchmark (issue 5): N business clusters from empty to Ready, then a CPV swap.

Why: the seed says one meta cluster manages 3,000+ business clusters, and the issue sets the targets on this
2-core machine — 3,000 Clusters empty → Ready and a ClusterPackageVersion swap across all of them each < 60 s,
operator RSS < 1 GB — and asks for the API calls per Cluster reconcile.  One run measures all of it against
fresh processes.

No business API server runs: the local kubelet runs with a fake container runtime (``kokpit kubelet --fake-runtime``:
Pods are bound and marked Running/Ready, no process starts) and the operator in the matching
``--trust-pod-readiness`` mode (its Prober does not dial the business endpoints, nobody would answer; the API
server component is healthy exactly when its Pod is Ready, and ControlPlaneReady says it was not probed).
Everything else is the real path: PKI and kubeconfig Secrets, the NodePort Service, Pods owned by the Cluster,
Events, status writes, the one-at-a-time release.

What happens, all on 127.0.0.1 in a temporary directory (every process is stopped at the end, even on error):
1. start the meta API server (ApiServerProcess), install the CRDs, create two CPVs (v1, v2: kube-apiserver,
   simulator, machine-operator; with ``simulation.nodes: 0`` only the API server Pod is due) and one
   namespace per Cluster (setup, not measured);
2. start ``kokpit kubelet --fake-runtime`` and wait for Node ``local``; start ``kokpit cluster-operator
   --trust-pod-readiness --metrics-port P`` (NodePorts from a range wide enough for N) and wait for /readyz;
3. **empty → Ready**: create N Clusters (``--concurrency`` at once) and watch them until every one has
   condition Ready True on ``status.packageVersion`` v1;
4. **swap**: merge-patch every Cluster's ``spec.packageVersion`` to v2 and watch until every one reports
   packageVersion v2, Ready True and ``observedGeneration`` current.
Per phase: CPU (cores) of each process, the operator's reconciles (``kokpit_reconcile_total``) and its own
API calls by verb (``kokpit_client_requests_total``), the server's ``apiserver_request_total`` by verb and
resource (before/after difference); the bench's own calls are subtracted, the rest is operator + kubelet.

    .venv/bin/python bench/clusters.py --docs          # N=3,000, figures into docs/benchmarks.md
    .venv/bin/python bench/clusters.py --quick         # N=200
    .venv/bin/python bench/clusters.py --clusters 1000 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from kokpit.client import NAMESPACE, NODE, Client
from kokpit.operators.cluster import CLUSTER, CPV

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Clusters (bench/clusters.py)"
PROGRESS_EVERY = 5.0
ROLES = ("apiserver", "kubelet", "operator", "bench")
V1, V2 = "v1", "v2"


def cpv(name: str, kube: str) -> dict[str, Any]:
    image = f"kokpit:{kube}"
    return {"apiVersion": CPV.api_version, "kind": CPV.kind, "metadata": {"name": name},
            "spec": {"kubernetesVersion": kube, "components": [
                {"name": "kube-apiserver", "image": image, "args": ["apiserver"]},
                {"name": "simulator", "image": image, "args": ["simulator"]},
                {"name": "machine-operator", "image": image, "args": ["machine-operator"]}]}}


# ---------------------------------------------------------------------------------------------- /proc












# ---------------------------------------------------------------------------------------------- metrics
def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            out.append((labels, float(line.rsplit(" ", 1)[1])))
    return out


def server_requests(api: ApiServerProcess) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` by (verb, resource[/subresource]) from the meta server's /metrics."""
    out: Counter[tuple[str, str]] = Counter()
    try:
        status, body = api.request("GET", "/metrics")
    except Exception:  # a saturated server may not answer in time: the counts are a bonus
        return out
    if status == 200:
        for labels, v in _samples(body.decode(errors="replace"), "apiserver_request_total"):
            if labels.get("resource"):
                out[(labels.get("verb", ""), labels["resource"])] += int(v)
    return out


@dataclass
class OpMetrics:
    reconciles: float = 0.0
    errors: float = 0.0
    duration_sum: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)  # the operator's own API calls by verb
    queue: float = 0.0

    def __sub__(self, o: OpMetrics) -> OpMetrics:
        c = Counter(self.calls)
        c.subtract(o.calls)
        return OpMetrics(self.reconciles - o.reconciles, self.errors - o.errors,
                         self.duration_sum - o.duration_sum, +c, self.queue)


def operator_metrics(port: int, token_file: Path) -> OpMetrics:
    try:
        _, text = scrape_metrics(port, token_file)
    except OSError:
        return OpMetrics()
    m = OpMetrics()
    for labels, v in _samples(text, "kokpit_reconcile_total"):
        if labels.get("controller") == "cluster":
            m.reconciles += v
    for labels, v in _samples(text, "kokpit_reconcile_errors_total"):
        if labels.get("controller") == "cluster":
            m.errors += v
    for labels, v in _samples(text, "kokpit_reconcile_duration_seconds_sum"):
        if labels.get("controller") == "cluster":
            m.duration_sum += v
    for labels, v in _samples(text, "kokpit_workqueue_depth"):
        if labels.get("name") == "cluster":
            m.queue = v
    for labels, v in _samples(text, "kokpit_client_requests_total"):
        m.calls[labels.get("verb", "")] += int(v)
    return m


def operator_ready(port: int, token_file: Path) -> bool:
    try:
        return scrape_metrics(port, token_file, "/readyz")[0] == 200
    except OSError:
        return False


def bench_calls(client: Client) -> Counter[str]:
    out: Counter[str] = Counter()
    for metric in client.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "kokpit_client_requests_total":
                out[s.labels.get("verb", "")] += int(s.value)
    return out




# ---------------------------------------------------------------------------------------------- tracker
@dataclass
class Tracker:
    """Every Cluster as this process sees it through a watch: (Ready, observed version, generation seen)."""

    clusters: dict[str, tuple[bool, str, bool]] = field(default_factory=dict)

    def see(self, obj: dict[str, Any], deleted: bool = False) -> None:
        m = obj["metadata"]
        key = f"{m.get('namespace')}/{m['name']}"
        if deleted:
            self.clusters.pop(key, None)
            return
        st = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        current = int(st.get("observedGeneration") or 0) >= int(m.get("generation") or 0)
        self.clusters[key] = (ready, str(st.get("packageVersion") or ""), current)

    def ready_on(self, version: str) -> int:
        return sum(1 for r, v, cur in self.clusters.values() if r and v == version and cur)


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Phase:
    name: str
    seconds: float | None  # None: not reached within the timeout
    done: int
    total: int
    cpu: dict[str, float]
    writes_s: float  # seconds until the bench's last write of the phase was answered
    op: OpMetrics
    server: Counter[tuple[str, str]]
    bench: Counter[str]


@dataclass
class Result:
    clusters: int
    phases: list[Phase] = field(default_factory=list)
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)  # role -> (VmRSS, VmHWM) MB
    progress: list[str] = field(default_factory=list)
    log_issues: dict[str, Counter[str]] = field(default_factory=dict)
    load_before: str = ""
    load_start: str = ""
    load_after: str = ""
    aborted: str = ""
    profiles: list[str] = field(default_factory=list)




class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pids: dict[str, int] = {"bench": os.getpid()}
        self.res = Result(clusters=args.clusters)
        self.api: ApiServerProcess | None = None
        self.kubelet: subprocess.Popen[bytes] | None = None
        self.op: subprocess.Popen[bytes] | None = None
        self.spies: list[subprocess.Popen[bytes]] = []
        self.tracker = Tracker()
        self.metrics_port = 0

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(p) for k, p in self.pids.items()}

    # ---------------------------------------------------------------- processes
    def _spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "kokpit.cli.main", *args]
        with open(self.tmp / f"{role}.log", "wb") as log:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.pids[role] = p.pid
        return p

    def start_kubelet(self) -> None:
        assert self.api is not None
        self.kubelet = self._spawn("kubelet", ["kubelet", "--kubeconfig", str(self.api.kubeconfig), "--data-dir",
                                               str(self.tmp / "kubelet"), "--fake-runtime", "--port", "0"])

    def start_operator(self) -> None:
        assert self.api is not None
        self.metrics_port = free_port()
        hi = 20000 + max(10_000, 2 * self.args.clusters)  # NodePorts: the default 30000-32767 holds 2,768
        self.op = self._spawn("operator", [
            "cluster-operator", "--kubeconfig", str(self.api.kubeconfig), "--workers", str(self.args.workers),
            "--data-root", str(self.tmp / "clusters"), "--port-range", f"20000-{min(hi, 65535)}",
            "--metrics-port", str(self.metrics_port), "--metrics-token-file", str(self.api.data_dir / "tokens.json"),
            "--trust-pod-readiness"])

    def tail(self, name: str) -> str:
        return tail_file(self.tmp / name)

    def stop_all(self) -> None:
        stop_processes([self.op, self.kubelet], interrupt=self.spies)
        if self.api is not None:
            self.api.stop()

    def check_alive(self) -> None:
        for name, p in (("kubelet", self.kubelet), ("operator", self.op)):
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.tail(name + '.log')}")

    def profile(self, phase: str) -> None:
        """py-spy the operator and the API server for ``--profile-seconds`` of the phase (collapsed stacks)."""
        if self.args.profile is None:
            return
        self.args.profile.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for role in ("operator", "apiserver"):
            out = self.args.profile / f"{role}-{phase}.txt"
            with open(self.args.profile / f"py-spy-{role}-{phase}.log", "wb") as log:
                self.spies.append(subprocess.Popen(
                    [spy, "record", "--pid", str(self.pids[role]), "--duration", str(self.args.profile_seconds),
                     "--rate", "50", "--format", "raw", "--output", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=log))
            self.res.profiles.append(str(out))

    async def wait_for(self, phase: str, version: str, t0: float, c0: dict[str, float]) -> float | None:
        """Seconds from ``t0`` until every Cluster is Ready on ``version`` (None on timeout); logs progress."""
        n = self.args.clusters
        last_t, last_c, next_at = t0, c0, t0 + PROGRESS_EVERY
        while True:
            done = self.tracker.ready_on(version)
            now = time.monotonic()
            if done >= n:
                return now - t0
            if now - t0 > self.args.timeout:
                return None
            if now >= next_at:
                self.check_alive()
                c = self.cpu()
                om = operator_metrics(self.metrics_port, self.api.data_dir / "tokens.json")
                line = (f"{phase} +{now - t0:5.1f}s ready {done}/{n} queue {om.queue:.0f} reconciles "
                        f"{om.reconciles:.0f} cpu[{fmt_cores(cores(last_c, c, now - last_t))}]")
                print(line, flush=True)
                self.res.progress.append(line)
                last_t, last_c, next_at = now, c, now + PROGRESS_EVERY
            await asyncio.sleep(0.1)

    async def phase(self, client: Client, name: str, version: str, write: Any) -> Phase:
        assert self.api is not None
        a = self.args
        s0, o0, b0 = server_requests(self.api), operator_metrics(self.metrics_port, self.api.data_dir / "tokens.json"), bench_calls(client)
        c0, t0 = self.cpu(), time.monotonic()
        writes = asyncio.create_task(bounded(a.clusters, a.concurrency, write))
        self.profile(version)
        secs = await self.wait_for(name, version, t0, c0)
        try:
            writes_s = await asyncio.wait_for(asyncio.shield(writes), 30) - t0
        except TimeoutError:
            writes.cancel()
            writes_s = float("nan")
        el = time.monotonic() - t0
        cpu = cores(c0, self.cpu(), el)
        await asyncio.sleep(1.0)  # let the last status writes' reconciles finish before the counters are read
        b = bench_calls(client)
        b.subtract(b0)
        srv = server_requests(self.api)
        srv.subtract(s0)
        return Phase(name, secs, self.tracker.ready_on(version), a.clusters, cpu, writes_s,
                     operator_metrics(self.metrics_port, self.api.data_dir / "tokens.json") - o0, +srv, +b)

    # ---------------------------------------------------------------- the run
    async def run(self) -> Result:
        a, res = self.args, self.res
        res.load_before = machine_load()
        self.api = ApiServerProcess(self.tmp / "api").start(timeout=60)
        assert self.api.proc is not None
        self.pids["apiserver"] = self.api.proc.pid
        client = Client.from_kubeconfig(self.api.kubeconfig, field_manager="bench-clusters")
        follow: asyncio.Task[None] | None = None
        try:
            await install_crds(client)
            await client.create(CPV, cpv(V1, "v1.36.2"))
            await client.create(CPV, cpv(V2, "v1.37.0"))
            names = [(f"bench-{i:05d}", f"c-{i:05d}") for i in range(a.clusters)]

            async def namespace(i: int) -> None:
                await client.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": names[i][0]}})

            t = time.monotonic()
            await bounded(a.clusters, a.concurrency, namespace)
            print(f"setup: {a.clusters} namespaces in {time.monotonic() - t:.1f}s", flush=True)
            self.start_kubelet()
            deadline = time.monotonic() + 60
            while True:
                self.check_alive()
                with contextlib.suppress(Exception):
                    node = await client.get(NODE, "local")
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (node.get("status") or {}).get("conditions") or []):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Node local not Ready after 60 s:\n{self.tail('kubelet.log')}")
                await asyncio.sleep(0.2)
            self.start_operator()
            deadline = time.monotonic() + 60
            while True:
                self.check_alive()
                if await asyncio.to_thread(operator_ready, self.metrics_port, self.api.data_dir / "tokens.json"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"operator not ready after 60 s:\n{self.tail('operator.log')}")
                await asyncio.sleep(0.2)
            follow = asyncio.create_task(_follow(client, CLUSTER, self.tracker.see))
            res.load_start = machine_load()
            print(f"machine at measurement start: {res.load_start}", flush=True)

            async def create(i: int) -> None:
                ns, name = names[i]
                await client.create(CLUSTER, {"apiVersion": CLUSTER.api_version, "kind": CLUSTER.kind,
                                              "metadata": {"name": name, "namespace": ns},
                                              "spec": {"packageVersion": V1, "simulation": {"nodes": 0}}}, ns)

            p = await self.phase(client, "create", V1, create)
            res.phases.append(p)
            print(f"empty → Ready: {p.seconds} ({p.done}/{p.total}); creates answered at {p.writes_s:.1f}s",
                  flush=True)
            if p.seconds is None:
                res.aborted = "empty → Ready timed out"
            else:
                async def swap(i: int) -> None:
                    ns, name = names[i]
                    await client.patch(CLUSTER, name, {"spec": {"packageVersion": V2}}, ns)

                p = await self.phase(client, "swap", V2, swap)
                res.phases.append(p)
                print(f"swap: {p.seconds} ({p.done}/{p.total}); patches answered at {p.writes_s:.1f}s", flush=True)
                if p.seconds is None:
                    res.aborted = "swap timed out"
            res.rss = {k: (status_mb(pid, "VmRSS"), status_mb(pid, "VmHWM")) for k, pid in self.pids.items()}
        finally:
            res.load_after = machine_load()
            if follow is not None:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follow
            with contextlib.suppress(Exception):
                await client.close()
        return res


# ---------------------------------------------------------------------------------------------- report


def per_reconcile(p: Phase) -> list[str]:
    """API calls per Cluster reconcile: the operator's own count, and the server's view minus the bench."""
    n = p.op.reconciles
    if n <= 0:
        return [f"- {p.name}: no reconciles counted (operator /metrics unreadable)"]
    own = sum(p.op.calls.values())
    verbs = ", ".join(f"{v} {c / n:.2f}" for v, c in sorted(p.op.calls.items(), key=lambda x: -x[1]))
    srv_total = sum(p.server.values())
    bench_total = sum(p.bench.values())
    by_res = Counter({f"{v} {r}": c for (v, r), c in p.server.items()})
    top = ", ".join(f"{k}: {c:,}" for k, c in by_res.most_common(9))
    return [f"- {p.name}: {n:,.0f} reconciles ({p.op.errors:,.0f} errors, mean {1000 * p.op.duration_sum / n:.1f} ms), "
            f"**{own / n:.2f} operator API calls per reconcile** ({verbs}); "
            f"{own / max(p.total, 1):.1f} operator calls and {n / max(p.total, 1):.1f} reconciles per Cluster.",
            f"  Server side: {srv_total:,} requests, {bench_total:,} of them the bench's, so operator + kubelet "
            f"{srv_total - bench_total:,} ({(srv_total - bench_total) / n:.2f} per reconcile; the kubelet's share "
            f"≈ {srv_total - bench_total - own:,}). By verb and resource: {top}."]


def report_lines(args: argparse.Namespace, res: Result) -> list[str]:
    out = [f"N = {res.clusters:,} Clusters, each in its own namespace, `simulation.nodes: 0` (one API server Pod "
           f"each; the CPVs also carry simulator and machine-operator, not due without nodes); operator "
           f"`--workers {args.workers} --trust-pod-readiness`, `kokpit kubelet --fake-runtime`; {args.concurrency} "
           f"concurrent writes from the bench.",
           f"Load: before {res.load_before}; at measurement start {res.load_start}; after {res.load_after}.",
           "",
           "| phase | time | reached | bench writes answered | CPU cores: apiserver / kubelet / operator / bench |",
           "|---|---:|---:|---:|---|"]
    for p in res.phases:
        t = "not reached" if p.seconds is None else f"**{p.seconds:.1f} s**"
        cpu = " / ".join(f"{p.cpu.get(k, float('nan')):.2f}" for k in ROLES)
        out.append(f"| {p.name} | {t} | {p.done:,}/{p.total:,} | {p.writes_s:.1f} s | {cpu} |")
    if res.rss:
        out += ["", "| process | RSS at the end | peak RSS (VmHWM) |", "|---|---:|---:|"]
        for k in ROLES:
            rss, hwm = res.rss.get(k, (float("nan"), float("nan")))
            out.append(f"| {k} | {rss:.0f} MB | {hwm:.0f} MB |")
    out += ["", "API calls per Cluster reconcile (operator's `kokpit_client_requests_total` over its "
                "`kokpit_reconcile_total{controller=\"cluster\"}`; server's `apiserver_request_total`, "
                "before/after difference):"]
    for p in res.phases:
        out += per_reconcile(p)
    for name, c in res.log_issues.items():
        if c:
            top = "; ".join(f"{n}× `{m}`" for m, n in c.most_common(4))
            out.append(f"- {name} log: {sum(c.values()):,} warnings/errors — {top}")
        else:
            out.append(f"- {name} log: no warnings or errors")
    if res.aborted:
        out.append(f"- run ended early: {res.aborted}")
    out += ["", f"Targets (issue 5, N=3,000){'' if res.clusters >= 3000 else f' — this run has N={res.clusters:,}'}:"]
    for p in res.phases:
        out.append(f"- {p.name} < 60 s: {'not reached' if p.seconds is None else f'{p.seconds:.1f} s'} — "
                   f"{ok(p.seconds is not None and p.seconds < 60)}")
    if res.rss:
        hwm = res.rss.get("operator", (0.0, float("nan")))[1]
        out.append(f"- operator RSS < 1 GB: peak {hwm:.0f} MB — {ok(hwm < 1024)}")
    if res.progress:
        out += ["", "<details><summary>progress (every 5 s: Ready/total, operator queue and reconciles, CPU cores "
                    "over the interval)</summary>", "", "```", *res.progress, "```", "", "</details>"]
    return out


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, help="Clusters (default 3,000)")
    p.add_argument("--quick", action="store_true", help="200 Clusters")
    p.add_argument("--docs", action="store_true", help="write the section into docs/benchmarks.md")
    p.add_argument("--docs-file", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--workers", type=int, default=64, help="operator --workers (its default)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent Cluster creates/patches")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a phase after S seconds")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the operator in each phase")
    p.add_argument("--profile-seconds", type=int, default=20)
    args = p.parse_args(argv)
    if args.clusters is None:
        args.clusters = 200 if args.quick else 3000
    return args


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    stop_children_on_sigterm()
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/clusters.py", *(sys.argv[1:] if argv is None else argv)])
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the run like Ctrl-C: every process is stopped
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-clusters-") as d:
        tmp = Path(d)
        bench = Bench(args, tmp)
        try:
            res = asyncio.run(bench.run())
        except BaseException:
            for name in ("kubelet.log", "operator.log"):
                print(f"--- {name} (tail) ---\n{bench.tail(name)}", file=sys.stderr)
            if bench.api is not None:
                print(f"--- apiserver (tail) ---\n{bench.api.log_tail()}", file=sys.stderr)
            raise
        finally:
            bench.stop_all()
        res.log_issues = {n: log_issues(tmp / f"{n}.log", r"c-?\d+") for n in ("kubelet", "operator")}
        if bench.api is not None:
            res.log_issues["apiserver"] = log_issues(bench.api.log_path, r"c-?\d+")
        if args.profile is not None:
            for n in ("kubelet.log", "operator.log"):
                if (tmp / n).exists():
                    shutil.copy(tmp / n, args.profile / n)
    lines = report_lines(args, res)
    print()
    print("\n".join(lines))
    if args.docs:
        replace_section(args.docs_file, SECTION, command, "API server, kubelet, operator and bench on the same "
                        f"machine, shared with other workloads ({res.load_start})", lines)
        print(f"\nwritten to {args.docs_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
