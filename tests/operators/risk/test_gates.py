"""Business-metric gates end to end: a real Prometheus (Debian's package) scraping the risk center's own
/metrics decides a PromQL gate, an unreachable Prometheus fails its gate, and the built-in synthetic pod
prober stops a running upgrade wave when the simulator's nodes start failing pods, and lets it go on after
they recover."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.operators.risk.conftest import FAST, business_is_meta, eventually, permits, policy

from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import Client
from kokpit.nodes.simulator import SimulatorDriver
from kokpit.operators.risk import run_center
from kokpit.runtime import Manager
from kokpit.runtime.permits import RISK_POLICY, PermitDenied
from kokpit.scheduler import Scheduler
from kokpit.simulator import Simulator, SimulatorOptions

Obj = dict[str, Any]
DRAIN = OperationType.NODE_DRAIN


METRICS_TOKEN = "prometheus-scrape-token-0123456789"  # /metrics is HTTPS + bearer token (_lib.metricsserver)


class Prometheus:
    """`prometheus` from Debian's package, own config, free port, temp dir; stopped by the test."""

    def __init__(self, tmp: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: `apt-get install -y prometheus` (.ci/run installs it)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: kokpit\n    scheme: https\n    tls_config:\n"
            f"      insecure_skip_verify: true\n    authorization:\n      credentials: {METRICS_TOKEN}\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_port: int) -> Iterator[Prometheus]:
    (tmp_path / "prom").mkdir()
    p = Prometheus(tmp_path / "prom", f"127.0.0.1:{metrics_port}")
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()


async def test_prometheus_gate_decides_from_kokpit_metrics_and_unreachable_fails(
        meta: Client, apiserver: ApiServerProcess, prometheus: Prometheus, metrics_port: int) -> None:
    # the "switch" policy's paused gauge is a kokpit metric the test can flip; the gate reads it back through
    # the real Prometheus scraping the risk center's /metrics
    await policy(meta, "switch", operations=["cluster-delete"], paused=False)
    await policy(meta, "prom-gated", operations=["node-drain"], gates=[{
        "name": "not-switched", "prometheus": {"url": prometheus.url,
                                               "query": 'max(kokpit_risk_policy_paused{policy="switch"})'},
        "comparison": "<", "threshold": 1}])
    await policy(meta, "dead-source", operations=["node-reboot"], gates=[{
        "name": "nowhere", "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "query": "up",
                                          "timeoutSeconds": 1}, "threshold": 1}])
    task = asyncio.create_task(run_center(apiserver.kubeconfig, FAST, http_port=metrics_port,
                                          handle_signals=False, leader_election=False,
                                          metrics_tokens=[METRICS_TOKEN]))
    pc = permits(meta)
    try:
        first = await pc.request(DRAIN, ["n1"])
        assert (await pc.wait(first.name, timeout=60)).granted  # once Prometheus has scraped a 0
        await pc.release(first.name, PermitOutcome.SUCCEEDED)
        await meta.patch(RISK_POLICY, "switch", {"spec": {"paused": True}})
        # the metric reaches the gate through a scrape and a gate evaluation: wait until the gate sees it
        gate = await eventually(lambda: _gate(meta, "prom-gated", passing=False), timeout=60,
                                what="gate failing in status")
        assert gate["value"] == 1
        second = await pc.request(DRAIN, ["n2"])
        denied = await pc.wait(second.name, timeout=60, granted_only=False)
        assert denied.state is PermitState.DENIED, denied.status
        reason = denied.status["reasons"][0]
        assert reason["policy"] == "prom-gated" and reason["reason"] == "GateFailing"
        assert "not-switched: 1" in reason["message"]
        await meta.patch(RISK_POLICY, "switch", {"spec": {"paused": False}})
        assert (await pc.wait(second.name, timeout=60)).granted
        # an unreachable metric source is a failing gate, never a passing one
        reboot = await pc.request(OperationType.NODE_REBOOT, ["n3"])
        d = await pc.wait(reboot.name, timeout=30, granted_only=False)
        assert d.state is PermitState.DENIED
        assert "source unreachable" in d.status["reasons"][0]["message"]
    finally:
        await pc.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gate(meta: Client, name: str, passing: bool) -> Obj | None:
    p = await meta.get(RISK_POLICY, name)
    return next((g for g in (p.get("status") or {}).get("gates") or [] if g["passing"] is passing
                 and "value" in g), None)


async def _fault(sim: Simulator, node: str, kind: str) -> None:
    d = SimulatorDriver(sim.driver_url, tls=sim.client_tls, timeout=10.0)
    try:
        await d.fault(node, kind, "", "")
    finally:
        await d.close()


async def test_failing_pod_creation_stops_a_running_upgrade_wave(
        meta: Client, apiserver: ApiServerProcess, tmp_path: Path) -> None:
    sim = Simulator(SimulatorOptions(nodes=3, driver_port=0, lease_period=1.0, status_report_period=1.0,
                                     data_dir=tmp_path / "sim"), meta)
    await sim.start()
    sched_client = Client.from_kubeconfig(apiserver.kubeconfig, field_manager="kube-scheduler")
    sched = Manager(sched_client, http_port=None, handle_signals=False)
    Scheduler(sched)  # the simulator only plays kubelets: the real scheduler binds the probe Pods
    sched_task = asyncio.create_task(sched.run())
    task: asyncio.Task[None] | None = None
    pc = permits(meta, holder="upgrade-wave")
    try:
        await business_is_meta(meta, apiserver, "c1", nodes=0)  # the simulator's nodes are the business nodes
        await policy(meta, "pods-must-start", operations=["component-upgrade"], maxConcurrent=1, gates=[{
            "name": "pod-creation", "builtin": "podCreationSuccessRate", "threshold": 0.75, "window": "6s",
            "minSamples": 2}])
        opts = dataclasses.replace(FAST, probe_timeout=2.0)
        task = asyncio.create_task(run_center(apiserver.kubeconfig, opts, http_port=None, handle_signals=False,
                                              leader_election=False))
        started: list[float] = []
        stopped_by: list[PermitDenied] = []
        broken_at: list[float] = []

        async def wave() -> None:
            for i in range(1000):
                try:
                    async with pc.hold(OperationType.COMPONENT_UPGRADE, [f"sim-{i:05d}"], wait_timeout=8):
                        started.append(time.monotonic())
                        await asyncio.sleep(0.05)
                except PermitDenied as e:
                    stopped_by.append(e)
                    return

        await eventually(lambda: _gate(meta, "pods-must-start", passing=True), timeout=60,
                         what="the probes to pass the gate")
        runner = asyncio.create_task(wave())
        await eventually(lambda: _true(len(started) >= 5), timeout=60, what="the wave to run")
        for n in range(1, 4):  # every node breaks: pods bound there fail, new ones find no node
            await _fault(sim, f"sim-{n:05d}", "hardware")
        broken_at.append(time.monotonic())
        await asyncio.wait_for(runner, 90)
        assert stopped_by, "the wave never stopped"
        e = stopped_by[0]
        assert e.permit.state is PermitState.DENIED
        reason = e.permit.status["reasons"][0]
        assert reason["policy"] == "pods-must-start" and reason["reason"] == "GateFailing"
        after = [t for t in started if t > broken_at[0]]
        # the gate needs a few failed probes inside its window to fall under 75%: a handful may still start
        assert len(after) < len(started), (len(after), len(started))
        count = len(started)
        # recovery: probes succeed again, the gate passes, the next upgrade is granted
        await _fault(sim, "*", "recover")
        nxt = await pc.request(OperationType.COMPONENT_UPGRADE, ["sim-00002"])
        assert (await pc.wait(nxt.name, timeout=60)).granted
        assert count == len(started)
    finally:
        await pc.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sched.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sched_task, 10)
        await sched_client.close()
        await sim.stop()


async def _true(v: bool) -> bool:
    return v


async def test_probe_samples_survive_a_restart_so_the_gate_decides_the_same(meta: Client) -> None:
    """The prober persists what a builtin gate decides on (kokpit-probe/kokpit-probe-samples in the business
    cluster): a new prober (a restarted or newly elected risk center) reads the samples back and the gate gives
    the same reading at once, instead of failing until minSamples new probes ran."""
    from prometheus_client import CollectorRegistry

    from kokpit.api.risk import MetricGate
    from kokpit.client import CONFIGMAP
    from kokpit.operators.risk._gates import (
        PROBE_NAMESPACE,
        SAMPLES_CONFIGMAP,
        PodProber,
        ProbeMetrics,
        ProbeSample,
        evaluate_builtin,
    )

    gate = MetricGate.model_validate({"name": "pods", "builtin": "podCreationSuccessRate", "threshold": 0.9,
                                      "window": "5m", "minSamples": 3})
    first = PodProber("default/c1", meta, ProbeMetrics(CollectorRegistry()), interval=0.1, timeout=0.3)
    await first._setup()
    now = time.time()
    for i, ok in enumerate((True, True, False, True)):
        first.samples.append(ProbeSample(now - 60 + i, ok, 0.2 if ok else 30.0, "" if ok else "pod \"x\" failed"))
    first.samples.append(ProbeSample(now - 7200, True, 0.1))  # older than the prober keeps
    sample = await first.probe_once()  # nothing runs the Pod here: a real failed probe, persisted like the rest
    assert not sample.ok and "not Running" in sample.message
    cm = await meta.get(CONFIGMAP, SAMPLES_CONFIGMAP, PROBE_NAMESPACE)
    assert len(cm["data"]["samples"].splitlines()) == 6
    before = evaluate_builtin(gate, list(first.samples), None, time.time())
    assert before.value is not None and not before.passing  # 3 of 5 recent probes succeeded

    second = PodProber("default/c1", meta, ProbeMetrics(CollectorRegistry()), interval=0.1, timeout=0.3)
    assert evaluate_builtin(gate, list(second.samples), None, time.time()).value is None  # nothing in memory
    await second._setup()  # what run() does first
    assert [round(s.at, 3) for s in second.samples] == sorted(round(s.at, 3) for s in first.samples
                                                             if s.at > now - 3600)
    assert second.samples[2].message == "pod \"x\" failed"
    after = evaluate_builtin(gate, list(second.samples), None, time.time())
    assert (after.passing, after.value) == (before.passing, before.value)
