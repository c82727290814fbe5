"""Prometheus metrics of the runtime (reconciles and work queues), registered on a caller-chosen registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RuntimeMetrics"]

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RuntimeMetrics:
    """controller-runtime's metric set, named ``kokpit_*``: one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter(
            "kokpit_reconcile", "Reconciles by controller and result", ["controller", "result"], registry=r
        )
        self.reconcile_errors = Counter(
            "kokpit_reconcile_errors", "Reconciles that raised", ["controller"], registry=r
        )
        self.reconcile_duration = Histogram(
            "kokpit_reconcile_duration_seconds",
            "Reconcile duration",
            ["controller"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("kokpit_workqueue_depth", "Items waiting in the queue", ["name"], registry=r)
        self.queue_adds = Counter("kokpit_workqueue_adds", "Items added to the queue", ["name"], registry=r)
        self.queue_latency = Histogram(
            "kokpit_workqueue_queue_duration_seconds",
            "Time an item waits before a worker takes it",
            ["name"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.work_duration = Histogram(
            "kokpit_workqueue_work_duration_seconds",
            "Time a worker holds an item",
            ["name"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.retries = Counter("kokpit_workqueue_retries", "Rate-limited re-adds", ["name"], registry=r)

    def value(self, name: str, labels: dict[str, str]) -> float:
        """A sample's current value (0 when absent); tests and the manager's readiness read it."""
        return self.registry.get_sample_value(name, labels) or 0.0
