"""Start a real `kokpit apiserver` process for tests and tools (kokpit's envtest).

Tests talk to the server exactly as users do — over HTTPS with the generated kubeconfig — and can kill -9
and restart it, so durability and reconnection are tested against the real thing.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import orjson

__all__ = ["ApiServerProcess", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ApiServerProcess:
    """A `kokpit apiserver` subprocess on 127.0.0.1 and a free port, with its data in `data_dir`."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args or [])
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.data_dir / "kubeconfig"
        self.ca_file = self.data_dir / "pki" / "ca.crt"
        self.log_path = log_path or (self.data_dir / "apiserver.log")
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ process control
    def start(self, timeout: float = 120.0) -> ApiServerProcess:
        """Start and wait until /readyz answers.  The deadline is generous: the server needs ~3 s of CPU to
        start, which took 43 s on this 2-core machine at load average 24 (parallel sessions, CI)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "kokpit.apiserver", "--data-dir", str(self.data_dir),
               "--port", str(self.port), *self.extra_args]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.kubeconfig.exists() and self.ca_file.exists():
                try:
                    if self._get("/readyz", auth=False) == b"ok":
                        return
                except Exception as e:  # not listening yet
                    last = e
            time.sleep(0.05)
        raise TimeoutError(f"apiserver not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (graceful shutdown)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not already committed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, timeout: float = 30.0) -> ApiServerProcess:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> ApiServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ access
    @property
    def admin_token(self) -> str:
        tokens = orjson.loads((self.data_dir / "tokens.json").read_bytes())
        return str(tokens["admin"])

    @property
    def readonly_token(self) -> str:
        tokens = orjson.loads((self.data_dir / "tokens.json").read_bytes())
        return str(tokens["readonly"])

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _get(self, path: str, auth: bool = True) -> bytes:
        return self.request("GET", path, auth=auth)[1]

    def request(self, method: str, path: str, body: bytes | None = None, *, auth: bool = True,
                content_type: str = "application/json", token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A raw HTTPS request; returns (status, body) without raising on 4xx/5xx."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def compact(self) -> int:
        """Force a compaction up to the current revision (admin-only debug endpoint)."""
        code, body = self.request("POST", "/kokpit/compact", b"{}")
        if code != 200:
            raise RuntimeError(f"compact failed: {code} {body!r}")
        return int(orjson.loads(body)["compactedRevision"])
