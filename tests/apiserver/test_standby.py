"""A standby API server (``--standby``) waits on the data dir's lock and takes over when the active one dies.

This is what lets the cluster operator run several API server replicas of one business cluster on its one
data folder: no second writer ever opens the SQLite log, and a kill -9 of the active one costs only the
standby's start, not a Pod replacement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kokpit.apiserver.testing import ApiServerProcess


def _cm(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"k": name}}).encode()


def _wait_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text(errors='replace') if path.exists() else ''}")


def _serving(srv: ApiServerProcess) -> str | None:
    """Who answers /readyz (its X-Kokpit-Instance header)."""
    with urllib.request.urlopen(srv.url + "/readyz", context=srv.ssl_context(), timeout=10) as resp:
        return resp.headers.get("X-Kokpit-Instance")


def test_standby_takes_over_after_kill9_with_every_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    active = ApiServerProcess(data, ["--instance-name", "replica-a"]).start()
    standby = ApiServerProcess(data, ["--standby"], port=active.port, log_path=tmp_path / "standby.log")
    try:
        assert active.request("POST", "/api/v1/namespaces/default/configmaps", _cm("before"))[0] == 201
        # the standby shares the port and data dir: it must wait, not fail and not open the store
        log = open(standby.log_path, "ab")
        standby.proc = subprocess.Popen(
            [sys.executable, "-m", "kokpit.apiserver", "--data-dir", str(data), "--port", str(active.port),
             "--standby", "--instance-name", "replica-b"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_log(standby.log_path, "standing by", standby.proc)
        assert active.request("POST", "/api/v1/namespaces/default/configmaps", _cm("while-standby"))[0] == 201
        assert standby.proc.poll() is None
        assert _serving(active) == "replica-a"

        active.kill()
        t0 = time.monotonic()
        standby.wait_ready(30)
        took = time.monotonic() - t0
        code, body = standby.request("GET", "/api/v1/namespaces/default/configmaps")
        assert code == 200
        names = {i["metadata"]["name"] for i in json.loads(body)["items"]}
        assert {"before", "while-standby"} <= names
        assert took < 10, took
        assert _serving(standby) == "replica-b"
    finally:
        standby.stop()
        active.kill()


def test_standby_ends_cleanly_on_sigterm_while_waiting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ApiServerProcess(data) as active:
        log_path = tmp_path / "standby.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "kokpit.apiserver", "--data-dir", str(data),
                                     "--port", str(active.port), "--standby"], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_log(log_path, "standing by", proc)
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the active server never noticed
        assert active.request("GET", "/readyz", auth=False) == (200, b"ok")


def test_without_standby_a_second_server_fails_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ApiServerProcess(data) as active:
        out = subprocess.run([sys.executable, "-m", "kokpit", "apiserver", "--data-dir", str(data),
                              "--port", str(active.port)], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert "in use by another kokpit apiserver" in out.stderr + out.stdout
