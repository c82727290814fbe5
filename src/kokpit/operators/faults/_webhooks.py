"""FaultSubscription delivery: matching NodeFault transitions POSTed to a webhook, with retries and backoff.

One reconcile per subscription.  The delivery state of every matching fault lives in the subscription's
``status.deliveries`` (keyed by fault: which transition — ``<state>@<firstSeen>``, where the state may be
``ManualRequired`` when a maintenance flow handed the node to a person —, attempts, next attempt
time, delivered or given up), so a restarted deliverer resumes exactly where the API says it was: it delivers
*at least once* (a kill -9 between a 2xx and the status write repeats that one delivery; the payload's
``id`` lets a receiver drop the repeat).  A receiver that is down costs one bounded POST per due attempt and
never blocks anything else: each subscription has its own timeout, and the next attempt is a requeue, not a
sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kokpit._lib.clock import Clock, RealClock, format_micro_time, parse_time_or_none
from kokpit.api.fault import DeliveryState, FaultReason, FaultState, FaultSubscriptionSpec, Severity
from kokpit.client import ApiError, ConflictError, JsonHttpClient, NotFoundError, TransportError
from kokpit.operators.faults._metrics import FaultMetrics
from kokpit.runtime import EventRecorder, Request, Result, Store, set_condition
from kokpit.runtime.faultreports import FAULTSUBSCRIPTION

__all__ = ["WebhookDeliverer", "backoff_seconds", "delivery_state", "event_key", "matches", "payload"]

log = logging.getLogger("kokpit.operators.faults.webhooks")

Obj = dict[str, Any]
_RANK = {Severity.INFO: 0, Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}
MAX_IN_FLIGHT = 16  # concurrent POSTs per subscription


def backoff_seconds(attempts: int, initial: float, cap: float) -> float:
    """Exponential backoff after ``attempts`` failed attempts (1 → initial, doubling, at most ``cap``)."""
    return float(min(cap, initial * (2 ** max(0, attempts - 1))))


def _selector_matches(sel: Any, labels: dict[str, str]) -> bool:
    if sel is None:
        return True
    for k, v in sel.match_labels.items():
        if labels.get(k) != v:
            return False
    for r in sel.match_expressions:
        has = r.key in labels
        if r.operator == "In" and (not has or labels[r.key] not in r.values):
            return False
        if r.operator == "NotIn" and has and labels[r.key] in r.values:
            return False
        if r.operator == "Exists" and not has:
            return False
        if r.operator == "DoesNotExist" and has:
            return False
    return True


def delivery_state(fault: Obj) -> str:
    """The state a subscriber is told: the fault's state, or ``ManualRequired`` while it is Active and the
    maintenance flow repairing it waits for a person (the escalation is news of its own)."""
    st = fault.get("status") or {}
    state = str(st.get("state") or "")
    if state == FaultState.ACTIVE and st.get("manualRequired"):
        return DeliveryState.MANUAL_REQUIRED.value
    return state


def matches(spec: FaultSubscriptionSpec, fault: Obj) -> bool:
    """Whether a NodeFault's current state is one the subscription wants."""
    st = fault.get("status") or {}
    state = delivery_state(fault)
    if not state or state not in spec.states:
        return False
    if spec.types and (fault.get("spec") or {}).get("type") not in spec.types:
        return False
    if spec.min_severity is not None:
        sev = st.get("severity")
        if sev not in _RANK or _RANK[Severity(sev)] < _RANK[spec.min_severity]:
            return False
    return _selector_matches(spec.selector, (fault.get("metadata") or {}).get("labels") or {})


def event_key(fault: Obj) -> str:
    st = fault.get("status") or {}
    return f"{delivery_state(fault)}@{st.get('firstSeen') or ''}"


def payload(sub: str, fault: Obj, key: str) -> Obj:
    meta = fault.get("metadata") or {}
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "NodeFaultEvent",
            "id": f"{meta.get('uid', meta.get('name'))}/{key}", "subscription": sub,
            "type": delivery_state(fault),
            "fault": {k: fault[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in fault}}


@dataclass
class WebhookDeliverer:
    client: Any
    subscriptions: Store
    faults: Store
    recorder: EventRecorder
    metrics: FaultMetrics
    clock: Clock = field(default_factory=RealClock)
    http: Callable[[str, float, str], JsonHttpClient] | None = None  # tests may inject

    def _http(self, url: str, timeout: float, ca: str) -> JsonHttpClient:
        if self.http is not None:
            return self.http(url, timeout, ca)
        ctx = ssl.create_default_context(cadata=ca) if ca and url.startswith("https") else None
        return JsonHttpClient(url, timeout=timeout, max_connections=MAX_IN_FLIGHT, ssl_context=ctx)

    async def reconcile(self, req: Request) -> Result | None:
        raw = self.subscriptions.get_by_name(req.name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return None
        now = self.clock.now()
        status: Obj = dict(raw.get("status") or {})
        conds = [dict(c) for c in status.get("conditions") or []]
        gen = (raw.get("metadata") or {}).get("generation")
        try:
            spec = FaultSubscriptionSpec.model_validate(raw.get("spec") or {})
        except ValidationError as e:
            set_condition(conds, "Ready", False, "InvalidSpec", str(e.errors()[0].get("msg", e))[:1024], now=now,
                          observed_generation=gen)
            status["conditions"] = conds
            return await self._write(raw, status)
        deliveries = {str(d.get("fault")): dict(d) for d in status.get("deliveries") or []}
        live = {str(f["metadata"]["name"]): f for f in self.faults.list() if matches(spec, f)}
        for name, f in live.items():
            key = event_key(f)
            d = deliveries.get(name)
            if d is None or d.get("event") != key:
                deliveries[name] = {"fault": name, "event": key, "delivered": False, "attempts": 0}
        for name in list(deliveries):  # faults deleted (retention) no longer need a record
            if self.faults.get_by_name(name) is None:
                del deliveries[name]
        due = [d for d in deliveries.values()
               if not d.get("delivered") and not d.get("gaveUp") and not spec.paused
               and d["fault"] in live and self._due(d, now)]
        if due:
            http = self._http(spec.url, spec.timeout_seconds, spec.ca_bundle)
            try:
                sem = asyncio.Semaphore(MAX_IN_FLIGHT)

                async def one(d: Obj) -> None:
                    async with sem:
                        await self._deliver(req.name, http, spec, d, live[d["fault"]], status)

                await asyncio.gather(*(one(d) for d in due))
            finally:
                await http.close()
        status["deliveries"] = sorted(deliveries.values(), key=lambda d: str(d["fault"]))
        pending = [d for d in deliveries.values() if not d.get("delivered") and not d.get("gaveUp")]
        failing = [d for d in pending if int(d.get("attempts") or 0) > 0]
        if spec.paused:
            set_condition(conds, "Ready", False, "Paused", "delivery is paused (spec.paused)", now=now,
                          observed_generation=gen)
        elif failing:
            set_condition(conds, "Ready", False, FaultReason.DELIVERY_FAILING,
                          f"{len(failing)} deliveries failing; last error: {status.get('lastError', '')}"[:1024],
                          now=now, observed_generation=gen)
        else:
            set_condition(conds, "Ready", True, FaultReason.DELIVERING,
                          f"{status.get('delivered', 0)} delivered", now=now, observed_generation=gen)
        status["conditions"] = conds
        status["observedGeneration"] = gen
        result = await self._write(raw, status)
        if result is not None:
            return result
        nexts = [t for d in pending if (t := _t(d.get("nextAttemptTime"))) is not None]
        if nexts and not spec.paused:
            return Result(requeue_after=max(0.05, (min(nexts) - now).total_seconds()))
        return None

    @staticmethod
    def _due(d: Obj, now: dt.datetime) -> bool:
        t = _t(d.get("nextAttemptTime"))
        return t is None or t <= now

    async def _deliver(self, sub: str, http: JsonHttpClient, spec: FaultSubscriptionSpec, d: Obj, fault: Obj,
                       status: Obj) -> None:
        now = self.clock.now()
        d["attempts"] = int(d.get("attempts") or 0) + 1
        try:
            answer = await http.post("", payload(sub, fault, str(d["event"])), timeout=spec.timeout_seconds)
            error = "" if answer.ok else f"HTTP {answer.status}"
        except TransportError as e:
            error = str(e)[:1000]
        if not error:
            d.update(delivered=True, deliveredAt=format_micro_time(now), lastError="")
            d.pop("nextAttemptTime", None)
            status["delivered"] = int(status.get("delivered") or 0) + 1
            status["lastDeliveryTime"] = format_micro_time(now)
            self.metrics.deliveries.labels(sub, "delivered").inc()
            return
        status["failedAttempts"] = int(status.get("failedAttempts") or 0) + 1
        status["lastError"] = f"{d['fault']}: {error}"[:1024]
        d["lastError"] = error[:1024]
        self.metrics.deliveries.labels(sub, "failed").inc()
        if d["attempts"] >= spec.retry.max_attempts:
            d["gaveUp"] = True
            d.pop("nextAttemptTime", None)
            status["givenUp"] = int(status.get("givenUp") or 0) + 1
            self.metrics.deliveries.labels(sub, "gave-up").inc()
            sub_obj = self.subscriptions.get_by_name(sub)
            if sub_obj is not None:
                await self.recorder.warning(sub_obj, FaultReason.DELIVERY_GAVE_UP,
                                            f"gave up delivering {d['event']} of {d['fault']} after "
                                            f"{d['attempts']} attempts: {error}"[:1024])
            return
        wait = backoff_seconds(d["attempts"], spec.retry.initial_backoff_seconds, spec.retry.max_backoff_seconds)
        d["nextAttemptTime"] = format_micro_time(now + dt.timedelta(seconds=wait))

    async def _write(self, raw: Obj, status: Obj) -> Result | None:
        if status == (raw.get("status") or {}):
            return None
        body = {"apiVersion": FAULTSUBSCRIPTION.api_version, "kind": FAULTSUBSCRIPTION.kind,
                "metadata": {"name": raw["metadata"]["name"], "resourceVersion": raw["metadata"]["resourceVersion"]},
                "spec": raw.get("spec") or {}, "status": status}
        try:
            await self.client.update_status(FAULTSUBSCRIPTION, body)
        except ConflictError:
            return Result(requeue=True)
        except NotFoundError:
            return None
        except ApiError as e:
            log.warning("subscription %s: cannot write status: %s", raw["metadata"]["name"], e)
            return Result(requeue=True)
        return None


_t = parse_time_or_none  # tolerant: these times come from reports and other writers
