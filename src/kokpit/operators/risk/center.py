"""The risk center: decides Permits, level-triggered, from persisted state only.

One decision loop (leader-elected) runs *passes*: any change of a Permit, RiskPolicy, Cluster or observed
Node, a gate flip or a timer (expiry, retry, blackout end) wakes it, and a pass decides everything pending
at once (so 1,000 requests arriving together cost a handful of passes, not 1,000).  A pass:

1. reads the RiskLedger from the API server (its resourceVersion is the fence; the copy this process wrote
   last stands in for the read: anyone else's write makes the next commit fail with 409 and re-read);
2. syncs it with the Permits: released ones (``status.outcome``), expired ones (no renewal within
   ``ttlSeconds``) and deleted ones leave the in-flight budget; released entries are kept while a window or a
   breaker needs them;
3. decides every pending Permit in creation order with :func:`kokpit.operators.risk.decide`;
4. writes the ledger with the resourceVersion it read (409 → the pass starts over: nothing is spent twice);
5. only then writes each Permit's answer (Granted, Queued, Denied with reasons and retry time, Released,
   Expired), so a kill -9 anywhere leaves either no grant or a grant in the ledger that the next pass
   announces — never a grant the budget did not count.
Policy status (budgets, gates, breakers) is published at most every ``status_interval``; breakers trip and
reset immediately, with a Warning Event and an audit log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.risk import BuiltinMetric, OperationType, PermitState, RiskReason
from kokpit.client import ApiError, ConflictError, Kind, NotFoundError, TransportError
from kokpit.operators.risk._decide import (
    Ask,
    ClusterInfo,
    GateReading,
    PolicyView,
    Usage,
    World,
    decide,
)
from kokpit.operators.risk._gates import PodProber, ProbeMetrics, evaluate_builtin, query_prometheus
from kokpit.operators.risk._ledger import (
    LEDGER,
    entries,
    entry_of,
    fmt,
    load_ledger,
    released,
    split_finished,
    ts,
    usage_of,
    with_entries,
)
from kokpit.operators.risk._metrics import RiskMetrics
from kokpit.operators.risk._observe import ClusterObserver
from kokpit.operators.risk._policystatus import PolicyStatusWriter
from kokpit.runtime import EventRecorder, Handlers, Manager, is_true
from kokpit.runtime.permits import PERMIT, RISK_POLICY

__all__ = ["CLUSTER", "CenterOptions", "RiskCenter"]

log = logging.getLogger("kokpit.operators.risk")

Obj = dict[str, Any]
CLUSTER = Kind(GROUP, VERSION, "Cluster", "clusters")
R = RiskReason
_POD_METRICS = (BuiltinMetric.POD_CREATION_SUCCESS_RATE, BuiltinMetric.POD_STARTUP_LATENCY_P99)


@dataclass
class CenterOptions:
    """Tunables; tests shorten the intervals."""

    gate_interval: float = 5.0  # seconds between gate evaluations
    probe_interval: float = 5.0  # seconds between synthetic probe Pods per cluster
    probe_timeout: float = 30.0
    status_interval: float = 2.0  # policy status publishing
    observe_interval: float = 5.0  # re-check business kubeconfig Secrets
    write_concurrency: int = 64
    resync: float = 30.0  # a pass at least this often, whatever happens
    events: bool = True
    # released and expired Permits are deleted this long after their release (the ledger keeps what windows
    # and breakers need on its own), so the permits the center and every actor watch stay bounded
    finished_ttl: float = 3600.0


def _key(obj: Obj) -> str:
    m = obj.get("metadata") or {}
    return f"{m.get('namespace', '')}/{m.get('name')}"


def _queue_order(p: Obj) -> tuple[str, str, str]:
    """First come, first served: the server's creation second, then the holder's request time (microseconds;
    older clients send none), then the name."""
    return (str(p["metadata"].get("creationTimestamp")), str((p.get("spec") or {}).get("requestTime") or ""),
            _key(p))


def _summary(targets: list[str]) -> str:
    if not targets:
        return "0"
    head = ",".join(targets[:2])
    return f"{len(targets)}: {head}" + (f" +{len(targets) - 2}" if len(targets) > 2 else "")


@dataclass
class _Pass:
    """What one pass decided, for the writes after the ledger commit."""

    patches: list[tuple[Obj, Obj]] = field(default_factory=list)  # (permit, status patch)
    wake_at: float | None = None

    def wake(self, t: float | None) -> None:
        if t is not None and (self.wake_at is None or t < self.wake_at):
            self.wake_at = t


class RiskCenter:
    """Wires the informers, the decision loop, gate evaluation, probers and policy status onto a Manager."""

    def __init__(self, manager: Manager, options: CenterOptions | None = None, clock: Clock | None = None) -> None:
        self.opts = options or CenterOptions()
        self.client = manager.client
        self._clock: Clock = clock or RealClock()
        inf = manager.informers
        self.permits = inf.informer(PERMIT)
        self.policies = inf.informer(RISK_POLICY)
        self.clusters = inf.informer(CLUSTER)
        self.metrics = RiskMetrics(manager.registry)
        self.probe_metrics = ProbeMetrics(manager.registry)
        self.recorder = EventRecorder(self.client, "kokpit-risk-center", clock=self._clock)
        self.observer = ClusterObserver(self.client, self.wake, monotonic=self._clock.monotonic)
        self.status = PolicyStatusWriter(self.client, self.metrics, self.recorder, self._clock)
        self.readings: dict[tuple[str, str, str], GateReading] = {}
        self.probers: dict[str, tuple[PodProber, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._first_seen: dict[str, float] = {}
        self._sent: dict[str, str] = {}  # uid -> last patch sent (skips repeats while the cache catches up)
        self._tasks: set[asyncio.Task[Any]] = set()
        handler = Handlers(add=self._on_permit, update=lambda _o, n: self.wake(), delete=lambda _o: self.wake())
        self.permits.add_event_handler(handler)
        for src in (self.policies, self.clusters):
            src.add_event_handler(Handlers(add=lambda _o: self.wake(), update=lambda _a, _b: self.wake(),
                                           delete=lambda _o: self.wake()))
        self.passes = 0
        # the ledger as this process last wrote it: the next pass starts from it instead of a GET (a write
        # by anyone else makes ours fail with 409, which drops it); re-read at least every resync
        self._ledger: Obj | None = None
        self._collecting: asyncio.Task[None] | None = None
        self._expiry: dict[str, tuple[str, float | None]] = {}  # uid -> (resourceVersion, expiry)
        self._announced: dict[str, tuple[str, Any]] = {}  # uid -> (resourceVersion, releasedAt) settled
        self._ledger_read = 0.0
        manager.add_runnable(self.run, needs_leader_election=True)

    def _on_permit(self, obj: Obj) -> None:
        uid = str(obj["metadata"].get("uid"))
        if uid not in self._first_seen and not (obj.get("status") or {}).get("state"):
            self._first_seen[uid] = self._clock.monotonic()
            self.metrics.requested.labels(str((obj.get("spec") or {}).get("operation"))).inc()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        loops = [self._decision_loop(), self._gate_loop(), self._observe_loop()]
        try:
            await asyncio.gather(*loops)
        finally:
            for _, task in self.probers.values():
                task.cancel()
            for t in [*self._tasks, *(t for _, t in self.probers.values())]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.probers.clear()
            await self.observer.close()

    async def _decision_loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            wake_at: float | None
            try:
                wake_at = await self.decide_pass()
                failures = 0
                self.metrics.passes.labels("ok").inc()
            except ConflictError:
                self._ledger = None
                self.metrics.passes.labels("conflict").inc()
                log.info("ledger changed under this pass (another decider?); starting over")
                continue
            except (ApiError, TransportError, OSError) as e:
                self._ledger = None
                failures += 1
                self.metrics.passes.labels("error").inc()
                log.warning("decision pass failed: %s", e)
                await self._clock.sleep(min(0.2 * 2 ** failures, 5.0))
                continue
            now = self._clock.now().timestamp()
            delay = self.opts.resync if wake_at is None else min(self.opts.resync, max(0.0, wake_at - now) + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    # ------------------------------------------------------------------ the pass
    def world(self, usages: list[Usage], now: float, views: list[PolicyView]) -> World:
        clusters: dict[str, ClusterInfo] = {}
        for c in self.clusters.objects():
            key = _key(c)
            ready = is_true((c.get("status") or {}).get("conditions"), "Ready")
            clusters[key] = ClusterInfo(key, (c.get("metadata") or {}).get("labels") or {}, ready,
                                        self.observer.nodes(key))
        return World(views, clusters, usages, now, dict(self.readings))

    def _expires(self, p: Obj) -> float | None:
        """When the permit expires unless renewed (memoized per resourceVersion: a pass asks this of every
        permit in flight, and parsing their times again each pass was most of a pass's own CPU)."""
        meta = p.get("metadata") or {}
        key = (str(meta.get("uid")), str(meta.get("resourceVersion")))
        hit = self._expiry.get(key[0])
        if hit is not None and hit[0] == key[1]:
            return hit[1]
        exp = self._expiry_of(p)
        self._expiry[key[0]] = (key[1], exp)
        return exp

    @staticmethod
    def _expiry_of(p: Obj) -> float | None:
        spec, st, meta = p.get("spec") or {}, p.get("status") or {}, p.get("metadata") or {}
        start = ts(spec.get("renewTime")) or ts(st.get("grantedAt")) or ts(meta.get("creationTimestamp"))
        return None if start is None else start + float(spec.get("ttlSeconds") or 300)

    async def decide_pass(self) -> float | None:
        """One pass; returns when the next pass is needed at the latest (None: only on events)."""
        self.passes += 1
        now = self._clock.now().timestamp()
        mono = self._clock.monotonic()
        if self._ledger is None or mono - self._ledger_read > self.opts.resync:
            self._ledger, self._ledger_read = await load_ledger(self.client), mono
        ledger = self._ledger
        views = [PolicyView.from_obj(p) for p in self.policies.objects()]
        retention = max([v.needs_history for v in views] + [0.0])
        permits = {str(p["metadata"].get("uid")): p for p in self.permits.objects()}
        out = _Pass()
        old = entries(ledger)
        kept: list[Obj] = []
        changed = False
        for e in old:  # 2. sync the ledger with the permits
            p = permits.get(str(e["uid"]))
            if e.get("releasedAt") is None:
                outcome = ((p or {}).get("status") or {}).get("outcome") if p is not None else None
                exp = self._expires(p) if p is not None else None
                if p is None:
                    e, changed = released(e, now, None), True
                elif outcome:
                    e, changed = released(e, now, str(outcome)), True
                elif exp is not None and exp <= now:
                    e, changed = released(e, now, R.EXPIRED), True
                else:
                    out.wake(exp)
                    parts = split_finished(e, ((p or {}).get("status") or {}).get("targetOutcomes"), now)
                    if parts:
                        *done, e = parts
                        kept += done
                        changed = True
            rel = ts(e.get("releasedAt"))
            if rel is not None and rel < now - retention:
                changed = True
                continue
            if rel is not None and retention:
                out.wake(rel + retention)
            kept.append(e)
        in_ledger = {str(e["uid"]): e for e in kept}
        usages = [usage_of(e) for e in kept]
        w = self.world(usages, now, views)
        policy_objs = self.policies.objects()
        self.status.observe(w, policy_objs, self.readings)  # trips from failures released in this very pass
        w.tripped = self.status.tripped(policy_objs, now)
        pending = sorted((p for uid, p in permits.items() if uid not in in_ledger and self._pending(p)),
                         key=_queue_order)
        decisions: list[tuple[Obj, Any]] = []
        for p in pending:  # 3. decide
            exp = self._expires(p)
            if exp is not None and exp <= now:
                decisions.append((p, None))
                continue
            out.wake(exp)
            spec = p["spec"]
            try:
                op = OperationType(spec["operation"])
            except (ValueError, KeyError):
                continue
            withdrawn = (p.get("status") or {}).get("targetOutcomes") or {}
            targets = tuple(t for t in spec.get("targets") or () if t not in withdrawn)
            if not targets:
                continue  # every target withdrawn before a grant: nothing to decide (the holder releases it)
            ask = Ask(str(p["metadata"]["uid"]), op, f"{p['metadata'].get('namespace')}/{spec.get('cluster')}",
                      targets, bool(spec.get("partial")), name=_key(p))
            d = decide(ask, w)
            if d.state is PermitState.DENIED and d.refusals and self.observer.warming(ask.cluster) and \
                    all(r.reason == R.SCOPE_UNKNOWN for r in d.refusals):
                out.wake(now + 1.0)  # its nodes are being listed (a restart): answered once they are
                continue
            decisions.append((p, d))
            if d.state is PermitState.GRANTED:
                u = w.usages[-1]
                e = entry_of(u, str(p["metadata"].get("namespace")), str(p["metadata"]["name"]))
                kept.append(e)
                in_ledger[u.uid] = e
                changed = True
            else:
                out.wake(d.retry_at)
        if changed:  # 4. commit: a 409 here means someone else decided; the caller starts over
            self._ledger = None  # unknown until the write's answer (a failure re-reads it)
            self._ledger = await self.client.update(LEDGER, with_entries(ledger, kept))
        for uid, e in in_ledger.items():  # 5. announce
            p = permits.get(uid)
            if p is not None:
                self._announce(p, e, out)
        for p, d in decisions:
            self._answer(p, d, now, out)
        for uid, p in permits.items():  # withdrawn by its holder before any grant: over, without one
            if uid not in in_ledger and self._withdrawn(p):
                out.patches.append((p, {"state": PermitState.RELEASED.value, "releasedAt": fmt(now),
                                        "retryAfter": None}))
        await self._write(out.patches)
        self._collect(permits.values(), in_ledger, now)
        await self.status.maybe_publish(policy_objs, w, force=self.status.breakers_changed)
        return out.wake_at

    def _collect(self, permits: Any, in_ledger: dict[str, Obj], now: float) -> None:
        """Delete permits finished more than ``finished_ttl`` ago (at most 200 a pass, in the background)."""
        if self._collecting is not None and not self._collecting.done():
            return
        old = []
        for p in permits:
            st = p.get("status") or {}
            if st.get("state") not in (PermitState.RELEASED.value, PermitState.EXPIRED.value):
                continue
            rel = ts(st.get("releasedAt"))
            entry = in_ledger.get(str(p["metadata"].get("uid")))
            if rel is None or rel > now - self.opts.finished_ttl or (entry is not None and not entry.get("releasedAt")):
                continue
            old.append(p)
            if len(old) >= 200:
                break
        if not old:
            return

        async def delete_all() -> None:
            for p in old:
                meta = p["metadata"]
                with contextlib.suppress(NotFoundError, ConflictError):
                    try:
                        await self.client.delete(PERMIT, str(meta["name"]), str(meta.get("namespace")),
                                                 precondition_uid=str(meta.get("uid")))
                    except (ApiError, TransportError) as e:
                        log.info("deleting finished permit %s: %s", _key(p), e)
                        return

        self._collecting = asyncio.get_running_loop().create_task(delete_all())
        self._tasks.add(self._collecting)
        self._collecting.add_done_callback(self._tasks.discard)

    @staticmethod
    def _pending(p: Obj) -> bool:
        st = p.get("status") or {}
        return not st.get("outcome") and st.get("state") not in (PermitState.RELEASED, PermitState.EXPIRED)

    @staticmethod
    def _withdrawn(p: Obj) -> bool:
        """Not over yet, but its holder released it (``outcome``) or every target (``targetOutcomes``)."""
        st = p.get("status") or {}
        if st.get("state") in (PermitState.RELEASED.value, PermitState.EXPIRED.value):
            return False
        done = st.get("targetOutcomes") or {}
        return bool(st.get("outcome")) or (bool(done) and all(t in done for t in (p.get("spec") or {}).get(
            "targets") or ()))

    def _announce(self, p: Obj, e: Obj, out: _Pass) -> None:
        """The status a permit with a ledger entry must show: Granted while in flight, then Released/Expired."""
        sig = (str(p["metadata"].get("resourceVersion")), e.get("releasedAt"))
        uid = str(p["metadata"].get("uid"))
        if self._announced.get(uid) == sig:
            return  # this version of the permit already shows what this entry says
        st = p.get("status") or {}
        rel = e.get("releasedAt")
        if rel is None:
            exp = self._expires(p)
            granted = list(e.get("targets") or [])
            if st.get("state") == PermitState.GRANTED.value and st.get("grantedAt") == e["grantedAt"]:
                # targets released one by one leave the entry, not the grant the holder was told of
                granted = list(st.get("grantedTargets") or granted)
            patch: Obj = {"state": PermitState.GRANTED.value, "grantedTargets": granted,
                          "targetSummary": _summary(granted), "grantedAt": e["grantedAt"],
                          "expiresAt": fmt(exp) if exp is not None else None, "reasons": [], "retryAfter": None}
        else:
            state = PermitState.EXPIRED if e.get("outcome") == R.EXPIRED else PermitState.RELEASED
            if st.get("state") == state.value:
                self._announced[uid] = sig
                return
            patch = {"state": state.value, "releasedAt": rel, "expiresAt": None}
        if all(st.get(k) == v for k, v in patch.items() if v is not None) and \
                all(k not in st for k, v in patch.items() if v is None):
            self._announced[uid] = sig
            return
        out.patches.append((p, patch))

    def _answer(self, p: Obj, d: Any, now: float, out: _Pass) -> None:
        st = p.get("status") or {}
        if d is None:
            if st.get("state") != PermitState.EXPIRED.value:
                out.patches.append((p, {"state": PermitState.EXPIRED.value, "releasedAt": fmt(now),
                                        "reasons": [{"policy": "", "reason": R.EXPIRED,
                                                     "message": "the holder stopped renewing before a grant"}]}))
            return
        if d.state is PermitState.GRANTED:
            return  # announced from the ledger
        reasons = [{"policy": r.policy, "reason": r.reason, "message": r.message} for r in d.refusals]
        patch = {"state": d.state.value, "reasons": reasons, "targetSummary": _summary(p["spec"]["targets"]),
                 "retryAfter": fmt(d.retry_at) if d.retry_at is not None else None}
        if st.get("state") == patch["state"] and st.get("reasons") == reasons and \
                st.get("retryAfter") == patch["retryAfter"]:
            return
        out.patches.append((p, patch))

    async def _write(self, patches: list[tuple[Obj, Obj]]) -> None:
        sem = asyncio.Semaphore(self.opts.write_concurrency)
        now_s = fmt(self._clock.now().timestamp())

        async def one(p: Obj, patch: Obj) -> None:
            meta = p["metadata"]
            uid = str(meta.get("uid"))
            sig = repr(sorted(patch.items()))
            if self._sent.get(uid) == sig:
                return
            body = {"metadata": {"uid": uid}, "status": {**patch, "decidedAt": now_s}}
            async with sem:
                try:
                    await self.client.patch(PERMIT, str(meta["name"]), body, str(meta.get("namespace")),
                                            subresource="status")
                except NotFoundError:
                    return
                except (ApiError, TransportError) as e:
                    log.warning("answering permit %s failed: %s", _key(p), e)
                    self.wake()
                    return
            self._sent[uid] = sig
            self._count(p, patch)

        await asyncio.gather(*(one(p, patch) for p, patch in patches))
        if len(self._sent) > 4 * max(1, len(self.permits.objects())) + 1000:
            live = {str(p["metadata"].get("uid")) for p in self.permits.objects()}
            self._sent = {k: v for k, v in self._sent.items() if k in live}
            self._first_seen = {k: v for k, v in self._first_seen.items() if k in live}
            self._expiry = {k: v for k, v in self._expiry.items() if k in live}
            self._announced = {k: v for k, v in self._announced.items() if k in live}

    def _count(self, p: Obj, patch: Obj) -> None:
        op = str(p["spec"].get("operation"))
        uid = str(p["metadata"].get("uid"))
        state = patch.get("state")
        seen = self._first_seen.pop(uid, None) if state in ("Granted", "Denied", "Queued") else None
        if seen is not None:
            self.metrics.latency.observe(self._clock.monotonic() - seen)
        prev = (p.get("status") or {}).get("state")
        if state == prev:
            return
        if state == PermitState.GRANTED.value:
            self.metrics.granted.labels(op).inc()
        elif state in (PermitState.DENIED.value, PermitState.QUEUED.value):
            first = (patch.get("reasons") or [{}])[0]
            self.metrics.denied.labels(op, state, str(first.get("reason", ""))).inc()
            if state == PermitState.DENIED.value and self.opts.events:
                msg = "; ".join(f"{r['policy'] or 'risk center'}: {r['reason']}: {r['message']}"
                                for r in patch.get("reasons") or [])
                self._spawn(self.recorder.warning(p, "PermitDenied", msg[:1024]))
        elif state == PermitState.EXPIRED.value:
            self.metrics.expired.labels(op).inc()
            if self.opts.events:
                self._spawn(self.recorder.warning(p, "PermitExpired", f"holder {p['spec'].get('holder')} "
                                                  "stopped renewing; the permit no longer counts in flight"))
        elif state == PermitState.RELEASED.value:
            outcome = str((p.get("status") or {}).get("outcome") or "Deleted")
            self.metrics.released.labels(op, outcome).inc()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ gates, probers, observation
    async def _observe_loop(self) -> None:
        while True:
            keys = {_key(c) for c in self.clusters.objects()}
            try:
                await self.observer.sync(keys)
            except (ApiError, TransportError, OSError) as e:
                log.info("observing business clusters: %s", e)
            self._sync_probers(keys)
            await self._clock.sleep(self.opts.observe_interval)

    def _sync_probers(self, keys: set[str]) -> None:
        want: set[str] = set()
        views = [PolicyView.from_obj(p) for p in self.policies.objects()]
        infos = {_key(c): ClusterInfo(_key(c), (c.get("metadata") or {}).get("labels") or {})
                 for c in self.clusters.objects()}
        for v in views:
            if any(g.spec.builtin in _POD_METRICS for g in v.gates):
                want |= {k for k, c in infos.items() if v.covers_cluster(c)}
        for key in list(self.probers):
            prober, task = self.probers[key]
            if key not in want or self.observer.client(key) is not prober.client:
                task.cancel()
                del self.probers[key]
        for key in want & keys:
            client = self.observer.client(key)
            if key in self.probers or client is None:
                continue
            prober = PodProber(key, client, self.probe_metrics, interval=self.opts.probe_interval,
                               timeout=self.opts.probe_timeout, clock=self._clock)
            self.probers[key] = (prober, asyncio.get_running_loop().create_task(prober.run()))

    async def evaluate_gates(self) -> None:
        now = self._clock.now().timestamp()
        infos = [ClusterInfo(_key(c), (c.get("metadata") or {}).get("labels") or {}) for c in self.clusters.objects()]
        jobs: list[tuple[tuple[str, str, str], Any]] = []
        for v in (PolicyView.from_obj(p) for p in self.policies.objects()):
            for g in v.gates:
                for c in infos:
                    if not v.covers_cluster(c):
                        continue
                    key = (v.name, g.name, c.key)
                    if g.spec.prometheus is not None:
                        jobs.append((key, query_prometheus(g.spec, c.key)))
                    else:
                        prober = self.probers.get(c.key)
                        samples = list(prober[0].samples) if prober else None
                        jobs.append((key, _ready(evaluate_builtin(g.spec, samples, self.observer.nodes(c.key),
                                                                  now))))
        results = await asyncio.gather(*(j for _, j in jobs))
        fresh = {k: r for (k, _), r in zip(jobs, results, strict=True)}
        flipped = any(self.readings.get(k) is None or self.readings[k].passing != r.passing
                      for k, r in fresh.items())
        self.readings = fresh
        self.status.gate_times[0] = now
        if flipped:
            self.wake()

    async def _gate_loop(self) -> None:
        while True:
            try:
                await self.evaluate_gates()
            except Exception:  # a gate bug must not stop the others; the readings stay (or fail) as they were
                log.exception("gate evaluation failed")
            await self._clock.sleep(self.opts.gate_interval)


async def _ready(r: GateReading) -> GateReading:
    return r

