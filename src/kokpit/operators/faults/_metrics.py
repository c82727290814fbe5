"""Prometheus metrics of the fault controllers, on the machine operator's Manager registry (its /metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["FaultMetrics"]

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _FaultsCollector(Collector):
    """``kokpit_faults{type, severity, state}``: counted from the NodeFault cache at scrape time."""

    def __init__(self, objects: Callable[[], list[dict[str, Any]]]) -> None:
        self.objects = objects

    def collect(self) -> Iterator[Metric]:
        tally: Tally[tuple[str, str, str]] = Tally()
        for o in self.objects():
            st = o.get("status") or {}
            tally[(str((o.get("spec") or {}).get("type") or ""), str(st.get("severity") or ""),
                   str(st.get("state") or "Pending"))] += 1
        g = GaugeMetricFamily("kokpit_faults", "NodeFaults by type, severity and state",
                              labels=["type", "severity", "state"])
        for (t, sev, state), n in sorted(tally.items()):
            g.add_metric([t, sev, state], n)
        yield g


class FaultMetrics:
    """What the event center, the detector and the webhook deliverer count."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 faults: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        if faults is not None:
            r.register(_FaultsCollector(faults))
        self.episodes = Counter("kokpit_fault_episodes", "Fault episodes announced", ["type", "severity"],
                                registry=r)
        self.expired = Counter("kokpit_fault_expired", "Faults expired (no report within the TTL)", ["type"],
                               registry=r)
        self.deleted = Counter("kokpit_fault_deleted", "Faults deleted after the retention period", ["type"],
                               registry=r)
        self.reports = Counter("kokpit_fault_reports", "Reports written by the detector and ingesters",
                               ["type", "source"], registry=r)
        self.announce_latency = Histogram(
            "kokpit_fault_announce_latency_seconds", "First report of an episode → the event center announced it",
            buckets=_LATENCY, registry=r)
        self.detection_latency = Histogram(
            "kokpit_fault_detection_latency_seconds",
            "Signal (lease deadline passed, condition turned, pods failed) → NodeFault reported by the detector",
            ["signal"], buckets=_LATENCY, registry=r)
        self.deliveries = Counter("kokpit_fault_webhook_deliveries", "Webhook deliveries by outcome",
                                  ["subscription", "outcome"], registry=r)
