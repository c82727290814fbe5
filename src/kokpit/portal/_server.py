"""Running the portal: options, TLS, the uvicorn server, and the caches' lifetime.

HTTPS by default, with a certificate given on the command line (a real install mounts one) or, without one,
a CA and serving certificate kokpit makes once under the data dir (``pki/ca.crt`` is what a browser may be
told to trust), like the API server's own.  Plain HTTP is accepted only on a loopback address, where no one
else can read the cookies.  A wildcard address is refused: servers bind to the address they were asked for.

With ``metrics_port`` the portal serves Prometheus metrics (its HTTP answers by method and code, its API calls)
on an endpoint of its own, as every process `kokpit up` starts does (``kokpit._lib.metricsserver``): HTTPS,
bearer tokens given, or else whom the meta API server allows (TokenReview, SubjectAccessReview on /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter

from kokpit._lib import pki
from kokpit._lib.metricsserver import MetricsServer
from kokpit.client import Client, load_config
from kokpit.portal._app import Portal, build_app
from kokpit.portal._audit import Auditor
from kokpit.portal._auth import UserClients
from kokpit.portal._cache import FleetCache
from kokpit.portal._session import SessionCodec, load_or_create_key
from kokpit.portal._web import Web
from kokpit.runtime.leaderelection import LeaderElectionConfig
from kokpit.runtime.metricsauth import DelegatedMetricsAuth

__all__ = ["PortalOptions", "PortalServer", "check_address", "run_portal"]

log = logging.getLogger("kokpit.portal")


@dataclass
class PortalOptions:
    kubeconfig: Path | None = None  # the portal's own identity (reads for the caches; never a user's change)
    host: str = "127.0.0.1"
    port: int = 8443
    data_dir: Path = Path(".kokpit/portal")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    http: bool = False  # plain HTTP (loopback only)
    session_key_file: Path | None = None
    business: bool = True  # watch business clusters (node counts, Machines)
    business_interval: float = 2.0  # how often Clusters are checked for new business API servers
    url_file: Path | None = None  # where to write the URL once listening (for kokpit up and tests)
    sweep_interval: float = 60.0  # idle user clients closed, long-lived cache objects frozen out of the GC
    extensions: list[Callable[[Portal], Awaitable[None]]] = field(default_factory=list)
    # replicas > 1: the change engine runs only in the replica holding this Lease (every replica serves)
    leader_elect: bool = False
    lease_namespace: str = "kokpit-system"
    lease_name: str = "kokpit-portal"
    metrics_port: int | None = None  # serve /metrics there (0: a free port); None: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    metrics_tokens: list[str] = field(default_factory=list)  # empty: the meta API server decides who may scrape


def check_address(host: str, http: bool) -> None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host must be an IP address (got {host!r})") from None
    if addr.is_unspecified:
        raise ValueError(f"--host {host} would listen on every interface; pass one address")
    if http and not addr.is_loopback:
        raise ValueError("--http serves cookies in the clear: only on a loopback address (127.0.0.1, ::1); "
                         "use HTTPS elsewhere")


def _tls_files(opts: PortalOptions) -> tuple[Path, Path]:
    if opts.tls_cert_file and opts.tls_key_file:
        return opts.tls_cert_file, opts.tls_key_file
    d = opts.data_dir / "pki"
    crt, key, ca = d / "tls.crt", d / "tls.key", d / "ca.crt"
    hosts = [opts.host, "127.0.0.1", "localhost"]
    if crt.exists() and key.exists() and pki.serving_cert_covers(crt.read_bytes(), hosts):
        return crt, key
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    authority = pki.new_ca("kokpit-portal-ca")
    leaf = pki.new_serving_cert(authority, hosts, common_name="kokpit-portal")
    for path, data, mode in ((key, leaf.key_pem, 0o600), (crt, leaf.cert_pem + authority.cert_pem, 0o644),
                             (ca, authority.cert_pem, 0o644)):
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
    return crt, key


class _CountAnswers:
    """ASGI middleware: every HTTP answer counted by method and status code."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.answers = Counter("kokpit_portal_http_requests", "HTTP requests the portal answered, by method and "
                               "status code", ["method", "code"], registry=registry)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Any) -> None:
            if message.get("type") == "http.response.start":
                self.answers.labels(str(scope.get("method", "")), str(message.get("status", ""))).inc()
            await send(message)
        await self.app(scope, receive, counted)


class PortalServer:
    """The portal in this process: :meth:`start` returns its URL; :meth:`stop` ends it."""

    def __init__(self, opts: PortalOptions) -> None:
        check_address(opts.host, opts.http)
        self.opts = opts
        self.url = ""
        self.portal: Portal | None = None
        self._meta: Client | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.metrics: MetricsServer | None = None

    async def start(self) -> str:
        o = self.opts
        o.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = load_config(o.kubeconfig)
        self._meta = meta = Client(config, field_manager="kokpit-portal")
        cache = FleetCache(meta, business=o.business, business_interval=o.business_interval)
        key = load_or_create_key(o.session_key_file or o.data_dir / "session.key")
        web = Web(SessionCodec(key), UserClients(config), secure_cookies=not o.http)
        self.portal = portal = Portal(cache, web, Auditor(meta))
        if o.leader_elect:
            portal.lease = LeaderElectionConfig(name=o.lease_name, namespace=o.lease_namespace)
        for ext in o.extensions:
            await ext(portal)
        await cache.start()
        for begin in portal.on_start:
            begin()
        app: Any = build_app(portal)
        if o.metrics_port is not None:
            registry = meta.metrics.registry
            app = _CountAnswers(app, registry)
            self.metrics = MetricsServer(registry, host=o.metrics_host,
                                         port=o.metrics_port, tokens=o.metrics_tokens,
                                         authorize=None if o.metrics_tokens else DelegatedMetricsAuth(meta))
            await self.metrics.start()
        tls: dict[str, str] = {}
        if not o.http:
            crt, keyfile = await asyncio.to_thread(_tls_files, o)
            tls = {"ssl_certfile": str(crt), "ssl_keyfile": str(keyfile)}
        cfg = uvicorn.Config(app, host=o.host, port=o.port, log_level="warning", access_log=False,
                             lifespan="off", timeout_graceful_shutdown=2, **tls)  # type: ignore[arg-type]
        self._server = server = _Server(cfg)
        self._task = asyncio.create_task(server.serve(), name="portal-http")
        while not server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the portal's HTTP server did not start")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{o.host}]" if ":" in o.host else o.host
        self.url = f"{'http' if o.http else 'https'}://{host}:{port}"
        gc.freeze()
        self._sweeper = asyncio.create_task(self._sweep(), name="portal-sweep")
        if o.url_file is not None:
            o.url_file.write_text(self.url + "\n")
        return self.url

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.opts.sweep_interval)
            if self.portal is not None:
                await self.portal.web.users.sweep()
            # the caches hold hundreds of thousands of long-lived dicts; a full collection walking them all took
            # most of a p99 page (bench/portal.py): move what survived so far out of the collector's sight
            # (objects replaced later are still freed by reference counting: cached objects hold no cycles)
            gc.freeze()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.portal is not None:
            self.portal.cache.hub.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        if self.portal is not None:
            for end in self.portal.on_stop:
                await end()
            await self.portal.cache.stop()
            await self.portal.web.users.close()
        if self._meta is not None:
            await self._meta.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the caller owns SIGTERM/SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_portal(opts: PortalOptions, *, on_url: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    srv = PortalServer(opts)
    url = await srv.start()
    if on_url is not None:
        on_url(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await srv.stop()
