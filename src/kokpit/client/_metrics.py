"""Prometheus counters of API requests, on a registry the caller chooses so tests (and managers) read them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ClientMetrics"]


class ClientMetrics:
    """``kokpit_client_requests_total{verb,code}`` and request latency; code is ``<error>`` when no answer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "kokpit_client_requests",
            "API requests by verb and HTTP code",
            ["verb", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kokpit_client_request_duration_seconds",
            "API request latency by verb",
            ["verb"],
            registry=self.registry,
        )
        self.retries = Counter(
            "kokpit_client_retries", "API request retries by verb", ["verb"], registry=self.registry
        )

    def count(self, verb: str, code: int | str) -> float:
        """Current value of the request counter (tests use it)."""
        v = self.registry.get_sample_value("kokpit_client_requests_total", {"verb": verb, "code": str(code)})
        return v or 0.0
