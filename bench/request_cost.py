"""The API server's CPU per request for the hot request types, for one or more source trees in the same run.

Why: a change to the server's request path (authentication, admission, validation, managedFields, watch
fan-out) shows up as CPU per request long before it shows up as a slower fleet; measured here as the server
process's CPU seconds (/proc/PID/stat) divided by the requests of one phase, with many concurrent HTTPS
clients as the benches use, so two versions can be compared back to back on the same machine:

    .venv/bin/python bench/request_cost.py                       # this tree
    .venv/bin/python bench/request_cost.py --src /old/src --src src --rounds 2
    .venv/bin/python bench/request_cost.py --profile lease-merge --src src   # py-spy the phase (20 s)

Each --src starts its own server with PYTHONPATH=SRC (the client side is this tree's), installs that tree's
CRDs and admission policies, keeps one watch open per patched resource type (as controllers do), creates
the objects, then runs the phases; the table prints µs of server CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from kokpit.apiserver.testing import ApiServerProcess

__all__ = ["main"]

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
PODS = "/api/v1/namespaces/default/pods"
NODES = "/api/v1/nodes"
CMS = "/api/v1/namespaces/default/configmaps"
EVENTS = "/api/v1/namespaces/default/events"
CLUSTERS = "/apis/kokpit.io/v1alpha1/namespaces/default/clusters"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

INSTALL = """
import asyncio, sys
from kokpit.api import install_crds
from kokpit.client import Client
async def main():
    c = Client.from_kubeconfig(sys.argv[1], field_manager="bench")
    await install_crds(c)
    await c.close()
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ts(r: int, i: int) -> str:
    return f"2026-01-01T{(r // 3600) % 24:02d}:{(r // 60) % 60:02d}:{r % 60:02d}.{i % 1000000:06d}Z"


def lease(i: int) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": f"n{i}", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": f"n{i}", "leaseDurationSeconds": 40, "renewTime": ts(0, i)}}


def node(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"n{i}", "labels": {f"label-{j}": "value" for j in range(10)}}}


def node_status(r: int) -> dict[str, Any]:
    conds = [{"type": t, "status": "False", "reason": "KubeletHasSufficient", "message": "m" * 40,
              "lastHeartbeatTime": ts(r, 0), "lastTransitionTime": ts(0, 0)}
             for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    conds.append({"type": "Ready", "status": "True", "reason": f"r{r}", "message": "ok",
                  "lastHeartbeatTime": ts(r, 0), "lastTransitionTime": ts(0, 0)})
    return {"status": {"conditions": conds, "nodeInfo": {"kubeletVersion": "v1.30.0", "osImage": "x" * 40},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}


def pod(i: int, prefix: str = "p", node_name: str | None = "n0") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{prefix}{i}", "labels": {"app": "bench", "i": str(i)}},
            "spec": {**({"nodeName": node_name} if node_name else {}), "containers": [
                {"name": "c", "image": "registry.example/app:v1", "ports": [{"containerPort": 8080}],
                 "env": [{"name": f"E{k}", "value": "v"} for k in range(5)],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


def pod_status(r: int) -> dict[str, Any]:
    return {"status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": ts(0, 0), "conditions": [
        {"type": t, "status": "True", "lastTransitionTime": ts(r, 0)}
        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [{"name": "c", "ready": True, "restartCount": r, "image": "registry.example/app:v1",
                               "imageID": "sha256:abc", "containerID": "kokpit://c",
                               "state": {"running": {"startedAt": ts(r, 0)}}}]}}


def event(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"c{i}.{i:016x}", "namespace": "default"},
            "involvedObject": {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "name": f"c{i}",
                               "namespace": "default", "uid": "0f0e0d0c-0000-0000-0000-000000000000"},
            "reason": "Released", "message": "kube-apiserver replaced by v2 (1/1)", "type": "Normal", "count": 1,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            "eventTime": ts(1, i), "source": {"component": "cluster-operator"},
            "reportingComponent": "cluster-operator", "reportingInstance": "cluster-operator", "action": "Released"}


def cluster(i: int) -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "metadata": {"name": f"c{i}"},
            "spec": {"packageVersion": "v1", "simulation": {"nodes": 0}}}


def cluster_status(r: int) -> dict[str, Any]:
    return {"status": {"observedGeneration": 1, "phase": "Ready", "packageVersion": "v1",
                       "components": [{"name": n, "version": "v1", "replicas": 1, "readyReplicas": 1,
                                       "restarts": r, "healthy": True, "message": ""}
                                      for n in ("kube-apiserver", "simulator", "machine-operator")],
                       "conditions": [{"type": "Ready", "status": "True", "reason": f"R{r}", "message": "ok",
                                       "lastTransitionTime": ts(r, 0)}]}}


CPV = {"apiVersion": "kokpit.io/v1alpha1", "kind": "ClusterPackageVersion", "metadata": {"name": "v1"},
       "spec": {"kubernetesVersion": "v1.36.2", "components": [
           {"name": n, "image": "kokpit:v1", "args": [n]} for n in ("kube-apiserver", "simulator", "machine-operator")]}}


class Bench:
    def __init__(self, srv: ApiServerProcess, clients: int) -> None:
        self.srv = srv
        self.n_clients = clients
        self.ssl = ssl.create_default_context(cafile=str(srv.ca_file))
        self.headers = {"Authorization": f"Bearer {srv.admin_token}", "Content-Type": "application/json"}
        self.clients: list[httpx.AsyncClient] = []
        self.errors = 0

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.srv.url, verify=self.ssl, headers=self.headers, timeout=120,
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    async def open(self) -> None:
        self.clients = [self.client() for _ in range(self.n_clients)]
        await asyncio.gather(*(c.get("/readyz") for c in self.clients))

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)

    async def run(self, n: int, req: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]) -> None:
        async def worker(c: httpx.AsyncClient, w: int) -> None:
            for i in range(w, n, self.n_clients):
                r = await req(c, i)
                if r.status_code >= 300:
                    self.errors += 1
                    if self.errors <= 3:
                        print(f"  error {r.status_code}: {r.text[:300]}", file=sys.stderr)
        await asyncio.gather(*(worker(c, w) for w, c in enumerate(self.clients)))


async def watch(srv: ApiServerProcess, path: str, stop: asyncio.Event) -> None:
    ctx = ssl.create_default_context(cafile=str(srv.ca_file))
    async with httpx.AsyncClient(base_url=srv.url, verify=ctx, timeout=None,
                                 headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
        async with c.stream("GET", path, params={"watch": "1", "allowWatchBookmarks": "true"}) as r:
            async for _ in r.aiter_bytes():
                if stop.is_set():
                    return


def phases(objects: int, requests: int) -> dict[str, Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]]:
    def mod(i: int) -> tuple[int, int]:
        return i % objects, i // objects + 1
    return {
        "lease-merge": lambda c, i: c.patch(f"{LEASES}/n{mod(i)[0]}", headers={"Content-Type": MERGE},
                                            content=orjson.dumps({"spec": {"renewTime": ts(mod(i)[1], i),
                                                                           "holderIdentity": f"n{mod(i)[0]}",
                                                                           "leaseDurationSeconds": 40}})),
        "lease-strategic": lambda c, i: c.patch(f"{LEASES}/n{mod(i)[0]}", headers={"Content-Type": STRATEGIC},
                                                content=orjson.dumps({"spec": {"renewTime": ts(mod(i)[1], i)}})),
        "node-status-strategic": lambda c, i: c.patch(f"{NODES}/n{mod(i)[0]}/status",
                                                      headers={"Content-Type": STRATEGIC},
                                                      content=orjson.dumps(node_status(mod(i)[1]))),
        "pod-status-strategic": lambda c, i: c.patch(f"{PODS}/p{mod(i)[0]}/status", headers={"Content-Type": STRATEGIC},
                                                     content=orjson.dumps(pod_status(mod(i)[1]))),
        "cluster-status-merge": lambda c, i: c.patch(f"{CLUSTERS}/c{mod(i)[0]}/status", headers={"Content-Type": MERGE},
                                                     content=orjson.dumps(cluster_status(mod(i)[1]))),
        "cluster-spec-merge": lambda c, i: c.patch(f"{CLUSTERS}/c{mod(i)[0]}", headers={"Content-Type": MERGE},
                                                   content=orjson.dumps({"spec": {"paused": (i // objects) % 2 == 0}})),
        "configmap-create": lambda c, i: c.post(CMS, content=orjson.dumps({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}, "data": {"k": "x" * 200}})),
        "event-create": lambda c, i: c.post(EVENTS, content=orjson.dumps(event(i))),
        "pod-create": lambda c, i: c.post(PODS, content=orjson.dumps(pod(i, "q", None))),
        "pod-binding": lambda c, i: c.post(f"{PODS}/q{i}/binding", content=orjson.dumps({
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": f"q{i}"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}})),
        "pod-delete": lambda c, i: c.delete(f"{PODS}/q{i}", params={"gracePeriodSeconds": "0"}),
        "lease-get": lambda c, i: c.get(f"{LEASES}/n{mod(i)[0]}"),
    }


async def one_server(src: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    os.environ["PYTHONPATH"] = src
    data = tmp / f"api-{abs(hash(src)) % 10**6}-{time.monotonic_ns()}"
    srv = ApiServerProcess(data).start(timeout=120)
    assert srv.proc is not None
    pid = srv.proc.pid
    out: dict[str, float] = {}
    stop = asyncio.Event()
    watches: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", INSTALL, str(srv.kubeconfig)], check=True,
                                env=dict(os.environ, PYTHONPATH=src))
        b = Bench(srv, args.clients)
        await b.open()
        if args.watchers:
            for path in (LEASES, NODES, PODS, CLUSTERS, CMS, EVENTS):
                for _ in range(args.watchers):
                    watches.append(asyncio.create_task(watch(srv, path, stop)))
        n = args.objects
        await b.clients[0].post("/api/v1/namespaces", content=orjson.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}}))
        await b.clients[0].post("/apis/kokpit.io/v1alpha1/clusterpackageversions", content=orjson.dumps(CPV))
        await b.run(n, lambda c, i: c.post(LEASES, content=orjson.dumps(lease(i))))
        await b.run(n, lambda c, i: c.post(NODES, content=orjson.dumps(node(i))))
        await b.run(n, lambda c, i: c.post(PODS, content=orjson.dumps(pod(i))))
        await b.run(n, lambda c, i: c.post(CLUSTERS, content=orjson.dumps(cluster(i))))
        await asyncio.sleep(1.0)
        table = phases(n, args.requests)
        names = args.phase or list(table)
        for name in names:
            if args.profile == name:
                prof = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", "100", "-f", "raw",
                    "-d", str(args.profile_seconds), "-o", args.profile_out, stdout=subprocess.DEVNULL)
                t_end = time.monotonic() + args.profile_seconds + 1
                k = 0
                fn = table[name]
                while time.monotonic() < t_end:
                    def shifted(c: httpx.AsyncClient, i: int, k: int = k,
                                fn: Callable[..., Awaitable[httpx.Response]] = fn) -> Awaitable[httpx.Response]:
                        return fn(c, i + k * args.requests)
                    await b.run(args.requests, shifted)
                    k += 1
                await prof.wait()
                continue
            await asyncio.sleep(0.3)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            await b.run(args.requests, table[name])
            wall = time.monotonic() - t0
            out[name] = (cpu_seconds(pid) - c0) / args.requests * 1e6
            print(f"  {name:24s} {out[name]:7.0f} µs CPU/request  ({args.requests / wall:6.0f} req/s)", flush=True)
        if b.errors:
            print(f"  {b.errors} errors", file=sys.stderr)
        await b.close()
    finally:
        stop.set()
        for w in watches:
            w.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        srv.stop()
    return out


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="request-cost-"))
    results: dict[str, list[dict[str, float]]] = {s: [] for s in args.src}
    try:
        for r in range(args.rounds):
            for src in args.src:
                print(f"round {r + 1}: {src}", flush=True)
                results[src].append(await one_server(src, args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.profile:
        return
    names = list(results[args.src[0]][0])
    print("\nµs server CPU per request (min over rounds):")
    print(f"{'request':24s} " + " ".join(f"{Path(s).parent.name[-14:]:>14s}" for s in args.src))
    for name in names:
        print(f"{name:24s} " + " ".join(f"{min(r[name] for r in results[s]):14.0f}" for s in args.src))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", help="a source tree (its src/); repeatable; default this tree")
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--requests", type=int, default=3000, help="requests per phase")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--watchers", type=int, default=1, help="watches per patched resource type")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--phase", action="append", help="only these phases")
    ap.add_argument("--profile", help="py-spy this phase instead of timing it")
    ap.add_argument("--profile-seconds", type=int, default=20)
    ap.add_argument("--profile-out", default="profile.txt")
    args = ap.parse_args()
    args.src = [str(Path(s).resolve()) for s in (args.src or [Path(__file__).resolve().parent.parent / "src"])]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
