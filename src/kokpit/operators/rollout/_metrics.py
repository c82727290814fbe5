"""Prometheus metrics of the rollout controller, on its Manager's registry (served on /metrics over HTTPS
with the cluster's tokens, like every kokpit process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kokpit._lib.clock import parse_time
from kokpit.api.rollout import RolloutState, TargetState

__all__ = ["RolloutMetrics"]

Obj = dict[str, Any]


class RolloutMetrics:
    """``kokpit_rollouts{state}``, ``kokpit_rollout_targets{rollout,state}``, step durations and rollbacks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rollouts = Gauge("kokpit_rollouts", "Rollouts by state.", ["state"], registry=registry)
        self.targets = Gauge("kokpit_rollout_targets", "Targets of each Rollout by state.",
                             ["namespace", "rollout", "state"], registry=registry)
        self.steps = Histogram("kokpit_rollout_step_duration_seconds", "How long finished steps took, by type.",
                               ["type"], registry=registry,
                               buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600))
        self.rollbacks = Counter("kokpit_rollout_rollbacks_total", "Rollbacks started (automatic: after failures).",
                                 ["automatic"], registry=registry)
        self._state: dict[str, str] = {}

    def observe(self, key: str, obj: Obj) -> None:
        status = obj.get("status") or {}
        self._state[key] = str(status.get("phase") or RolloutState.PENDING)
        counts = status.get("counts") or {}
        ns, name = key.split("/", 1)
        for s in TargetState:
            self.targets.labels(ns, name, s.value).set(int(counts.get(s.value, 0)))
        self._publish()

    def forget(self, key: str) -> None:
        self._state.pop(key, None)
        ns, name = key.split("/", 1)
        for s in TargetState:
            try:
                self.targets.remove(ns, name, s.value)
            except KeyError:
                pass
        self._publish()

    def _publish(self) -> None:
        for s in RolloutState:
            self.rollouts.labels(s.value).set(sum(1 for v in self._state.values() if v == s.value))

    def step_done(self, rec: Obj) -> None:
        if rec.get("startedAt") and rec.get("finishedAt"):
            took = (parse_time(rec["finishedAt"]) - parse_time(rec["startedAt"])).total_seconds()
            self.steps.labels(str(rec.get("type") or "")).observe(max(0.0, took))

    def rollback(self, key: str, *, automatic: bool) -> None:
        self.rollbacks.labels("true" if automatic else "false").inc()
