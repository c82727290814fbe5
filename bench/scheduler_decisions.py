"""The scheduler's cost per decision, without an API server: CPU time of scheduling pods onto a cache of N
nodes, this tree against a baseline revision, rounds interleaved in one run.

``bench/controlplane.py`` measures the whole control plane end to end; on a shared machine its wall times
swing with everyone else's load (and a lost Lease restarts a component).  This isolates the part a
scheduler change touches: the filters, scores and cache bookkeeping of one decision, measured as process
CPU time (what load steals is wall time, mostly) in alternating rounds, so a ratio between the variants
means something even when the machine is busy.  Each round schedules a DaemonSet's pods (one pinned to each
node) and then R ReplicaSet pods (spread, least allocated), placing each as the scheduler assumes it.

Usage: ``python bench/scheduler_decisions.py --nodes 1500 --pods 3000 --baseline REV --rounds 3 [--record]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_load, pressure, replace_section
from controlplane import extract

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

WORKER = r"""
import json, sys, time
from kokpit.scheduler._cache import SchedulerCache
from kokpit.scheduler._framework import PodView, Sampler, schedule

nodes, pods = int(sys.argv[1]), int(sys.argv[2])
cache = SchedulerCache()
for i in range(nodes):
    name = f"sim-{i:05d}"
    cache.upsert_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                       "topology.kubernetes.io/zone": f"zone-{i % 3}"}},
                       "spec": {}, "status": {"allocatable": {"cpu": "3900m", "memory": "15Gi", "pods": "110"}}})
sampler = Sampler()
container = {"name": "c", "image": "x", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}

def pod(name, owner, spec):
    return {"metadata": {"name": name, "namespace": "bench", "uid": name, "labels": {"app": owner},
                         "ownerReferences": [{"kind": "X", "name": owner, "uid": owner, "controller": True}]},
            "spec": {"containers": [container], **spec}}

t0 = time.process_time()
for i in range(nodes):
    name = f"sim-{i:05d}"
    p = pod(f"agent-{i}", "agent", {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}}}})
    d = schedule(PodView.of(f"bench/agent-{i}", p), cache, sampler)
    cache.place(f"bench/agent-{i}", p, d.node, assumed=True)
t1 = time.process_time()
for i in range(pods):
    p = pod(f"web-{i}", "web", {})
    d = schedule(PodView.of(f"bench/web-{i}", p), cache, sampler)
    cache.place(f"bench/web-{i}", p, d.node, assumed=True)
t2 = time.process_time()
print(json.dumps({"daemon": t1 - t0, "replicas": t2 - t1}))
"""


def one(src: Path | None, nodes: int, pods: int) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", WORKER, str(nodes), str(pods)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1500)
    ap.add_argument("--pods", type=int, default=3000)
    ap.add_argument("--baseline", metavar="REV", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    load0 = machine_load()
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sched-decisions-") as tmp:
        base = extract(rev, Path(tmp))
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for i in range(args.rounds):
            for label, src in (("before", base), ("after", None)) if i % 2 == 0 else (("after", None), ("before", base)):
                r = one(src, args.nodes, args.pods)
                runs[label].append(r)
                print(f"round {i + 1} {label}: {r['daemon']:.2f} cpu-s for {args.nodes} daemon pods, "
                      f"{r['replicas']:.2f} cpu-s for {args.pods} replica pods", flush=True)
    best = {k: {m: min(r[m] for r in v) for m in ("daemon", "replicas")} for k, v in runs.items()}
    rows = ["| variant | daemon pods (pinned) | replica pods (spread) |", "|---|---|---|"]
    for label, name in (("before", f"before ({rev})"), ("after", "after (this tree)")):
        b = best[label]
        rows.append(f"| {name} | {b['daemon'] / args.nodes * 1000:.2f} ms a decision ({b['daemon']:.2f} cpu-s) | "
                    f"{b['replicas'] / args.pods * 1000:.2f} ms a decision ({b['replicas']:.2f} cpu-s) |")
    ratio = (f"\nBest of {args.rounds} interleaved rounds, CPU time: after/before = "
             f"{best['after']['daemon'] / best['before']['daemon']:.2f} (daemon pods), "
             f"{best['after']['replicas'] / best['before']['replicas']:.2f} (replica pods).")
    print("\n".join(rows) + ratio)
    if args.record:
        replace_section(DOCS, "## Business control plane (bench/controlplane.py)",
                        f".venv/bin/python bench/scheduler_decisions.py --nodes {args.nodes} --pods {args.pods} "
                        f"--baseline {args.baseline} --rounds {args.rounds} --record",
                        f"one process per round, no API server; load before: {load0}; CPU pressure {pressure()}",
                        [*rows, ratio], sub=f"scheduler decisions, {args.nodes:,} nodes")


if __name__ == "__main__":
    main()
