"""Chaos: kill -9 kokpit's processes at random moments while the fleet changes, and count what went wrong.

A real `kokpit up` fleet runs a sequence of changes — Cluster releases (a new ClusterPackageVersion, every
control-plane Pod replaced) and kubelet waves (every Machine's kubelet package changed, installed node by
node by the machine operator through the simulator).  While each change is under way, the harness kills -9
random kokpit processes (the meta API server, the local kubelet and the cluster operator that `kokpit up`
supervises, and every Pod the kubelet runs: business API servers, simulators, machine operators) and then
waits for the fleet to converge again.  Throughout, marker ConfigMaps are written to the meta cluster and to
every business cluster.  It reports

* kills, per process;
* acknowledged writes lost — markers the API server answered 201 for, missing at the end (must be 0);
* actions done twice — a simulated host completing an install of the version it already had, read from
  the simulator's per-host action log over the mutual-TLS driver API (must be 0);
* whether, and how fast, the fleet converged after every change (must be every time).

Extending it: processes are discovered, not listed — whatever ``kokpit up`` supervises (``up.pids``) and
whatever Pod the kubelet runs (``kubelet-state.json``) is a target, so new operators (risk center, fault
flows, rollouts) are killed as soon as they run; add a ``Finder`` for a process that is neither.  New
changes are ``Change`` objects (start, converged), new invariants ``Check`` objects (start, verify).

    python bench/chaos.py --seed 1 --rounds 12 --nodes 10          # the long run (docs/benchmarks.md)
    python bench/chaos.py --seed 7 --rounds 2 --nodes 3 --no-record # a quick look

``tests/bench/test_chaos.py`` runs a short seeded version in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kokpit.client import CONFIGMAP, NAMESPACE, NODE, AlreadyExistsError, ApiError, Client, TransportError
from kokpit.nodes import DriverError
from kokpit.nodes.mtls import write_files
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.cluster import CLUSTER, CPV
from kokpit.operators.machine import MACHINE
from kokpit.up import CLUSTER_NAMESPACE, Fleet, cpvs, driver_access, read_kubeconfig
from kokpit.up._fleet import machine_converged

Obj = dict[str, Any]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
MARKER_NS = "chaos-markers"
KUBELETS = ("kubelet-v1.36.2", "kubelet-v1.37.0")
RELEASES = ("chaos-a", "chaos-b")


# ------------------------------------------------------------------------------------------ targets
Finder = Callable[[Path], dict[str, int]]  # data dir -> {process name: pid}


def up_children(data_dir: Path) -> dict[str, int]:
    """The processes `kokpit up` supervises (it rewrites up.pids at every (re)start)."""
    try:
        return {str(k): int(v) for k, v in json.loads((data_dir / "up.pids").read_text()).items()}
    except (OSError, ValueError):
        return {}


def kubelet_pods(data_dir: Path) -> dict[str, int]:
    """Every container process the local kubelet runs, named ``pod/<pod>``."""
    try:
        raw = json.loads((data_dir / "kubelet" / "kubelet-state.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for pod in (raw.get("pods") or {}).values():
        for c in (pod.get("containers") or {}).values():
            if int(c.get("pid") or 0) > 1:
                out[f"pod/{pod['name']}"] = int(c["pid"])
    return out


FINDERS: list[Finder] = [up_children, kubelet_pods]


def _alive_and_ours(pid: int, data_dir: Path) -> bool:
    """The pid runs and belongs to this fleet (pids are reused: check its command line or environment)."""
    marks = (str(data_dir).encode(), str(data_dir.resolve()).encode())
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        blob = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return any(m in blob for m in marks)


def targets(data_dir: Path, only: tuple[str, ...] = ()) -> dict[str, int]:
    found: dict[str, int] = {}
    for finder in FINDERS:
        found.update(finder(data_dir))
    return {n: p for n, p in found.items()
            if _alive_and_ours(p, data_dir) and (not only or any(re.search(o, n) for o in only))}


def kind_of(name: str) -> str:
    """``pod/cluster-1-simulator-0`` -> ``business simulator``; up's children keep their names."""
    m = re.fullmatch(r"pod/.+?-(kube-apiserver|simulator|machine-operator|[a-z-]+?)-\d+", name)
    if m:
        return f"business {m.group(1)}"
    return f"meta {name}" if name == "apiserver" else name


# ------------------------------------------------------------------------------------------ checks
class Check(Protocol):
    """An invariant: ``start`` before the chaos, ``verify`` after it (problems as lines)."""

    name: str

    async def start(self, fleet: ChaosFleet) -> None: ...

    async def verify(self, fleet: ChaosFleet) -> list[str]: ...

    def figures(self) -> dict[str, Any]: ...


class Markers:
    """Writes marker ConfigMaps to every API server as fast as they answer; every acknowledged one must
    still exist at the end (kill -9 of an API server must never lose an answered write)."""

    name = "acknowledged writes"

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.acked: dict[str, set[str]] = {}
        self.failed = 0
        self.lost: dict[str, list[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, fleet: ChaosFleet) -> None:
        for where, client in fleet.clients().items():
            await _ensure_namespace(client, MARKER_NS)
            self.acked[where] = set()
            self._tasks.append(asyncio.create_task(self._write(where, client), name=f"markers-{where}"))

    async def _write(self, where: str, client: Client) -> None:
        for i in range(10**9):
            name = f"m-{i:06d}"
            body = {"metadata": {"name": name}, "data": {"i": str(i), "where": where}}
            try:
                await client.create(CONFIGMAP, body, MARKER_NS)
                self.acked[where].add(name)
            except AlreadyExistsError:
                self.acked[where].add(name)  # a retried create the server had committed: it is there
            except (ApiError, TransportError, OSError, TimeoutError):
                self.failed += 1  # not acknowledged: allowed to be missing
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def verify(self, fleet: ChaosFleet) -> list[str]:
        await self.stop()
        problems = []
        for where, client in fleet.clients().items():
            have = {o["metadata"]["name"] for o in (await _retry(lambda c=client: c.list(CONFIGMAP, MARKER_NS))).items}
            lost = sorted(self.acked.get(where, set()) - have)
            self.lost[where] = lost
            if lost:
                problems.append(f"{where}: {len(lost)} acknowledged markers lost: {lost[:5]}")
        return problems

    def figures(self) -> dict[str, Any]:
        return {"markers acknowledged": sum(len(v) for v in self.acked.values()),
                "markers not acknowledged": self.failed,
                "acknowledged writes lost": sum(len(v) for v in self.lost.values())}


def duplicates(log: list[Obj]) -> list[str]:
    """Installs a host completed although the component already had that version (an action done twice)."""
    have: dict[str, str] = {}
    out = []
    for e in log:
        comp, what = str(e.get("component")), str(e.get("event"))
        if what == "installed":
            if have.get(comp) == e.get("version"):
                out.append(f"{comp} {e.get('version')} installed again at {e.get('at')}")
            have[comp] = str(e.get("version"))
        elif what == "uninstalled":
            have.pop(comp, None)
    return out


class ActionLog:
    """Every simulated host's action log (read over the driver's mutual-TLS API): no install done twice."""

    name = "actions done twice"

    def __init__(self) -> None:
        self.installs = 0
        self.dups: list[str] = []

    async def start(self, fleet: ChaosFleet) -> None:
        return None

    async def verify(self, fleet: ChaosFleet) -> list[str]:
        for cluster in fleet.cluster_names:
            logs = await _retry(lambda c=cluster: fleet.action_logs(c))
            for node, log in sorted(logs.items()):
                self.installs += sum(1 for e in log if e.get("event") == "installed")
                self.dups += [f"{cluster}/{node}: {d}" for d in duplicates(log)]
        return self.dups

    def figures(self) -> dict[str, Any]:
        return {"installs completed": self.installs, "actions done twice": len(self.dups)}


# ------------------------------------------------------------------------------------------ changes
class Change(Protocol):
    """One change of the fleet's final state: started, then converged (or not)."""

    name: str

    async def begin(self, fleet: ChaosFleet, i: int) -> None: ...

    async def converged(self, fleet: ChaosFleet) -> str:
        """"" when the fleet is at the wanted state, else what is still missing."""
        ...


class Release:
    """Every Cluster to the other chaos ClusterPackageVersion (control-plane Pods replaced one by one)."""

    name = "release"

    def __init__(self) -> None:
        self.want = RELEASES[0]

    async def begin(self, fleet: ChaosFleet, i: int) -> None:
        self.want = RELEASES[(RELEASES.index(self.want) + 1) % 2] if i else RELEASES[0]  # the other one
        for c in fleet.cluster_names:
            await _retry(lambda c=c: fleet.meta.patch(CLUSTER, c, {"spec": {"packageVersion": self.want}},
                                                      CLUSTER_NAMESPACE))

    async def converged(self, fleet: ChaosFleet) -> str:
        snap = await fleet.fleet.snapshot(events=0)
        if snap.error:
            return snap.error
        for c in snap.clusters:
            if c.version != self.want or not c.ready_fully:
                return (f"{c.name}: version {c.version} (want {self.want}), ready {c.ready}, nodes "
                        f"{c.nodes_ready}/{c.nodes_total}, machines {c.machines_converged}/{c.nodes_total}")
        return ""


class KubeletWave:
    """Every Machine to the other kubelet package: the machine operator upgrades node after node."""

    name = "kubelet wave"

    def __init__(self) -> None:
        self.want = KUBELETS[0]

    async def begin(self, fleet: ChaosFleet, i: int) -> None:
        self.want = KUBELETS[(KUBELETS.index(self.want) + 1) % 2]  # the other one
        for c in fleet.cluster_names:
            client = await fleet.business(c)
            machines = (await _retry(lambda cl=client: cl.list(MACHINE))).items
            for m in machines:
                pkgs = [self.want if p.startswith("kubelet-") else p for p in m["spec"]["packages"]]
                await _retry(lambda cl=client, n=m["metadata"]["name"], p=pkgs:
                             cl.patch(MACHINE, n, {"spec": {"packages": p}}))

    async def converged(self, fleet: ChaosFleet) -> str:
        version = self.want.removeprefix("kubelet-")
        for c in fleet.cluster_names:
            client = await fleet.business(c)
            machines = (await client.list(MACHINE)).items
            nodes = (await client.list(NODE)).items
            bad = [m["metadata"]["name"] for m in machines if not machine_converged(m)]
            old = [n["metadata"]["name"] for n in nodes
                   if (n.get("status") or {}).get("nodeInfo", {}).get("kubeletVersion") != version]
            if bad or old or not machines:
                return f"{c}: machines not converged {bad[:3]}, nodes not on {version} {old[:3]}"
        return ""


# ------------------------------------------------------------------------------------------ the fleet
async def _retry(fn: Callable[[], Awaitable[Any]], timeout: float = 120.0) -> Any:
    """Call until it works: API servers come and go under chaos."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except (ApiError, TransportError, DriverError, OSError, TimeoutError) as e:
            if isinstance(e, ApiError) and e.code in (400, 404, 409, 422):
                raise
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _ensure_namespace(client: Client, name: str) -> None:
    with contextlib.suppress(AlreadyExistsError):
        await _retry(lambda: client.create(NAMESPACE, {"metadata": {"name": name}}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chaos_cpvs(install_seconds: float) -> list[Obj]:
    """The two releases the harness switches between: kokpit up's own, with installs that take time (so
    kills land while actions are in flight)."""
    out = []
    for name, base in zip(RELEASES, cpvs(), strict=True):
        body = json.loads(json.dumps(base))
        body["metadata"]["name"] = name
        for comp in body["spec"]["components"]:
            if comp["name"] == "simulator":
                comp["args"] = [*comp["args"], "--install-seconds", str(install_seconds)]
        out.append(body)
    return out


class ChaosFleet:
    """A `kokpit up` in a subprocess, and clients of its API servers."""

    def __init__(self, data_dir: Path, clusters: int, nodes: int) -> None:
        self.data_dir = data_dir
        self.clusters = clusters
        self.nodes = nodes
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.meta: Client = None  # type: ignore[assignment]
        self.fleet: Fleet = None  # type: ignore[assignment]
        self.cluster_names = [f"cluster-{i}" for i in range(1, clusters + 1)]
        self._tls = Path(tempfile.mkdtemp(prefix="chaos-tls-"))
        self._clients: dict[str, Client] = {}

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / "up.out", "ab") as out:  # the child keeps its own copy of the fd
            return subprocess.Popen(
                [sys.executable, "-m", "kokpit.cli.main", "up", "--clusters", str(self.clusters), "--nodes",
                 str(self.nodes), "--data-dir", str(self.data_dir), "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def start(self, timeout: float) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        kc = self.data_dir / "kubeconfig"
        while not kc.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kokpit up did not start: {self.output()[-2000:]}")
            await asyncio.sleep(0.2)
        self.meta = Client.from_kubeconfig(kc, field_manager="chaos", max_retries=0, timeout=5.0)
        self.fleet = Fleet(self.meta, self.data_dir / "chaos-kubeconfigs")
        while True:  # up installs the CRDs and creates the Clusters once its API server answers
            with contextlib.suppress(ApiError, TransportError, OSError, TimeoutError):
                if len((await self.meta.list(CLUSTER, CLUSTER_NAMESPACE)).items) >= self.clusters:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kokpit up made no Clusters: {self.output()[-2000:]}")
            await asyncio.sleep(0.3)

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir.parent / "up.out").read_text(errors="replace")
        return ""

    async def business(self, cluster: str) -> Client:
        client = await _retry(lambda: self.fleet.business(CLUSTER_NAMESPACE, cluster))
        if client is None:
            raise TransportError(f"{cluster} has no kubeconfig yet")
        return client  # type: ignore[no-any-return]

    def clients(self) -> dict[str, Client]:
        """The meta cluster's client and one per business cluster (made once by :meth:`connect`)."""
        return {"meta": self.meta, **self._clients}

    async def connect(self) -> None:
        for c in self.cluster_names:
            raw = await _retry(lambda c=c: read_kubeconfig(self.meta, c, CLUSTER_NAMESPACE))
            path = self._tls / f"{c}.kubeconfig"
            path.write_bytes(raw)
            self._clients[c] = Client.from_kubeconfig(path, field_manager="chaos", max_retries=0, timeout=5.0)

    async def action_logs(self, cluster: str) -> dict[str, list[Obj]]:
        access = await driver_access(self.meta, cluster, CLUSTER_NAMESPACE)
        tls = write_files(self._tls / cluster, access.ca_pem, access.cert_pem, access.key_pem)
        driver = SimulatorDriver(access.url, tls=tls, timeout=10)
        try:
            return await driver.action_log()
        finally:
            await driver.close()

    async def wait(self, change: Change, timeout: float) -> tuple[bool, float, str]:
        t0 = time.monotonic()
        why = ""
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                return False, time.monotonic() - t0, f"kokpit up exited: {self.output()[-500:]}"
            with contextlib.suppress(ApiError, TransportError, OSError, TimeoutError):
                why = await change.converged(self)
                if not why:
                    return True, time.monotonic() - t0, ""
            await asyncio.sleep(0.5)
        return False, time.monotonic() - t0, why

    async def stop(self) -> None:
        for c in self._clients.values():
            await c.close()
        if self.fleet is not None:
            await self.fleet.close()
        if self.meta is not None:
            await self.meta.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.proc.wait, 60)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in list(targets(self.data_dir).values()):  # whatever outlived it (kill -9 of up itself)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self._tls, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the run
@dataclass
class ChaosOptions:
    seed: int = 1
    rounds: int = 4
    clusters: int = 1
    nodes: int = 5
    kills_per_round: int = 2
    window: float = 8.0  # kills land at random moments within this many seconds of a change's start
    converge_timeout: float = 240.0
    install_seconds: float = 0.5
    only: tuple[str, ...] = ()  # regexes of target names; empty: every process
    data_dir: Path | None = None


@dataclass
class RoundResult:
    change: str
    target: str  # the version it went to
    kills: list[str]
    converged: bool
    seconds: float
    why: str = ""


@dataclass
class ChaosResult:
    options: ChaosOptions
    rounds: list[RoundResult] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.converged for r in self.rounds)

    def lines(self) -> list[str]:
        conv = [r.seconds for r in self.rounds if r.converged]
        out = [f"- rounds: {len(self.rounds)} ({', '.join(sorted({r.change for r in self.rounds}))}), "
               f"converged after every one: {'yes' if all(r.converged for r in self.rounds) else 'NO'}"
               + (f"; convergence {min(conv):.1f}–{max(conv):.1f} s (median {sorted(conv)[len(conv) // 2]:.1f} s)"
                  if conv else ""),
               f"- kills (kill -9): {sum(self.kills.values())} — " +
               ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items()))]
        out += [f"- {k}: {v}" for k, v in self.figures.items()]
        out += [f"- problem: {p}" for p in self.problems]
        return out


async def run_chaos(opts: ChaosOptions, log: Callable[[str], None] = print) -> ChaosResult:
    rng = random.Random(opts.seed)
    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="chaos-")) / "fleet"
    fleet = ChaosFleet(data_dir, opts.clusters, opts.nodes)
    result = ChaosResult(opts)
    checks: list[Any] = [Markers(), ActionLog()]
    try:
        await fleet.start(timeout=120)
        for body in chaos_cpvs(opts.install_seconds):
            with contextlib.suppress(AlreadyExistsError):
                await _retry(lambda b=body: fleet.meta.create(CPV, b))
        setup = Release()
        await setup.begin(fleet, 0)  # onto the chaos releases (slow installs), not yet under chaos
        ok, _secs, why = await fleet.wait(setup, opts.converge_timeout)
        if not ok:
            raise RuntimeError(f"the fleet did not come up: {why}")
        log(f"fleet ready on {RELEASES[0]} ({opts.clusters} clusters x {opts.nodes} nodes); chaos starts")
        await fleet.connect()
        for check in checks:
            await check.start(fleet)
        changes: list[Change] = [Release(), KubeletWave()]
        for i in range(opts.rounds):
            change = changes[i % len(changes)]
            await change.begin(fleet, i + 1)
            t0 = time.monotonic()
            killed = []
            for at in sorted(rng.uniform(0, opts.window) for _ in range(opts.kills_per_round)):
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                live = targets(data_dir, opts.only)
                if not live:
                    continue
                name = rng.choice(sorted(live))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(live[name], signal.SIGKILL)
                    killed.append(name)
                    result.kills[kind_of(name)] += 1
            ok, _, why = await fleet.wait(change, opts.converge_timeout)
            r = RoundResult(change.name, str(getattr(change, "want", "")), killed, ok, time.monotonic() - t0, why)
            result.rounds.append(r)
            log(f"round {i + 1}: {change.name} to {r.target}, killed {', '.join(killed) or 'nothing'}; "
                + (f"converged in {r.seconds:.1f} s" if ok else f"NOT converged: {why}"))
            if not ok:
                break
        for check in checks:
            result.problems += await check.verify(fleet)
            result.figures.update(check.figures())
    finally:
        for check in checks:
            if isinstance(check, Markers):
                await check.stop()
        await fleet.stop()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--clusters", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--kills-per-round", type=int, default=2)
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--install-seconds", type=float, default=0.5)
    ap.add_argument("--only", action="append", default=[], help="regex of process names to kill (repeatable)")
    ap.add_argument("--no-record", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    opts = ChaosOptions(seed=args.seed, rounds=args.rounds, clusters=args.clusters, nodes=args.nodes,
                        kills_per_round=args.kills_per_round, window=args.window,
                        install_seconds=args.install_seconds, only=tuple(args.only))
    t0 = time.monotonic()
    res = asyncio.run(run_chaos(opts))
    lines = [*res.lines(), f"- wall time: {time.monotonic() - t0:.0f} s"]
    print("\n".join(lines))
    if not args.no_record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _common import machine_load, replace_section

        command = "python bench/chaos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        replace_section(DOCS, "## Chaos: kill -9 during releases and kubelet waves", command,
                        f"other sessions' tests running alongside; {machine_load()}", lines)
    sys.exit(0 if res.ok else 1)


if __name__ == "__main__":
    main()
