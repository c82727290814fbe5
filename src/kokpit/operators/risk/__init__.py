"""The risk center: one persisted budget for every risky action (issue 14).

Actors ask for Permits (:mod:`kokpit.runtime.permits`); this operator decides them from the RiskPolicies
(:mod:`._decide`, pure functions), commits every grant to the RiskLedger first (optimistic concurrency on one
object, so nothing overshoots and nothing resets), expires dead holders' permits, trips failure breakers and
evaluates business-metric gates.
"""

from kokpit.operators.risk._decide import (
    Ask,
    ClusterInfo,
    Decision,
    GateReading,
    NodeInfo,
    PolicyView,
    Refusal,
    Usage,
    World,
    breaker_failures,
    budget_report,
    decide,
    matches,
    resolve_limit,
)
from kokpit.operators.risk._policystatus import RESET_ANNOTATION
from kokpit.operators.risk._schedule import CronSchedule, ScheduleError, blackout_end, parse_duration
from kokpit.operators.risk.center import CLUSTER, CenterOptions, RiskCenter
from kokpit.operators.risk.defaults import DEFAULT_POLICIES, default_policies
from kokpit.operators.risk.run import install_default_policies, run_center

__all__ = [
    "CLUSTER",
    "DEFAULT_POLICIES",
    "RESET_ANNOTATION",
    "Ask",
    "CenterOptions",
    "ClusterInfo",
    "CronSchedule",
    "Decision",
    "GateReading",
    "NodeInfo",
    "PolicyView",
    "Refusal",
    "RiskCenter",
    "ScheduleError",
    "Usage",
    "World",
    "blackout_end",
    "breaker_failures",
    "budget_report",
    "decide",
    "default_policies",
    "install_default_policies",
    "matches",
    "parse_duration",
    "resolve_limit",
    "run_center",
]
