"""The risk center's Prometheus metrics: every decision, every budget, every gate and breaker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RiskMetrics"]


class RiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requested = Counter("kokpit_risk_permits_requested_total", "Permits seen for the first time.",
                                 ["operation"], registry=registry)
        self.granted = Counter("kokpit_risk_permits_granted_total", "Permits granted.", ["operation"],
                               registry=registry)
        self.denied = Counter("kokpit_risk_permits_denied_total",
                              "Permits answered Denied or Queued, by the first refusal's reason.",
                              ["operation", "state", "reason"], registry=registry)
        self.expired = Counter("kokpit_risk_permits_expired_total", "Permits whose holder stopped renewing.",
                               ["operation"], registry=registry)
        self.released = Counter("kokpit_risk_permits_released_total", "Permits released, by outcome.",
                                ["operation", "outcome"], registry=registry)
        self.latency = Histogram("kokpit_risk_decision_latency_seconds",
                                 "First sight of a permit to its first answer written.", registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.passes = Counter("kokpit_risk_decision_passes_total", "Decision passes, by result.", ["result"],
                              registry=registry)
        self.in_use = Gauge("kokpit_risk_budget_in_use", "Units in flight per policy budget.",
                            ["policy", "scope"], registry=registry)
        self.limit = Gauge("kokpit_risk_budget_limit", "maxConcurrent per policy budget (absolute).",
                           ["policy", "scope"], registry=registry)
        self.unavailable = Gauge("kokpit_risk_budget_unavailable", "Unavailable units per policy budget.",
                                 ["policy", "scope"], registry=registry)
        self.window = Gauge("kokpit_risk_budget_window_count", "Units started in the window per budget.",
                            ["policy", "scope"], registry=registry)
        self.gate_value = Gauge("kokpit_risk_gate_value", "Last value of a business-metric gate (NaN: none).",
                                ["policy", "gate", "scope"], registry=registry)
        self.gate_passing = Gauge("kokpit_risk_gate_passing", "1 while the gate holds.",
                                  ["policy", "gate", "scope"], registry=registry)
        self.breaker_open = Gauge("kokpit_risk_breaker_open", "1 while a failure breaker is tripped.",
                                  ["policy", "operation", "scope"], registry=registry)
        self.paused = Gauge("kokpit_risk_policy_paused", "1 while a policy pauses its operations.", ["policy"],
                            registry=registry)
