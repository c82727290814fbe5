"""Business control plane at scale: the scheduler and controller-manager moving real workloads.

Starts a fresh `kokpit apiserver`, `kokpit simulator --nodes N`, `kokpit scheduler` and
`kokpit controller-manager` as separate processes, then measures, through one list+watch of Pods:

1. a DaemonSet rolled to every node: time to N Ready pods, and the scheduler's binds/s;
2. a Deployment scaled from 0 to R replicas: time until all are Running and Ready, with the
   controller-manager's CPU seconds and peak RSS over that phase;
3. draining D nodes as ``kubectl drain`` does (cordon, then evict every non-daemon pod through the Eviction
   API): time until every evicted pod's replacement is Running and Ready on another node.

With ``--baseline REV`` the three steps run twice against the same API server and simulated nodes: first
with the scheduler and controller-manager of git revision REV (its ``src/`` extracted to a temporary folder),
then, after the workloads are deleted and the drained nodes uncordoned, with this tree's — so the ratio of
the two is measured under the same machine load.

Usage: ``python bench/controlplane.py --nodes 10000 --replicas 20000 --drain 100 --record``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import cpu_seconds, machine_load, pressure, replace_section, status_mb, tail_file
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, NODE, POD, ApiError, Client, ResourceExpiredError
from kokpit.controllermanager import DAEMONSET, DEPLOYMENT

Obj = dict[str, Any]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
NS = "bench"


def kokpit(*args: str) -> list[str]:
    return [sys.executable, "-m", "kokpit.cli.main", *args]


class PodView:
    """Every pod's node, readiness and owner kind, from one list+watch.

    The counts the steps wait on are kept incrementally (ready, not deleting, per owner kind and node):
    at the documented size (30,000 pods) recounting every pod on every watch event would cost this script
    more CPU than the components it measures."""

    def __init__(self) -> None:
        self.pods: dict[str, tuple[str, bool, str, bool]] = {}  # key -> (node, ready, owner kind, deleting)
        self.first_bind: float | None = None
        self.bound_at: list[float] = []
        self.changed = asyncio.Event()
        self._ready: Counter[tuple[str, str]] = Counter()  # (owner kind, node) -> ready, not deleting pods
        self._total: Counter[str] = Counter()  # owner kind -> ready, not deleting pods

    def _tally(self, entry: tuple[str, bool, str, bool] | None, n: int) -> None:
        if entry is not None and entry[1] and not entry[3]:
            self._ready[(entry[2], entry[0])] += n
            self._total[entry[2]] += n

    def see(self, pod: Obj, deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        self._tally(self.pods.get(key), -1)
        if deleted:
            self.pods.pop(key, None)
        else:
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            ready = (pod.get("status") or {}).get("phase") == "Running" and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or [])
            owner = next((r.get("kind", "") for r in meta.get("ownerReferences") or [] if r.get("controller")), "")
            old = self.pods.get(key)
            if node and (old is None or not old[0]):
                self.bound_at.append(time.monotonic())
            self.pods[key] = (node, ready, str(owner), bool(meta.get("deletionTimestamp")))
            self._tally(self.pods[key], 1)
        self.changed.set()

    def count(self, owner: str, *, avoid: set[str] | None = None) -> int:
        """Ready, not deleting pods of ``owner`` kind (outside the ``avoid`` nodes)."""
        return self._total[owner] - sum(self._ready.get((owner, node), 0) for node in avoid or ())


async def follow(client: Client, view: PodView) -> None:
    while True:
        lst = await client.list(POD, NS, limit=500)
        for o in lst.items:
            view.see(o)
        try:
            async for ev in client.watch_resumable(POD, NS, resource_version=lst.resource_version,
                                                   timeout_seconds=300):
                if ev.type != "BOOKMARK":
                    view.see(ev.object, ev.type == "DELETED")
        except ResourceExpiredError:
            continue


async def until(view: PodView, check: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        view.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(view.changed.wait(), min(left, 1.0))
    return time.monotonic() - t0


def template(app: str) -> Obj:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{
        "name": app, "image": f"example/{app}:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


class Components:
    """The scheduler and controller-manager processes of one variant (this tree, or a baseline's src/)."""

    def __init__(self, kc: Path, tmp: Path, label: str, src: Path | None) -> None:
        self.label = label
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)  # ahead of the editable install: the baseline's kokpit is imported
        self.logs = {n: tmp / f"{n}-{label.split()[0]}.log" for n in ("scheduler", "controller-manager")}
        self.procs = {n: subprocess.Popen(kokpit(n, "--kubeconfig", str(kc)), env=env,
                                          stdout=open(self.logs[n], "wb"), stderr=subprocess.STDOUT)
                      for n in self.logs}

    @property
    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items()}

    def stop(self) -> None:
        stop_all(self.procs.values())

    def flaps(self, name: str) -> int:
        """Times the component lost leadership (each one stops its controllers and starts them over)."""
        return self.logs[name].read_text(errors="replace").count("lost leadership")


def stop_all(procs: Any) -> None:
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(20)
        if p.poll() is None:
            p.kill()


async def steps(c: Client, view: PodView, args: argparse.Namespace, pids: dict[str, int]) -> tuple[list[str],
                                                                                                 set[str]]:
    """The three measured steps; returns the table rows and the drained nodes."""
    lines: list[str] = []
    # 1. DaemonSet to every node
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    await c.create(DAEMONSET, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                               "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                        "template": template("agent")}}, NS)
    await until(view, lambda: view.count("DaemonSet") >= args.nodes, args.timeout, "DaemonSet ready")
    secs = time.monotonic() - t0
    binds = view.bound_at[-args.nodes:]
    rate = (len(binds) - 1) / (binds[-1] - binds[0]) if len(binds) > 1 and binds[-1] > binds[0] else 0.0
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    lines.append(f"| DaemonSet to {args.nodes:,} nodes | {secs:.1f} s to {args.nodes:,} Ready pods | "
                 f"scheduler {rate:,.0f} binds/s (first to last bind) | "
                 + ", ".join(f"{k} {cpu1[k] - cpu0[k]:.0f} cpu-s" for k in pids) + " |")
    print(lines[-1], flush=True)

    # 2. Deployment from 0 to R
    await c.create(DEPLOYMENT, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                                         "template": template("web")}}, NS)
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    await c.patch(DEPLOYMENT, "web", {"spec": {"replicas": args.replicas}}, NS)
    await until(view, lambda: view.count("ReplicaSet") >= args.replicas, args.timeout, "Deployment ready")
    secs = time.monotonic() - t0
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    cm_cpu = cpu1["controller-manager"] - cpu0["controller-manager"]
    hwm = status_mb(pids["controller-manager"], "VmHWM")
    lines.append(f"| Deployment 0 → {args.replicas:,} replicas | {secs:.1f} s to all Running and Ready "
                 f"({args.replicas / secs:,.0f} pods/s) | controller-manager {cm_cpu:.0f} cpu-s "
                 f"({cm_cpu / secs:.0%} of a core), peak RSS {hwm:,.0f} MB; scheduler "
                 f"{cpu1['scheduler'] - cpu0['scheduler']:.0f} cpu-s, peak RSS "
                 f"{status_mb(pids['scheduler'], 'VmHWM'):,.0f} MB | "
                 + ", ".join(f"{k} {cpu1[k] - cpu0[k]:.0f} cpu-s" for k in pids) + " |")
    print(lines[-1], flush=True)

    # 3. drain D nodes (cordon, evict every non-daemon pod), until the evicted pods run elsewhere
    by_node: dict[str, list[str]] = {}
    for key, (node, _r, owner, _d) in view.pods.items():
        if owner == "ReplicaSet":
            by_node.setdefault(node, []).append(key)
    drained = set(sorted(by_node, key=lambda n: -len(by_node[n]))[:args.drain])
    victims = [k for n in drained for k in by_node[n]]
    t0 = time.monotonic()
    await asyncio.gather(*(c.patch(NODE, n, {"spec": {"unschedulable": True}}) for n in drained))
    sem = asyncio.Semaphore(64)

    async def evict(key: str) -> None:
        ns, name = key.split("/", 1)
        async with sem:
            for _ in range(60):
                try:
                    await c.create_subresource(POD, name, "eviction", {
                        "apiVersion": "policy/v1", "kind": "Eviction",
                        "metadata": {"name": name, "namespace": ns}}, ns)
                    return
                except ApiError as e:
                    if e.code == 404:
                        return
                    await asyncio.sleep(5)  # kubectl drain retries a refused eviction after 5 s

    await asyncio.gather(*(evict(k) for k in victims))
    await until(view, lambda: view.count("ReplicaSet", avoid=drained) >= args.replicas, args.timeout,
                "evicted pods running elsewhere")
    secs = time.monotonic() - t0  # from the first cordon
    lines.append(f"| drain {len(drained)} nodes ({len(victims):,} Deployment pods evicted) | {secs:.1f} s "
                 f"until every evicted pod runs Ready elsewhere | | |")
    print(lines[-1], flush=True)
    return lines, drained


async def reset(c: Client, view: PodView, drained: set[str], timeout: float) -> None:
    """Back to an empty namespace and schedulable nodes before the next variant."""
    for kind, name in ((DAEMONSET, "agent"), (DEPLOYMENT, "web")):
        with contextlib.suppress(ApiError):
            await c.delete(kind, name, NS)
    await asyncio.gather(*(c.patch(NODE, n, {"spec": {"unschedulable": None}}) for n in drained))
    await until(view, lambda: not view.pods, timeout, "workload pods deleted")


async def run(args: argparse.Namespace, kc: Path, tmp: Path, api_pid: int,
              variants: list[tuple[str, Path | None]]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    async with Client.from_kubeconfig(kc) as c:
        t0 = time.monotonic()
        while True:
            if len((await c.list(NODE)).items) >= args.nodes:
                break
            await asyncio.sleep(1)
        print(f"{args.nodes} nodes registered in {time.monotonic() - t0:.1f}s", flush=True)
        await c.create(NAMESPACE, {"metadata": {"name": NS}})
        view = PodView()
        watcher = asyncio.get_running_loop().create_task(follow(c, view))
        try:
            for i, (label, src) in enumerate(variants):
                comps = Components(kc, tmp, label, src)
                try:
                    print(f"--- {label}", flush=True)
                    lines, drained = await steps(c, view, args, {"apiserver": api_pid, **comps.pids})
                    lines.append("| leader election | " + ", ".join(
                        f"{n} lost its Lease {comps.flaps(n)} times" for n in comps.logs) + " | | |")
                    print(lines[-1], flush=True)
                    out.append((label, lines))
                    if i + 1 < len(variants):
                        await reset(c, view, drained, args.timeout)
                except Exception:
                    for name, path in comps.logs.items():
                        print(f"--- {name} log tail ---\n{tail_file(path)}", file=sys.stderr)
                    raise
                finally:
                    comps.stop()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
    return out


def extract(rev: str, dest: Path) -> Path:
    """``src/`` of git revision ``rev`` in ``dest`` (for the baseline variant)."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def _seconds(line: str) -> float:
    return float(line.split("|")[2].split(" s ")[0])


def _ratio(what: str, speedup: float) -> str:
    return f"{what} {speedup:.1f}x faster" if speedup >= 1 else f"{what} {1 / speedup:.1f}x slower"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=2000)
    ap.add_argument("--drain", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--baseline", metavar="REV", help="First run the steps with the scheduler and "
                    "controller-manager of this git revision, then with this tree's (same machine, same run).")
    ap.add_argument("--record", action="store_true", help="Write the figures into docs/benchmarks.md.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="controlplane-"))
    load0 = machine_load()
    variants: list[tuple[str, Path | None]] = []
    if args.baseline:
        rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], check=True, capture_output=True,
                             text=True, cwd=Path(__file__).parent).stdout.strip()
        variants.append((f"before ({rev})", extract(rev, tmp / "baseline")))
    variants.append(("after (this tree)" if args.baseline else "this tree", None))
    api = ApiServerProcess(tmp / "api", extra_args=["--compaction-window", "200000"]).start()
    assert api.proc is not None
    kc = api.kubeconfig
    sim_log = tmp / "simulator.log"
    sim = subprocess.Popen(kokpit("simulator", "--kubeconfig", str(kc), "--nodes", str(args.nodes),
                                  "--lease-period", "10s", "--driver-port", "0", "--data-dir", str(tmp / "sim")),
                           stdout=open(sim_log, "wb"), stderr=subprocess.STDOUT)
    try:
        results = asyncio.run(run(args, kc, tmp, api.proc.pid, variants))
    except Exception:
        print(f"--- simulator log tail ---\n{tail_file(sim_log)}", file=sys.stderr)
        raise
    finally:
        stop_all([sim])
        api.stop()
    rows: list[str] = []
    for label, lines in results:
        rows += [line.replace("| ", f"| {label} | ", 1) if len(results) > 1 else line for line in lines]
    if len(results) == 2:
        (_, before), (_, after) = results
        ratios = ", ".join(_ratio(what, _seconds(b) / _seconds(a))
                           for what, b, a in zip(("DaemonSet", "Deployment", "drain"), before[:3], after[:3],
                                                     strict=True))
        rows.append(f"\nSame run, same machine load: after vs before — {ratios}.")
        print(rows[-1].strip(), flush=True)
    if args.record:
        head = (["| variant | step | time | throughput / cost | CPU |", "|---|---|---|---|---|"] if len(results) > 1
                else ["| step | time | throughput / cost | CPU |", "|---|---|---|---|"])
        replace_section(DOCS, "## Business control plane (bench/controlplane.py)",
                        f".venv/bin/python bench/controlplane.py --nodes {args.nodes} --replicas {args.replicas} "
                        f"--drain {args.drain}" + (f" --baseline {args.baseline}" if args.baseline else "")
                        + " --record",
                        f"API server, simulator, scheduler and controller-manager as separate processes on this "
                        f"machine; load before: {load0}; CPU pressure {pressure()}",
                        [*head, *rows], sub=f"{args.nodes:,} nodes, {args.replicas:,} replicas")


if __name__ == "__main__":
    main()
