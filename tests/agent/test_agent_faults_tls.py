"""The node agent's edges (issue 19): it refuses callers without a client certificate from the node-driver
CA; it reports a full disk and a read-only filesystem as conditions and Events on its Node; it serves
Prometheus metrics; site repairs go to the configured command with the documented contract."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kokpit._lib import pki
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NODE, Client, NotFoundError
from kokpit.nodes.mtls import TLSFiles, client_context, write_files
from kokpit.operators.faults.catalog import install_defaults
from kokpit.runtime.faultreports import NODEFAULT


class PlainAgent:
    """An agent over a folder root inside a private mount namespace (so the test can mount a tiny tmpfs
    there, fill it and make it read-only without touching this machine)."""

    def __init__(self, tmp: Path, tls: TLSFiles, extra: list[str]) -> None:
        self.root = tmp / "root"
        self.root.mkdir()
        self.ready = tmp / "ready"
        self.log = open(tmp / "agent.log", "wb")
        script = (f'mount -t tmpfs -o size=4m tmpfs {self.root} && exec "$@"')
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", sys.executable, "-m",
               "kokpit.cli.main", "node-agent", "--node", "fault-node", "--root", str(self.root), "--tls-dir",
               str(tls.ca_file.parent), "--port", "0", "--refresh-interval", "0.5", "--ready-file",
               str(self.ready), "--disk-min-free-mib", "1", "--disk-min-free-percent", "10", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None, (tmp / "agent.log").read_text()
            assert time.monotonic() < deadline, (tmp / "agent.log").read_text()
            time.sleep(0.1)
        self.url = self.ready.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def sh(self, script: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "sh", "-c", script], check=True,
                       capture_output=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _get(port: int, path: str, ctx: ssl.SSLContext, method: str = "GET", body: Any = None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_agent_refuses_callers_without_a_certificate_from_its_ca(
        tmp_path: Path, driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    server, client = driver_pki
    agent = PlainAgent(tmp_path, server, [])
    try:
        code, body = _get(agent.port, "/healthz", client_context(client))
        assert code == 200 and json.loads(body)["nodes"] == 1
        # no client certificate at all
        anon = ssl.create_default_context(cafile=str(server.ca_file))
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _get(agent.port, "/v1/nodes", anon)
        # a client certificate from another CA
        other_ca = pki.new_ca("someone-else")
        other = pki.new_client_cert(other_ca, "intruder")
        files = write_files(tmp_path / "other", server.ca_file.read_bytes(), other.cert_pem, other.key_pem)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _get(agent.port, "/v1/nodes", client_context(files))
        # the agent's own serving certificate cannot be used as a client (serverAuth only)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _get(agent.port, "/v1/nodes", client_context(server))
        # plain HTTP is not served at all
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
        try:
            conn.request("GET", "/v1/nodes")
            status: int | None = conn.getresponse().status
        except (ConnectionError, http.client.HTTPException, OSError):
            status = None
        finally:
            conn.close()
        assert status is None or status >= 400
        # metrics, over the same mutual TLS
        code, body = _get(agent.port, "/metrics", client_context(client))
        assert code == 200 and b"kokpit_agent_fault{node=\"fault-node\",type=\"DiskFull\"} 0.0" in body
        assert b"kokpit_agent_requests_total" in body
    finally:
        agent.stop()


async def _conditions(c: Client, node: str) -> dict[str, str]:
    obj = await c.get(NODE, node)
    return {x["type"]: x["status"] for x in (obj.get("status") or {}).get("conditions") or []}


async def _wait(c: Client, node: str, want: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    got: dict[str, str] = {}
    while time.monotonic() < deadline:
        got = await _conditions(c, node)
        if all(got.get(k) == v for k, v in want.items()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Node conditions {got}, want {want}")


async def _fault(c: Client, name: str, ok: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    got: Any = None
    while time.monotonic() < deadline:
        try:
            got = await c.get(NODEFAULT, name)
        except NotFoundError:
            got = None
        if got is not None and ok(got):
            return dict(got)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: NodeFault {name} is {got}")


def _agent_source(f: dict[str, Any]) -> dict[str, Any]:
    return next((s for s in (f.get("status") or {}).get("sources") or [] if s["reporter"] == "node-agent/fault-node"), {})


async def test_faults_become_nodefaults_node_conditions_and_events(
        tmp_path: Path, apiserver: ApiServerProcess, driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        await install_defaults(c)  # the fault catalog (kokpit machine-operator installs it in a fleet)
        await c.create(NODE, {"metadata": {"name": "fault-node"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}})
        agent = PlainAgent(tmp_path, driver_pki[0], ["--kubeconfig", str(apiserver.kubeconfig)])
        try:
            await _wait(c, "fault-node", {"DiskFull": "False", "ReadonlyFilesystem": "False", "Ready": "True"})
            agent.sh(f"dd if=/dev/zero of={agent.root}/fill bs=64k count=1000 2>/dev/null || true")
            await _wait(c, "fault-node", {"DiskFull": "True", "Ready": "True"})  # kubelet's condition kept
            # the agent's own report to the event center, with its identity, refreshed while it lasts
            full = await _fault(c, "fault-node.disk-pressure", lambda f: _agent_source(f).get("count", 0) >= 2,
                                "reported and refreshed by the agent")
            src = _agent_source(full)
            assert full["status"]["state"] == "Active"
            assert (full["spec"]["nodeName"], full["spec"]["type"]) == ("fault-node", "disk-pressure")
            assert src["kind"] == "Agent" and src["reason"] == "DiskFull" and "MiB" in src["message"]
            assert src["ttlSeconds"] >= 60 and not src.get("cleared")
            agent.sh(f"mount -o remount,ro {agent.root}")
            await _wait(c, "fault-node", {"DiskFull": "True", "ReadonlyFilesystem": "True"})
            ro = await _fault(c, "fault-node.readonly-filesystem", lambda f: (f.get("status") or {}).get("state") == "Active",
                              "a read-only filesystem reported")
            assert _agent_source(ro)["reason"] == "FilesystemIsReadOnly"
            agent.sh(f"mount -o remount,rw {agent.root} && rm {agent.root}/fill")
            await _wait(c, "fault-node", {"DiskFull": "False", "ReadonlyFilesystem": "False"})
            for name in ("fault-node.disk-pressure", "fault-node.readonly-filesystem"):
                gone = await _fault(c, name, lambda f: (f.get("status") or {}).get("state") == "Resolved", "cleared by the agent")
                assert gone["status"]["resolution"]["by"] == "node-agent/fault-node" and _agent_source(gone)["cleared"]
            events = (await c.list(EVENT, "default")).items
            reasons = {(e["reason"], e["type"]) for e in events
                       if e["involvedObject"].get("name") == "fault-node"}
            assert {("DiskFull", "Warning"), ("FilesystemIsReadOnly", "Warning")} <= reasons, reasons
            assert ("NoDiskFull", "Normal") in reasons, reasons
            node = await c.get(NODE, "fault-node")
            full = next(x for x in node["status"]["conditions"] if x["type"] == "DiskFull")
            assert full["reason"] == "NoDiskFull"
        finally:
            agent.stop()


def test_site_repair_command_contract(tmp_path: Path, driver_pki: tuple[TLSFiles, TLSFiles]) -> None:
    seen = tmp_path / "requests.jsonl"
    hook = tmp_path / "repair.sh"
    hook.write_text(f'#!/bin/sh\ncat >> {seen}\necho >> {seen}\n'
                    'if [ "$1" = reinstall ]; then echo "no PXE on this rack" >&2; exit 3; fi\n'
                    'echo \'{"accepted": true, "message": "queued", "reference": "TICKET-7"}\'\n')
    hook.chmod(0o755)
    server, client = driver_pki
    agent = PlainAgent(tmp_path, server, ["--repair-command", str(hook)])
    try:
        ctx = client_context(client)
        code, body = _get(agent.port, "/v1/nodes/fault-node/repairs", ctx, "POST",
                          {"action": "reboot", "reason": "kernel hang", "requestId": "r-1"})
        assert code == 200 and json.loads(body) == {"accepted": True, "message": "queued",
                                                    "reference": "TICKET-7", "retryable": False}
        req = json.loads(seen.read_text().splitlines()[0])
        assert req["kind"] == "RepairRequest" and req["node"] == "fault-node" and req["action"] == "reboot"
        assert req["requestId"] == "r-1" and req["reason"] == "kernel hang" and req["requestedAt"].endswith("Z")
        code, body = _get(agent.port, "/v1/nodes/fault-node/repairs", ctx, "POST",
                          {"action": "reinstall", "requestId": "r-2"})
        assert code == 200 and json.loads(body)["accepted"] is False
        assert json.loads(body)["message"] == "no PXE on this rack"
        code, body = _get(agent.port, "/v1/nodes/fault-node/repairs", ctx, "POST",
                          {"action": "format-disk", "requestId": "r-3"})
        assert code == 400 and b"reboot, reinstall, power-cycle" in body
        code, _ = _get(agent.port, "/v1/nodes/other-node/repairs", ctx, "POST",
                       {"action": "reboot", "requestId": "r-4"})
        assert code == 404
        # the unknown action and the unknown node never reached the site's hook
        assert len([ln for ln in seen.read_text().splitlines() if ln.strip()]) == 2
    finally:
        agent.stop()


async def test_site_repair_webhook_contract() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kokpit.nodes.repair import SiteRepair

    got: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append(body)
            code, answer = {"reboot": (200, {"accepted": True, "message": "ok", "reference": "J-1"}),
                            "reinstall": (409, {"accepted": False, "message": "rack locked"}),
                            "power-cycle": (503, {"message": "bmc busy"})}[body["action"]]
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        hook = SiteRepair(webhook=f"http://127.0.0.1:{srv.server_address[1]}/repair", timeout=10)
        ok = await hook.call("r-1", "n1", "reboot", "hung")
        assert (ok.accepted, ok.reference, ok.retryable) == (True, "J-1", False)
        assert got[0]["requestId"] == "r-1" and got[0]["node"] == "n1" and got[0]["kind"] == "RepairRequest"
        refused = await hook.call("r-2", "n1", "reinstall", "")
        assert not refused.accepted and not refused.retryable and "rack locked" in refused.message
        busy = await hook.call("r-3", "n1", "power-cycle", "")
        assert not busy.accepted and busy.retryable and "503" in busy.message
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    gone = await SiteRepair(webhook=f"http://127.0.0.1:{srv.server_address[1]}/repair", timeout=2).call(
        "r-4", "n1", "reboot", "")
    assert not gone.accepted and gone.retryable and "unreachable" in gone.message
    with pytest.raises(ValueError):
        SiteRepair(command=["x"], webhook="http://127.0.0.1:1/")
