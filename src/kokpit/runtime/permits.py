"""The risk center's client: how every actor asks before it disrupts a node or a control plane.

An actor (the machine operator, the cluster operator, fault flows, rollouts, a benchmark) names an
operation type and a batch of targets; the risk center answers on the Permit's status.  Two styles:

- **level-triggered actors** call :meth:`PermitClient.ensure` in every reconcile (through
  :class:`kokpit.runtime.permit_gate.PermitGate`): it creates the Permit
  under a deterministic name the first time and returns its current answer afterwards, so a restarted actor
  finds its permit again instead of asking twice; the actor proceeds only while it is Granted and shows
  ``RiskQueued``/``RiskDenied`` otherwise, then :meth:`release` with the outcome;
- **imperative actors** use :meth:`PermitClient.hold`: request, wait for the decision (one watch per client,
  or one per namespace shared by many: :mod:`kokpit.runtime.permit_watch`; never polling), renew in the
  background, run the pre-check, yield, run the post-check, release.

A granted permit is held until released and counts against every budget until then; a holder that dies
stops renewing and the risk center expires its permits after ``ttlSeconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kokpit._lib.clock import Clock, RealClock, format_micro_time, format_time
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.client import (
    NODE,
    AlreadyExistsError,
    ApiError,
    CanCreate,
    CanDelete,
    CanGet,
    CanPatch,
    Kind,
    NotFoundError,
    TransportError,
)
from kokpit.runtime.conditions import is_true
from kokpit.runtime.informer import ListWatch
from kokpit.runtime.permit_watch import CLUSTER_LABEL, PERMIT, PermitWatch

__all__ = [
    "CLUSTER_LABEL",
    "INTENT_ANNOTATION",
    "OPERATION_LABEL",
    "PERMIT",
    "RISK_POLICY",
    "CheckHook",
    "PermitApi",
    "PermitClient",
    "PermitDenied",
    "PermitView",
    "PreCheckFailed",
    "SharedAsk",
    "check_record",
    "node_ready_check",
]

log = logging.getLogger("kokpit.runtime.permits")

Obj = dict[str, Any]
RISK_POLICY = Kind(GROUP, VERSION, "RiskPolicy", "riskpolicies", namespaced=False)
INTENT_ANNOTATION = "kokpit.io/intent"
OPERATION_LABEL = "kokpit.io/operation"
FINAL = (PermitState.RELEASED, PermitState.EXPIRED)

CheckHook = Callable[[Sequence[str]], Awaitable[Obj]]
"""A health check of targets: returns a CheckRecord dict (``passed``, ``results``; see :func:`check_record`)."""


class PermitApi(CanGet, CanCreate, CanPatch, CanDelete, ListWatch, Protocol):
    """What the permit client needs of :class:`kokpit.client.Client` (lists and watches for waiting)."""


@dataclass
class PermitView:
    """A Permit as an actor reads it."""

    obj: Obj

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def status(self) -> Obj:
        return self.obj.get("status") or {}

    @property
    def state(self) -> PermitState | None:
        s = self.status.get("state")
        try:
            return PermitState(str(s)) if s else None
        except ValueError:
            return None

    @property
    def granted(self) -> bool:
        return self.state is PermitState.GRANTED

    @property
    def granted_targets(self) -> list[str]:
        return list(self.status.get("grantedTargets") or [])

    @property
    def target_outcomes(self) -> dict[str, str]:
        """The holder's outcome per finished target (targets of a shared permit finish one by one)."""
        return dict(self.status.get("targetOutcomes") or {})

    def grants(self, target: str) -> bool:
        """Granted for ``target``, and ``target`` not finished yet."""
        return self.granted and target in (self.status.get("grantedTargets") or ()) and \
            target not in (self.status.get("targetOutcomes") or {})

    @property
    def released(self) -> bool:
        return self.state in FINAL or bool(self.status.get("outcome"))

    @property
    def policies(self) -> list[str]:
        return sorted({str(r.get("policy")) for r in self.status.get("reasons") or [] if r.get("policy")})

    @property
    def retry_after(self) -> str | None:
        v = self.status.get("retryAfter")
        return str(v) if v else None

    def summary(self) -> str:
        """One line for a condition message: the state and each refusing policy's reason."""
        reasons = "; ".join(f"{r.get('policy') or 'risk center'}: {r.get('reason')}: {r.get('message', '')}"
                            for r in self.status.get("reasons") or [])
        state = self.state.value if self.state else "Pending"
        out = f"{self.obj['spec']['operation']} permit {self.name} is {state}"
        if reasons:
            out += f" ({reasons})"
        if self.retry_after:
            out += f"; retry after {self.retry_after}"
        return out


class PermitDenied(Exception):
    """The risk center did not grant the permit in time; ``permit`` holds its last answer."""

    def __init__(self, permit: PermitView) -> None:
        super().__init__(permit.summary())
        self.permit = permit


class PreCheckFailed(Exception):
    def __init__(self, record: Obj) -> None:
        failed = [f"{r.get('target')}: {r.get('check')}: {r.get('message')}" for r in record.get("results") or []
                  if not r.get("passed")]
        super().__init__("pre-check failed: " + "; ".join(failed))
        self.record = record


def check_record(results: Sequence[Obj], clock: Clock | None = None) -> Obj:
    """A CheckRecord from per-target results ``{"target", "check", "passed", "message"}``."""
    return {"passed": all(bool(r.get("passed")) for r in results),
            "checkedAt": format_time((clock or RealClock()).now()), "results": list(results)}


def node_ready_check(business: CanGet, clock: Clock | None = None) -> CheckHook:
    """A pre/post check that every target Node exists and is Ready (the business cluster's view)."""

    async def check(targets: Sequence[str]) -> Obj:
        results = []
        for t in targets:
            try:
                node = await business.get(NODE, t)
            except ApiError as e:
                results.append({"target": t, "check": "NodeReady", "passed": False, "message": str(e)})
                continue
            ok = is_true((node.get("status") or {}).get("conditions"), "Ready")
            results.append({"target": t, "check": "NodeReady", "passed": ok,
                            "message": "" if ok else "the Node is not Ready"})
        return check_record(results, clock)

    return check


@dataclass(frozen=True)
class SharedAsk:
    """What asks may share one Permit: the same operation, intent, repair flag and reason."""

    operation: str
    intent: str = ""
    repair: bool = False
    reason: str = ""


@dataclass
class _Waiter:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    latest: Obj | None = None


class PermitClient:
    """Requests, waits for, renews and releases the Permits of one holder acting on one Cluster."""

    def __init__(self, client: PermitApi, *, namespace: str, cluster: str, holder: str,
                 ttl_seconds: int = 300, clock: Clock | None = None, shared_watch: PermitWatch | None = None) -> None:
        self.client = client
        # the namespace's watch shared with the PermitClients of other Clusters, else one of this Cluster's
        # own, made when first needed
        self.shared_watch = shared_watch
        self._own_watch: PermitWatch | None = None
        self.namespace = namespace
        self.cluster = cluster
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self._clock: Clock = clock or RealClock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._watching = asyncio.Event()
        self._latest: dict[str, Obj] = {}  # the watch's view of this cluster's permits
        # this holder's permits by target (names, in the order first seen): open_permits is asked on every
        # reconcile of every object an actor acts on — scanning every permit of the cluster there made a
        # 10,000-Machine swap quadratic (the machine operator's CPU went to it)
        self._mine: dict[str, dict[str, None]] = {}
        self._mine_all: dict[str, None] = {}
        self._listeners: list[Callable[[Obj], None]] = []

    @property
    def clock(self) -> Clock:
        return self._clock

    def now(self) -> Any:
        return self._clock.now()

    # ------------------------------------------------------------------ asking
    def name_for(self, operation: OperationType | str, targets: Sequence[str], intent: str = "") -> str:
        """The deterministic name of the permit for this operation on these targets (``intent`` tells apart
        two different changes of the same targets, e.g. the versions of an upgrade)."""
        digest = hashlib.sha256("\0".join([str(operation), intent, *targets]).encode()).hexdigest()[:10]
        return f"{self.cluster}-{OperationType(operation).value}-{digest}"[:253]

    def _body(self, operation: OperationType | str, targets: Sequence[str], *, name: str | None,
              repair: bool, partial: bool, reason: str, intent: str = "") -> Obj:
        op = OperationType(operation).value
        meta: Obj = {"namespace": self.namespace, "labels": {CLUSTER_LABEL: self.cluster, OPERATION_LABEL: op}}
        if intent:
            meta["annotations"] = {INTENT_ANNOTATION: intent}
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = f"{self.cluster}-{op}-"
        return {"apiVersion": PERMIT.api_version, "kind": "Permit", "metadata": meta,
                "spec": {"operation": op, "cluster": self.cluster, "targets": list(targets),
                         "holder": self.holder, "ttlSeconds": self.ttl_seconds,
                         "renewTime": format_micro_time(self._clock.now()),
                         "requestTime": format_micro_time(self._clock.now()), "repair": repair,
                         "partial": partial, "reason": reason}}

    async def request(self, operation: OperationType | str, targets: Sequence[str], *, name: str | None = None,
                      repair: bool = False, partial: bool = False, reason: str = "", intent: str = "") -> PermitView:
        """Create a new Permit (a generated name unless ``name``)."""
        body = self._body(operation, targets, name=name, repair=repair, partial=partial, reason=reason,
                          intent=intent)
        return PermitView(await self.client.create(PERMIT, body, self.namespace))

    async def ensure(self, operation: OperationType | str, targets: Sequence[str], *, intent: str = "",
                     repair: bool = False, partial: bool = False, reason: str = "") -> PermitView:
        """The permit for this operation on these targets: created the first time, read afterwards."""
        name = self.name_for(operation, targets, intent)
        try:
            return await self.request(operation, targets, name=name, repair=repair, partial=partial,
                                      reason=reason, intent=intent)
        except AlreadyExistsError:
            return await self.get(name)

    async def get(self, name: str) -> PermitView:
        return PermitView(await self.client.get(PERMIT, name, self.namespace))

    # ------------------------------------------------------------------ waiting
    def start_watch(self) -> None:
        """Start the watch of this cluster's permits (idempotent)."""
        watch = self.shared_watch
        if watch is None:
            watch = self._own_watch = self._own_watch or PermitWatch(self.client, self.namespace,
                                                                     cluster=self.cluster)
        watch.attach(self)

    async def synced(self, timeout: float = 10.0) -> bool:
        """Start the watch and wait (at most ``timeout``) until it has listed this cluster's permits,
        so :meth:`cached` and :meth:`open_permits` answer from the API's state, not from an empty cache."""
        self.start_watch()
        try:
            async with asyncio.timeout(timeout):
                await self._watching.wait()
        except TimeoutError:
            return False
        return True

    def cached(self, name: str) -> PermitView | None:
        """The permit as the shared watch last saw it (None: not seen, or the watch has not started)."""
        obj = self._latest.get(name)
        return PermitView(obj) if obj is not None else None

    def open_permits(self, target: str | None = None) -> list[PermitView]:
        """This holder's permits that are not released, optionally only those covering ``target`` (and not
        finished for it: a shared permit's targets finish one by one)."""
        out = []
        for name in list(self._mine_all if target is None else self._mine.get(target, ())):
            obj = self._latest.get(name)
            if obj is None:
                continue
            v = PermitView(obj)
            if (obj.get("spec") or {}).get("holder") == self.holder and not v.released and \
                    (target is None or target not in (v.status.get("targetOutcomes") or {})):
                out.append(v)
        return out

    def _index(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        if spec.get("holder") != self.holder:
            return
        name = str(obj["metadata"]["name"])
        self._mine_all[name] = None
        for t in spec.get("targets") or ():
            self._mine.setdefault(str(t), {})[name] = None

    def _relisted(self, items: list[Obj]) -> None:
        """A fresh list is the whole truth: a permit deleted while the watch was broken is forgotten too (else
        it would stay open in this holder's view until the process restarts)."""
        listed = {str(o["metadata"]["name"]) for o in items}
        for name, obj in list(self._latest.items()):
            if name not in listed:
                self._forget(obj)
        for o in items:
            self._deliver(o)

    def _forget(self, obj: Obj) -> None:
        name = str(obj["metadata"]["name"])
        self._latest.pop(name, None)
        self._mine_all.pop(name, None)
        for t in (obj.get("spec") or {}).get("targets") or ():
            names = self._mine.get(str(t))
            if names is not None:
                names.pop(name, None)
                if not names:
                    del self._mine[str(t)]

    def add_listener(self, fn: Callable[[Obj], None]) -> None:
        """Call ``fn(permit)`` for every permit the shared watch sees change: a level-triggered actor enqueues
        the objects it covers, so a grant is acted on at once rather than at the next poll."""
        self._listeners.append(fn)

    def _deliver(self, obj: Obj) -> None:
        name = str(obj["metadata"]["name"])
        self._latest[name] = obj
        self._index(obj)
        for w in self._waiters.get(name, ()):
            w.latest = obj
            w.event.set()
        for fn in self._listeners:
            try:
                fn(obj)
            except Exception:  # a listener's bug must not stop the watch
                log.exception("permit listener failed")

    async def wait(self, name: str, *, timeout: float | None = None, granted_only: bool = True,
                   until: Callable[[PermitView], bool] | None = None) -> PermitView:
        """Wait until the permit is Granted (or released/expired); with ``granted_only=False`` until it has
        any answer; with ``until`` until that holds.  Raises :class:`PermitDenied` with the last answer when
        ``timeout`` passes first."""
        self.start_watch()
        w = _Waiter()
        self._waiters.setdefault(name, []).append(w)
        last = None
        try:
            async with asyncio.timeout(timeout):
                await self._watching.wait()
                # the watch's list delivered every permit that existed when it started, and the watch every
                # change since: what it has not seen yet it will (no GET per waiter)
                cached = self._latest.get(name)
                last = PermitView(cached) if cached is not None else None
                while True:
                    if last is None:
                        await w.event.wait()
                        w.event.clear()
                        last = PermitView(w.latest) if w.latest is not None else None
                        continue
                    st = last.state
                    if until is not None:
                        if until(last):
                            return last
                    elif st is PermitState.GRANTED or st in FINAL or (not granted_only and st is not None):
                        return last
                    await w.event.wait()
                    w.event.clear()
                    if w.latest is not None:
                        last = PermitView(w.latest)
        except TimeoutError:
            raise PermitDenied(last or await self.get(name)) from None
        finally:
            self._waiters[name].remove(w)
            if not self._waiters[name]:
                del self._waiters[name]

    def listed(self, items: list[Obj]) -> None:
        """A list of this cluster's permits (from its PermitWatch): the whole truth, and the cache is ready."""
        self._relisted(items)
        self._watching.set()

    def delivered(self, event_type: str, obj: Obj) -> None:
        """One watch event of this cluster's permits (from its PermitWatch)."""
        if event_type in ("ADDED", "MODIFIED"):
            self._deliver(obj)
        elif event_type == "DELETED":
            self._forget(obj)

    async def close(self) -> None:
        if self.shared_watch is not None:
            self.shared_watch.detach(self)
        if self._own_watch is not None:
            await self._own_watch.close()
            self._own_watch = None
        self._watching.clear()

    # ------------------------------------------------------------------ holding
    async def renew(self, name: str) -> PermitView:
        body = {"spec": {"renewTime": format_micro_time(self._clock.now())}}
        return PermitView(await self.client.patch(PERMIT, name, body, self.namespace))

    async def record_check(self, name: str, phase: str, record: Obj) -> None:
        key = {"pre": "preCheck", "post": "postCheck"}[phase]
        await self.client.patch(PERMIT, name, {"status": {key: record}}, self.namespace, subresource="status")

    async def release(self, name: str, outcome: PermitOutcome, message: str = "",
                      post_check: Obj | None = None) -> None:
        """Report the outcome: the risk center frees the budget (a Failed outcome counts for the breaker)."""
        status: Obj = {"outcome": outcome.value, "message": message[:1024]}
        if post_check is not None:
            status["postCheck"] = post_check
        await self.client.patch(PERMIT, name, {"status": status}, self.namespace, subresource="status")

    async def report_targets(self, name: str, outcomes: dict[str, PermitOutcome],
                             checks: dict[str, Obj] | None = None) -> None:
        """Report targets finished (a merge patch adds them to ``status.targetOutcomes``, and their post-checks
        to ``targetChecks``): the risk center frees their budget at once and releases the permit when every
        granted target is finished."""
        status: Obj = {"targetOutcomes": {t: o.value for t, o in outcomes.items()}}
        if checks:
            status["targetChecks"] = checks
        await self.client.patch(PERMIT, name, {"status": status}, self.namespace, subresource="status")

    async def create_shared(self, ask: SharedAsk, targets: list[str]) -> list[str]:
        """One partial Permit for the targets of several asks (a GroupCommit write: one name per ask)."""
        view = await self.request(ask.operation, list(dict.fromkeys(targets)), partial=True, repair=ask.repair,
                                  reason=ask.reason, intent=ask.intent)
        return [view.name] * len(targets)

    async def report_finished(self, name: str, items: list[tuple[str, PermitOutcome, Obj | None]]) -> list[None]:
        """Targets of a shared Permit finished, with their post-checks (a GroupCommit write)."""
        checks = {t: c for t, _, c in items if c is not None}
        with contextlib.suppress(NotFoundError):  # deleted meanwhile: nothing is held any more
            await self.report_targets(name, {t: o for t, o, _ in items}, checks)
        return [None] * len(items)

    async def _renew_loop(self, name: str) -> None:
        period = max(self.ttl_seconds / 3.0, 0.05)
        while True:
            await self._clock.sleep(period)
            try:
                await self.renew(name)
            except (ApiError, TransportError) as e:
                log.warning("renewing permit %s failed: %s", name, e)

    @contextlib.asynccontextmanager
    async def hold(self, operation: OperationType | str, targets: Sequence[str], *,
                   pre_check: CheckHook | None = None, post_check: CheckHook | None = None,
                   wait_timeout: float | None = None, repair: bool = False, partial: bool = False,
                   reason: str = "") -> AsyncIterator[PermitView]:
        """Request, wait until Granted, pre-check, yield the granted permit, post-check and release."""
        view = await self.request(operation, targets, repair=repair, partial=partial, reason=reason)
        name = view.name
        renewer = asyncio.get_running_loop().create_task(self._renew_loop(name))  # alive while waiting too
        try:
            try:
                view = await self.wait(name, timeout=wait_timeout)
            except BaseException:
                with contextlib.suppress(ApiError, TransportError):
                    await self.release(name, PermitOutcome.ABORTED, "withdrawn before it was granted")
                raise
            if not view.granted:
                raise PermitDenied(view)
            granted = view.granted_targets
            if pre_check is not None:
                record = await pre_check(granted)
                await self.record_check(name, "pre", record)
                if not record.get("passed") and not repair:
                    await self.release(name, PermitOutcome.ABORTED, "pre-check failed")
                    raise PreCheckFailed(record)
            try:
                yield view
            except BaseException as e:
                await self.release(name, PermitOutcome.FAILED, f"operation failed: {e}")
                raise
            post = await post_check(granted) if post_check is not None else None
            ok = post is None or bool(post.get("passed"))
            await self.release(name, PermitOutcome.SUCCEEDED if ok else PermitOutcome.FAILED,
                               "" if ok else "post-check failed", post)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
