"""The flow controller's Prometheus metrics: flows by step and state, time to isolate and to repair,
escalations, hand-overs to people, and the storm breaker."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

__all__ = ["FlowMetrics"]

_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class _FlowsByStep:
    """``kokpit_maintenance_flows{step,state}``, counted from the informer cache at scrape time."""

    def __init__(self, flows: Callable[[], list[dict[str, Any]]]) -> None:
        self.flows = flows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("kokpit_maintenance_flows", "MaintenanceFlows by current step and state.",
                              labels=["step", "state"])
        tally = Tally((str((f.get("status") or {}).get("step") or "Pending"),
                       str((f.get("status") or {}).get("phase") or "Pending")) for f in self.flows())
        for (step, state), n in sorted(tally.items()):
            g.add_metric([step, state], n)
        yield g


class FlowMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.isolate = Histogram("kokpit_maintenance_time_to_isolate_seconds",
                                 "Flow created (fault seen) to the node cordoned and tainted.", registry=registry,
                                 buckets=_BUCKETS)
        self.repair = Histogram("kokpit_maintenance_time_to_repair_seconds",
                                "Flow created to the node verified and given back.", registry=registry,
                                buckets=_BUCKETS)
        self.escalations = Counter("kokpit_maintenance_escalations_total",
                                   "Repairs escalated to a stronger flow.", ["from_flow", "to_flow"],
                                   registry=registry)
        self.manual = Counter("kokpit_maintenance_manual_required_total",
                              "Flows handed to a person (ManualRequired).", registry=registry)
        self.completed = Counter("kokpit_maintenance_flows_completed_total", "Flows finished, by reason.",
                                 ["reason"], registry=registry)
        self.created = Counter("kokpit_maintenance_flows_created_total", "Flows opened for faulty nodes.",
                               registry=registry)
        self.storm_open = Gauge("kokpit_maintenance_storm_breaker_open", "1 while the fault-storm breaker is open.",
                                ["policy"], registry=registry)
        self.storm_trips = Counter("kokpit_maintenance_storm_breaker_trips_total", "Fault-storm breaker trips.",
                                   ["policy"], registry=registry)
        self.faulty = Gauge("kokpit_maintenance_faulty_nodes", "Nodes with an open maintenance flow.", ["policy"],
                            registry=registry)

    def watch_flows(self, flows: Callable[[], list[dict[str, Any]]]) -> None:
        if self.registry is not None:
            self.registry.register(_FlowsByStep(flows))
