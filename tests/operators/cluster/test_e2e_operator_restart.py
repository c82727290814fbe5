"""End to end: the cluster operator is killed with SIGKILL in the middle of a release and converges after restart.

The operator keeps everything it must remember in the API (which release a Pod runs, when a step began, the
last good release), so a fresh process must finish a release its predecessor left half done — without a
spurious rollback, without a second copy of any component, and with the business cluster's data intact.
The operator runs here as a real ``kokpit cluster-operator`` process (so kill -9 is the real thing) against a
real meta API server, with the local kubelet in-process running the business control plane as processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, EVENT, POD, SECRET, Client
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, COMPONENT_LABEL, CPV, VERSION_LABEL, pod_ready

from ._e2e import cond, free_range, local_kubelet, until

Obj = dict[str, Any]

NAME, NS = "rs", "default"
COMPONENTS = ("kube-apiserver", "simulator", "machine-operator")


def _cpv(name: str, kube: str, sim_args: list[str], mo_args: list[str]) -> Obj:
    # every component differs between the two releases, so each one must really be replaced
    return {"metadata": {"name": name}, "spec": {"kubernetesVersion": kube, "components": [
        {"name": "kube-apiserver", "image": "kokpit:dev", "args": ["apiserver"]},
        {"name": "simulator", "image": "kokpit:dev", "args": ["simulator", *sim_args]},
        {"name": "machine-operator", "image": "kokpit:dev", "args": ["machine-operator", *mo_args]}]}}


def _labels(p: Obj) -> dict[str, str]:
    return dict(p["metadata"].get("labels") or {})


def _version(p: Obj) -> str:
    return str(_labels(p).get(VERSION_LABEL))


def _of(pods: list[Obj], component: str) -> list[Obj]:
    return [p for p in pods if _labels(p).get(COMPONENT_LABEL) == component]


def api_server_starting(pods: list[Obj]) -> bool:
    """The first step is under way: the v2 API server Pod exists, not ready yet; the rest still runs v1."""
    api, sim, mo = (_of(pods, n) for n in COMPONENTS)
    return (len(api) == 1 and _version(api[0]) == "v2" and not pod_ready(api[0])
            and [_version(p) for p in sim + mo] == ["v1", "v1"])


def simulator_being_replaced(pods: list[Obj]) -> bool:
    """The first step is done (the v2 API server is ready); the simulator's v1 Pod is going, gone, or its v2
    Pod not ready yet; the machine operator still runs v1."""
    api, sim, mo = (_of(pods, n) for n in COMPONENTS)
    sim_mid = not sim or bool(sim[0]["metadata"].get("deletionTimestamp")) or (
        _version(sim[0]) == "v2" and not pod_ready(sim[0]))
    return (len(api) == 1 and _version(api[0]) == "v2" and pod_ready(api[0]) and sim_mid
            and [_version(p) for p in mo] == ["v1"])


# where the first operator dies, and which release each component's live Pod may run at that moment
KILL_POINTS: dict[str, tuple[Callable[[list[Obj]], bool], dict[str, set[str | None]]]] = {
    "api-server-starting": (api_server_starting,
                            {"kube-apiserver": {"v2"}, "simulator": {"v1"}, "machine-operator": {"v1"}}),
    "simulator-being-replaced": (simulator_being_replaced,
                                 {"kube-apiserver": {"v2"}, "simulator": {None, "v2"}, "machine-operator": {"v1"}}),
}


@contextlib.asynccontextmanager
async def operator_process(kubeconfig: Path, ports: tuple[int, int], log: Path, *, unhealthy_timeout: float = 10,
                           release_timeout: float = 20) -> AsyncIterator[asyncio.subprocess.Process]:
    """``kokpit cluster-operator`` as its own process group; SIGKILLed on the way out whatever happened."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kokpit", "cluster-operator", "--kubeconfig", str(kubeconfig),
            "--data-root", "/clusters", "--port-range", f"{ports[0]}-{ports[1]}", "--unhealthy-timeout",
            str(unhealthy_timeout), "--release-timeout", str(release_timeout), "--workers", "2",
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def business_version(kubeconfig: bytes) -> str | None:
    """The business API server's ``/version`` gitVersion (None while it is not answering)."""
    cluster = yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    try:
        async with httpx.AsyncClient(verify=ctx, timeout=3) as h:
            r = await h.get(f"{cluster['server']}/version")
    except httpx.HTTPError:
        return None
    return str(r.json()["gitVersion"]) if r.status_code == 200 else None


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
async def test_operator_kill_9_mid_upgrade_converges_after_restart(apiserver: ApiServerProcess, tmp_path: Path,
                                                                   kill_at: str) -> None:
    mid_upgrade, may_run = KILL_POINTS[kill_at]
    c = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="restart-e2e")
    await install_crds(c)
    ports = free_range()
    log = tmp_path / "operator.log"
    bkc = tmp_path / "business.kubeconfig"

    async def cluster() -> Obj:
        return await c.get(CLUSTER, NAME, NS)

    async def pods() -> list[Obj]:
        return (await c.list(POD, NS, label_selector=f"{CLUSTER_LABEL}={NAME}")).items

    try:
        async with local_kubelet(c, tmp_path / "kubelet"):
            await c.create(CPV, _cpv("v1", "v1.30.7", ["--lease-period", "2s"], []))
            await c.create(CPV, _cpv("v2", "v1.31.2", ["--lease-period", "3s"], ["--workers", "4"]))
            await c.create(CLUSTER, {"metadata": {"name": NAME},
                                     "spec": {"packageVersion": "v1", "simulation": {"nodes": 1}}}, NS)

            async with operator_process(apiserver.kubeconfig, ports, log) as first:
                async def ready_on_v1() -> bool:
                    cl = await cluster()
                    return bool(cond(cl, "Ready").get("status") == "True" and cl["status"].get("packageVersion") == "v1")
                await until(ready_on_v1, "Cluster Ready on v1", 30)
                business_kc = base64.b64decode((await c.get(SECRET, f"{NAME}-kubeconfig", NS))["data"]["value"])
                bkc.write_bytes(business_kc)
                assert await business_version(business_kc) == "v1.30.7"
                async with Client.from_kubeconfig(bkc, field_manager="restart-e2e") as bc:
                    await bc.create(CONFIGMAP, {"metadata": {"name": "kept"}, "data": {"k": "v"}}, "default")

                await c.patch(CLUSTER, NAME, {"spec": {"packageVersion": "v2"}}, NS)

                async def at_kill_point() -> bool:
                    return mid_upgrade(await pods())
                await until(at_kill_point, f"the release at {kill_at}", 30)  # generous: loaded CI machines
                os.killpg(first.pid, signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL

            # the operator is dead: this is the state it left, and it is not converged
            cl = await cluster()
            assert cl["status"]["packageVersion"] == "v1"
            assert (cond(cl, "Upgrading").get("status"), cond(cl, "Upgrading").get("reason")) == (
                "True", "UpgradeInProgress")
            left = {_labels(p)[COMPONENT_LABEL]: _labels(p)[VERSION_LABEL] for p in await pods()
                    if not p["metadata"].get("deletionTimestamp")}
            assert all(left.get(n) in may_run[n] for n in COMPONENTS), left

            async with operator_process(apiserver.kubeconfig, ports, log):
                async def converged() -> Obj | None:
                    cl = await cluster()
                    st = cl.get("status") or {}
                    ps = await pods()
                    done = (st.get("packageVersion") == "v2"
                            and cond(cl, "Upgrading").get("reason") == "UpToDate"
                            and cond(cl, "Ready").get("status") == "True"
                            and sorted(_labels(p)[COMPONENT_LABEL] for p in ps) == sorted(COMPONENTS)
                            and all(_labels(p)[VERSION_LABEL] == "v2" and pod_ready(p) for p in ps))
                    return cl if done else None
                cl = await until(converged, "v2 converged after the operator's restart", 30)
                ps = await pods()

                st = cl["status"]
                assert cond(cl, "Upgrading")["status"] == "False"
                assert "failedPackageVersion" not in st, st  # no spurious rollback
                assert st["lastGoodPackageVersion"] == "v2"
                assert {r["name"]: (r["version"], r["readyReplicas"], r["healthy"]) for r in st["components"]} == {
                    n: ("v2", 1, True) for n in COMPONENTS}
                assert sorted(p["metadata"]["name"] for p in ps) == sorted(f"{NAME}-{n}-0" for n in COMPONENTS)
                events = [e for e in (await c.list(EVENT, NS)).items
                          if (e.get("involvedObject") or {}).get("name") == NAME]
                assert not [e for e in events if e.get("reason") == "ReleaseFailed"], events
                # the restarted operator did the rest of the release itself
                assert any(f"replacing {NAME}-machine-operator-0 with v2" in str(e.get("message")) for e in events)
                assert await until(lambda: business_version(business_kc), "business /version", 10) == "v1.31.2"
                async with Client.from_kubeconfig(bkc, field_manager="restart-e2e") as bc:
                    assert (await bc.get(CONFIGMAP, "kept", "default"))["data"] == {"k": "v"}
    except BaseException:
        print("---- cluster operator log ----\n" + (log.read_text() if log.exists() else "(none)"))
        with contextlib.suppress(Exception):
            print("---- Cluster status ----\n" + yaml.safe_dump((await cluster()).get("status")))
            for p in await pods():
                print(p["metadata"]["name"], _labels(p).get(VERSION_LABEL), pod_ready(p),
                      p["metadata"].get("deletionTimestamp"), (p.get("status") or {}).get("phase"))
            for e in (await c.list(EVENT, NS)).items:
                print(e.get("reason"), e.get("message"))
        raise
    finally:
        await c.close()
