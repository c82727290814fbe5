"""Rollout benchmark (issue 16): canary waves through the rollout controller, against the same work done directly.

Why: a rollout adds batches, risk-center permits and status bookkeeping on top of the machine operator's
per-node final state; the issue asks what that costs (target: the rollout's kubelet swap at most 1.3× the same
swap done by patching every Machine directly, measured in the same run), how fast an automatic rollback
returns what it touched, how a control-plane release wave over many Clusters goes, and that a failing canary
stops the wave before the next batch every time (the safety run).

What happens, all on 127.0.0.1 in temporary directories (every process is stopped at the end, even on error):
1. **machines** (``--machines N``): bench/fleet.py's setup — API server, ``kokpit simulator --install-seconds 0``,
   ``kokpit machine-operator``, N Machines converged on kubelet v1 — then
   a. **direct swap**: merge-patch every Machine to kubelet v2, until every Node reports v2 (bench/fleet.py's swap),
      and back to v1 the same way (timed too: a downgrade is not the same work as an upgrade, so the rollout is
      compared with the direct swap in its own direction);
   b. **rollout swap**: the meta server doubles as business cluster ``c1`` (its kubeconfig Secret points back
      at it), ``kokpit risk-center`` (no policy: every permit is granted at once) and ``kokpit rollout-controller``
      run — warm, as the machine operator was for a.: a warm-up Rollout over ``c1`` that selects nothing is
      judged first, so the controller's process and its caches of ``c1`` are up — and a Rollout replaces
      kubelet v1 by v2 with steps 1 → 10% → 50% → 100%, zero bake, no maxUnavailable limit inside a batch,
      until it is Completed and every Node reports v2; the ratio to the direct swap v1 → v2; then the direct
      swap v2 → v1 once more with those two processes up and idle (what their watches alone cost);
   c. **rollback**: a Rollout v1 → v2 whose first batch is ``--rollback-targets`` Machines (one of them fails
      to install v2: a simulator fault) followed by an analysis step with failureLimit 0 — the batch
      finishes, the analysis fails, the rollout aborts and rolls back: the time from the abort until every
      touched Machine runs v1 again;
2. **clusters** (``--clusters M``): API server, ``kokpit kubelet --fake-runtime``, ``kokpit cluster-operator
   --trust-pod-readiness`` (bench/clusters.py's setup), M Clusters Ready on release v1, then a Rollout to v2 with
   steps 1 → 5% → 100% until Completed;
3. **safety** (``--safety-runs K``): a small fleet (in-process simulator and machine operator, the controller as
   a process); each seeded run picks a canary size and one canary node that breaks (an install failure, or its
   kubelet stopped after the update), and checks that the rollout aborts before the next batch, no Machine
   outside the canary batch was touched (generation unchanged), and everything touched is rolled back.

    .venv/bin/python bench/rollout.py --docs                        # the documented sizes (10,000 / 1,000 / 3,000)
    .venv/bin/python bench/rollout.py --machines 1000 --rollback-targets 300 --clusters 300 --docs
    .venv/bin/python bench/rollout.py --machines 0 --clusters 0 --safety-runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fleet as fleetbench
from _common import (
    bounded,
    cores,
    fmt_cores,
    machine_load,
    replace_section,
    stop_children_on_sigterm,
    tail_file,
)
from _common import follow as _follow
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, NODE, SECRET, Client, Kind
from kokpit.operators.machine import MACHINE, MPV
from kokpit.operators.rollout._sets import read_targets
from kokpit.simulator import node_names

__all__ = ["main", "safety_run"]

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Rollouts (bench/rollout.py)"
ROLLOUT = Kind("kokpit.io", "v1alpha1", "Rollout", "rollouts")
CLUSTER = Kind("kokpit.io", "v1alpha1", "Cluster", "clusters")
CPV = Kind("kokpit.io", "v1alpha1", "ClusterPackageVersion", "clusterpackageversions", namespaced=False)
NS = "default"
Obj = dict[str, Any]


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "kokpit", *args], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


async def poll(fn: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.2) -> float:
    """Seconds until ``fn()`` is truthy (RuntimeError naming ``what`` after ``timeout``)."""
    t0 = time.monotonic()
    while True:
        if await fn():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def rollout_body(name: str, target: Obj, steps: list[Obj], **spec: Any) -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name, "namespace": NS},
            "spec": {"target": target, "strategy": {"steps": steps, "maxUnavailable": 0}, **spec}}


def profile(args: argparse.Namespace, phase: str, pids: dict[str, int | None]) -> list[subprocess.Popen[bytes]]:
    """With --profile DIR: py-spy (raw collapsed stacks) of each process until :func:`stop_profiles`."""
    if args.profile is None:
        return []
    spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy into the venv)")
    args.profile.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o",
                              str(args.profile / f"{phase}-{role}.raw")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for role, pid in pids.items() if pid is not None]


def timeline(args: argparse.Namespace, tracker: Any, want: dict[str, str], kubelet: str, t0: float
             ) -> asyncio.Task[None] | None:
    """With --timeline: every second, how many Machines were patched (generation moved), converged, and how
    many Nodes report ``kubelet`` — to see where a swap spends its time."""
    if not args.timeline:
        return None
    gen0 = {name: m[1] for name, m in tracker.machines.items()}

    async def run() -> None:
        while True:
            await asyncio.sleep(1.0)
            patched = sum(1 for name, m in tracker.machines.items() if m[1] > gen0.get(name, 0))
            print(f"  t={time.monotonic() - t0:5.1f}s patched {patched:6d} converged {tracker.converged(want):6d} "
                  f"nodes {tracker.kubelets(kubelet):6d}", flush=True)

    return asyncio.create_task(run())


def requests_of(counts: Any) -> str:
    return ", ".join(f"{verb} {res} {n:,}" for (verb, res), n in counts.most_common(14))


def stop_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
    for p in spies:
        p.send_signal(signal.SIGINT)
    for p in spies:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def phase_of(r: Obj) -> str:
    return str((r.get("status") or {}).get("phase") or "")


async def warm_up(client: Client, target: Obj, ns: str, timeout: float) -> float:
    """Seconds until the rollout controller judged a Rollout that selects nothing (Valid=False, NoTargets):
    its process is up, its meta caches are synced and — for a machine target — its caches of the business
    cluster are too (they linger after the warm-up Rollout is deleted), as the direct swap had its machine operator
    warm.
    """
    body = rollout_body("warm-up", target, [{"canary": "100%"}])
    body["metadata"]["namespace"] = ns
    await client.create(ROLLOUT, body, ns)

    async def judged() -> bool:
        r = await client.get(ROLLOUT, "warm-up", ns)
        return any(c["type"] == "Valid" and c["reason"] == "NoTargets" for c in (r.get("status") or {}).get(
            "conditions") or [])

    took = await poll(judged, timeout, "the rollout controller to judge a warm-up Rollout", 0.2)
    # gone again (an invalid Rollout is judged anew on every change of what it selects from); the caches of
    # the business cluster linger for the next Rollout
    await client.delete(ROLLOUT, "warm-up", ns)
    return took


async def business_is_meta(client: Client, api: ApiServerProcess, cluster: str = "c1") -> None:
    """The meta server doubles as business cluster ``cluster`` (its kubeconfig Secret points back at it)."""
    raw = await asyncio.to_thread(Path(api.kubeconfig).read_bytes)
    await client.create(SECRET, {"metadata": {"name": f"{cluster}-kubeconfig", "namespace": NS},
                                 "data": {"value": base64.b64encode(raw).decode()}})
    await client.create(CLUSTER, {"metadata": {"name": cluster, "namespace": NS}, "spec": {"packageVersion": "v1"}})


# ---------------------------------------------------------------------------------------------- machines
async def machines_phase(args: argparse.Namespace, tmp: Path, out: list[str]) -> None:
    fa = fleetbench.parse_args(["--nodes", str(args.machines), "--steady", "0", "--no-health-checks",
                                "--timeout", str(args.timeout)])
    fb = fleetbench.Bench(fa, tmp)
    extra: list[subprocess.Popen[bytes]] = []
    api = fb.start_api()
    client = Client.from_kubeconfig(api.kubeconfig, field_manager="bench-rollout", timeout=120.0)
    follow: list[asyncio.Task[None]] = []
    n = args.machines
    try:
        await install_crds(client)
        for m in fleetbench.mpvs(False):
            await client.create(MPV, {"apiVersion": MPV.api_version, "kind": MPV.kind, **m})
        url, _ = fb.start_simulator()
        follow = [asyncio.create_task(_follow(client, NODE, fb.tracker.see_node, fb.tracker.count_event)),
                  asyncio.create_task(_follow(client, MACHINE, fb.tracker.see_machine, fb.tracker.count_event))]
        fb.start_operator(url)
        names = node_names(fleetbench.PREFIX, n)

        async def create(i: int) -> None:
            await client.create(MACHINE, {"apiVersion": MACHINE.api_version, "kind": MACHINE.kind,
                                          "metadata": {"name": names[i], "labels": {"zone": f"z{i % 3}"}},
                                          "spec": {"nodeName": names[i], "packages": fleetbench.BASE}})

        await bounded(n, 32, create)
        t = await poll(lambda: _true(fb.tracker.converged(fleetbench.WANT1) >= n), args.timeout, "convergence", 0.5)
        print(f"machines: {n} converged on kubelet v1 in {t:.1f}s", flush=True)

        async def direct_swap(packages: list[str], kubelet: str, want: dict[str, str], label: str
                              ) -> tuple[float, dict[str, float]]:
            """bench/fleet.py's swap: every Machine patched at once, until every Node reports ``kubelet``."""
            t0, c0, q0 = time.monotonic(), fb.procs.cpu(), fleetbench.request_totals(api)
            line = timeline(args, fb.tracker, want, kubelet, t0)
            await bounded(n, 32, lambda i: client.patch(MACHINE, names[i], {"spec": {"packages": packages}}))
            await poll(lambda: _true(fb.tracker.kubelets(kubelet) >= n), args.timeout, label, 0.2)
            took = time.monotonic() - t0
            cpu = cores(c0, fb.procs.cpu(), took)
            if line is not None:
                line.cancel()
            print(f"{label}: {took:.1f}s cpu[{fmt_cores(cpu)}]", flush=True)
            if args.timeline:
                print(f"  requests: {requests_of(fleetbench.request_totals(api) - q0)}", flush=True)
            await poll(lambda: _true(fb.tracker.converged(want) >= n), args.timeout, f"converged ({label})", 0.5)
            return took, cpu

        # a. direct swap (bench/fleet.py's)
        direct, direct_cpu = await direct_swap(fleetbench.SWAPPED, fleetbench.K2, fleetbench.WANT2,
                                               "direct swap v1 → v2")
        # and back: the two directions differ (a downgrade is not an upgrade); the rollout goes v1 → v2 too
        direct_back, _ = await direct_swap(fleetbench.BASE, fleetbench.K1, fleetbench.WANT1, "direct swap v2 → v1")

        # b. the same swap through a rollout
        await business_is_meta(client, api)
        extra.append(spawn(["risk-center", "--kubeconfig", str(api.kubeconfig), "--no-leader-elect"],
                           tmp / "risk-center.log"))
        extra.append(spawn(["rollout-controller", "--kubeconfig", str(api.kubeconfig), "--no-leader-elect"],
                           tmp / "rollout-controller.log"))
        warm = await warm_up(client, {"machines": {"clusterNames": ["c1"], "machineSelector": {
            "matchLabels": {"bench": "none"}}, "packages": [{"component": "kubelet", "to": "kubelet-v1"}]}},
            NS, args.timeout)
        print(f"rollout controller warm: {warm:.1f}s until a Rollout over c1 was judged (business cluster "
              f"caches synced)", flush=True)
        target = {"machines": {"clusterNames": ["c1"], "packages": [
            {"component": "kubelet", "from": "kubelet-v1", "to": "kubelet-v2"}]}}
        spies = profile(args, "swap", {"rollout-controller": extra[1].pid, "risk-center": extra[0].pid,
                                       "machine-operator": fb.op.pid if fb.op else None,
                                       "apiserver": api.proc.pid if api.proc else None})
        fb.procs.pids |= {"risk-center": extra[0].pid, "rollout-controller": extra[1].pid}
        t0, c0, q0 = time.monotonic(), fb.procs.cpu(), fleetbench.request_totals(api)
        line = timeline(args, fb.tracker, fleetbench.WANT2, fleetbench.K2, t0)
        await client.create(ROLLOUT, rollout_body("swap", target, [{"canary": 1}, {"canary": "10%"},
                                                                   {"canary": "50%"}, {"canary": "100%"}]), NS)
        await poll(lambda: _done(client, "swap", "Completed"), args.timeout, "the rollout swap", 0.2)
        completed = time.monotonic() - t0
        await poll(lambda: _true(fb.tracker.kubelets(fleetbench.K2) >= n), args.timeout, "every Node on v2", 0.2)
        rolled = time.monotonic() - t0
        rolled_cpu = cores(c0, fb.procs.cpu(), rolled)
        if line is not None:
            line.cancel()
        stop_profiles(spies)
        r = await client.get(ROLLOUT, "swap", NS)
        records = await read_targets(client, r)
        steps = "; ".join(f"step {s['index']} {_secs(s)} ({_granted(records, s)})"
                          for s in r["status"].get("steps") or [])
        print(f"rollout swap v1 → v2: {rolled:.1f}s ({steps}) cpu[{fmt_cores(rolled_cpu)}]", flush=True)
        if args.timeline:
            print(f"  requests: {requests_of(fleetbench.request_totals(api) - q0)}", flush=True)
        out += [f"**Machines: N={n}** (simulator, install latency 0, zero bake)", "",
                "| phase | seconds |", "|---|---|",
                f"| direct swap v1 → v2: every Machine patched at once, until every Node reports v2 | {direct:.1f} |",
                f"| (direct swap v2 → v1, for comparison) | {direct_back:.1f} |",
                f"| rollout v1 → v2, steps 1 → 10% → 50% → 100% (maxUnavailable unlimited), until Completed and every "
                f"Node on v2 | {rolled:.1f} |",
                f"| ratio rollout / direct (target ≤ 1.3) | **{rolled / direct:.2f}** |", "",
                f"The Rollout was Completed (every target Updated in its own status) after {completed:.1f} s; "
                f"the rest is the Nodes' kubeletVersion catching up.", "",
                f"Per step: {steps}.", "",
                f"CPU (cores over the phase): direct swap {fmt_cores(direct_cpu)}; rollout swap "
                f"{fmt_cores(rolled_cpu)}.", ""]
        await poll(lambda: _true(fb.tracker.converged(fleetbench.WANT2) >= n), args.timeout, "converged on v2", 0.5)
        # the direct swap v2 → v1 again, with the risk center and the (idle) rollout controller up: what their
        # watches alone cost the API server, apart from going through a Rollout
        idle, idle_cpu = await direct_swap(fleetbench.BASE, fleetbench.K1, fleetbench.WANT1,
                                           "direct swap v2 → v1, controllers up (idle)")
        out[-1:] = ["",
                    f"The direct swap v2 → v1 again in the same run with the risk center and the rollout controller up "
                    f"(idle, caches warm): **{idle:.1f} s** against {direct_back:.1f} s without them "
                    f"(**{idle / direct_back:.2f}×**: their watches' cost to the API server). CPU {fmt_cores(idle_cpu)}.",
                    ""]

        # c. rollback of the touched Machines after a failing analysis
        k = min(args.rollback_targets, n)
        order = sorted(names)
        victim = order[0]
        await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "kokpit", "simulator", "fault", "--simulator-dir", str(tmp / "sim"), "--node", victim,
            "--type", "install-failure", "--component", "kubelet", "--version", fleetbench.K2],
            check=True, capture_output=True, timeout=60)
        target = {"machines": {"clusterNames": ["c1"], "packages": [
            {"component": "kubelet", "from": "kubelet-v1", "to": "kubelet-v2"}]}}
        await client.create(ROLLOUT, rollout_body("back", target, [{"canary": k}, {"analysis": {"failureLimit": 0}},
                                                                   {"canary": "100%"}],
                                                  failurePolicy={"maxFailures": k, "rollback": True}), NS)
        await poll(lambda: _aborted(client, "back"), args.timeout, "the analysis to fail", 0.2)
        t0 = time.monotonic()
        await poll(lambda: _done(client, "back", "RolledBack"), args.timeout, "the rollback", 0.2)
        await poll(lambda: _true(fb.tracker.kubelets(fleetbench.K1) >= n), args.timeout, "every Node back on v1", 0.2)
        back = time.monotonic() - t0
        r = await client.get(ROLLOUT, "back", NS)
        touched = sum(1 for x in await read_targets(client, r) if x.get("touchedAt"))
        print(f"rollback of {touched} touched Machines: {back:.1f}s", flush=True)
        out += [f"**Rollback: {touched} touched Machines of {n}**", "",
                f"A Rollout v1 → v2 whose first batch is {k} Machines (one fails to install v2), then an analysis "
                "step with failureLimit 0: the batch completes, the analysis fails, the rollout aborts.", "",
                f"- from the abort until the rollout is RolledBack and every Node reports v1 again: **{back:.1f} s**",
                f"- untouched Machines: {n - touched} (never patched)", ""]
    finally:
        for tsk in follow:
            tsk.cancel()
        stop(extra)
        fb.stop_all()
        with contextlib.suppress(Exception):
            await client.close()


def _true(v: bool) -> Awaitable[bool]:
    async def f() -> bool:
        return v
    return f()


async def _done(client: Client, name: str, phase: str) -> bool:
    return phase_of(await client.get(ROLLOUT, name, NS)) == phase


async def _aborted(client: Client, name: str) -> bool:
    r = await client.get(ROLLOUT, name, NS)
    return any(c["type"] == "Aborted" and c["status"] == "True" for c in (r.get("status") or {}).get("conditions")
               or [])


def _granted(records: list[Obj], step: Obj) -> str:
    """How long the step waited for its first permit: from its start until its first target was marked."""
    from kokpit._lib.clock import parse_time

    touched = [t["touchedAt"] for t in records if t.get("step") == step.get("index")
               and t.get("touchedAt")]
    if not touched or not step.get("startedAt"):
        return "no permit"
    return f"{(parse_time(min(touched)) - parse_time(step['startedAt'])).total_seconds():.0f}s to the first permit"


def _secs(step: Obj) -> str:
    from kokpit._lib.clock import parse_time

    if not (step.get("startedAt") and step.get("finishedAt")):
        return "-"
    return f"{(parse_time(step['finishedAt']) - parse_time(step['startedAt'])).total_seconds():.0f}s"


# ---------------------------------------------------------------------------------------------- clusters
async def clusters_phase(args: argparse.Namespace, tmp: Path, out: list[str]) -> None:
    m = args.clusters
    api = ApiServerProcess(tmp / "api").start(timeout=60)
    procs: list[subprocess.Popen[bytes]] = []
    client = Client.from_kubeconfig(api.kubeconfig, field_manager="bench-rollout", timeout=120.0)
    try:
        await install_crds(client)
        for name, kube in (("v1", "v1.36.2"), ("v2", "v1.37.0")):
            await client.create(CPV, {"metadata": {"name": name}, "spec": {"kubernetesVersion": kube, "components": [
                {"name": "kube-apiserver", "image": f"kokpit:{kube}", "args": ["apiserver"]}]}})
        await client.create(NAMESPACE, {"metadata": {"name": "fleet"}})
        kc = str(api.kubeconfig)
        procs.append(spawn(["kubelet", "--kubeconfig", kc, "--data-dir", str(tmp / "kubelet"), "--fake-runtime",
                            "--port", "0"], tmp / "kubelet.log"))
        procs.append(spawn(["cluster-operator", "--kubeconfig", kc, "--data-root", str(tmp / "clusters"),
                            "--port-range", f"20000-{20000 + max(2 * m, 1000)}", "--trust-pod-readiness",
                            "--workers", "16"], tmp / "operator.log"))
        procs.append(spawn(["risk-center", "--kubeconfig", kc, "--no-leader-elect"], tmp / "risk-center.log"))

        async def create(i: int) -> None:
            await client.create(CLUSTER, {"metadata": {"name": f"c{i:05d}", "namespace": "fleet",
                                                       "labels": {"kokpit.io/wave": "bench"}},
                                          "spec": {"packageVersion": "v1", "simulation": {"nodes": 0}}}, "fleet")

        await bounded(m, 32, create)

        async def all_on(version: str) -> bool:
            items = (await client.list(CLUSTER, "fleet")).items
            return sum(1 for c in items if (c.get("status") or {}).get("packageVersion") == version and any(
                x["type"] == "UpToDate" and x["status"] == "True" for x in c["status"].get("conditions") or [])) >= m

        t = await poll(lambda: all_on("v1"), args.timeout, "Clusters Ready on v1", 1.0)
        print(f"clusters: {m} Ready on v1 in {t:.1f}s", flush=True)
        procs.append(spawn(["rollout-controller", "--kubeconfig", kc, "--no-leader-elect", "--lease-namespace",
                            "fleet"], tmp / "rollout-controller.log"))
        await warm_up(client, {"clusters": {"names": ["nothing"], "packageVersion": "v2"}}, "fleet", args.timeout)
        # an empty selector is refused (it would take every Cluster of the namespace): the bench's are labelled
        body = rollout_body("cp", {"clusters": {"selector": {"matchLabels": {"kokpit.io/wave": "bench"}},
                                                "packageVersion": "v2"}},
                            [{"canary": 1}, {"canary": "5%"}, {"canary": "100%"}])
        body["metadata"]["namespace"] = "fleet"
        t0 = time.monotonic()
        await client.create(ROLLOUT, body, "fleet")

        async def done() -> bool:
            r = await client.get(ROLLOUT, "cp", "fleet")
            return phase_of(r) == "Completed"

        await poll(done, args.timeout, "the control-plane wave", 1.0)
        wave = time.monotonic() - t0
        r = await client.get(ROLLOUT, "cp", "fleet")
        steps = "; ".join(f"step {s['index']} {_secs(s)}" for s in r["status"].get("steps") or [])
        print(f"control-plane wave over {m} Clusters: {wave:.1f}s ({steps})", flush=True)
        out += [f"**Clusters: M={m}** (cluster operator --trust-pod-readiness, kubelet --fake-runtime)", "",
                f"- Rollout to v2, steps 1 → 5% → 100%, no maxUnavailable limit, permits granted at once: "
                f"**{wave:.1f} s** until Completed ({steps})", ""]
    finally:
        stop(procs)
        with contextlib.suppress(Exception):
            await client.close()
        api.stop()
        for name in ("operator.log", "rollout-controller.log"):
            if args.verbose:
                print(f"--- {name} ---\n{tail_file(tmp / name)}")


# ---------------------------------------------------------------------------------------------- safety
async def safety_run(client: Client, sim: Any, nodes: list[str], seed: int, controller_alive: Callable[[], None],
                     timeout: float = 120.0) -> str:
    """One seeded safety run on a converged fleet (every Machine on kubelet-1.30, the rollout controller running):
    a canary node breaks; the rollout must abort before the next batch, touch nothing outside the canary batch
    and roll back what it touched.  Returns "" when all of that held, else what did not."""
    rng = random.Random(seed)
    canary = rng.randint(1, max(1, len(nodes) // 3))
    order = sorted(nodes)  # the rollout's order: by name (no priority or topology label)
    victim = order[rng.randrange(canary)]
    how = rng.choice(["install-failure", "component-stop"])
    gens = {m["metadata"]["name"]: m["metadata"]["generation"] for m in (await client.list(MACHINE)).items}
    if how == "install-failure":
        sim.book.fault(victim, "install-failure", "kubelet", "1.31.0")
    name = f"safety-{seed}"
    await client.create(ROLLOUT, rollout_body(name, {"machines": {"clusterNames": ["c1"], "packages": [
        {"component": "kubelet", "from": "kubelet-1.30", "to": "kubelet-1.31"}]}},
        [{"canary": canary}, {"pause": {"duration": "2s"}}, {"canary": "100%"}],
        failurePolicy={"maxFailures": 0, "rollback": True}), NS)
    if how == "component-stop":
        async def victim_updated() -> bool:
            r = await client.get(ROLLOUT, name, NS)
            return any(t["name"] == f"c1/{victim}" and t["state"] == "Updated" for t in await read_targets(client, r))
        await poll(victim_updated, timeout, f"{victim} updated")
        sim.book.fault(victim, "component-stop", "kubelet")
    await poll(lambda: _done(client, name, "RolledBack"), timeout, f"{name} rolled back")
    controller_alive()
    r = await client.get(ROLLOUT, name, NS)
    problems = []
    batch = set(order[:canary])
    for t in await read_targets(client, r):
        node = t["name"].split("/", 1)[1]
        if node not in batch and t["state"] != "Pending":
            problems.append(f"{node} outside the canary batch is {t['state']}")
    for m in (await client.list(MACHINE)).items:
        n = m["metadata"]["name"]
        if n not in batch and m["metadata"]["generation"] != gens[n]:
            problems.append(f"{n} outside the canary batch was changed")
        if "kubelet-1.30" not in m["spec"]["packages"]:
            problems.append(f"{n} not rolled back: {m['spec']['packages']}")
    sim.book.fault(victim, "recover")
    return "; ".join(problems)


def _alive_check(ctl: Any) -> Callable[[], None]:
    def alive() -> None:
        if ctl.p is None or ctl.p.poll() is not None:
            raise RuntimeError(f"the rollout controller exited:\n{ctl.tail()}")
    return alive


async def safety_phase(args: argparse.Namespace, tmp: Path, out: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.operators.rollout.conftest import make_fleet

    api = ApiServerProcess(tmp / "safety-api").start(timeout=60)
    ok = 0
    fails: list[str] = []
    try:
        async for f in make_fleet(api, tmp, nodes=args.safety_nodes):
            alive = _alive_check(f.procs["controller"])
            for seed in range(args.safety_runs):
                why = await safety_run(f.meta, f.sim, f.nodes, seed, alive)
                print(f"safety seed {seed}: {'ok' if not why else why}", flush=True)
                if why:
                    fails.append(f"seed {seed}: {why}")
                else:
                    ok += 1
    finally:
        api.stop()
    out += [f"**Safety: {ok}/{args.safety_runs} seeded runs stopped before the next batch**", "",
            f"{args.safety_nodes} Machines; each run breaks one canary node (an install failure of the new kubelet, or "
            "the kubelet stopped after its update), steps canary → pause 2s → 100%, maxFailures 0. Held in a run: "
            "the rollout aborts and rolls back, no Machine outside the canary batch changes generation, every "
            "Machine ends on the old kubelet.", *([f"- FAILED {x}" for x in fails] or []), ""]


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=10_000, help="Machines of the swap phases (0: skip)")
    p.add_argument("--rollback-targets", type=int, default=1000, help="Machines touched before the rollback")
    p.add_argument("--clusters", type=int, default=3000, help="Clusters of the control-plane wave (0: skip)")
    p.add_argument("--safety-runs", type=int, default=20, help="seeded safety runs (0: skip)")
    p.add_argument("--safety-nodes", type=int, default=8)
    p.add_argument("--timeout", type=float, default=1800.0, help="give up on a phase after S seconds")
    p.add_argument("--docs", action="store_true", help="write the section into docs/benchmarks.md")
    p.add_argument("--docs-file", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--note", action="append", help="a line of notes for the docs section (repeatable)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--timeline", action="store_true", help="print patched/converged counts every second of the swaps")
    p.add_argument("--profile", type=Path, help="py-spy every process of the rollout swap into DIR (raw stacks)")
    return p.parse_args(argv)


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    stop_children_on_sigterm()
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/rollout.py", *(sys.argv[1:] if argv is None else argv)])
    signal.signal(signal.SIGTERM, _interrupt)
    load = machine_load()
    print(f"machine: {load}", flush=True)
    out: list[str] = []
    for phase, size in ((machines_phase, args.machines), (clusters_phase, args.clusters),
                        (safety_phase, args.safety_runs)):
        if size <= 0:
            continue
        with tempfile.TemporaryDirectory(prefix="kokpit-bench-rollout-") as d:
            asyncio.run(phase(args, Path(d), out))
    if args.note:
        out += [*args.note, ""]
    print("\n".join(out))
    if args.docs:
        replace_section(args.docs_file, SECTION, command, f"every process on the same machine, shared with other "
                        f"workloads ({load})", out)
        print(f"\nwritten to {args.docs_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
