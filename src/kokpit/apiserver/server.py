"""Assembles and runs one embedded API server: data dir, PKI, tokens, store, registry, controllers, HTTP.

One process per data directory (an exclusive lock says so at start), because two servers on one SQLite
log would hand out the same resourceVersion twice.  With ``standby`` a second process waits for that lock
instead of failing, and takes over (opens the store, binds the port) the moment the active one ends: how the
cluster operator runs more than one API server replica of a business cluster on its one data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import uvicorn

from kokpit.apiserver import builtins, schema, subresources
from kokpit.apiserver.admission_policy import AdmissionPolicies
from kokpit.apiserver.app import App, AppConfig
from kokpit.apiserver.auth import Authenticator, load_token_file
from kokpit.apiserver.controllers import Controllers
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.pki import Tokens, ensure_pki, ensure_tokens, write_kubeconfig
from kokpit.apiserver.priority import PriorityAdmission, ensure_system_priority_classes
from kokpit.apiserver.rbac import RBACAuthorizer
from kokpit.apiserver.rbac_admission import Admission, ServiceAccountControllers
from kokpit.apiserver.rbac_node import NodeAuthorizer
from kokpit.apiserver.rbac_policy import Aggregator, ensure_bootstrap_policy
from kokpit.apiserver.rbac_requests import Authorization, rbac_resource_types
from kokpit.apiserver.rbac_tokens import TokenIssuer, load_or_create_key
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.rest import NAMESPACE_FINALIZER, Rest, WriteOptions
from kokpit.apiserver.storage.store import Store

__all__ = ["AUTHORIZATION_MODES", "DataDirInUse", "ServerOptions", "build", "run"]

log = logging.getLogger(__name__)

DATA_FORMAT = "1"
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
AUTHORIZATION_MODES = ("Node,RBAC", "RBAC", "AlwaysAllow")


class DataDirInUse(RuntimeError):
    """Another server holds the data directory."""


@dataclass
class ServerOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 6443
    kubeconfig: Path | None = None
    version_label: str = "v1.37.0"
    tls: bool = True
    compaction_window: int = 50_000
    compaction_interval: float = 60.0
    event_ttl: float = 3600.0
    bookmark_interval: float = 60.0
    extra_sans: list[str] = field(default_factory=list)
    # PKI and tokens minted by whoever starts the server (the cluster operator, through a mounted Secret);
    # unset, the server keeps its own under the data dir.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    ca_file: Path | None = None  # the CA that signed tls_cert_file, written into the kubeconfigs
    token_file: Path | None = None  # JSON {"admin": ..., "readonly": ...}
    # what this server presents to kubelets (pods/log); default: its own PKI's (DATA/pki/kubelet-client.*)
    kubelet_client_cert_file: Path | None = None
    kubelet_client_key_file: Path | None = None
    # wait for the data dir's lock (a hot standby) instead of failing when another server holds it
    standby: bool = False
    standby_poll: float = 0.2
    instance: str = ""  # the name this process answers health checks with (default host/pid)
    # kube-apiserver's --authorization-mode: Node,RBAC (kubelets by the Node authorizer and NodeRestriction,
    # everyone by RBAC), RBAC, or AlwaysAllow (every authenticated request; benchmarks)
    authorization_mode: str = "Node,RBAC"
    # kube-apiserver's --token-auth-file (CSV token,user,uid,"groups"): e.g. kubelets as system:node:NAME
    token_auth_file: Path | None = None
    service_account_key_file: Path | None = None  # RSA key signing ServiceAccount tokens (default DATA/sa.key)


@dataclass
class Built:
    store: Store
    registry: Registry
    rest: Rest
    app: App
    controllers: Controllers
    lock: IO[str]
    authorization: Authorization
    aggregator: Aggregator
    sa_controllers: ServiceAccountControllers


def _lock_data_dir(data_dir: Path) -> IO[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fmt = data_dir / "FORMAT"
    if fmt.exists():
        found = fmt.read_text().strip()
        if found != DATA_FORMAT:
            raise RuntimeError(f"{data_dir} holds data format {found!r}; this kokpit reads format "
                               f"{DATA_FORMAT!r}. Use another --data-dir or a matching kokpit version.")
    else:
        fmt.write_text(DATA_FORMAT + "\n")
    f = open(data_dir / "apiserver.lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DataDirInUse(f"{data_dir} is in use by another kokpit apiserver") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _wire_builtins(registry: Registry) -> None:
    for rt in [*builtins.builtin_resource_types(), *rbac_resource_types()]:
        if rt.kind == "CustomResourceDefinition":
            rt.validate_hook = lambda obj, old: list(schema.validate_crd(obj))
        if rt.kind == "Namespace" and rt.group == "":
            inner = rt.default_hook

            def ns_default(obj: dict[str, Any], inner: Any = inner) -> None:
                if inner is not None:
                    inner(obj)
                spec = obj.setdefault("spec", {})
                if not (obj.get("metadata") or {}).get("deletionTimestamp"):
                    fins = spec.setdefault("finalizers", [])
                    if not fins and "resourceVersion" not in (obj.get("metadata") or {}):
                        fins.append(NAMESPACE_FINALIZER)
                obj.setdefault("status", {}).setdefault("phase", "Active")

            rt.default_hook = ns_default
        registry.add(rt)


GC_THRESHOLDS = (10_000, 10, 10)
"""The cyclic collector's thresholds in the server process (Python's default is (700, 10, 10)). A write
allocates hundreds of short-lived dicts and lists (the request body, the patched object, its managedFields
tree, the answer), so at 700 a young collection ran every few requests and every ~100th of them was a full
one, scanning every object not yet frozen (all that was written since the last compaction's freeze): with 300
Pods and 2,000 Pod writes per phase, 8 full collections took 0.58 s of the 2.1 s of CPU (pod delete 320 µs of
CPU a request, 141 µs at 10,000). At 10,000 they run 14x less often; garbage without cycles is still freed at
once by reference counting, so memory does not wait for them."""


def _gc_tuning() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def _freeze_heap() -> None:
    """Move everything alive now out of the cyclic GC's reach. The store holds tens of thousands of
    long-lived, cycle-free objects; scanning them in every full collection cost ~400 ms pauses at 50k
    objects (measured with bench/apiserver.py). Freed objects are still released by reference counting."""
    gc.collect()
    gc.freeze()


async def _wait_for_data_dir(opts: ServerOptions, stop: asyncio.Event) -> IO[str] | None:
    """A standby's wait: poll the lock (flock has no async form) until it is ours or we are told to stop."""
    said = False
    while not stop.is_set():
        try:
            return _lock_data_dir(opts.data_dir)
        except DataDirInUse:
            if not said:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = (opts.data_dir / "apiserver.lock").read_text().strip()
                print(f"kokpit apiserver standing by: {opts.data_dir} is held by pid {holder or '?'}; "
                      "taking over when it ends", flush=True)
                said = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), opts.standby_poll)
    return None


async def build(opts: ServerOptions, auth: Authenticator | None, lock: IO[str] | None = None) -> Built:
    lock = lock or _lock_data_dir(opts.data_dir)
    store = Store(opts.data_dir / "state.db", compaction_window=opts.compaction_window)
    await store.open()
    _freeze_heap()
    registry = Registry()
    _wire_builtins(registry)
    rest = Rest(store, registry)
    controllers = Controllers(store, registry, rest, event_ttl=opts.event_ttl,
                              compaction_interval=opts.compaction_interval)
    controllers.load_crds()
    address = f"{opts.host}:{opts.port}" if ":" not in opts.host else f"[{opts.host}]:{opts.port}"
    instance = opts.instance or f"{socket.gethostname()}/{os.getpid()}"
    app = App(store, registry, rest, auth, AppConfig(version_label=opts.version_label, server_address=address,
                                                       instance=instance,
                                                       bookmark_interval=opts.bookmark_interval))
    if opts.authorization_mode not in AUTHORIZATION_MODES:
        raise RuntimeError(f"--authorization-mode must be one of {', '.join(AUTHORIZATION_MODES)} (got "
                           f"{opts.authorization_mode!r})")
    issuer = TokenIssuer(load_or_create_key(opts.service_account_key_file or opts.data_dir / "sa.key"), store)
    authorizer = RBACAuthorizer(store)
    nodes = NodeAuthorizer(store) if opts.authorization_mode.startswith("Node,") else None
    authorization = Authorization(authorizer, issuer, node=nodes)
    authorization.enabled = opts.authorization_mode != "AlwaysAllow"
    app.rbac = authorization
    service_accounts = Admission(store.get, authorizer, node_restriction=nodes is not None)
    priorities = PriorityAdmission(rest, registry)
    store.listeners.append(priorities.on_event)
    vap = registry.get("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies")
    vapb = registry.get("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings")
    assert vap is not None and vapb is not None
    policies = AdmissionPolicies(rest, vap, vapb)
    store.listeners.append(policies.on_event)

    def admit(rt: Any, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        priorities(rt, obj, old)
        service_accounts(rt, obj, old)
        policies.admit(rt, obj, old)  # validating after the mutating steps, as kube orders them

    rest.admit = admit
    rest.admit_delete = policies.delete
    if auth is not None:
        auth.service_accounts = issuer.authenticate
        authorization.authenticate = lambda token: auth.authenticate(f"Bearer {token}")
    ns_rt = registry.get("", "v1", "namespaces")
    assert ns_rt is not None
    for ns in _DEFAULT_NAMESPACES:
        if store.get(ns_rt.key(None, ns)) is None:
            with contextlib.suppress(APIError):
                await rest.create(ns_rt, None, {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": ns}},
                                  WriteOptions(field_manager="kokpit-apiserver"))
    await controllers.start()
    await ensure_bootstrap_policy(rest, registry)
    await ensure_system_priority_classes(rest, registry)
    aggregator = Aggregator(rest, registry)
    await aggregator.start()
    sa_controllers = ServiceAccountControllers(rest, registry, issuer)
    await sa_controllers.start()
    return Built(store, registry, rest, app, controllers, lock, authorization, aggregator, sa_controllers)


def _hosts(opts: ServerOptions) -> list[str]:
    hosts = [opts.host, *opts.extra_sans]
    with contextlib.suppress(OSError):
        hosts.append(socket.gethostname())
    out = []
    for h in hosts:
        if h in ("0.0.0.0", "::", ""):
            continue
        out.append(h)
    return out


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]"
    return host


async def serve(opts: ServerOptions) -> None:
    """Run until SIGTERM/SIGINT. Writes the admin kubeconfig once the port is bound."""
    data_dir = opts.data_dir
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lock: IO[str] | None = None
    if opts.standby:
        lock = await _wait_for_data_dir(opts, stop)
        if lock is None:
            return
    tokens = _load_tokens(opts.token_file) if opts.token_file else ensure_tokens(data_dir)
    try:
        static = load_token_file(opts.token_auth_file) if opts.token_auth_file else None
    except (OSError, ValueError) as e:
        raise RuntimeError(f"--token-auth-file: {e}") from None
    auth = Authenticator(tokens, extra=static)
    _gc_tuning()
    built = await build(opts, auth, lock)
    ssl_kwargs: dict[str, Any] = {}
    ca_pem: bytes | None = None
    kubelet_client = (opts.kubelet_client_cert_file, opts.kubelet_client_key_file)
    if opts.tls and opts.tls_cert_file and opts.tls_key_file:
        ssl_kwargs = {"ssl_certfile": str(opts.tls_cert_file), "ssl_keyfile": str(opts.tls_key_file)}
        ca_pem = opts.ca_file.read_bytes() if opts.ca_file else None
    elif opts.tls:
        pki = ensure_pki(data_dir, _hosts(opts))
        ssl_kwargs = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
        ca_pem = pki.ca_pem
        if kubelet_client[0] is None:
            kubelet_client = (pki.kubelet_client_cert, pki.kubelet_client_key)
    if kubelet_client[0] is not None and kubelet_client[1] is not None:
        try:
            built.app.kubelet_tls = subresources.kubelet_client_context(kubelet_client[0], kubelet_client[1])
        except (OSError, ssl.SSLError) as e:
            await _shutdown(built)
            raise RuntimeError(f"cannot load the kubelet client certificate {kubelet_client[0]}: {e}") from None
    built.sa_controllers.set_root_ca(ca_pem)
    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((opts.host, opts.port))
    except OSError as e:
        sock.close()
        await _shutdown(built)
        raise RuntimeError(f"cannot listen on {opts.host}:{opts.port}: {e.strerror}. Choose another --port.") \
            from None
    sock.listen(2048)
    port = sock.getsockname()[1]
    scheme = "https" if opts.tls else "http"
    url = f"{scheme}://{_url_host(opts.host)}:{port}"
    config = uvicorn.Config(built.app, log_level="warning", access_log=False, lifespan="off",
                            http="httptools", loop="none", timeout_keep_alive=120, backlog=2048,
                            timeout_graceful_shutdown=3, **ssl_kwargs)
    server = _Server(config)
    kubeconfig = opts.kubeconfig or (data_dir / "kubeconfig")
    write_kubeconfig(kubeconfig, server=url, ca_pem=ca_pem, token=tokens.admin)
    write_kubeconfig(data_dir / "viewer.kubeconfig", server=url, ca_pem=ca_pem, token=tokens.readonly,
                     user="kokpit-viewer")
    (data_dir / "endpoint").write_text(url + "\n")
    log.info("kokpit apiserver listening on %s (kubeconfig %s)", url, kubeconfig)
    print(f"kokpit apiserver listening on {url}; kubeconfig: {kubeconfig}", flush=True)

    serve_task = asyncio.create_task(server.serve(sockets=[sock]))
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({serve_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    built.store.close_watchers()  # open watches would otherwise hold the graceful shutdown to its timeout
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(serve_task, timeout=5)
    stop_task.cancel()
    await _shutdown(built)


def _load_tokens(path: Path) -> Tokens:
    try:
        raw = json.loads(path.read_bytes())
        return Tokens(admin=str(raw["admin"]), readonly=str(raw["readonly"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"--token-file {path}: expected JSON with admin and readonly tokens ({e})") from None


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: `serve` handles SIGTERM/SIGINT so it can end open watches
    first (they would otherwise hold the graceful shutdown until its timeout)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _shutdown(built: Built) -> None:
    await built.sa_controllers.stop()
    await built.aggregator.stop()
    built.authorization.authorizer.close()
    if built.authorization.node is not None:
        built.authorization.node.close()
    await built.controllers.stop()
    await built.store.close()
    built.lock.close()


def run(opts: ServerOptions) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the server works without it
        pass
    asyncio.run(serve(opts))
