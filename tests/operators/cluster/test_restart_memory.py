"""A cluster operator restarted in the middle of failures decides as its predecessor would have.

What it remembers lives in the Cluster's status (``status.failures``) and in port records in the API: how
often a Pod was replaced (the backoff and the Degraded state), since when the business API server fails its
probe (the rollback timer of a release), which NodePorts are whose.  The first test restarts a real operator
against the real API server (so the CRD schema must keep the records); the others use the in-memory harness
with a fake clock and a fresh reconciler (empty memory, as after kill -9).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from kokpit._lib.clock import parse_time
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, POD
from kokpit.operators.cluster import CLUSTER_LABEL, CPV, PORT_LABEL, OperatorOptions

from .conftest import Harness
from .test_integration import CLUSTER, Env, _cpv, cond, running, wait_for

Obj = dict[str, Any]

OPTS = dict(workers=4, poll=0.1, resync=0.5, unhealthy_timeout=1.0, release_timeout=3.0, retry_base=1.0,
            retry_cap=30.0, max_failures=2, data_root="/clusters", port_range=(42000, 42999))


def _record(cl: Obj, name: str) -> Obj | None:
    return next((f for f in (cl.get("status") or {}).get("failures") or [] if f["name"] == name), None)


async def _replaced(env: Env, times: int) -> Obj:
    async def check() -> Obj | None:
        cl = await env.cluster()
        r = _record(cl, "pod/c1-simulator-0")
        return cl if r is not None and int(r["count"]) >= times else None
    out: Obj = await wait_for(check, f"c1-simulator-0 replaced {times} times", 30)
    return out


async def test_restart_keeps_degraded_and_the_replacement_backoff(apiserver: ApiServerProcess,
                                                                    tmp_path: Path) -> None:
    async with running(apiserver, tmp_path, options=OperatorOptions(**OPTS)) as env:  # type: ignore[arg-type]
        c = env.client
        cpv = _cpv("v1", "v1.30.0", "kokpit:v1.30.0")
        cpv["spec"]["components"][1]["image"] = "kokpit:sim"  # the simulator alone can be broken
        await c.create(CPV, cpv)
        await c.create(CLUSTER, {"metadata": {"name": "c1"},
                                 "spec": {"packageVersion": "v1", "simulation": {"nodes": 1}}}, "default")
        await env.wait_cluster(lambda o: cond(o, "Ready").get("status") == "True", "c1 Ready", timeout=30)
        ports = sorted(int(r["data"]["number"]) for r in (await c.list(
            CONFIGMAP, "kube-system", label_selector=PORT_LABEL)).items if r["data"]["cluster"] == "default/c1")
        assert len(ports) == 6  # https, driver and the metrics of 4 components, recorded as c1's
        # the simulator's new Pods never get ready: replaced with backoff, Degraded after two replacements
        env.kubelet.broken_images.add("kokpit:sim")
        cl = await _replaced(env, 2)
        await env.wait_cluster(lambda o: cond(o, "Degraded").get("status") == "True", "c1 Degraded")
    second = _record(cl, "pod/c1-simulator-0")
    assert second is not None and int(second["count"]) == 2
    deadline = parse_time(second["nextRetryTime"])

    # a new operator (nothing in memory) over the same API: Degraded must hold throughout, and the next
    # replacement waits for the deadline the first one set and counts on from 2
    async with running(apiserver, tmp_path / "2", options=OperatorOptions(**OPTS)) as env:  # type: ignore[arg-type]
        env.kubelet.broken_images.add("kokpit:sim")
        seen: list[tuple[str, str]] = []
        stop = asyncio.Event()

        async def watch_degraded() -> None:
            while not stop.is_set():
                o = await env.cluster()
                seen.append((o["metadata"]["resourceVersion"], cond(o, "Degraded").get("status", "")))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_degraded())
        try:
            cl = await _replaced(env, 3)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        third = _record(cl, "pod/c1-simulator-0")
        assert third is not None and int(third["count"]) == 3
        assert parse_time(third["lastFailureTime"]) >= deadline
        assert (parse_time(third["nextRetryTime"]) - parse_time(third["lastFailureTime"])).total_seconds() == 4.0
        assert third["firstFailureTime"] == second["firstFailureTime"]
        assert seen and all(s == "True" for _, s in seen), seen
        assert cond(cl, "Degraded")["status"] == "True" and "replaced 3 times" in cond(cl, "Degraded")["message"]
        # deleting the Cluster gives its ports back
        await env.client.delete(CLUSTER, "c1", "default")

        async def ports_released() -> bool:
            left = (await env.client.list(CONFIGMAP, "kube-system", label_selector=PORT_LABEL)).items
            return not [r for r in left if r["data"]["cluster"] == "default/c1"]
        await wait_for(ports_released, "c1's port records deleted", 30)
        pods = (await env.client.list(POD, "default", label_selector=f"{CLUSTER_LABEL}=c1")).items
        assert not pods


async def test_restart_mid_failing_release_keeps_the_rollback_timer(harness: Harness) -> None:
    """The new API server Pod is Ready but /readyz fails: the rollback timer is "failing since", which a
    restarted operator must not start over."""
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cpv("bad", "v1.99.0")
    h.cluster(cpv="v1", nodes=0)
    await h.converge()
    h.prober.broken.add("v1.99.0")  # its Pod gets Ready, its endpoint answers 503
    h.cluster(cpv="bad", nodes=0)
    await h.converge()
    assert h.pod_versions() == {"c1-kube-apiserver-0": "bad"}
    since = next(f for f in h.status()["failures"] if f["name"] == "probe/apiserver")
    await h.clock.advance(15)  # release_timeout is 20
    await h.run()
    assert h.cond("Upgrading")["reason"] == "UpgradeInProgress"
    h.new_reconciler()  # kill -9: all memory gone
    await h.clock.advance(6)  # 21s since the probe began to fail, 6s since the restart
    await h.run()
    assert h.status()["failedPackageVersion"] == "bad" and h.cond("Upgrading")["reason"] == "RollingBack"
    assert next(f for f in h.status()["failures"] if f["name"] == "probe/apiserver") == since
    await h.converge()
    assert h.pod_versions() == {"c1-kube-apiserver-0": "v1"} and h.cond("Upgrading")["reason"] == "RolledBack"
    assert not [f for f in h.status().get("failures", []) if f["name"] == "probe/apiserver"]


async def test_restart_keeps_degraded_in_the_harness(harness: Harness) -> None:
    """The same as the first test without a server: Degraded and the count survive a fresh reconciler."""
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1", nodes=3)
    await h.converge()
    for _ in range(3):
        sim = h.pods.get_by_name("c1-simulator-0", "default")
        sim["status"]["phase"] = "Failed"
        h.pods.put(sim)
        await h.clock.advance(120)
        await h.run()
        await h.converge()
    assert h.cond("Degraded")["status"] == "True"
    h.new_reconciler()
    await h.run()
    deg = h.cond("Degraded")
    assert deg["status"] == "True" and "c1-simulator-0 replaced 3 times" in deg["message"]
    await h.clock.advance(200)  # healthy past its backoff and the timeout: forgiven, as before the restart
    await h.converge()
    assert h.cond("Degraded")["status"] == "False" and "failures" not in h.status()
