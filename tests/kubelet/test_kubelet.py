"""The local kubelet against a real embedded API server: real kokpit processes, real kubectl.

The kubelet runs in-process as an asyncio task (fast backoff and sync for tests); every process it starts is
ended by the test (Pod deletion, or ``close(stop_pods=True)`` in the fixture), and the tests check the pids.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import CONFIGMAP, LEASE, NODE, POD, SECRET, Client, NotFoundError, load_config
from kokpit.client._kinds import Kind
from kokpit.kubelet import Kubelet, KubeletOptions
from kokpit.kubelet._procs import process_start_time
from kokpit.kubelet._worker import PodWorker

Obj = dict[str, Any]
NS = "default"


class KubeletRunner:
    """Start/stop an in-process kubelet on one data dir (a restart is stop + start)."""

    def __init__(self, client: Client, data_dir: Path, **opts: Any) -> None:
        self.client = client
        self.opts = {"backoff_base": 0.2, "backoff_cap": 1.0, "sync_interval": 0.1, "lease_renew_interval": 1.0,
                     "orphan_grace": 3.0, **opts}
        self.data_dir = data_dir
        self.kubelet: Kubelet | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Kubelet:
        self.kubelet = Kubelet(self.client, KubeletOptions(data_dir=self.data_dir, **self.opts))
        self.task = asyncio.create_task(self.kubelet.run())
        ready = asyncio.create_task(self.kubelet.wait_ready())
        done, _ = await asyncio.wait({ready, self.task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if self.task.done():
                self.task.result()
            raise AssertionError("kubelet did not become ready")
        return self.kubelet

    async def stop(self, *, stop_pods: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.kubelet is not None:
            await self.kubelet.close(stop_pods=stop_pods)
        self.task = self.kubelet = None


@pytest.fixture
async def env(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[tuple[Client, KubeletRunner]]:
    client = Client.from_kubeconfig(apiserver.kubeconfig)
    runner = KubeletRunner(client, tmp_path / "kubelet")
    try:
        await runner.start()
        yield client, runner
    finally:
        await runner.stop(stop_pods=True)
        # whatever a failed test left: no process recorded by the kubelet may survive the test
        for pid in _recorded_pids(runner.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 9)
        await client.close()


def _recorded_pids(data_dir: Path) -> list[int]:
    import json

    try:
        raw = json.loads((data_dir / "kubelet-state.json").read_text())
    except FileNotFoundError:
        return []
    return [c["pid"] for p in raw["pods"].values() for c in p["containers"].values()]


async def until(fn: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFoundError):
            last = await fn()
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def pod(name: str, containers: list[Obj], **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"containers": containers, **spec}}


def cstatus(p: Obj, name: str | None = None) -> Obj:
    cs = (p.get("status") or {}).get("containerStatuses") or [{}]
    return next((c for c in cs if name is None or c.get("name") == name), {})


def is_ready(p: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def pid_of(p: Obj) -> int:
    return int(str(cstatus(p)["containerID"]).removeprefix("kokpit://"))


def apiserver_pod(name: str, port: int) -> Obj:
    return pod(name, [{
        "name": "apiserver", "image": "registry.example/kokpit:v0.1",
        "command": ["kokpit"], "args": ["apiserver", "--data-dir", "/var/lib/kokpit", "--port", str(port),
                                        "--version-label", "v1.36.2"],
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kokpit"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port, "scheme": "HTTPS"},
                           "periodSeconds": 1, "failureThreshold": 30},
        "livenessProbe": {"tcpSocket": {"port": port}, "initialDelaySeconds": 5, "periodSeconds": 1,
                          "failureThreshold": 30},
    }], volumes=[{"name": "data", "emptyDir": {}}], terminationGracePeriodSeconds=10)


async def test_node_registration_and_lease(env: tuple[Client, KubeletRunner]) -> None:
    client, runner = env
    node = await client.get(NODE, "local")
    st = node["status"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["memory"].endswith("Ki")
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == runner.kubelet.log_server.port > 0  # type: ignore[union-attr]
    lease = await client.get(LEASE, "local", "kube-node-lease")
    first = lease["spec"]["renewTime"]
    assert lease["spec"]["holderIdentity"] == "local"
    renewed = await until(lambda: _renewed(client, first), timeout=5, what="a lease renewal")
    assert renewed


def _ask_logs(port: int, cert: tuple[Path, Path] | None, host: str = "127.0.0.2",
              token: str | None = None) -> tuple[int, str]:
    """The kubelet's containerLogs asked directly over TLS, with ``cert`` (file, key) or none, and a bearer
    ``token`` or none."""
    import http.client
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(*cert)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/containerLogs/default/nothing-here/c",
                     headers={"Authorization": f"Bearer {token}"} if token is not None else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _client_cert(tmp: Path, ca_cert: Path, ca_key: Path, name: str) -> tuple[Path, Path]:
    from kokpit._lib import pki

    made = pki.new_client_cert(pki.CertPair(ca_cert.read_bytes(), ca_key.read_bytes()), name)
    crt, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(made.cert_pem)
    key.write_bytes(made.key_pem)
    return crt, key


async def test_kubelet_binds_and_advertises_its_address_and_authenticates_log_readers(
        apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """Issue 13: `--address` is where the log endpoint listens and what the Node and its Pods advertise; the
    endpoint serves the API server's kubelet client certificate — none: 401, another identity of the cluster
    CA: 403, another CA: no TLS session at all — or a bearer token the API server says may get nodes/proxy."""
    import ssl

    from kokpit._lib import pki

    client = Client.from_kubeconfig(apiserver.kubeconfig)
    runner = KubeletRunner(client, tmp_path / "kubelet", address="127.0.0.2", bind_pending=False)
    try:
        kubelet = await runner.start()
        port = kubelet.log_server.port
        assert kubelet.log_server._server is not None
        assert {s.getsockname()[0] for s in kubelet.log_server._server.sockets} == {"127.0.0.2"}
        node = await client.get(NODE, "local")
        assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.2"}
        await client.create(POD, pod("where", [{"name": "c", "image": "kokpit", "command": ["kokpit"],
                                                "args": ["--help"]}], nodeName="local", restartPolicy="Never"))
        p = await until(lambda: _get_if(client, "where", lambda p: bool((p.get("status") or {}).get("hostIP"))),
                        what="pod status")
        assert p["status"]["hostIP"] == p["status"]["podIP"] == "127.0.0.2"

        pki_dir = apiserver.data_dir / "pki"
        ours = (pki_dir / "kubelet-client.crt", pki_dir / "kubelet-client.key")
        code, body = await asyncio.to_thread(_ask_logs, port, ours)
        assert code == 404 and "nothing-here" in body, body  # authenticated: only the Pod is missing
        code, body = await asyncio.to_thread(_ask_logs, port, None)
        assert code == 401 and "client certificate" in body, body
        other = _client_cert(tmp_path, apiserver.ca_file, pki_dir / "ca.key", "someone-else")
        code, body = await asyncio.to_thread(_ask_logs, port, other)
        assert code == 403 and "user=someone-else" in body, body
        foreign_ca = pki.new_ca("not-the-cluster-ca")
        (tmp_path / "f-ca.crt").write_bytes(foreign_ca.cert_pem)
        (tmp_path / "f-ca.key").write_bytes(foreign_ca.key_pem)
        forged = _client_cert(tmp_path, tmp_path / "f-ca.crt", tmp_path / "f-ca.key", pki.KUBELET_CLIENT_NAME)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(_ask_logs, port, forged)
        # a bearer token instead, reviewed by the API server as kubelet's webhook authn/authz does: the admin
        # may get nodes/proxy (authenticated: only the Pod is missing), the read-only viewer may not, and a
        # string that is no token of the cluster is a 401
        code, body = await asyncio.to_thread(_ask_logs, port, None, token=apiserver.admin_token)
        assert code == 404 and "nothing-here" in body, body
        code, body = await asyncio.to_thread(_ask_logs, port, None, token=apiserver.readonly_token)
        assert code == 403 and "subresource=proxy" in body, body
        code, body = await asyncio.to_thread(_ask_logs, port, None, token="x" * 40)
        assert code == 401 and "bearer token" in body, body
        # and the API server, with its certificate, still reads through: a 400 naming the Pod, not a refusal
        status, body_b = await asyncio.to_thread(apiserver.request, "GET", f"/api/v1/namespaces/{NS}/pods/where/log")
        assert status in (200, 400) and b"Unauthorized" not in body_b and b"Forbidden" not in body_b, body_b
    finally:
        await runner.stop(stop_pods=True)
        await client.close()


async def _renewed(client: Client, first: str) -> bool:
    lease = await client.get(LEASE, "local", "kube-node-lease")
    return bool(lease["spec"]["renewTime"] != first)


async def test_apiserver_pod_runs_ready_logs_and_deletes(env: tuple[Client, KubeletRunner], kubectl_bin: str,
                                                         apiserver: ApiServerProcess) -> None:
    client, runner = env
    port = free_port()
    # unscheduled: the kubelet binds it to itself
    await client.create(POD, apiserver_pod("meta-api", port))
    p = await until(lambda: _get_if(client, "meta-api", is_ready), what="pod Ready")
    assert p["spec"]["nodeName"] == "local"
    assert p["status"]["phase"] == "Running"
    assert p["status"]["podIP"] == "127.0.0.1" and p["status"]["startTime"]
    conds = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conds["PodScheduled"] == conds["Initialized"] == conds["ContainersReady"] == conds["Ready"] == "True"
    cs = cstatus(p)
    assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
    pid = pid_of(p)
    assert process_start_time(pid) is not None
    # the mountPath in the args was rewritten to the emptyDir folder: the business server's data is there
    uid = p["metadata"]["uid"]
    data = runner.data_dir / "pods" / f"{NS}_meta-api_{uid}" / "volumes" / "data"
    assert (data / "kubeconfig").is_file()

    out = await asyncio.to_thread(
        subprocess.run, [kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), "logs", "meta-api",
                          "--tail", "200"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert str(port) in out.stdout  # the business API server's own startup output

    # kubectl logs -f streams until the container ends
    follow = await asyncio.create_subprocess_exec(
        kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), "logs", "-f", "meta-api", "-c", "apiserver",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert follow.stdout is not None
        first = await asyncio.wait_for(follow.stdout.readline(), 10)
        assert first.strip()
        await client.delete(POD, "meta-api", NS)  # graceful: the kubelet ends the process, then confirms
        await until(lambda: _gone(client, "meta-api"), what="pod deleted")
        await asyncio.wait_for(follow.communicate(), 10)
        assert follow.returncode == 0
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()
    assert process_start_time(pid) is None
    assert not data.exists()  # an emptyDir goes with its Pod
    assert _recorded_pids(runner.data_dir) == []


async def _get_if(client: Client, name: str, pred: Callable[[Obj], bool]) -> Obj | None:
    p = await client.get(POD, name, NS)
    return p if pred(p) else None


async def _true(value: bool) -> bool:
    return value


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get(POD, name, NS)
    except NotFoundError:
        return True
    return False


async def test_crash_loop_backoff(env: tuple[Client, KubeletRunner], kubectl_bin: str,
                                  apiserver: ApiServerProcess) -> None:
    client, _ = env
    await client.create(POD, pod("crasher", [{"name": "c", "image": "kokpit", "args": ["--no-such-flag"]}],
                                 nodeName="local"))
    seen: set[str] = set()

    async def looping() -> Obj | None:
        p = await client.get(POD, "crasher", NS)
        cs = cstatus(p)
        seen.add((cs.get("state") or {}).get("waiting", {}).get("reason", ""))
        return p if cs.get("restartCount", 0) >= 2 and "CrashLoopBackOff" in seen else None

    p = await until(looping, what="CrashLoopBackOff with restarts")
    cs = cstatus(p)
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert p["status"]["phase"] == "Running"
    out = await asyncio.to_thread(
        subprocess.run, [kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), "logs", "crasher", "-c", "c",
                          "--previous"], capture_output=True, text=True, timeout=20)
    assert "No such option: --no-such-flag" in out.stdout, out.stderr
    ev = await until(lambda: _event(client, "crasher", "BackOff"), what="a BackOff Event")
    assert ev["type"] == "Warning" and ev["source"] == {"component": "kubelet", "host": "local"}
    assert ev["message"].startswith("Back-off restarting failed container c in pod crasher_default(")


async def _event(client: Client, pod_name: str, reason: str) -> Obj | None:
    """The Event of ``reason`` about Pod ``pod_name`` (kubectl describe pod's Events), if recorded."""
    from kokpit.client import EVENT

    items = (await client.list(EVENT, NS)).items
    return next((e for e in items if e["involvedObject"].get("name") == pod_name and e["reason"] == reason
                 and e["involvedObject"].get("kind") == "Pod"), None)


async def test_liveness_exec_probe_failure_restarts(env: tuple[Client, KubeletRunner]) -> None:
    client, _ = env
    port = free_port()
    spec = apiserver_pod("sick", port)
    c = spec["spec"]["containers"][0]
    c["livenessProbe"] = {"exec": {"command": ["kokpit", "--no-such-flag"]}, "periodSeconds": 1,
                          "failureThreshold": 1}
    spec["spec"]["nodeName"] = "local"
    spec["spec"]["terminationGracePeriodSeconds"] = 5
    await client.create(POD, spec)
    p = await until(lambda: _get_if(client, "sick", lambda p: cstatus(p).get("restartCount", 0) >= 1),
                    what="a restart after the liveness probe failed")
    last = cstatus(p)["lastState"]["terminated"]
    assert "Liveness probe failed" in last["message"]
    ev = await until(lambda: _event(client, "sick", "Unhealthy"), what="an Unhealthy Event")
    assert ev["type"] == "Warning" and ev["message"].startswith("Liveness probe failed: ")
    killing = await until(lambda: _event(client, "sick", "Killing"), what="a Killing Event")
    assert killing["message"] == "Container apiserver failed liveness probe, will be restarted"


async def test_init_containers_then_success(env: tuple[Client, KubeletRunner], kubectl_bin: str,
                                            apiserver: ApiServerProcess) -> None:
    client, _ = env
    await client.create(POD, pod("job", [{"name": "main", "image": "kokpit", "args": ["crds"]}],
                                 initContainers=[{"name": "first", "image": "kokpit", "args": ["--help"]}],
                                 restartPolicy="OnFailure", nodeName="local"))
    p = await until(lambda: _get_if(client, "job", lambda p: p["status"].get("phase") == "Succeeded"),
                    what="phase Succeeded")
    conds = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "False"
    init = p["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0 and init["state"]["terminated"]["reason"] == "Completed"
    out = await asyncio.to_thread(
        subprocess.run, [kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), "logs", "job"],
        capture_output=True, text=True, timeout=20)
    assert "kind: CustomResourceDefinition" in out.stdout, out.stderr
    status, body = apiserver.request("GET", "/api/v1")
    subs = {r["name"]: r for r in __import__("json").loads(body)["resources"]}
    assert status == 200 and subs["pods/log"]["verbs"] == ["get"] and subs["pods/log"]["kind"] == "Pod"


async def test_never_policy_fails_once(env: tuple[Client, KubeletRunner]) -> None:
    client, _ = env
    await client.create(POD, pod("once", [{"name": "c", "image": "kokpit", "args": ["--bad"]}],
                                 nodeName="local", restartPolicy="Never"))
    p = await until(lambda: _get_if(client, "once", lambda p: p["status"].get("phase") == "Failed"),
                    what="phase Failed")
    cs = cstatus(p)
    assert cs["restartCount"] == 0 and cs["state"]["terminated"]["exitCode"] == 2


async def test_non_kokpit_image_waits_with_reason(env: tuple[Client, KubeletRunner]) -> None:
    client, runner = env
    await client.create(POD, pod("web", [{"name": "nginx", "image": "nginx:1.27"}]))
    p = await until(lambda: _get_if(client, "web", lambda p: bool(cstatus(p).get("state", {}).get("waiting", {})
                                                                  .get("reason") == "ImageNotRunnable")),
                    what="ImageNotRunnable")
    waiting = cstatus(p)["state"]["waiting"]
    assert "only kokpit images" in waiting["message"]
    assert p["status"]["phase"] == "Pending" and p["spec"]["nodeName"] == "local"
    assert _recorded_pids(runner.data_dir) == []
    ev = await until(lambda: _event(client, "web", "Failed"), what="a Failed Event")
    assert ev["type"] == "Warning" and ev["message"].startswith("Error: ImageNotRunnable: image 'nginx:1.27'")
    # the kubelet retries every 2 s: after two more tries the same error is still one Event, not three
    assert runner.kubelet is not None
    worker = next(w for w in runner.kubelet.workers.values() if w.name == "web")
    tries: set[float] = set()

    async def retried() -> bool:
        tries.add(worker.containers[0].next_start)
        return len(tries) >= 3

    await until(retried, what="two more start attempts")
    again = await _event(client, "web", "Failed")
    assert again is not None and again["count"] == 1


async def test_restart_adopts_running_process(env: tuple[Client, KubeletRunner]) -> None:
    client, runner = env
    port = free_port()
    await client.create(POD, {**apiserver_pod("adoptee", port), "spec": {
        **apiserver_pod("adoptee", port)["spec"], "nodeName": "local"}})
    p = await until(lambda: _get_if(client, "adoptee", is_ready), what="pod Ready")
    pid = pid_of(p)
    await runner.stop(stop_pods=False)
    assert process_start_time(pid) is not None  # the process outlives its kubelet
    kubelet = await runner.start()
    worker = kubelet.workers[p["metadata"]["uid"]]
    handle = worker.containers[0].handle
    assert handle is not None and handle.pid == pid and handle.popen is None  # adopted, not started
    await until(lambda: _true(worker._written is not None), what="the new kubelet's status write")
    p = await client.get(POD, "adoptee", NS)
    assert pid_of(p) == pid and is_ready(p) and p["status"]["phase"] == "Running"
    assert cstatus(p)["restartCount"] == 0
    assert _recorded_pids(runner.data_dir) == [pid]
    await client.delete(POD, "adoptee", NS)
    await until(lambda: _gone(client, "adoptee"), what="pod deleted")
    assert process_start_time(pid) is None


async def test_restart_ends_processes_of_vanished_pods(env: tuple[Client, KubeletRunner]) -> None:
    client, runner = env
    port = free_port()
    await client.create(POD, {**apiserver_pod("orphan", port), "spec": {
        **apiserver_pod("orphan", port)["spec"], "nodeName": "local"}})
    p = await until(lambda: _get_if(client, "orphan", lambda p: "running" in cstatus(p).get("state", {})),
                    what="running")
    pid = pid_of(p)
    await runner.stop(stop_pods=False)
    await client.delete(POD, "orphan", NS, grace_period_seconds=0)  # removed while no kubelet runs
    await runner.start()
    assert process_start_time(pid) is None
    assert _recorded_pids(runner.data_dir) == []


async def test_secret_and_configmap_volumes_env_and_mounts(env: tuple[Client, KubeletRunner]) -> None:
    client, runner = env
    await client.create(SECRET, {"metadata": {"name": "pki", "namespace": NS},
                                 "data": {"token": base64.b64encode(b"s3cret").decode()}})
    spec = pod("cfg", [{
        "name": "c", "image": "kokpit", "args": ["apiserver", "--data-dir=/data/x", "--kubeconfig", "/pki/token"],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "pki", "key": "token"}}},
                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hello $(ME)"},
                {"name": "MISSING", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k",
                                                                       "optional": True}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "pki", "mountPath": "/pki"}],
    }], volumes=[{"name": "data", "hostPath": {"path": "/srv/cluster-a"}},
                 {"name": "pki", "secret": {"secretName": "pki"}}])
    created = await client.create(POD, {**spec, "spec": {**spec["spec"], "nodeName": "does-not-exist"}})
    w = PodWorker(runner.kubelet, created, None)  # type: ignore[arg-type]
    w._prepare_volumes()
    argv, envv, cwd = await w._command(w.containers[0])
    data = runner.data_dir.resolve() / "hostpath" / "srv" / "cluster-a"
    pki = w.dir / "volumes" / "pki"
    assert argv[1:] == ["-m", "kokpit.cli.main", "apiserver", f"--data-dir={data}/x", "--kubeconfig",
                        str(pki / "token")]
    assert envv["TOKEN"] == "s3cret" and envv["GREETING"] == "hello cfg" and "MISSING" not in envv
    assert envv["KOKPIT_MOUNT_DATA"] == str(data) and envv["KOKPIT_MOUNT_PKI"] == str(pki)
    assert (pki / "token").read_bytes() == b"s3cret"
    assert stat.S_IMODE((pki / "token").stat().st_mode) == 0o600
    assert cwd == w.dir and data.is_dir()


async def test_simulate_marks_ready_without_processes(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    client = Client.from_kubeconfig(apiserver.kubeconfig)
    runner = KubeletRunner(client, tmp_path / "sim", fake_runtime=True)
    try:
        await runner.start()
        for i in range(5):
            await client.create(POD, pod(f"sim-{i}", [{"name": "c", "image": "kokpit", "args": ["apiserver"]}]))
        for i in range(5):
            p = await until(lambda i=i: _get_if(client, f"sim-{i}", is_ready), what="simulated Ready")
            assert p["status"]["phase"] == "Running" and cstatus(p)["ready"] is True
        assert _recorded_pids(runner.data_dir) == []
        # a run-to-completion Pod (the cluster operator's data cleanup) ends Succeeded, exit 0, and stays so
        await client.create(POD, pod("once", [{"name": "c", "image": "kokpit", "args": ["version"]}],
                                     restartPolicy="OnFailure"))
        done = await until(lambda: _get_if(client, "once", lambda p: p["status"].get("phase") == "Succeeded"),
                           what="simulated completion")
        assert cstatus(done)["state"]["terminated"]["exitCode"] == 0 and cstatus(done)["ready"] is False
        await client.create(POD, pod("elsewhere", [{"name": "c", "image": "kokpit"}], nodeSelector={"disk": "ssd"}))
        await client.delete(POD, "sim-0", NS)
        await until(lambda: _gone(client, "sim-0"), what="simulated pod deleted")
        assert not (await client.get(POD, "elsewhere", NS))["spec"].get("nodeName")  # does not fit: not bound
    finally:
        await runner.stop(stop_pods=True)
        await client.close()


async def test_cli_kubelet_process(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """`kokpit kubelet` as a process: SIGTERM leaves Pods running for the next kubelet, which adopts them."""
    import signal
    import sys

    client = Client.from_kubeconfig(apiserver.kubeconfig)
    data = tmp_path / "cli"
    cmd = [sys.executable, "-m", "kokpit.cli.main", "kubelet", "--kubeconfig", str(apiserver.kubeconfig),
           "--data-dir", str(data), "--node-name", "laptop"]
    procs: list[asyncio.subprocess.Process] = []
    pid = 0

    async def start() -> None:
        procs.append(await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL))

    try:
        await start()
        port = free_port()
        spec = apiserver_pod("cli-api", port)
        spec["spec"]["nodeName"] = "laptop"
        await client.create(POD, spec)
        # a whole API server process starting under the kubelet process: slow on a loaded machine
        p = await until(lambda: _get_if(client, "cli-api", is_ready), timeout=90, what="pod Ready")
        pid = pid_of(p)
        procs[0].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(procs[0].wait(), 10) == 0
        assert process_start_time(pid) is not None
        await start()
        await client.delete(POD, "cli-api", NS)
        await until(lambda: _gone(client, "cli-api"), what="pod deleted by the restarted kubelet")
        assert process_start_time(pid) is None
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        if pid and process_start_time(pid) is not None:
            os.killpg(pid, signal.SIGKILL)
        await client.close()


def test_pods_log_errors_without_a_kubelet(apiserver: ApiServerProcess) -> None:
    """The API server's pods/log answers like kube when it cannot ask a kubelet."""
    import json

    two = pod("two", [{"name": "a", "image": "kokpit"}, {"name": "b", "image": "kokpit"}])
    status, body = apiserver.request("POST", f"/api/v1/namespaces/{NS}/pods", json.dumps(two).encode())
    assert status == 201, body
    status, body = apiserver.request("GET", f"/api/v1/namespaces/{NS}/pods/two/log")
    assert status == 400 and "a container name must be specified for pod two, choose one of: [a b]" in \
        json.loads(body)["message"]
    status, body = apiserver.request("GET", f"/api/v1/namespaces/{NS}/pods/two/log?container=a")
    assert status == 400 and "does not have a host assigned" in json.loads(body)["message"]
    status, body = apiserver.request("GET", f"/api/v1/namespaces/{NS}/pods/two/log?container=zzz")
    assert status == 400 and "container zzz is not valid" in json.loads(body)["message"]
    status, _ = apiserver.request("GET", f"/api/v1/namespaces/{NS}/pods/missing/log")
    assert status == 404
    # subresources that only answer one verb never fall through to the Pod itself
    assert apiserver.request("DELETE", f"/api/v1/namespaces/{NS}/pods/two/binding")[0] == 405
    assert apiserver.request("PUT", f"/api/v1/namespaces/{NS}/pods/two/log", json.dumps(two).encode())[0] == 405
    assert apiserver.request("GET", f"/api/v1/namespaces/{NS}/pods/two")[0] == 200


async def test_metrics_are_served_to_token_holders_only(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """The kubelet's /metrics: HTTPS, a bearer token of its cluster, its own figures beside its client's."""
    from kokpit._lib.metricsserver import scrape

    client = Client.from_kubeconfig(apiserver.kubeconfig)
    runner = KubeletRunner(client, tmp_path / "kubelet", fake_runtime=True, metrics_port=0,
                           metrics_tokens=["k" * 32])
    try:
        kubelet = await runner.start()
        assert kubelet.metrics is not None and kubelet.metrics.url.startswith("https://127.0.0.1:")
        code, body = await scrape(kubelet.metrics.url, "k" * 32)
        assert code == 200 and b"kokpit_kubelet_pods 0.0" in body and b"kokpit_client_requests_total" in body
        assert (await scrape(kubelet.metrics.url, "x" * 32))[0] == 401
    finally:
        await runner.stop(stop_pods=True)
        await client.close()


async def test_service_account_token_volume_gives_in_cluster_config(env: tuple[Client, KubeletRunner]) -> None:
    """The projected token volume the API server adds is materialised; a process finds it through in-cluster
    config and is the Pod's ServiceAccount; the token is renewed once it is 80% through its lifetime."""
    client, runner = env
    sa = Kind("", "v1", "ServiceAccount", "serviceaccounts")
    await client.create(sa, {"metadata": {"name": "runner", "namespace": NS}})
    await until(lambda: client.get(CONFIGMAP, "kube-root-ca.crt", NS), what="the root CA ConfigMap")
    created = await client.create(POD, pod("sa", [{"name": "c", "image": "kokpit", "args": ["crds"]}],
                                           serviceAccountName="runner", nodeName="does-not-exist"))
    assert any(v["name"].startswith("kube-api-access-") for v in created["spec"]["volumes"])
    w = PodWorker(runner.kubelet, created, None)  # type: ignore[arg-type]
    w._prepare_volumes()
    _argv, envv, _cwd = await w._command(w.containers[0])
    folder = Path(envv["KOKPIT_SERVICE_ACCOUNT_DIR"])
    assert (folder / "namespace").read_text() == NS
    assert (folder / "ca.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    token = (folder / "token").read_text()
    assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600
    old = dict(os.environ)
    os.environ.update({k: envv[k] for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")})
    try:
        conf = load_config(in_cluster=True, service_account_dir=folder)
    finally:
        os.environ.clear()
        os.environ.update(old)
    async with Client(conf) as incluster:
        who = await incluster.create(Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                                          namespaced=False), {})
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{NS}:runner"
    assert who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"] == ["sa"]
    # renewal: pretend 80% of the lifetime went by
    assert runner.kubelet is not None
    tokens = runner.kubelet.tokens
    assert not tokens.due(w.uid)
    for t in tokens._tokens.values():
        t.refresh_at = 0
    assert tokens.due(w.uid)
    w._volumes_ready = True
    await w._sync()
    assert (folder / "token").read_text() != token and not tokens.due(w.uid)
