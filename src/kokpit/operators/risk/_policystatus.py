"""RiskPolicy status: budgets in use, gate values, failure breakers — and the breakers' trip/reset logic.

A breaker is the one piece of risk state that is not a pure function of the ledger: once N failed
post-checks trip it, it stays open after the failures leave the window, until a person resets it.  So the
trip is persisted in the policy's ``status.breakers`` (and kept in memory until the cache shows it), and a
reset is a person's write of the annotation ``kokpit.io/breakers-reset-at`` (``kokpit risk reset``): every
breaker of the policy tripped before that time closes, and only failures after it count again.  Trips and
resets are Events on the policy and ``kokpit.audit`` log lines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any

from kokpit._lib.clock import Clock, format_time
from kokpit.api.risk import RiskPolicyConditionType, RiskReason
from kokpit.client import ApiError, TransportError
from kokpit.operators.risk._decide import GateReading, PolicyView, World, breaker_failures, budget_report
from kokpit.operators.risk._ledger import ts
from kokpit.operators.risk._metrics import RiskMetrics
from kokpit.runtime import EventRecorder
from kokpit.runtime.permits import RISK_POLICY

__all__ = ["RESET_ANNOTATION", "PolicyStatusWriter"]

log = logging.getLogger("kokpit.operators.risk")
audit = logging.getLogger("kokpit.audit")

Obj = dict[str, Any]
RESET_ANNOTATION = "kokpit.io/breakers-reset-at"
R = RiskReason


def _fmt(t: float) -> str:
    return format_time(dt.datetime.fromtimestamp(t, dt.UTC))


class PolicyStatusWriter:
    def __init__(self, client: Any, metrics: RiskMetrics, recorder: EventRecorder, clock: Clock,
                 interval: float = 2.0) -> None:
        self.client = client
        self.metrics = metrics
        self.recorder = recorder
        self._clock = clock
        self.interval = interval
        self._breakers: dict[str, dict[tuple[str, str], Obj]] = {}  # policy -> (op, scope) -> BreakerStatus
        self.breakers_changed = False
        self.gate_times = [0.0]
        self._last = float("-inf")
        self._published: dict[str, str] = {}
        self._readings: dict[tuple[str, str, str], GateReading] = {}

    # ------------------------------------------------------------------ breakers
    def _state(self, policy: Obj) -> dict[tuple[str, str], Obj]:
        name = str(policy["metadata"]["name"])
        st = self._breakers.get(name)
        if st is None:
            st = {(str(b.get("operation")), str(b.get("scope"))): dict(b)
                  for b in (policy.get("status") or {}).get("breakers") or []}
            self._breakers[name] = st
        return st

    def tripped(self, policies: list[Obj], now: float) -> set[tuple[str, str, str]]:
        """Open breakers as (policy, operation, scope), after applying any reset annotation."""
        out: set[tuple[str, str, str]] = set()
        for p in policies:
            name = str(p["metadata"]["name"])
            reset = ts(((p.get("metadata") or {}).get("annotations") or {}).get(RESET_ANNOTATION))
            for (op, scope), b in self._state(p).items():
                if b.get("tripped") and reset is not None and (ts(b.get("trippedAt")) or 0.0) <= reset:
                    b.update(tripped=False, resetAt=_fmt(reset), failures=0,
                             message=f"reset at {_fmt(reset)} after tripping at {b.get('trippedAt')}")
                    self.breakers_changed = True
                    self._audit("breaker-reset", p, op, scope, b)
                    self._event(p, "Normal", R.BREAKER_RESET, f"breaker of {op} in {scope} reset by a person")
                if b.get("tripped"):
                    out.add((name, op, scope))
        return out

    def observe(self, w: World, policies: list[Obj], readings: dict[tuple[str, str, str], GateReading]) -> None:
        """Count failures per breaker and trip those at their limit."""
        self._readings = readings
        objs = {str(p.get("metadata", {}).get("name")): p for p in policies}
        for v in w.policies:
            if v.breaker is None or v.name not in objs:
                continue
            p = objs[v.name]
            st = self._state(p)
            annotated = ts(((p.get("metadata") or {}).get("annotations") or {}).get(RESET_ANNOTATION))
            resets = {k: max(ts(b.get("resetAt")) or float("-inf"), annotated or float("-inf"))
                      for k, b in st.items()}
            fails = breaker_failures(v, w, resets, default_reset=annotated)
            for key, b in st.items():
                if key not in fails and b.get("failures") and not b.get("tripped"):
                    b["failures"] = 0
            for (op, scope), (n, last) in fails.items():
                b = st.setdefault((op, scope), {"operation": op, "scope": scope, "tripped": False, "failures": 0})
                if b.get("failures") != n:
                    b["failures"] = n
                if n >= v.breaker[0] and not b.get("tripped"):
                    b.update(tripped=True, trippedAt=_fmt(w.now),
                             message=f"{n} failed {op} operations in {scope} within {v.breaker[1]:.0f}s "
                                     f"(limit {v.breaker[0]}); last at {_fmt(last)}")
                    self.breakers_changed = True
                    self._audit("breaker-tripped", p, op, scope, b)
                    self._event(p, "Warning", R.BREAKER_TRIPPED, f"{b['message']}; {op} is denied in {scope} "
                                f"until `kokpit risk reset {v.name}`")

    def _audit(self, action: str, p: Obj, op: str, scope: str, b: Obj) -> None:
        audit.info(json.dumps({"action": action, "policy": p["metadata"]["name"], "operation": op,
                               "scope": scope, "breaker": b, "at": _fmt(self._clock.now().timestamp())}))

    def _event(self, p: Obj, type_: str, reason: str, message: str) -> None:
        asyncio.get_running_loop().create_task(self.recorder.event(p, type_, reason, message[:1024]))

    # ------------------------------------------------------------------ publishing
    def status_of(self, p: Obj, w: World) -> Obj:
        v = PolicyView.from_obj(p)
        name = v.name
        budgets = [{k: val for k, val in {
            "scope": r.scope, "inFlight": r.in_flight, "maxConcurrent": r.max_concurrent,
            "unavailable": r.unavailable, "maxUnavailable": r.max_unavailable,
            "windowCount": r.window_count, "maxPerWindow": r.max_per_window}.items() if val is not None}
            for r in (budget_report(v, w) if not v.invalid else [])]
        gates = []
        for (pol, gate, scope), r in sorted(self._readings.items()):
            if pol != name:
                continue
            g: Obj = {"name": gate, "scope": scope, "passing": r.passing, "message": r.message[:1024]}
            if r.value is not None:
                g["value"] = r.value
            gates.append(g)
        breakers = sorted(self._state(p).values(), key=lambda b: (b["operation"], b["scope"]))
        valid = {"type": RiskPolicyConditionType.VALID.value,
                 "status": "False" if v.invalid else "True",
                 "reason": R.INVALID_POLICY if v.invalid else R.VALID, "message": v.invalid,
                 "observedGeneration": (p.get("metadata") or {}).get("generation")}
        return {"observedGeneration": (p.get("metadata") or {}).get("generation"), "budgets": budgets,
                "gates": gates, "breakers": breakers, "conditions": [valid]}

    def _metrics(self, name: str, status: Obj, paused: bool) -> None:
        m = self.metrics
        m.paused.labels(name).set(1 if paused else 0)
        for b in status["budgets"]:
            m.in_use.labels(name, b["scope"]).set(b["inFlight"])
            if "maxConcurrent" in b:
                m.limit.labels(name, b["scope"]).set(b["maxConcurrent"])
            if "unavailable" in b:
                m.unavailable.labels(name, b["scope"]).set(b["unavailable"])
            if "windowCount" in b:
                m.window.labels(name, b["scope"]).set(b["windowCount"])
        for g in status["gates"]:
            m.gate_value.labels(name, g["name"], g["scope"]).set(g.get("value", float("nan")))
            m.gate_passing.labels(name, g["name"], g["scope"]).set(1 if g["passing"] else 0)
        for b in status["breakers"]:
            m.breaker_open.labels(name, b["operation"], b["scope"]).set(1 if b.get("tripped") else 0)

    async def maybe_publish(self, policies: list[Obj], w: World, *, force: bool = False) -> None:
        now = self._clock.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.breakers_changed = False
        for p in policies:
            name = str(p["metadata"]["name"])
            status = self.status_of(p, w)
            self._metrics(name, status, bool((p.get("spec") or {}).get("paused")))
            sig = json.dumps(status, sort_keys=True, default=str)
            if self._published.get(name) == sig:
                continue
            old = {k: (p.get("status") or {}).get(k) for k in status}
            if json.dumps(old, sort_keys=True, default=str) == sig:
                self._published[name] = sig
                continue
            try:
                await self.client.patch(RISK_POLICY, name, {"status": status}, subresource="status")
                self._published[name] = sig
            except (ApiError, TransportError) as e:
                log.info("publishing the status of policy %s failed: %s", name, e)
