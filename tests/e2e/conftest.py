"""Helpers for end-to-end tests that drive the embedded API server with the real kubectl binary.

kubectl is the client users will point at kokpit first, so these tests run it unmodified as a subprocess,
with KUBECONFIG (never ~/.kube) pointing at the test server, a private HOME/cache dir, and a timeout on every
call. Background commands (`get -w`, `delete --wait`) are read line by line with deadlines and are always
terminated by the test that started them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.rbac_admission import ROOT_CA
from kokpit.apiserver.testing import ApiServerProcess

CALL_TIMEOUT = 30.0


class KubectlError(AssertionError):
    """kubectl exited non-zero where the test expected success."""


class Background:
    """A long-running kubectl (watch, delete --wait) whose stdout is collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, pattern: str, timeout: float = 15.0) -> str:
        """Consume output lines until one matches `pattern` (regex search); fail at the deadline."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got {self.lines!r}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process ended before {pattern!r}; got {self.lines!r}; "
                                     f"stderr: {self.stderr()}")
            self.lines.append(line)
            if rx.search(line):
                return line

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "<running>"
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


class Kubectl:
    """Runs kubectl against one server; every call has a timeout."""

    def __init__(self, binary: str, server: ApiServerProcess, home: Path) -> None:
        self.binary = binary
        self.server = server
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "KUBECONFIG": str(server.kubeconfig),
            "KUBECACHEDIR": str(home / "cache"),
            "KUBECTL_INTERACTIVE_DELETE": "false",
        }

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = CALL_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} -> {proc.returncode}\nstdout: {proc.stdout}\n"
                               f"stderr: {proc.stderr}")
        return proc

    def out(self, *args: str, input: str | None = None, **kw: Any) -> str:
        return self.run(*args, input=input, **kw).stdout

    def fail(self, *args: str, input: str | None = None, **kw: Any) -> str:
        """Run a command that must fail; return its stderr."""
        proc = self.run(*args, input=input, check=False, **kw)
        assert proc.returncode != 0, f"kubectl {' '.join(args)} unexpectedly succeeded: {proc.stdout}"
        return proc.stderr

    def json(self, *args: str) -> Any:
        return json.loads(self.out(*args, "-o", "json"))

    def apply_obj(self, *objs: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
        """`kubectl create`/`apply` take YAML or JSON on stdin; a List carries several objects."""
        doc = objs[0] if len(objs) == 1 else {"apiVersion": "v1", "kind": "List", "items": list(objs)}
        return self.out(*(extra or ("apply",)), "-f", "-", input=json.dumps(doc))

    def create(self, *objs: dict[str, Any]) -> str:
        return self.apply_obj(*objs, extra=("create",))

    def exists(self, *args: str) -> bool:
        proc = self.run("get", *args, "-o", "name", "--ignore-not-found", check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip() != ""

    def background(self, *args: str, env: dict[str, str] | None = None) -> Background:
        proc = subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, bufsize=1)
        return Background(proc)


def wait_until(fn: Any, timeout: float = 15.0, interval: float = 0.05, msg: str = "condition") -> Any:
    """Poll `fn` until it returns a truthy value (deadline, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg}")
        time.sleep(interval)


def table(text: str) -> list[dict[str, str]]:
    """Parse kubectl's human table output into rows keyed by header (columns split on 2+ spaces)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s\s)|^)\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for ln in lines[1:]:
        cells = [ln[s:e].strip() if s < len(ln) else ""
                 for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kubectl(kubectl_bin: str, shared_apiserver: ApiServerProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl bound to the module's shared server."""
    return Kubectl(kubectl_bin, shared_apiserver, tmp_path_factory.mktemp("kubectl-home"))


@pytest.fixture
def ns(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test on the shared server."""
    name = unique("t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[5:25].strip("-"))
    kubectl.apply_obj({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # settled, as in kube: the controllers have added the namespace's root CA ConfigMap (and default
    # ServiceAccount), so a test's own watches and lists see only what it made besides that
    wait_until(lambda: kubectl.exists("cm", ROOT_CA, "-n", name), msg=f"{ROOT_CA} in {name}")
    yield name
