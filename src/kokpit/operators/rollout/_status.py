"""A Rollout's status from what one reconcile found: counts, the UPDATED column, conditions, the state, and
the few targets worth naming.

The status is bounded whatever the number of targets — counts by state, per-step records, at most
:data:`~kokpit.api.rollout.NAMED_TARGETS` named targets (failed, rolling back, updating, modified first: what a
person must look at) and the number left out — as Argo Rollouts and a Cluster API MachineDeployment count
replicas rather than list them; every target's record is in the RolloutTargetSets.  Conditions decide (``Valid``, ``Progressing``, ``Paused``, ``Completed``, ``Aborted``, ``RolledBack``,
``RiskPermitted``); the ``state`` column is derived last from them, for people (``kubectl get rollouts``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from kokpit.api.rollout import NAMED_TARGETS, RolloutConditionType, RolloutReason, RolloutState, TargetState
from kokpit.runtime import PhaseRule, derive_phase, find_condition, is_true

if TYPE_CHECKING:
    from kokpit.operators.rollout._reconciler import RolloutCtx

__all__ = ["STATE_RULES", "finish_status", "holds_targets", "named_targets", "rollout_state"]

Obj = dict[str, Any]
CT = RolloutConditionType
R = RolloutReason

STATE_RULES = (
    PhaseRule(RolloutState.INVALID, CT.VALID, ("False",)),
    PhaseRule(RolloutState.ROLLED_BACK, CT.ROLLED_BACK, ("True",)),
    PhaseRule(RolloutState.ROLLING_BACK, CT.ROLLED_BACK, ("False",), (R.ROLLING_BACK,)),
    PhaseRule(RolloutState.ABORTED, CT.ABORTED, ("True",)),
    PhaseRule(RolloutState.COMPLETED, CT.COMPLETED, ("True",)),
    PhaseRule(RolloutState.PAUSED, CT.PAUSED, ("True",)),
    PhaseRule(RolloutState.PROGRESSING, CT.PROGRESSING, ("True",)),
)


def rollout_state(conditions: list[Obj] | None) -> str:
    return derive_phase(conditions, STATE_RULES, RolloutState.PENDING)


def holds_targets(rollout: Obj) -> bool:
    """Whether the Rollout's frozen targets are still its own: going forward, or to be rolled back — not once
    it is Completed or RolledBack, or Aborted without a rollback (another Rollout may then take them)."""
    st, spec = rollout.get("status") or {}, rollout.get("spec") or {}
    if not st.get("targetSets") and not st.get("targets"):
        return False
    conds = st.get("conditions")
    if is_true(conds, CT.COMPLETED) or is_true(conds, CT.ROLLED_BACK):
        return False
    rollback = bool((spec.get("failurePolicy") or {}).get("rollback", True)) or bool(spec.get("undo"))
    return not is_true(conds, CT.ABORTED) or rollback


_PAUSE_REASONS = {R.PAUSED_BY_USER, R.WAITING_FOR_PROMOTION, R.PAUSE_STEP}


# what a person should see first: trouble, then work in flight, then the rest in the order targets are taken
_RANK = {TargetState.FAILED.value: 0, TargetState.ROLLING_BACK.value: 1, TargetState.UPDATING.value: 2,
         TargetState.MODIFIED.value: 3, TargetState.ROLLED_BACK.value: 4, TargetState.UPDATED.value: 5}


def named_targets(targets: list[Obj], limit: int = NAMED_TARGETS) -> list[Obj]:
    """At most ``limit`` targets, those worth naming first (a failed rollback before everything); all of them
    when there are no more than ``limit``.  One pass into buckets by rank (no sort of 10,000 targets on every
    reconcile), then the first ``limit`` by rank, in the order they are taken."""
    if len(targets) <= limit:
        return targets
    buckets: list[list[int]] = [[] for _ in range(8)]
    rank = _RANK.get
    for i, t in enumerate(targets):
        buckets[0 if t.get("rollbackFailed") else 1 + rank(str(t.get("state")), 6)].append(i)
    chosen: list[int] = []
    for b in buckets:
        chosen += b[:limit - len(chosen)]
        if len(chosen) >= limit:
            break
    return [targets[i] for i in sorted(chosen)]


def finish_status(ctx: RolloutCtx) -> None:
    st = ctx.status
    targets = ctx.targets
    counts = Counter(str(t.get("state") or TargetState.PENDING.value) for t in targets)
    st["counts"] = {s.value: counts.get(s.value, 0) for s in TargetState if counts.get(s.value)}
    st["updated"] = f"{counts.get(TargetState.UPDATED.value, 0)}/{len(targets)}"
    st["total"] = len(targets)
    st["targets"] = named_targets(targets)
    st["targetsOmitted"] = len(targets) - len(st["targets"])
    waiting = ctx.results.get(ctx.waiting) if ctx.waiting else None
    reason, message = (waiting.reason, waiting.message) if waiting is not None else ("", "")
    if not targets:
        if ctx.cond(CT.VALID) is None or (ctx.cond(CT.VALID) or {}).get("status") != "False":
            ctx.condition(CT.PROGRESSING, False, reason or "NotStarted", message or "targets not frozen yet")
        return
    done = is_true(ctx.conditions, CT.COMPLETED) or is_true(ctx.conditions, CT.ROLLED_BACK)
    if ctx.direction == "stopped" or done:
        ctx.condition(CT.PROGRESSING, False, R.COMPLETED if is_true(ctx.conditions, CT.COMPLETED) and not
                      is_true(ctx.conditions, CT.ROLLED_BACK) else (find_condition(ctx.conditions, CT.ABORTED) or
                                                                    {}).get("reason", "Stopped"),
                      "nothing left to do")
    else:
        ctx.condition(CT.PROGRESSING, True, reason or R.BATCH_IN_PROGRESS,
                      message or f"step {st.get('currentStep', 0)}")
    if not is_true(ctx.conditions, CT.COMPLETED):
        ctx.condition(CT.COMPLETED, False, R.NOT_COMPLETED, st.get("updated", ""))
    if ctx.spec is not None and ctx.spec.paused and ctx.direction == "forward" and not done:
        ctx.condition(CT.PAUSED, True, R.PAUSED_BY_USER, "spec.paused: no new target is started")
    elif reason in _PAUSE_REASONS and not done:
        ctx.condition(CT.PAUSED, True, reason, message)
    else:
        ctx.condition(CT.PAUSED, False, "NotPaused", "")
    if ctx.risk is not None:
        ctx.condition(CT.RISK_PERMITTED, *ctx.risk)
