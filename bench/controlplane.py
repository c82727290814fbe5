"""Business control plane at scale: the scheduler and controller-manager moving real workloads.

Starts a fresh `kokpit apiserver`, `kokpit simulator --nodes N`, `kokpit scheduler` and
`kokpit controller-manager` as separate processes, then measures, through one list+watch of Pods:

1. a DaemonSet rolled to every node: time to N Ready pods, and the scheduler's binds/s;
2. a Deployment scaled from 0 to R replicas: time until all are Running and Ready, with the
   controller-manager's CPU seconds and peak RSS over that phase;
3. draining D nodes as ``kubectl drain`` does (cordon, then evict every non-daemon pod through the Eviction
   API): time until every evicted pod's replacement is Running and Ready on another node.

Usage: ``python bench/controlplane.py --nodes 10000 --replicas 20000 --drain 100 --record``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
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
    """Every pod's node, readiness and owner kind, from one list+watch."""

    def __init__(self) -> None:
        self.pods: dict[str, tuple[str, bool, str, bool]] = {}  # key -> (node, ready, owner kind, deleting)
        self.first_bind: float | None = None
        self.bound_at: list[float] = []
        self.changed = asyncio.Event()

    def see(self, pod: Obj, deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
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
        self.changed.set()

    def count(self, owner: str, *, ready: bool = True, avoid: set[str] | None = None) -> int:
        return sum(1 for node, r, o, deleting in self.pods.values()
                   if o == owner and (r or not ready) and not deleting and not (avoid and node in avoid))


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


async def run(args: argparse.Namespace, kc: Path, pids: dict[str, int]) -> list[str]:
    lines: list[str] = []
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
            # 1. DaemonSet to every node
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            t0 = time.monotonic()
            await c.create(DAEMONSET, {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                                       "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                                "template": template("agent")}}, NS)
            secs = await until(view, lambda: view.count("DaemonSet") >= args.nodes, args.timeout, "DaemonSet ready")
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
            cm_cpu0 = cpu_seconds(pids["controller-manager"])
            t0 = time.monotonic()
            await c.patch(DEPLOYMENT, "web", {"spec": {"replicas": args.replicas}}, NS)
            secs = await until(view, lambda: view.count("ReplicaSet") >= args.replicas, args.timeout,
                               "Deployment ready")
            cm_cpu = cpu_seconds(pids["controller-manager"]) - cm_cpu0
            hwm = status_mb(pids["controller-manager"], "VmHWM")
            lines.append(f"| Deployment 0 → {args.replicas:,} replicas | {secs:.1f} s to all Running and Ready "
                         f"({args.replicas / secs:,.0f} pods/s) | controller-manager {cm_cpu:.0f} cpu-s "
                         f"({cm_cpu / secs:.0%} of a core), peak RSS {hwm:,.0f} MB | scheduler peak RSS "
                         f"{status_mb(pids['scheduler'], 'VmHWM'):,.0f} MB |")
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
            secs = await until(view, lambda: view.count("ReplicaSet", avoid=drained) >= args.replicas,
                               args.timeout, "evicted pods running elsewhere")
            lines.append(f"| drain {len(drained)} nodes ({len(victims):,} Deployment pods evicted) | {secs:.1f} s "
                         f"until every evicted pod runs Ready elsewhere | | |")
            print(lines[-1], flush=True)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=2000)
    ap.add_argument("--drain", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--record", action="store_true", help="Write the figures into docs/benchmarks.md.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="controlplane-"))
    load0 = machine_load()
    api = ApiServerProcess(tmp / "api", extra_args=["--compaction-window", "200000"]).start()
    assert api.proc is not None
    kc = api.kubeconfig
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    try:
        for name, argv in (("simulator", kokpit("simulator", "--kubeconfig", str(kc), "--nodes", str(args.nodes),
                                                "--lease-period", "10s", "--driver-port", "0",
                                                "--data-dir", str(tmp / "sim"))),
                           ("scheduler", kokpit("scheduler", "--kubeconfig", str(kc))),
                           ("controller-manager", kokpit("controller-manager", "--kubeconfig", str(kc)))):
            logs[name] = tmp / f"{name}.log"
            procs[name] = subprocess.Popen(argv, stdout=open(logs[name], "wb"), stderr=subprocess.STDOUT)
        pids = {"apiserver": api.proc.pid, **{k: p.pid for k, p in procs.items() if k != "simulator"}}
        lines = asyncio.run(run(args, kc, pids))
    except Exception:
        for name, path in logs.items():
            print(f"--- {name} log tail ---\n{tail_file(path)}", file=sys.stderr)
        raise
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
            if p.poll() is None:
                p.kill()
        api.stop()
    if args.record:
        head = ["| step | time | throughput / cost | CPU |", "|---|---|---|---|"]
        replace_section(DOCS, "## Business control plane (bench/controlplane.py)",
                        f".venv/bin/python bench/controlplane.py --nodes {args.nodes} --replicas {args.replicas} "
                        f"--drain {args.drain} --record",
                        f"API server, simulator, scheduler and controller-manager as separate processes on this "
                        f"machine; load before: {load0}; CPU pressure {pressure()}",
                        [*head, *lines], sub=f"{args.nodes:,} nodes, {args.replicas:,} replicas")


if __name__ == "__main__":
    main()
