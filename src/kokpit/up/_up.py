"""`kokpit up`, `kokpit status`, `kokpit kubeconfig`: the whole fleet on one machine, and a look at it.

`kokpit up` is the newcomer's first five minutes, so it checks everything it can before starting anything
(one line on what to fix), then runs the meta API server, the local kubelet and the cluster operator as
supervised children, creates only what is missing (a restart resumes the same fleet), and on Ctrl-C ends
every process it started — the kubelet's Pods included — before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from rich.console import Console
from rich.live import Live

from kokpit.api import install_crds
from kokpit.client import NAMESPACE, AlreadyExistsError, ApiError, Client, Kind, NotFoundError, TransportError
from kokpit.controllermanager import DAEMONSET, DEPLOYMENT, PDB, STATEFULSET
from kokpit.operators.cluster import CLUSTER, CPV
from kokpit.operators.machine import MACHINE, MPV
from kokpit.up._defaults import (
    CLUSTER_NAMESPACE,
    cluster_body,
    cluster_names,
    cpvs,
    machine_bodies,
    mpvs,
    workload_bodies,
)
from kokpit.up._events import ComponentEvents
from kokpit.up._fleet import Fleet, Snapshot, read_kubeconfig, render_rich, render_text
from kokpit.up._identities import install_identities, node_tokens
from kokpit.up._metrics import MetricsEndpoint, record_endpoint
from kokpit.up._metrics import check as check_metrics
from kokpit.up._metrics import endpoints as metrics_endpoints
from kokpit.up._metrics import render as render_metrics
from kokpit.up._supervisor import Child, kill_group

__all__ = ["DATA_FORMAT", "MAX_CLUSTERS", "MAX_NODES", "UpError", "UpOptions", "kubeconfig", "preflight",
           "run_up", "status", "validate"]

DATA_FORMAT: Final = "kokpit-up/1"
MAX_CLUSTERS: Final = 20
MAX_NODES: Final = 10_000
LOCK_FILE: Final = "up.lock"
PIDS_FILE: Final = "up.pids"
NODE_TOKENS: Final = "node-tokens.csv"  # kube's --token-auth-file of the meta API server: its kubelets

Obj = dict[str, Any]
WORKLOAD_KINDS: Final = {"Namespace": NAMESPACE, "DaemonSet": DAEMONSET, "Deployment": DEPLOYMENT,
                         "PodDisruptionBudget": PDB, "StatefulSet": STATEFULSET}


class UpError(Exception):
    """Bad input or a failed start: one line saying what to do."""


@dataclass
class UpOptions:
    data_dir: Path = Path(".kokpit")
    clusters: int = 2
    nodes: int = 50
    port: int = 6443
    host: str = "127.0.0.1"  # every server of the fleet binds to this address (never a wildcard)
    tty: bool | None = None  # None: stdout is a terminal
    portal_port: int = 8443  # the web portal's port (another free one when it is taken)
    ready_timeout: float = 300.0  # a warning (not an exit) when the fleet is not Ready by then


# ------------------------------------------------------------------------------------------ checks
def validate(opts: UpOptions) -> None:
    """Counts and port; raises UpError before anything touches the disk."""
    if not 0 <= opts.clusters <= MAX_CLUSTERS:
        raise UpError(f"--clusters must be between 0 and {MAX_CLUSTERS} (got {opts.clusters})")
    if not 0 <= opts.nodes <= MAX_NODES:
        raise UpError(f"--nodes must be between 0 and {MAX_NODES} per cluster (got {opts.nodes})")
    if not 1 <= opts.port <= 65535:
        raise UpError(f"--port must be between 1 and 65535 (got {opts.port})")
    try:
        addr = ipaddress.ip_address(opts.host)
    except ValueError:
        raise UpError(f"--host must be an IP address of this machine (got {opts.host!r})") from None
    if addr.is_unspecified:
        raise UpError(f"--host {opts.host} would listen on every interface; pass one address of this machine "
                      "(127.0.0.1 keeps the fleet to itself)")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket(_family(host)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise UpError(f"--host {host} is not an address of this machine") from None
            raise UpError(f"port {port} is not available on {host} ({e.strerror}); pass a free one, e.g. "
                          f"--port {_free_port(host)}") from None


PORT_SPAN: Final = 128  # NodePorts of one fleet: 4 per cluster (API server, node driver, 2 metrics), room to spare


def _port_range(data_dir: Path) -> str:
    """The business clusters' NodePort range of this fleet: chosen once at random among free ports (so two
    fleets, or a fleet and a test, on one machine rarely meet), then kept in the data dir (restarts reuse it)."""
    path = data_dir / "port-range"
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        lo, _, hi = text.partition("-")
        if lo.isdigit() and hi.isdigit():
            return text
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(30000, 32768 - PORT_SPAN)
        if all(_bindable(p) for p in range(base, base + PORT_SPAN)):
            break
    text = f"{base}-{base + PORT_SPAN - 1}"
    path.write_text(text + "\n")
    return text


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _lock_holder(data_dir: Path) -> str:
    with contextlib.suppress(OSError):
        return (data_dir / LOCK_FILE).read_text().strip()
    return "?"


def _try_lock(data_dir: Path) -> IO[str] | None:
    f = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def preflight(opts: UpOptions, notify: Callable[[str], None] | None = None) -> IO[str]:
    """Validate, prepare and lock the data dir, end what a killed `kokpit up` left running there, check the
    port; returns the held lock (keep it open)."""
    validate(opts)
    d = opts.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UpError(f"cannot write to data dir {d} ({e.strerror or e}); pass a writable --data-dir") from None
    fmt = d / "FORMAT"
    if fmt.exists():
        found = fmt.read_text().strip()
        if found != DATA_FORMAT:
            raise UpError(f"data dir {d} holds data of an incompatible kokpit version (format {found!r}, this "
                          f"kokpit needs {DATA_FORMAT!r}); move it away or pass another --data-dir")
    elif any(p.name != LOCK_FILE for p in d.iterdir()):
        raise UpError(f"{d} is not empty and is not a kokpit data dir (no FORMAT file); pass another --data-dir")
    lock = _try_lock(d)
    if lock is None:
        raise UpError(f"data dir {d} is in use by another kokpit up (pid {_lock_holder(d)}); stop it first "
                      "(Ctrl-C) or pass another --data-dir")
    try:
        left = _end_leftovers(d)
        if left and notify is not None:
            notify(f"ended {left} processes a previous kokpit up on {d} left running")
        _check_port(opts.port, opts.host)
        if not fmt.exists():
            fmt.write_text(DATA_FORMAT + "\n")
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    except BaseException:
        lock.close()
        raise
    return lock


# ------------------------------------------------------------------------------------------ output
class Reporter:
    """Progress lines, and the live summary on a terminal (plain lines when stdout is not one)."""

    def __init__(self, data_dir: Path, tty: bool) -> None:
        self.data_dir = data_dir
        self.tty = tty
        self.console = Console(highlight=False) if tty else None
        self.t0 = time.monotonic()
        self.live: Live | None = None
        self._last_lines: dict[str, str] = {}

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def line(self, text: str) -> None:
        if self.console is not None:
            if self.live is not None:
                self.live.console.print(text)
            else:
                self.console.print(text)
        else:
            print(f"[{self.elapsed:6.1f}s] {text}", flush=True)

    def start_live(self) -> None:
        if self.console is not None and self.live is None:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.start()

    def show(self, snap: Snapshot, *, ready: bool) -> None:
        if self.live is not None:
            title = "kokpit fleet — ready" if ready else "kokpit fleet — coming up"
            self.live.update(render_rich(snap, self.data_dir, title=title, elapsed=self.elapsed))
            return
        if self.console is not None:
            return
        for c in snap.clusters:  # plain mode: one line per cluster whenever it changes
            nodes = c.unreadable if c.unreadable and c.nodes_ready < 0 and c.nodes_total else \
                f"{max(c.nodes_ready, 0)}/{c.nodes_total}"
            text = (f"{c.namespace}/{c.name}: ready={c.ready} version={c.version} nodes "
                    f"{nodes} machines {max(c.machines_converged, 0)}/{c.nodes_total}")
            if self._last_lines.get(c.name) != text:
                self._last_lines[c.name] = text
                self.line(text)

    def summary(self, snap: Snapshot) -> None:
        if self.console is None:
            print(render_text(snap, self.data_dir, elapsed=self.elapsed), flush=True)

    def stop_live(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


# ------------------------------------------------------------------------------------------ the fleet
def _kokpit(*args: str) -> list[str]:
    return [sys.executable, "-m", "kokpit.cli.main", *args]


async def _create_missing(client: Client, kind: Kind, bodies: list[Obj], namespace: str | None = None,
                          concurrency: int = 16) -> int:
    """Create the objects that do not exist yet (by name); returns how many were created."""
    have = {o["metadata"]["name"] for o in (await client.list(kind, namespace)).items}
    todo = [b for b in bodies if b["metadata"]["name"] not in have]
    sem = asyncio.Semaphore(concurrency)

    async def one(body: Obj) -> int:
        async with sem:
            try:
                await client.create(kind, body, namespace)
            except AlreadyExistsError:
                return 0
            return 1

    return sum(await asyncio.gather(*(one(b) for b in todo)))


async def _retry(what: Callable[[], Awaitable[Any]], stop: asyncio.Event, delay: float = 0.5) -> Any:
    """Call until it works (business API servers come and go while they start)."""
    while not stop.is_set():
        try:
            return await what()
        except (ApiError, TransportError, OSError, TimeoutError):
            await asyncio.sleep(delay)
    return None


class Up:
    """One `kokpit up` run: start, converge, show, stop."""

    def __init__(self, opts: UpOptions, reporter: Reporter) -> None:
        self.opts = opts
        self.r = reporter
        d = opts.data_dir
        self.data_dir = d
        self.meta_kubeconfig = d / "kubeconfig"
        self.stop = asyncio.Event()
        self.children: dict[str, Child] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.meta: Client | None = None
        self.fleet: Fleet | None = None
        self.ready_at: float | None = None
        self.pids: dict[str, int] = {}
        self.events = ComponentEvents()
        self.node_tokens: dict[str, str] = {}

    def _child(self, name: str, argv: list[str]) -> Child:
        def exited(name: str, code: int, delay: float) -> None:
            self.r.line(f"{name} exited with code {code}; restarting in {delay:.0f}s "
                        f"(log: {self.data_dir / 'logs' / (name + '.log')})")
            self.events.exited(name, code, self.data_dir / "logs" / f"{name}.log")  # a Warning on Node local
        c = Child(name, argv, self.data_dir / "logs" / f"{name}.log", on_exit=exited, on_spawn=self._spawned)
        self.children[name] = c
        return c

    def _spawned(self, name: str, pid: int) -> None:
        """Remember every child's process group, so a `kokpit up` after a kill -9 of this one can end them."""
        self.pids[name] = pid
        path = self.data_dir / PIDS_FILE
        path.write_text(json.dumps(self.pids))

    async def _start_apiserver(self) -> Client:
        d = self.data_dir
        with contextlib.suppress(FileNotFoundError):
            self.meta_kubeconfig.unlink()  # rewritten once the server listens: its appearance means "bound"
        self.node_tokens = node_tokens(d / "meta" / NODE_TOKENS)  # the local kubelet is system:node:local
        api = self._child("apiserver", _kokpit("apiserver", "--data-dir", str(d / "meta"), "--port",
                                               str(self.opts.port), "--host", self.opts.host,
                                               "--kubeconfig", str(self.meta_kubeconfig),
                                               "--token-auth-file", str(d / "meta" / NODE_TOKENS)))
        await api.start()
        deadline = time.monotonic() + 60
        while not self.meta_kubeconfig.exists():
            if not api.running:
                why = api.tail(1).removeprefix("error: ") or f"see {api.log_file}"
                raise UpError(f"the meta API server did not start: {why}")
            if time.monotonic() > deadline:
                raise UpError(f"the meta API server did not start within 60s; see {api.log_file}")
            await asyncio.sleep(0.05)
        client = Client.from_kubeconfig(self.meta_kubeconfig, field_manager="kokpit-up")
        while True:
            try:
                await client.get(NAMESPACE, "default")
                return client
            except (ApiError, TransportError, OSError):
                if time.monotonic() > deadline or not api.running:
                    await client.close()
                    raise UpError(f"the meta API server is not answering; see {api.log_file}") from None
                await asyncio.sleep(0.1)

    def _metrics_args(self, port: int) -> list[str]:
        """A child's /metrics: HTTPS on this machine's address, served to whom the meta API server allows (each
        child asks it with its own identity — TokenReview, SubjectAccessReview — as the manifests' Deployments
        do; the read-only token is bound to system:monitoring, so `kokpit status` scrapes with it)."""
        return ["--metrics-host", self.opts.host, "--metrics-port", str(port)]

    async def _business_setup(self, name: str) -> None:
        """CRDs, MachinePackageVersions and one Machine per simulated node in one business cluster."""
        assert self.fleet is not None
        fleet = self.fleet
        client: Client | None = None
        while client is None and not self.stop.is_set():
            client = await _retry(lambda: fleet.business(CLUSTER_NAMESPACE, name), self.stop)
            if client is None:
                await asyncio.sleep(0.5)
        if client is None:
            return
        c = client
        await _retry(lambda: install_crds(c, timeout=10), self.stop)
        made = await _retry(lambda: _create_missing(c, MPV, mpvs()), self.stop)
        meta = self.meta
        assert meta is not None
        cl = await _retry(lambda: meta.get(CLUSTER, name, CLUSTER_NAMESPACE), self.stop)
        nodes = int(((cl or {}).get("spec") or {}).get("simulation", {}).get("nodes") or 0)
        machines = await _retry(lambda: _create_missing(c, MACHINE, machine_bodies(nodes)), self.stop)
        if made or machines:
            self.r.line(f"{name}: created {made or 0} MachinePackageVersions and {machines or 0} Machines")
        workloads = 0
        for body in workload_bodies():
            workloads += await _retry(self._creator(c, body), self.stop) or 0
        if workloads:
            self.r.line(f"{name}: created {workloads} workload objects (kubectl get pods -A -o wide)")

    @staticmethod
    def _creator(c: Client, body: Obj) -> Callable[[], Awaitable[int]]:
        kind = WORKLOAD_KINDS[body["kind"]]
        ns = body["metadata"].get("namespace") if kind.namespaced else None
        return lambda: _create_missing(c, kind, [body], ns)

    async def _startup(self) -> None:
        d, o = self.data_dir, self.opts
        self.r.line(f"starting the meta API server on https://{_url_host(o.host)}:{o.port} (data in {d})")
        self.meta = meta = await self._start_apiserver()
        self.events.bind(meta)
        self.r.line("meta API server ready; installing CRDs")
        await install_crds(meta)
        made = await _create_missing(meta, CPV, cpvs())
        if made:
            self.r.line(f"created {made} ClusterPackageVersions")
        kubelet_metrics = _free_port(o.host)
        # each component runs as its ServiceAccount with the RBAC the install manifests give it
        identities = await install_identities(meta, self.meta_kubeconfig, d / "identities", nodes=self.node_tokens)
        await self._child("kubelet", _kokpit("kubelet", "--kubeconfig", str(identities["local-kubelet"]), "--data-dir",
                                             str(d / "kubelet"), "--address", o.host, "--backoff-base", "1",
                                             "--backoff-cap", "30", "--stop-pods-on-exit",
                                             *self._metrics_args(kubelet_metrics))).start()
        record_endpoint(d, "kubelet", f"https://{_url_host(o.host)}:{kubelet_metrics}/metrics")
        # the meta cluster's own Deployment/ReplicaSet/PDB controllers: `kubectl apply -k deploy/` runs by itself
        kcm_metrics = _free_port(o.host)
        await self._child("controller-manager", _kokpit(
            "controller-manager", "--kubeconfig", str(identities["meta-controller-manager"]),
            "--controllers", "deployment,replicaset,disruption", *self._metrics_args(kcm_metrics))).start()
        record_endpoint(d, "controller-manager", f"https://{_url_host(o.host)}:{kcm_metrics}/metrics")
        op_metrics = _free_port(o.host)
        sans = [] if o.host == "127.0.0.1" else ["--apiserver-san", o.host]  # business API servers, drivers
        await self._child("cluster-operator", _kokpit("cluster-operator", "--kubeconfig",
                                                      str(identities["cluster-operator"]),
                                                      "--data-root", "/clusters", *sans, "--ask-risk-center",
                                                      "--port-range", _port_range(d), *self._metrics_args(op_metrics))
                          ).start()
        record_endpoint(d, "cluster-operator", f"https://{_url_host(o.host)}:{op_metrics}/metrics")
        risk_metrics = _free_port(o.host)
        await self._child("risk-center", _kokpit("risk-center", "--kubeconfig", str(identities["risk-center"]),
                                                 "--default-policies", *self._metrics_args(risk_metrics))).start()
        record_endpoint(d, "risk-center", f"https://{_url_host(o.host)}:{risk_metrics}/metrics")
        ro_metrics = _free_port(o.host)  # canary rollouts (issue 16), as its ServiceAccount
        await self._child("rollout-controller", _kokpit("rollout-controller", "--kubeconfig", str(identities[
            "rollout-controller"]), *self._metrics_args(ro_metrics))).start()
        record_endpoint(d, "rollout-controller", f"https://{_url_host(o.host)}:{ro_metrics}/metrics")
        self.r.line("started the local kubelet, the cluster operator, the risk center and the rollout controller")
        await self._start_portal(identities["portal"])
        names = cluster_names(o.clusters)
        made = await _create_missing(meta, CLUSTER, [cluster_body(n, o.nodes) for n in names], CLUSTER_NAMESPACE)
        existing = [c["metadata"]["name"] for c in (await meta.list(CLUSTER, CLUSTER_NAMESPACE)).items]
        self.r.line(f"created {made} Clusters; {len(existing) - made} resumed"
                    if made else f"resuming {len(existing)} Clusters")
        # bootstrapped: from here on `kokpit up` only watches, as its own least-privilege identity (component
        # `up` of kokpit.manifests); the admin kubeconfig it printed is the user's alone
        own = Client.from_kubeconfig(identities["up"], field_manager="kokpit-up")
        self.events.bind(own)
        await meta.close()
        self.meta = meta = own
        self.fleet = Fleet(meta, d / "kubeconfigs")
        for n in existing:
            self.tasks.append(asyncio.create_task(self._business_setup(n), name=f"setup-{n}"))

    async def _start_portal(self, identity: Path) -> None:
        """The web portal as its own identity (issue 17); people log in with their own tokens."""
        o, d = self.opts, self.data_dir
        port = o.portal_port if _bindable(o.portal_port) else _free_port(o.host)
        metrics = _free_port(o.host)
        await self._child("portal", _kokpit("portal", "--kubeconfig", str(identity), "--host", o.host, "--port",
                                            str(port), "--data-dir", str(d / "portal"),
                                            "--url-file", str(d / "portal" / "url"),
                                            *self._metrics_args(metrics))).start()
        record_endpoint(d, "portal", f"https://{_url_host(o.host)}:{metrics}/metrics")
        self.r.line(f"portal: https://{_url_host(o.host)}:{port} (CA: {d / 'portal' / 'pki' / 'ca.crt'}) — log in "
                    f"with the token `kokpit portal token --data-dir {d}` prints (read-only: add --viewer)")

    async def _watch(self) -> None:
        assert self.fleet is not None
        self.r.start_live()
        want = self.opts.clusters
        warned = False
        while not self.stop.is_set():
            snap = await self.fleet.snapshot()
            ready = snap.ready(want)
            self.r.show(snap, ready=ready)
            if ready and self.ready_at is None:
                self.ready_at = self.r.elapsed
                total = sum(c.nodes_total for c in snap.clusters)
                self.r.line(f"fleet ready: {len(snap.clusters)} clusters, {total} nodes in {self.ready_at:.1f}s")
                self.r.summary(snap)
            elif not ready and self.r.elapsed > self.opts.ready_timeout and not warned:
                warned = True
                self.r.line(f"the fleet is not Ready after {self.opts.ready_timeout:.0f}s; logs are in "
                            f"{self.data_dir / 'logs'}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            work = asyncio.create_task(self._startup_and_watch())
            stopper = asyncio.create_task(self.stop.wait())
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if work.done():
                work.result()  # an UpError from startup
            else:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        finally:
            self.r.stop_live()
            await self.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _startup_and_watch(self) -> None:
        await self._startup()
        await self._watch()

    async def shutdown(self) -> None:
        """Operator and kubelet first (the kubelet ends its Pods), then any Pod it left, then the API server."""
        if self.children:
            self.r.line("stopping: " + ", ".join(reversed(self.children)))
        self.stop.set()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.fleet is not None:
            await self.fleet.close()
        await self.events.close()
        if self.meta is not None:
            await self.meta.close()
        t0 = time.monotonic()
        took: dict[str, float] = {}

        async def stop(c: Child, timeout: float) -> None:
            await c.stop(timeout=timeout)
            took[c.name] = time.monotonic() - t0

        async def pods_too() -> None:
            # the kubelet ends its Pods one after another; ending them all at once (the kubelet has stopped
            # its workers by then, so none is restarted) turns a shutdown of seconds per Pod into one
            await asyncio.sleep(0.3)
            _signal_pods(self.data_dir / "kubelet", signal.SIGTERM)

        await asyncio.gather(pods_too(), *(stop(c, 10) for n, c in self.children.items() if n != "apiserver"))
        _signal_pods(self.data_dir / "kubelet", signal.SIGKILL)
        if "apiserver" in self.children:
            await stop(self.children["apiserver"], 8)
        if self.children:
            self.r.line(f"stopped in {time.monotonic() - t0:.1f}s (" +
                        ", ".join(f"{n} {t:.1f}s" for n, t in took.items()) + ")")


def _ours(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes() or \
            marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _end_leftovers(data_dir: Path) -> int:
    """After a kill -9 of `kokpit up` its children live on (own sessions) holding the data dir: end them."""
    try:
        pids = [int(p) for p in json.loads((data_dir / PIDS_FILE).read_text()).values()]
    except (OSError, ValueError, TypeError, AttributeError):
        return 0
    marker = str(data_dir).encode()
    resolved = str(data_dir.resolve()).encode()
    ended = 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if pid > 1 and (_ours(pid, marker) or _ours(pid, resolved)) and kill_group(pid, sig):
                ended += sig == signal.SIGTERM
        if sig == signal.SIGTERM and ended:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(_ours(p, marker) or _ours(p, resolved) for p in pids):
                time.sleep(0.1)
    _signal_pods(data_dir / "kubelet", signal.SIGKILL)
    return ended


def _signal_pods(kubelet_dir: Path, sig: int) -> None:
    """Signal the process groups of the Pods the kubelet recorded (those still ours: pids get reused)."""
    try:
        raw = json.loads((kubelet_dir / "kubelet-state.json").read_text())
    except (OSError, ValueError):
        return
    marker = str(kubelet_dir.resolve()).encode()
    for pod in (raw.get("pods") or {}).values():
        for c in (pod.get("containers") or {}).values():
            pid = int(c.get("pid") or 0)
            if pid <= 1:
                continue
            if _ours(pid, marker):
                kill_group(pid, sig)


def run_up(opts: UpOptions) -> int:
    """`kokpit up`: returns the exit code (errors are printed as one line on stderr)."""
    tty = sys.stdout.isatty() if opts.tty is None else opts.tty
    reporter = Reporter(opts.data_dir, tty)
    try:
        lock = preflight(opts, reporter.line)
    except UpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    up = Up(opts, reporter)
    try:
        asyncio.run(up.run())
    except UpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        lock.close()
    return 0


# ------------------------------------------------------------------------------------------ status, kubeconfig
def _running(data_dir: Path) -> None:
    if not (data_dir / "FORMAT").exists():
        raise UpError(f"{data_dir} is not a kokpit data dir; pass the --data-dir kokpit up uses")
    lock = _try_lock(data_dir)
    if lock is not None:
        lock.close()
        raise UpError(f"no kokpit up is running on {data_dir}; start one with: kokpit up --data-dir {data_dir}")


def status(data_dir: Path) -> int:
    """`kokpit status`: print the one-screen summary of the running fleet."""
    async def go() -> tuple[Snapshot, list[MetricsEndpoint]]:
        meta = Client.from_kubeconfig(data_dir / "kubeconfig", field_manager="kokpit-status", max_retries=1,
                                      timeout=5.0)
        fleet = Fleet(meta, data_dir / "kubeconfigs")
        try:
            snap = await fleet.snapshot()
            eps = await metrics_endpoints(meta, data_dir, meta.server)
            await check_metrics(eps)
            return snap, eps
        finally:
            await fleet.close()
            await meta.close()

    try:
        _running(data_dir)
        snap, eps = asyncio.run(go())
    except UpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if sys.stdout.isatty():
        Console(highlight=False).print(render_rich(snap, data_dir, title="kokpit fleet"))
    else:
        print(render_text(snap, data_dir))
    print(render_metrics(eps))
    return 1 if snap.error else 0


def kubeconfig(cluster: str, namespace: str, data_dir: Path) -> int:
    """`kokpit kubeconfig CLUSTER`: print a business cluster's admin kubeconfig."""
    async def go() -> bytes:
        meta = Client.from_kubeconfig(data_dir / "kubeconfig", field_manager="kokpit-kubeconfig", max_retries=1,
                                      timeout=5.0)
        try:
            try:
                return await read_kubeconfig(meta, cluster, namespace)
            except NotFoundError:
                try:
                    await meta.get(CLUSTER, cluster, namespace)
                except NotFoundError:
                    raise UpError(f"no Cluster {namespace}/{cluster}; list them with: kokpit status "
                                  f"--data-dir {data_dir}") from None
                raise UpError(f"Cluster {namespace}/{cluster} has no kubeconfig yet (it is still being "
                              "provisioned); try again in a few seconds") from None
            except (ApiError, TransportError, OSError) as e:
                raise UpError(f"cannot reach the meta API server ({e}); is kokpit up running on "
                              f"{data_dir}?") from None
        finally:
            await meta.close()

    try:
        _running(data_dir)
        raw = asyncio.run(go())
    except UpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(raw.decode())
    sys.stdout.flush()
    return 0
