"""Business-metric gates: the synthetic pod prober (built in) and PromQL queries against a Prometheus.

Component health checks miss what users feel, so a policy may require e.g. "pod creation success rate >= 99%
over 5 minutes" in every cluster it covers.  The built-in source needs no extra software: one prober per
business cluster creates a small Pod every few seconds, times create → Running the way kube's pod-startup
SLO does, and deletes it (the results are Prometheus metrics too).  A Prometheus gate runs an instant query.
A source that cannot be read is a **failing** gate whose message says so — never a passing one.

The prober's samples are what a builtin gate decides on, so they live in the API, not only in memory: after
every probe the prober writes them to the ConfigMap ``kokpit-probe/kokpit-probe-samples`` of the business
cluster it probes (the samples of the last hour, one compact line each), and a prober that starts — after a
risk-center restart or a leader hand-over — reads them back first.  A restart therefore decides the same as
the process before it did, instead of failing every gate until ``minSamples`` new probes ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from kokpit._lib.clock import Clock, RealClock
from kokpit.api.risk import BuiltinMetric, Comparison, MetricGate
from kokpit.client import (
    CONFIGMAP,
    NAMESPACE,
    POD,
    AlreadyExistsError,
    ApiError,
    Client,
    JsonHttpClient,
    NotFoundError,
    TransportError,
)
from kokpit.operators.risk._decide import GateReading, NodeInfo
from kokpit.operators.risk._schedule import parse_duration

__all__ = ["PROBE_NAMESPACE", "SAMPLES_CONFIGMAP", "PodProber", "ProbeSample", "compare", "decode_samples",
           "encode_samples", "evaluate_builtin", "query_prometheus"]

log = logging.getLogger("kokpit.operators.risk.gates")

Obj = dict[str, Any]
PROBE_NAMESPACE = "kokpit-probe"
PROBE_LABEL = "kokpit.io/probe"
SAMPLES_CONFIGMAP = "kokpit-probe-samples"
_SAMPLES_KEY = "samples"


def compare(value: float, comparison: Comparison, threshold: float) -> bool:
    return {Comparison.GE: value >= threshold, Comparison.GT: value > threshold,
            Comparison.LE: value <= threshold, Comparison.LT: value < threshold}[comparison]


@dataclass(frozen=True)
class ProbeSample:
    at: float  # epoch seconds the probe Pod was created
    ok: bool
    latency: float  # create → Running (the timeout for failures)
    message: str = ""


def encode_samples(samples: Any) -> str:
    """One line per sample: ``<epoch> <1|0> <latency> <message as JSON>`` (compact: an hour fits easily)."""
    return "\n".join(f"{s.at:.3f} {int(s.ok)} {s.latency:.3f} {json.dumps(s.message)}" for s in samples)


def decode_samples(text: str) -> list[ProbeSample]:
    """The samples of :func:`encode_samples`; lines that do not parse are skipped (never a crash)."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        try:
            msg = json.loads(parts[3]) if len(parts) > 3 else ""
            out.append(ProbeSample(float(parts[0]), parts[1] == "1", float(parts[2]), str(msg)))
        except (ValueError, IndexError):
            continue
    return out


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(0.99 * len(s)) - 1))]


def evaluate_builtin(gate: MetricGate, samples: list[ProbeSample] | None, nodes: dict[str, NodeInfo] | None,
                     now: float) -> GateReading:
    """A builtin gate's reading from the prober's samples (or the observed nodes)."""
    assert gate.builtin is not None
    if gate.builtin is BuiltinMetric.NODE_NOT_READY_RATIO:
        if not nodes:
            return GateReading(False, None, "the cluster's nodes cannot be observed")
        value = sum(1 for n in nodes.values() if not n.available) / len(nodes)
    else:
        if samples is None:
            return GateReading(False, None, "no prober runs for this cluster (its API server is unreachable)")
        window = parse_duration(gate.window)
        recent = [s for s in samples if s.at > now - window]
        if len(recent) < gate.min_samples:
            return GateReading(False, None, f"only {len(recent)} probe samples in the last {gate.window} "
                                            f"(needs {gate.min_samples})")
        if gate.builtin is BuiltinMetric.POD_CREATION_SUCCESS_RATE:
            value = sum(1 for s in recent if s.ok) / len(recent)
        else:
            value = _p99([s.latency for s in recent])
        failed = [s.message for s in recent if not s.ok and s.message]
        if not compare(value, gate.comparison, gate.threshold) and failed:
            return GateReading(False, value, f"last probe failure: {failed[-1]}")
    return GateReading(compare(value, gate.comparison, gate.threshold), value)


async def query_prometheus(gate: MetricGate, cluster: str) -> GateReading:
    """Run the gate's PromQL (``$cluster``/``$namespace`` substituted) and compare every series."""
    assert gate.prometheus is not None
    ns, _, name = cluster.partition("/")
    query = gate.prometheus.query.replace("$namespace", ns).replace("$cluster", name)
    try:
        http = JsonHttpClient(gate.prometheus.url, timeout=gate.prometheus.timeout_seconds)
    except ValueError as e:
        return GateReading(False, None, f"source unreachable: {e}")
    try:
        resp = await http.get("/api/v1/query", params={"query": query})
    except (TransportError, OSError) as e:
        return GateReading(False, None, f"source unreachable: {gate.prometheus.url}: {e}")
    finally:
        await http.close()
    data = resp.data if isinstance(resp.data, dict) else {}
    if not resp.ok or data.get("status") != "success":
        return GateReading(False, None, f"query failed (HTTP {resp.status}): {data.get('error', '')}".strip())
    result = (data.get("data") or {}).get("result")
    rtype = (data.get("data") or {}).get("resultType")
    try:
        if rtype == "scalar" and isinstance(result, list):
            values = [float(result[1])]
        else:
            values = [float(s["value"][1]) for s in result or []]
    except (TypeError, ValueError, KeyError, IndexError) as e:
        return GateReading(False, None, f"unexpected answer: {e}")
    if not values:
        return GateReading(False, None, f"query returned no data: {query}")
    worst = min(values) if gate.comparison in (Comparison.GE, Comparison.GT) else max(values)
    ok = all(compare(v, gate.comparison, gate.threshold) for v in values)
    return GateReading(ok, worst, "" if ok else f"{len(values)} series, worst {worst:g}")


class ProbeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = Counter("kokpit_probe_pod_creations_total", "Synthetic probe Pods by outcome.",
                               ["cluster", "result"], registry=registry)
        self.startup = Histogram("kokpit_probe_pod_startup_seconds", "Probe Pod create → Running.",
                                 ["cluster"], registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))


class PodProber:
    """Creates a small Pod in one business cluster every ``interval`` seconds, times create → Running and
    deletes it; keeps the samples of the last ``keep`` seconds."""

    def __init__(self, cluster: str, client: Client, metrics: ProbeMetrics, *, interval: float = 5.0,
                 timeout: float = 30.0, keep: float = 3600.0, clock: Clock | None = None) -> None:
        self.cluster = cluster
        self.client = client
        self.metrics = metrics
        self.interval = interval
        self.timeout = timeout
        self.keep = keep
        self._clock: Clock = clock or RealClock()
        self.samples: deque[ProbeSample] = deque()
        self._seq = 0

    async def _setup(self) -> None:
        with contextlib.suppress(AlreadyExistsError):
            await self.client.create(NAMESPACE, {"metadata": {"name": PROBE_NAMESPACE}})
        for p in (await self.client.list(POD, PROBE_NAMESPACE, label_selector={PROBE_LABEL: "true"})).items:
            with contextlib.suppress(NotFoundError):
                await self.client.delete(POD, p["metadata"]["name"], PROBE_NAMESPACE, grace_period_seconds=0)
        await self.load()

    async def load(self) -> int:
        """Take up the samples an earlier prober of this cluster persisted (within ``keep``); how many."""
        try:
            cm = await self.client.get(CONFIGMAP, SAMPLES_CONFIGMAP, PROBE_NAMESPACE)
        except NotFoundError:
            return 0
        horizon = self._clock.now().timestamp() - self.keep
        old = [x for x in decode_samples(str((cm.get("data") or {}).get(_SAMPLES_KEY) or "")) if x.at >= horizon]
        seen = {x.at for x in self.samples}
        merged = sorted([*(x for x in old if x.at not in seen), *self.samples], key=lambda x: x.at)
        self.samples = deque(merged)
        return len(old)

    async def save(self) -> None:
        """Write the samples to the business cluster (what a restarted prober starts from)."""
        data = {_SAMPLES_KEY: encode_samples(self.samples)}
        try:
            await self.client.patch(CONFIGMAP, SAMPLES_CONFIGMAP, {"data": data}, PROBE_NAMESPACE)
        except NotFoundError:
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": SAMPLES_CONFIGMAP, "namespace": PROBE_NAMESPACE}, "data": data}, PROBE_NAMESPACE)

    def _pod(self) -> Obj:
        self._seq += 1
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"probe-{int(time.time() * 1000)}-{self._seq}", "namespace": PROBE_NAMESPACE,
                             "labels": {PROBE_LABEL: "true"}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                         "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}}}]}}

    async def probe_once(self) -> ProbeSample:
        at = self._clock.now().timestamp()
        t0 = self._clock.monotonic()
        body = self._pod()
        name = body["metadata"]["name"]
        ok, message = False, ""
        try:
            made = await self.client.create(POD, body, PROBE_NAMESPACE)
            ok, message = await self._wait_running(name, str(made["metadata"].get("resourceVersion") or ""))
        except (ApiError, TransportError, OSError) as e:
            message = f"create failed: {e}"
        latency = self._clock.monotonic() - t0 if ok else self.timeout
        with contextlib.suppress(ApiError, TransportError, OSError):
            await self.client.delete(POD, name, PROBE_NAMESPACE, grace_period_seconds=0)
        sample = ProbeSample(at, ok, latency, message)
        self.samples.append(sample)
        while self.samples and self.samples[0].at < at - self.keep:
            self.samples.popleft()
        self.metrics.created.labels(self.cluster, "success" if ok else "failure").inc()
        if ok:
            self.metrics.startup.labels(self.cluster).observe(latency)
        try:
            await self.save()
        except (ApiError, TransportError, OSError) as e:  # kept in memory; the next probe writes them all
            log.info("prober of %s cannot persist its samples: %s", self.cluster, e)
        return sample

    async def _wait_running(self, name: str, rv: str) -> tuple[bool, str]:
        last = "did not reach Running"
        try:
            async with asyncio.timeout(self.timeout):
                stream = self.client.watch(POD, PROBE_NAMESPACE, resource_version=rv,
                                           field_selector=f"metadata.name={name}",
                                           timeout_seconds=int(self.timeout) + 1)
                async with contextlib.aclosing(stream):
                    async for ev in stream:
                        st = ev.object.get("status") or {}
                        phase = st.get("phase")
                        if phase == "Running":
                            return True, ""
                        if phase == "Failed":
                            return False, f"probe Pod failed: {st.get('reason', '')} {st.get('message', '')}"
                        if st.get("reason") or st.get("message"):
                            last = f"{st.get('reason', '')} {st.get('message', '')}".strip()
        except TimeoutError:
            return False, f"not Running after {self.timeout:.0f}s: {last}"
        return False, last

    async def run(self) -> None:
        while True:
            try:
                await self._setup()
                break
            except (ApiError, TransportError, OSError) as e:
                log.info("prober of %s cannot start yet: %s", self.cluster, e)
                await self._clock.sleep(self.interval)
        while True:
            t0 = self._clock.monotonic()
            await self.probe_once()
            await self._clock.sleep(max(0.0, self.interval - (self._clock.monotonic() - t0)))
