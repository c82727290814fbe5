"""The cluster operator in-process against the real embedded API server.

No local kubelet yet, so a small one lives here: it marks the operator's Pods Running/Ready (with
``run_processes`` it really starts the API server Pods as ``kokpit apiserver`` processes, mapping their volumes
to folders), deletes terminating Pods, and ends every process it started.  The Pod contract is plain
Kubernetes, so the real kubelet replaces it without the operator noticing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, POD, SECRET, ApiError, Client, NotFoundError
from kokpit.operators.cluster import (
    CLUSTER,
    CLUSTER_LABEL,
    CPV,
    ClusterOperator,
    HttpsProber,
    OperatorOptions,
    Probe,
)
from kokpit.runtime import Manager

Obj = dict[str, Any]


async def wait_for(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except NotFoundError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def cond(obj: Obj, t: str) -> Obj:
    return next((dict(c) for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == t), {})


class ImageProber:
    """Stands in for the business API server when no process runs: its version follows the image of the
    ready API server Pod; images in ``broken`` never get ready."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        image = self.kubelet.ready_apiserver_image
        if image is None:
            return Probe(False, None, "connection refused")
        return Probe(True, image.split(":", 1)[1], "")


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """``kokpit <args>`` as the local kubelet runs a kokpit image (output appended to ``log_path``)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", *args], stdout=log,
                                stderr=subprocess.STDOUT)


@dataclass
class FakeKubelet:
    """Marks Pods Running/Ready; with ``run_processes`` runs API server Pods as real processes."""

    client: Client
    root: Path
    broken_images: set[str] = field(default_factory=set)
    run_processes: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # pod uid -> process
    ready_apiserver_image: str | None = None

    async def _materialize(self, pod: Obj) -> dict[str, str]:
        """Mount path -> local folder (hostPath under root, Secret volumes written out as files)."""
        ns = pod["metadata"]["namespace"]
        out: dict[str, str] = {}
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        c = pod["spec"]["containers"][0]
        for m in c.get("volumeMounts") or []:
            v = vols[m["name"]]
            if "projected" in v:
                continue  # the ServiceAccount token volume admission adds: this stand-in needs no API access
            if "hostPath" in v:
                d = self.root / "host" / v["hostPath"]["path"].lstrip("/")
            else:
                d = self.root / "pods" / pod["metadata"]["uid"] / m["name"]
                secret = await self.client.get(SECRET, v["secret"]["secretName"], ns)
                keys = [i["key"] for i in v["secret"].get("items") or []] or list(secret["data"])
                d.mkdir(parents=True, exist_ok=True)
                for k in keys:
                    (d / k).write_bytes(base64.b64decode(secret["data"][k]))
            d.mkdir(parents=True, exist_ok=True)
            out[m["mountPath"]] = str(d)
        return out

    async def _start(self, pod: Obj) -> None:
        mounts = await self._materialize(pod)
        args = []
        for a in pod["spec"]["containers"][0]["args"]:
            a = a.replace("$(HOST_IP)", "127.0.0.1")  # the Downward API's status.hostIP, as a kubelet expands it
            for mp, local in mounts.items():
                if a == mp or a.startswith(mp + "/"):
                    a = local + a[len(mp):]
            args.append(a)
        self.procs[pod["metadata"]["uid"]] = _spawn(args, self.root / f"{pod['metadata']['name']}.log")

    def _stop(self, uid: str) -> None:
        p = self.procs.pop(uid, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _serving(self, pod: Obj) -> bool:
        args = pod["spec"]["containers"][0]["args"]
        port = int(args[args.index("--port") + 1])
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False

    async def step(self) -> None:
        pods = (await self.client.list(POD, None, label_selector=CLUSTER_LABEL)).items
        seen = set()
        ready_api: str | None = None
        for p in pods:
            uid = p["metadata"]["uid"]
            seen.add(uid)
            name, ns = p["metadata"]["name"], p["metadata"]["namespace"]
            if p["metadata"].get("deletionTimestamp"):
                self._stop(uid)
                with contextlib.suppress(NotFoundError):
                    await self.client.delete(POD, name, ns, grace_period_seconds=0)
                continue
            image = p["spec"]["containers"][0]["image"]
            is_api = p["metadata"]["labels"].get("kokpit.io/component") == "kube-apiserver"
            if self.run_processes and is_api:
                if uid not in self.procs:
                    await self._start(p)
                ready = self._serving(p)
            else:
                ready = image not in self.broken_images
            if ready and is_api:
                ready_api = image
            cur = cond(p, "Ready").get("status")
            if (p.get("status") or {}).get("phase") == "Running" and cur == ("True" if ready else "False"):
                continue
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            status = {"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                      "lastTransitionTime": now}],
                      "containerStatuses": [{"name": p["spec"]["containers"][0]["name"], "image": image,
                                             "imageID": "", "ready": ready, "restartCount": 0,
                                             "state": {"running": {"startedAt": now}}}]}
            with contextlib.suppress(NotFoundError):
                await self.client.patch(POD, name, {"status": status}, ns, subresource="status")
        for uid in list(self.procs):
            if uid not in seen:
                self._stop(uid)
        self.ready_apiserver_image = ready_api

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(0.05)

    def stop_all(self) -> None:
        for uid in list(self.procs):
            self._stop(uid)


@dataclass
class Env:
    client: Client
    kubelet: FakeKubelet
    operator: ClusterOperator

    async def cluster(self, name: str = "c1", ns: str = "default") -> Obj:
        return await self.client.get(CLUSTER, name, ns)

    async def wait_cluster(self, check: Callable[[Obj], bool], what: str, name: str = "c1",
                           timeout: float = 15.0) -> Obj:
        async def fn() -> Obj | None:
            c = await self.cluster(name)
            return c if check(c) else None
        out: Obj = await wait_for(fn, what, timeout)
        return out


def _cpv(name: str, kube: str, image: str = "kokpit:dev") -> Obj:
    return {"metadata": {"name": name}, "spec": {"kubernetesVersion": kube, "components": [
        {"name": "kube-apiserver", "image": image, "args": ["apiserver"]},
        {"name": "simulator", "image": image, "args": ["simulator"]},
        {"name": "machine-operator", "image": image, "args": ["machine-operator"]}]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(apiserver: ApiServerProcess, tmp: Path, *, processes: bool = False,
                  options: OperatorOptions | None = None) -> AsyncIterator[Env]:
    client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="cluster-operator-test")
    await install_crds(client)
    kubelet = FakeKubelet(client, tmp, run_processes=processes)
    opts = options or OperatorOptions(workers=4, poll=0.1, resync=0.5, unhealthy_timeout=5.0, release_timeout=3.0,
                                      data_root="/clusters", port_range=(42000, 42999))
    manager = Manager(client, http_port=None, handle_signals=False)
    op = ClusterOperator(manager, opts, prober=HttpsProber(1.0) if processes else ImageProber(kubelet))
    loop = asyncio.get_running_loop()
    task = loop.create_task(manager.run())
    ktask = loop.create_task(kubelet.run())
    try:
        await asyncio.wait_for(manager.synced.wait(), 10)
        yield Env(client, kubelet, op)
    finally:
        manager.stop()
        ktask.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ktask
        kubelet.stop_all()
        await asyncio.wait_for(task, 10)
        await client.close()


async def test_cluster_lifecycle_release_rollback_and_delete(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with running(apiserver, tmp_path) as env:
        c = env.client
        env.kubelet.broken_images.add("kokpit:v1.99.0")
        await c.create(CPV, _cpv("v1", "v1.30.0", "kokpit:v1.30.0"))
        await c.create(CPV, _cpv("v2", "v1.31.0", "kokpit:v1.31.0"))
        await c.create(CPV, _cpv("bad", "v1.99.0", "kokpit:v1.99.0"))
        # the API server enforces the CPV's immutability (CEL) and the Cluster's ranges
        with pytest.raises(ApiError) as e:
            await c.patch(CPV, "v1", {"spec": {"kubernetesVersion": "v1.30.1"}})
        assert e.value.code == 422 and "immutable" in str(e.value)
        with pytest.raises(ApiError) as e:
            await c.create(CLUSTER, {"metadata": {"name": "big"}, "spec": {"packageVersion": "v1",
                                                                           "controlPlane": {"replicas": 6}}}, "default")
        assert e.value.code == 422
        await c.create(CLUSTER, {"metadata": {"name": "c1"},
                                 "spec": {"packageVersion": "v1", "simulation": {"nodes": 5}}}, "default")
        cl = await env.wait_cluster(lambda o: cond(o, "Ready").get("status") == "True", "c1 Ready")
        assert cl["spec"]["controlPlane"]["replicas"] == 1 and cl["spec"]["deletionPolicy"] == "Delete"
        assert cl["status"]["packageVersion"] == "v1" and cl["status"]["endpoint"].startswith("https://127.0.0.1:")
        pods = (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=c1")).items
        assert sorted(p["metadata"]["name"] for p in pods) == ["c1-kube-apiserver-0", "c1-machine-operator-0",
                                                              "c1-simulator-0"]
        assert all(p["metadata"]["ownerReferences"][0]["uid"] == cl["metadata"]["uid"] for p in pods)
        kc = yaml.safe_load(base64.b64decode((await c.get(SECRET, "c1-kubeconfig", "default"))["data"]["value"]))
        assert kc["clusters"][0]["cluster"]["server"] == cl["status"]["endpoint"]

        # release, then a release whose API server never gets ready: rolled back with the reason
        await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "v2"}}, "default")
        await env.wait_cluster(lambda o: o["status"].get("packageVersion") == "v2"
                               and cond(o, "Upgrading").get("reason") == "UpToDate", "c1 on v2")
        await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "bad"}}, "default")
        cl = await env.wait_cluster(lambda o: cond(o, "Upgrading").get("reason") == "RolledBack", "rollback")
        assert cl["status"]["packageVersion"] == "v2" and cl["status"]["failedPackageVersion"] == "bad"
        assert "post-check" in cond(cl, "Upgrading")["message"]
        assert cond(cl, "Ready")["status"] == "True"
        pods = (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=c1")).items
        assert {p["metadata"]["labels"]["kokpit.io/package-version"] for p in pods} == {"v2"}

        # deleting the Cluster removes everything it owned
        await c.delete(CLUSTER, "c1", "default")

        async def gone() -> bool:
            with contextlib.suppress(NotFoundError):
                await env.cluster()
                return False
            left = (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=c1")).items
            secrets = (await c.list(SECRET, "default", label_selector=f"{CLUSTER_LABEL}=c1")).items
            return not left and not secrets
        await wait_for(gone, "c1 and its Pods/Secrets gone")


async def test_real_api_server_pod_kubectl_and_version_swap(apiserver: ApiServerProcess, tmp_path: Path,
                                                            kubectl_bin: str) -> None:
    port = _free_port()
    opts = OperatorOptions(workers=2, poll=0.1, resync=0.5, unhealthy_timeout=60.0, release_timeout=60.0,
                           data_root="/clusters", port_range=(port, port))
    async with running(apiserver, tmp_path, processes=True, options=opts) as env:
        c = env.client
        await c.create(CPV, _cpv("v1", "v1.30.0"))
        await c.create(CPV, _cpv("v2", "v1.31.0"))
        await c.create(CLUSTER, {"metadata": {"name": "c1"}, "spec": {"packageVersion": "v1"}}, "default")
        await env.wait_cluster(lambda o: cond(o, "Ready").get("status") == "True", "c1 Ready", timeout=120)
        kc = tmp_path / "business.kubeconfig"
        kc.write_bytes(base64.b64decode((await c.get(SECRET, "c1-kubeconfig", "default"))["data"]["value"]))

        def kubectl(*args: str) -> str:
            return subprocess.run([kubectl_bin, "--kubeconfig", str(kc), *args], check=True, capture_output=True,
                                  text=True, timeout=20, env={**os.environ, "KUBECONFIG": ""}).stdout

        assert "v1.30.0" in await asyncio.to_thread(kubectl, "version", "-o", "yaml")
        cm = tmp_path / "cm.yaml"
        cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: default}\n"
                      "data: {k: v}\n")
        await asyncio.to_thread(kubectl, "apply", "-f", str(cm))
        # a release swaps the API server; its data (the host folder) survives the Pod
        await c.patch(CLUSTER, "c1", {"spec": {"packageVersion": "v2"}}, "default")
        await env.wait_cluster(lambda o: o["status"].get("packageVersion") == "v2"
                               and cond(o, "Ready").get("status") == "True", "c1 on v2", timeout=120)
        assert "v1.31.0" in await asyncio.to_thread(kubectl, "version", "-o", "yaml")
        assert "kept" in await asyncio.to_thread(kubectl, "get", "configmap", "kept", "-o", "name")
        await c.delete(CLUSTER, "c1", "default")

        async def gone() -> bool:
            with contextlib.suppress(NotFoundError):
                await env.cluster()
                return False
            return not env.kubelet.procs
        await wait_for(gone, "c1 gone and its API server process ended", timeout=60)


async def test_a_cluster_package_version_in_use_cannot_vanish(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """Issue 13: a ClusterPackageVersion a Cluster asks for, runs or would roll back to is held by a
    protection finalizer; the deletion completes when the last Cluster has moved off."""
    async with running(apiserver, tmp_path) as env:
        c = env.client
        await c.create(CPV, _cpv("keep-1", "v1.30.0", "kokpit:v1.30.0"))
        await c.create(CPV, _cpv("keep-2", "v1.31.0", "kokpit:v1.31.0"))
        await c.create(CLUSTER, {"metadata": {"name": "pc"},
                                 "spec": {"packageVersion": "keep-1", "simulation": {"nodes": 0}}}, "default")
        await env.wait_cluster(lambda o: cond(o, "Ready").get("status") == "True", "pc Ready", name="pc")
        await wait_for(lambda: _has_protection(c, "keep-1"), "keep-1 protected")
        await c.delete(CPV, "keep-1")

        async def held() -> Obj | None:
            cpv = await c.get(CPV, "keep-1")
            d = cond(cpv, "Deleting")
            return cpv if d.get("reason") == "InUse" and "Clusters default/pc" in d.get("message", "") else None
        await wait_for(held, "keep-1 deletion held by default/pc")

        async def warned() -> bool:
            evs = (await c.list(EVENT, "")).items
            return any(e["reason"] == "InUse" and e["type"] == "Warning" and
                       e["involvedObject"]["name"] == "keep-1" for e in evs)
        await wait_for(warned, "InUse Warning Event")
        cl = await env.cluster("pc")
        assert cond(cl, "Ready")["status"] == "True", "the Cluster keeps running its release"
        # moving to another release: once it runs there and its last good release is the new one, keep-1 goes
        await c.patch(CLUSTER, "pc", {"spec": {"packageVersion": "keep-2"}}, "default")

        async def gone() -> bool:
            try:
                await c.get(CPV, "keep-1")
            except NotFoundError:
                return True
            return False
        await wait_for(gone, "keep-1 deleted once unused", timeout=30)
        cl = await env.wait_cluster(lambda o: cond(o, "UpToDate").get("status") == "True", "pc on keep-2", name="pc")
        assert cl["status"]["packageVersion"] == "keep-2"
        await c.delete(CLUSTER, "pc", "default")


async def _has_protection(c: Client, name: str) -> bool:
    cpv = await c.get(CPV, name)
    return "kokpit.io/in-use-protection" in (cpv["metadata"].get("finalizers") or [])
