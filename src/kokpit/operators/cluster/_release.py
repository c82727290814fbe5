"""Which release a Cluster runs, and what the walk's outcome means for it: release, rollback, last good.

A Cluster points at one ClusterPackageVersion (``spec.packageVersion``).  The operator runs that release
unless it cannot: a pointer to a missing or invalid CPV, or to a release that failed its post-check
(``status.failedPackageVersion``), runs the last good release instead (``status.lastGoodPackageVersion``) and
says why.  Everything it decides on is in the Cluster's status, so a restarted operator decides the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kokpit.api.cluster import ClusterConditionType, ClusterReason
from kokpit.operators.cluster._plan import validate_cpv
from kokpit.operators.cluster._walk import Walk
from kokpit.runtime import InvalidSpec, ReconcileContext, find_condition

__all__ = ["Release", "choose_release", "record_outcome"]

Obj = dict[str, Any]
CT = ClusterConditionType
R = ClusterReason


@dataclass(frozen=True)
class Release:
    """The release to run now: ``target`` (a CPV) named ``target_name``; ``desired`` is what spec asks for,
    ``problem`` why the desired one cannot run (reason, message), if it cannot."""

    desired: str
    target_name: str
    target: Obj
    problem: tuple[str, str] | None = None


def choose_release(status: Obj, desired: str, get_cpv: Callable[[str], Obj | None]) -> Release:
    """The target release; raises :class:`InvalidSpec` when neither the desired nor a last good one can run.
    A new pointer forgets the failed release (it is history)."""
    failed = status.get("failedPackageVersion")
    if failed and failed != desired:
        status.pop("failedPackageVersion", None)
        failed = None
    cpv = get_cpv(desired)
    problem = validate_cpv(cpv)
    last_good = status.get("lastGoodPackageVersion")
    lg_cpv = get_cpv(last_good) if last_good else None
    if (problem is not None or failed == desired) and last_good and last_good != desired \
            and validate_cpv(lg_cpv) is None:
        assert lg_cpv is not None
        return Release(desired, str(last_good), lg_cpv, problem)
    if problem is not None:
        raise InvalidSpec(problem[0], f"{desired}: {problem[1]}")
    assert cpv is not None
    return Release(desired, desired, cpv, None)


def record_outcome(ctx: ReconcileContext, rel: Release, walk: Walk, paused: bool) -> None:
    """What the walk's outcome means for the release: the Upgrading condition, and the observed, last good
    and failed package versions in status."""
    status, desired, target_name = ctx.status, rel.desired, rel.target_name
    old_up = find_condition(ctx.conditions, CT.UPGRADING) or {}
    if walk.rollback:
        status["failedPackageVersion"] = desired
        ctx.condition(CT.UPGRADING, True, R.ROLLING_BACK, walk.rollback)
    elif walk.converged:
        status["packageVersion"] = target_name
        status["lastGoodPackageVersion"] = target_name
        if target_name == desired:
            ctx.condition(CT.UPGRADING, False, R.UP_TO_DATE, f"running {target_name}")
        elif rel.problem is not None:
            ctx.condition(CT.UPGRADING, False, rel.problem[0],
                          f"{desired}: {rel.problem[1]}; still running {target_name}")
        else:
            why = str(old_up.get("message") or "") if old_up.get("reason") in (R.ROLLING_BACK, R.ROLLED_BACK) \
                else f"release {desired} failed; running {target_name}"
            ctx.condition(CT.UPGRADING, False, R.ROLLED_BACK, why)
    elif not paused:
        if status.get("failedPackageVersion") == desired and target_name != desired:
            ctx.condition(CT.UPGRADING, True, R.ROLLING_BACK,
                          str(old_up.get("message") or f"rolling back to {target_name}"))
        elif status.get("packageVersion") and status.get("packageVersion") != target_name:
            ctx.condition(CT.UPGRADING, True, R.UPGRADE_IN_PROGRESS, f"{status.get('packageVersion')} -> {target_name}")
        elif not status.get("packageVersion"):
            ctx.condition(CT.UPGRADING, False, R.PROVISIONING, f"creating {target_name}")
