"""Mutual TLS for the node driver protocol: only kokpit's own callers may tell a node what to do.

The driver endpoint installs and removes software and injects faults, so it is as sensitive as a kubelet's
API.  Both ends authenticate with certificates from one node-driver CA (``kokpit._lib.pki.driver_pki``; the
cluster operator keeps it in the per-Cluster PKI Secret, a standalone simulator in its data dir):

* a **server** (the simulator now, the node agent later) presents a ``serverAuth`` certificate and requires
  a client certificate signed by the CA (:func:`server_context`, :class:`DriverServer`);
* a **caller** (the machine operator, ``kokpit simulator fault``) presents a ``clientAuth`` certificate and
  verifies the server's against the same CA, host name included (:func:`client_context`).

OpenSSL checks the extended key usage on both sides, so a node's serving certificate can never be used to
call another node, and a caller's certificate can never serve.  Nothing else is trusted: no system CA, no
plain HTTP, no token.  The credentials are three PEM files, :class:`TLSFiles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from kokpit._lib import pki

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "KEY_FILE",
    "DriverServer",
    "TLSFiles",
    "client_context",
    "is_wildcard",
    "local_pki",
    "server_context",
    "write_files",
]

# file names inside a credentials folder (what a Secret volume with items, or local_pki, lays out)
CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


@dataclass(frozen=True)
class TLSFiles:
    """One side's credentials: the CA that vouches for the peer, and this side's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def in_dir(cls, folder: Path) -> TLSFiles:
        """``ca.crt``, ``tls.crt`` and ``tls.key`` in ``folder``."""
        return cls(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)

    def check(self) -> None:
        """Raise ValueError naming the first file that is missing (a clear message before any handshake)."""
        for what, p in (("CA", self.ca_file), ("certificate", self.cert_file), ("key", self.key_file)):
            if not p.is_file():
                raise ValueError(f"node driver TLS {what} file {p} not found")


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """TLS 1.2+ server context that refuses a client without a certificate signed by ``files.ca_file``."""
    files.check()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_file, files.key_file)
    ctx.load_verify_locations(cafile=files.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TLSFiles, *, check_hostname: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ client context presenting ``files``' certificate and trusting only ``files.ca_file``.
    ``check_hostname=False`` still requires a certificate from that CA, for drivers that reach many hosts by
    addresses their certificates do not name."""
    files.check()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=files.ca_file)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def write_files(folder: Path, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> TLSFiles:
    """Write one side's credentials into ``folder`` (created 0700; the key 0600) and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    files = TLSFiles.in_dir(folder)
    for path, data, mode in ((files.ca_file, ca_pem, 0o644), (files.cert_file, cert_pem, 0o644),
                             (files.key_file, key_pem, 0o600)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return files


def local_pki(folder: Path, hosts: list[str], *, now: dt.datetime | None = None) -> tuple[TLSFiles, TLSFiles]:
    """A standalone driver server's own PKI under ``folder`` (kept across restarts, so callers' credentials
    stay valid; re-issued where expired or when ``hosts`` grew): ``folder/server`` for the server,
    ``folder/client`` for its callers (``kokpit simulator fault --tls-dir FOLDER/client``)."""
    current: dict[str, bytes] = {}
    with contextlib.suppress(OSError):
        for key in pki.DRIVER_KEYS:
            p = folder / key
            if p.is_file():
                current[key] = p.read_bytes()
    data = pki.driver_pki(current, hosts, ca_name="kokpit-node-driver-ca", now=now)
    if data != current:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        for key, pem in data.items():
            fd = os.open(folder / key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    ca = data[pki.DRIVER_CA_CERT]
    server = write_files(folder / "server", ca, data[pki.DRIVER_SERVING_CERT], data[pki.DRIVER_SERVING_KEY])
    client = write_files(folder / "client", ca, data[pki.DRIVER_CLIENT_CERT], data[pki.DRIVER_CLIENT_KEY])
    return server, client


def is_wildcard(host: str) -> bool:
    """``0.0.0.0``, ``::`` or empty: an address to listen on, never one to hand out."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _url_host(host: str) -> str:
    with contextlib.suppress(ValueError):
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]"
    return host


class DriverServer:
    """Serves an ASGI app over mutual TLS on ``host:port`` (port 0: any free one) in the running loop.

    ``advertise`` is the host put in :attr:`url` (default ``host``); a wildcard is never advertised, so
    listening on one needs an explicit ``advertise``.
    """

    def __init__(self, app: Any, host: str, port: int, files: TLSFiles, *, advertise: str | None = None) -> None:
        shown = advertise or host
        if is_wildcard(shown):
            raise ValueError(f"{host or '(empty)'} is a wildcard address: give the address callers reach "
                             "(an advertise address), never 0.0.0.0")
        self.app = app
        self.host = host
        self.port = port
        self.advertise = shown
        self.files = files
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Bind, start serving and return the URL (``https://ADVERTISE:PORT``)."""
        ctx = server_context(self.files)  # a missing or bad file fails here, before binding
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise RuntimeError(f"cannot listen on {self.host}:{self.port}: {e.strerror}") from None
        sock.listen(1024)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", http="httptools",
                                loop="none", timeout_keep_alive=120, timeout_graceful_shutdown=1)
        config.load()
        config.ssl = ctx  # our context (client certificates required), not one uvicorn builds from files
        server = uvicorn.Server(config)
        server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="driver-server")
        for _ in range(500):
            if server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raise what stopped it
        self.url = f"https://{_url_host(self.advertise)}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
            self._task = None
