"""End to end on one machine: the embedded meta API server, the local kubelet and the cluster operator.

A Cluster with simulated nodes becomes Ready (its API server, simulator and machine operator run as real
processes), kubectl works with its kubeconfig and sees the simulated nodes, kill -9 of the business API server
is repaired with its data intact, and deleting the Cluster ends everything it owned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, POD, SECRET, ApiError, Client, NotFoundError, TransportError
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, CPV, OperatorOptions

from ._e2e import cond, free_range, operator_stack, pids, until

Obj = dict[str, Any]


def stack(apiserver: ApiServerProcess, tmp: Path) -> contextlib.AbstractAsyncContextManager[Client]:
    opts = OperatorOptions(workers=2, poll=0.2, resync=1.0, unhealthy_timeout=10.0, release_timeout=15.0,
                           data_root="/clusters", port_range=free_range())
    return operator_stack(apiserver, tmp, opts)


async def test_cluster_on_the_local_kubelet(apiserver: ApiServerProcess, tmp_path: Path, kubectl_bin: str) -> None:
    async with stack(apiserver, tmp_path) as c:
        await c.create(CPV, {"metadata": {"name": "v1"}, "spec": {"kubernetesVersion": "v1.30.7", "components": [
            {"name": "kube-apiserver", "image": "kokpit:dev", "args": ["apiserver"]},
            {"name": "simulator", "image": "kokpit:dev", "args": ["simulator", "--lease-period", "2s"]},
            {"name": "machine-operator", "image": "kokpit:dev", "args": ["machine-operator"]}]}})
        await c.create(CLUSTER, {"metadata": {"name": "e2e"},
                                 "spec": {"packageVersion": "v1", "simulation": {"nodes": 2}}}, "default")

        async def ready() -> Obj | None:
            cl = await c.get(CLUSTER, "e2e", "default")
            return cl if cond(cl, "Ready").get("status") == "True" else None
        cl = await until(ready, "Cluster Ready", 40)
        assert {x["name"]: x["readyReplicas"] for x in cl["status"]["components"]} == {
            "kube-apiserver": 1, "simulator": 1, "machine-operator": 1}
        # no business component Pod carries a meta-cluster token (ServiceAccount admission honours the opt-out)
        for pod in (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=e2e")).items:
            if pod["metadata"]["labels"].get("kokpit.io/component") != "machine-operator":
                assert not [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access")], pod
        kc = tmp_path / "e2e.kubeconfig"
        kc.write_bytes(base64.b64decode((await c.get(SECRET, "e2e-kubeconfig", "default"))["data"]["value"]))

        def kubectl(*args: str) -> str:
            return subprocess.run([kubectl_bin, "--kubeconfig", str(kc), *args], check=True, capture_output=True,
                                  text=True, timeout=20, env={**os.environ, "KUBECONFIG": ""}).stdout

        assert "v1.30.7" in await asyncio.to_thread(kubectl, "version", "-o", "yaml")

        async def nodes() -> bool:
            out = await asyncio.to_thread(kubectl, "get", "nodes", "-o", "name")
            return len(out.split()) == 2
        await until(nodes, "2 simulated nodes in the business cluster", 60)  # 20 s ran out under load
        cm = tmp_path / "cm.yaml"
        cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: default}\ndata: {k: v}\n")
        await asyncio.to_thread(kubectl, "apply", "-f", str(cm))

        # kill -9 of the business API server: repaired (data intact) within 15 s
        pid = pids(tmp_path / "kubelet")["e2e-kube-apiserver-0"]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        async def back() -> bool:
            try:
                out = await asyncio.to_thread(kubectl, "get", "configmap", "kept", "-o", "name")
            except subprocess.CalledProcessError:
                return False
            return "kept" in out
        await until(back, "business API server back after kill -9", 15)
        assert time.monotonic() - t0 < 15

        # deleting its API server Pod: the operator creates a new one on the same data within 15 s
        old_uid = (await c.get(POD, "e2e-kube-apiserver-0", "default"))["metadata"]["uid"]
        await c.delete(POD, "e2e-kube-apiserver-0", "default")
        t0 = time.monotonic()

        async def replaced() -> bool:
            with contextlib.suppress(NotFoundError):
                if (await c.get(POD, "e2e-kube-apiserver-0", "default"))["metadata"]["uid"] != old_uid:
                    return await back()
            return False
        await until(replaced, "a new API server Pod serving the old data", 15)
        assert time.monotonic() - t0 < 15

        # the business cluster's data lives in the host folder (the kubelet maps hostPaths under its data dir)
        folder = tmp_path / "kubelet" / "hostpath" / "clusters" / "default" / "e2e"
        assert (folder / "apiserver" / "state.db").is_file()
        assert (await c.get(CLUSTER, "e2e", "default"))["status"]["dataNodes"] == ["local"]

        await c.delete(CLUSTER, "e2e", "default")

        async def gone() -> bool:
            with contextlib.suppress(NotFoundError):
                await c.get(CLUSTER, "e2e", "default")
                return False
            pods = (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=e2e")).items
            return not pods
        await until(gone, "Cluster and its Pods gone", 30)
        # deletionPolicy Delete (the default): a cleanup Pod removed the data folder before the finalizer went
        assert not folder.exists() and folder.parent.is_dir()
        assert not (await c.list(SECRET, "default", label_selector=f"{CLUSTER_LABEL}=e2e")).items


async def test_two_api_server_replicas_share_the_data_and_take_over(apiserver: ApiServerProcess,
                                                                    tmp_path: Path, kubectl_bin: str) -> None:
    """controlPlane.replicas 2: one serves, one stands by on the same data folder; kill -9 of the serving one
    is covered by the standby at once; a release goes through both; Retain keeps the data after deletion."""
    async with stack(apiserver, tmp_path) as c:
        for name, kv in (("r1", "v1.30.7"), ("r2", "v1.31.2")):
            await c.create(CPV, {"metadata": {"name": name}, "spec": {"kubernetesVersion": kv, "components": [
                {"name": "kube-apiserver", "image": "kokpit:dev", "args": ["apiserver"]}]}})
        await c.create(CLUSTER, {"metadata": {"name": "ha"}, "spec": {
            "packageVersion": "r1", "controlPlane": {"replicas": 2}, "deletionPolicy": "Retain"}}, "default")

        async def ready() -> Obj | None:
            cl = await c.get(CLUSTER, "ha", "default")
            rows = (cl.get("status") or {}).get("components") or [{}]
            return cl if cond(cl, "Ready").get("status") == "True" and rows[0].get("readyReplicas") == 2 else None
        await until(ready, "Cluster Ready with 2 API server replicas", 40)
        kc = tmp_path / "ha.kubeconfig"
        kc.write_bytes(base64.b64decode((await c.get(SECRET, "ha-kubeconfig", "default"))["data"]["value"]))
        biz = Client.from_kubeconfig(kc)
        folder = tmp_path / "kubelet" / "hostpath" / "clusters" / "default" / "ha"
        try:
            await biz.create(CONFIGMAP, {"metadata": {"name": "kept"}, "data": {"k": "v"}}, "default")
            running = pids(tmp_path / "kubelet")
            serving = int((folder / "apiserver" / "apiserver.lock").read_text())
            standby = next(pid for name, pid in running.items() if name.startswith("ha-kube-apiserver-")
                           and pid != serving)
            assert serving in running.values()

            os.kill(serving, signal.SIGKILL)
            t0 = time.monotonic()

            async def served() -> bool:
                try:
                    return bool((await biz.get(CONFIGMAP, "kept", "default"))["data"] == {"k": "v"})
                except (ApiError, TransportError):
                    return False
            await until(served, "the standby serving after kill -9", 15)
            took = time.monotonic() - t0
            assert int((folder / "apiserver" / "apiserver.lock").read_text()) == standby  # it took over
            assert took < 10, took
            standby_pod = next(name for name, pid in running.items() if pid == standby)

            async def reported() -> bool:  # the Cluster says which replica serves now
                rows = (await c.get(CLUSTER, "ha", "default"))["status"]["components"]
                return str(rows[0].get("message", "")).startswith(f"{standby_pod} serving")
            await until(reported, "the Cluster naming the replica that took over", 15)

            await c.patch(CLUSTER, "ha", {"spec": {"packageVersion": "r2"}}, "default")

            async def upgraded() -> Obj | None:
                cl = await c.get(CLUSTER, "ha", "default")
                st = cl.get("status") or {}
                done = st.get("packageVersion") == "r2" and cond(cl, "Upgrading").get("reason") == "UpToDate"
                return cl if done and cond(cl, "Ready").get("status") == "True" else None
            cl = await until(upgraded, "release r2 through both replicas", 60)
            assert "failedPackageVersion" not in cl["status"]
            out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "--kubeconfig", str(kc), "version", "-o",
                                                           "json"], check=True, capture_output=True, text=True,
                                          timeout=20, env={**os.environ, "KUBECONFIG": ""})
            assert json.loads(out.stdout)["serverVersion"]["gitVersion"] == "v1.31.2"
            assert (await biz.get(CONFIGMAP, "kept", "default"))["data"] == {"k": "v"}
        finally:
            await biz.close()

        await c.delete(CLUSTER, "ha", "default")

        async def gone() -> bool:
            with contextlib.suppress(NotFoundError):
                await c.get(CLUSTER, "ha", "default")
                return False
            return not (await c.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=ha")).items
        await until(gone, "Cluster and its Pods gone", 30)
        # Retain: the data and the PKI (its CA and tokens) stay for a Cluster of the same name to pick up
        assert (folder / "apiserver" / "state.db").is_file()
        await c.get(SECRET, "ha-pki", "default")
