"""Permits for level-triggered actors: ask in every reconcile, find the answer in the shared watch's cache.

A reconcile calls :meth:`PermitGate.admit` before each risky step and acts only on a grant; the permit is the
actor's memory across restarts (found again by name, or by target), so nothing about it lives in a dict that
a kill -9 would lose.  Two ways to ask:

- **one Permit per change** (the default): named after the operation, targets and ``intent``, created the first
  time and read afterwards;
- **shared** (``coalesce``, per operation type; for actors that ask per node by the thousand, like the machine
  operator's component upgrades): the asks of concurrent reconciles go out together as one partial Permit
  (:class:`kokpit._lib.groupcommit.GroupCommit`), each reconcile finds its node's grant by target in the
  cache, and each node's outcome is reported on its own (``status.targetOutcomes``), freeing its budget at
  once.  A restarted actor finds its nodes' shared permits by target, as it finds named ones by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import parse_time
from kokpit._lib.groupcommit import GroupCommit
from kokpit.api.risk import OperationType, PermitOutcome, PermitState
from kokpit.client import ApiError, TransportError
from kokpit.runtime.permits import (
    INTENT_ANNOTATION,
    PERMIT,
    PermitClient,
    PermitView,
    SharedAsk,
    check_record,
)

__all__ = ["Admission", "PermitGate"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Admission:
    """A level-triggered actor's answer: act now, or show ``reason`` (RiskQueued / RiskDenied / RiskPending)
    with ``message`` and look again after ``retry_after`` seconds."""

    granted: bool
    reason: str
    message: str
    permit: str
    retry_after: float | None = None


class PermitGate:
    """Permits for level-triggered actors: :meth:`admit` in every reconcile before a risky step (creates the
    permit the first time; renews it while it is wanted), :meth:`finish` when the step's outcome is known.
    Reads come from the client's shared watch, so a reconcile that waits costs no API call.  Operations in
    ``coalesce`` asked for one target at a time share Permits (see the module docstring)."""

    def __init__(self, permits: PermitClient, *, poll: float = 5.0,
                 coalesce: Iterable[OperationType | str] = ()) -> None:
        self.permits = permits
        self.poll = poll  # safety net: the actor looks again this often while it waits
        self.coalesce = frozenset(OperationType(o).value for o in coalesce)
        self._asks: GroupCommit[SharedAsk, str, str] = GroupCommit(permits.create_shared)
        self._reports: GroupCommit[str, tuple[str, PermitOutcome, Obj | None], None] = GroupCommit(
            permits.report_finished)
        # (operation, intent, target) -> the shared permit just created for it, until the watch shows it: a
        # reconcile in between must not ask again (after a restart the watch's list has every one of them)
        self._asked: dict[tuple[str, str, str], str] = {}

    async def admit(self, operation: OperationType | str, targets: Sequence[str], intent: str, *,
                    repair: bool = False, reason: str = "") -> Admission:
        if OperationType(operation).value in self.coalesce and len(targets) == 1:
            return await self._admit_shared(OperationType(operation).value, targets[0], intent, repair, reason)
        pc = self.permits
        pc.start_watch()
        name = pc.name_for(operation, targets, intent)
        view = pc.cached(name)
        try:
            if view is None or view.released:
                if view is not None:  # an earlier attempt of the same change is over: ask anew
                    with contextlib.suppress(ApiError):
                        await pc.client.delete(PERMIT, name, pc.namespace)
                view = await pc.ensure(operation, targets, intent=intent, repair=repair, reason=reason)
                if view.released:
                    return Admission(False, "RiskPending", f"permit {name} is being replaced", name, 0.5)
            await self._keep_alive(view)
            if view.granted:
                return Admission(True, "Granted", view.summary(), name)
        except (ApiError, TransportError) as e:
            return Admission(False, "RiskPending", f"cannot reach the risk center's API: {e}", name, self.poll)
        return self._waiting(view)

    async def _keep_alive(self, view: PermitView) -> None:
        """The actor is alive and still wants it: renew while waiting too, or a long queue would expire it."""
        pc = self.permits
        renewed = (view.obj.get("spec") or {}).get("renewTime")
        age = (pc.now() - parse_time(renewed)).total_seconds() if renewed else float("inf")
        if age > pc.ttl_seconds / 3:
            fresh = await pc.renew(view.name)
            view.obj.setdefault("spec", {})["renewTime"] = fresh.obj["spec"].get("renewTime")

    def _waiting(self, view: PermitView) -> Admission:
        state = view.state
        why = {PermitState.QUEUED: "RiskQueued", PermitState.DENIED: "RiskDenied"}.get(state, "RiskPending") \
            if state is not None else "RiskPending"
        msg = view.summary() if state is not None else f"permit {view.name} is waiting for the risk center"
        return Admission(False, why, msg, view.name, self.poll)

    async def _admit_shared(self, op: str, target: str, intent: str, repair: bool, reason: str) -> Admission:
        pc = self.permits
        pc.start_watch()
        key = (op, intent, target)
        view = next((v for v in pc.open_permits(target)
                     if (v.obj.get("spec") or {}).get("operation") == op and self.intent(v) == intent
                     and not (v.granted and target not in v.granted_targets)), None)  # a grant that stopped short
        try:
            if view is None:
                asked = self._asked.get(key)
                if asked is not None and pc.cached(asked) is None:
                    return Admission(False, "RiskPending", f"permit {asked} is waiting for the risk center",
                                     asked, self.poll)
                name = await self._asks.add(SharedAsk(op, intent, repair, reason), target)
                self._asked[key] = name
                return Admission(False, "RiskPending", f"permit {name} is waiting for the risk center", name,
                                 self.poll)
            self._asked.pop(key, None)
            await self._keep_alive(view)
            if view.grants(target):
                return Admission(True, "Granted", view.summary(), view.name)
        except (ApiError, TransportError) as e:
            return Admission(False, "RiskPending", f"cannot reach the risk center's API: {e}", "", self.poll)
        return self._waiting(view)

    def open_for(self, target: str) -> list[PermitView]:
        return self.permits.open_permits(target)

    def open_all(self) -> list[PermitView]:
        return self.permits.open_permits()

    async def finish(self, view: PermitView, outcome: PermitOutcome, message: str = "",
                     post_check: Obj | None = None, *, target: str | None = None) -> None:
        """Release the permit with ``outcome`` — or, for an operation this gate coalesces, only ``target``: its
        outcome in ``targetOutcomes``, its post-check in ``targetChecks`` (for an outcome other than Succeeded
        without one, ``message`` as the failed check)."""
        shared = target is not None and (view.obj.get("spec") or {}).get("operation") in self.coalesce
        with contextlib.suppress(ApiError, TransportError):
            if shared:
                assert target is not None
                check = post_check
                if check is None and outcome is not PermitOutcome.SUCCEEDED:
                    check = check_record([{"target": target, "check": "operation", "passed": False,
                                           "message": message[:1024]}], self.permits.clock)
                await self._reports.add(view.name, (target, outcome, check))
                # the watch will show it finished; until then do not report it twice
                st = view.obj.setdefault("status", {})
                st["targetOutcomes"] = {**(st.get("targetOutcomes") or {}), target: outcome.value}
                return
            await self.permits.release(view.name, outcome, message, post_check)
            # the watch will show it released; until then do not release it twice
            view.obj.setdefault("status", {})["outcome"] = outcome.value

    async def close(self) -> None:
        await self._asks.close()
        await self._reports.close()

    @staticmethod
    def intent(view: PermitView) -> str:
        return str(((view.obj.get("metadata") or {}).get("annotations") or {}).get(INTENT_ANNOTATION) or "")
