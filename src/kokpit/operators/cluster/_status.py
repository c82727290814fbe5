"""A Cluster's conditions and phase, derived from what the steps found (they decide nothing themselves).

ControlPlaneReady (the API server answers through the endpoint), Degraded (a component keeps being
replaced), Ready (all of it), and — last, for people only — the phase from the conditions.  Bad input has its
own rule: a running cluster keeps its Ready condition (it still runs its last good release), a new one says
why it cannot start.
"""

from __future__ import annotations

from typing import Any

from kokpit.api.cluster import APISERVER_COMPONENT, ClusterConditionType, ClusterReason, ClusterSpec
from kokpit.operators.cluster._probes import Probe
from kokpit.operators.cluster._walk import Walk
from kokpit.runtime import PhaseRule, ReconcileContext, derive_phase, find_condition

__all__ = ["cluster_conditions", "cluster_phase", "invalid_conditions"]

Obj = dict[str, Any]
CT = ClusterConditionType
R = ClusterReason


def invalid_conditions(ctx: ReconcileContext, reason: str, message: str) -> bool:
    """Bad input that leaves no release to run (neither the wanted one nor the last good one exists or is
    valid): say so; nothing is created or torn down.  A running cluster keeps running, but its status no longer
    claims it is healthy: with no release to compare against, nothing is verified or repaired."""
    running = bool(ctx.status.get("lastGoodPackageVersion"))
    changed = ctx.condition(CT.UPGRADING, False, reason, message)
    changed |= ctx.condition(CT.UP_TO_DATE, False, reason, message)
    if running:
        why = f"{message}; the running control plane is neither verified nor repaired until a valid " \
              "ClusterPackageVersion is named"
        changed |= ctx.condition(CT.READY, False, reason, why)
        for row in ctx.status.get("components") or []:
            row["healthy"] = False
            row["message"] = f"not verified: {reason}"
    else:
        changed |= ctx.condition(CT.READY, False, reason, message)
        changed |= ctx.condition(CT.CONTROL_PLANE_READY, False, reason, message)
        changed |= ctx.condition(CT.AVAILABLE, False, reason, message)
    return changed


def cluster_conditions(ctx: ReconcileContext, spec: ClusterSpec, walk: Walk, probe: Probe) -> bool:
    """ControlPlaneReady, Degraded and Ready; returns whether the cluster is Ready."""
    api_row = next((r for r in walk.rows if r["name"] == APISERVER_COMPONENT), {})
    cp_ok = probe.ready and int(api_row.get("readyReplicas", 0)) > 0
    ctx.condition(CT.CONTROL_PLANE_READY, cp_ok, R.COMPONENTS_READY if cp_ok else R.API_SERVER_NOT_READY,
                  (probe.message or "the API server answers /readyz") if cp_ok
                  else probe.message or "no ready API server")
    if walk.degraded:
        ctx.condition(CT.DEGRADED, True, R.COMPONENT_FAILING, "; ".join(walk.degraded))
    else:
        ctx.condition(CT.DEGRADED, False, R.AS_EXPECTED, "")
    ctx.condition(CT.AVAILABLE, cp_ok, R.AVAILABLE if cp_ok else R.NOT_AVAILABLE,
                  "the API server answers through the endpoint" if cp_ok else probe.message or "no ready API server")
    if walk.degraded:
        ctx.condition(CT.REMEDIATING, True, R.COMPONENT_FAILING, "; ".join(walk.degraded))
    else:
        ctx.condition(CT.REMEDIATING, False, R.NOT_REMEDIATING, "")
    up = find_condition(ctx.conditions, CT.UPGRADING) or {}
    rolling = up.get("status") == "True"
    ctx.condition(CT.ROLLING_OUT, rolling, str(up.get("reason") or R.NOT_ROLLING_OUT) if rolling
                  else R.NOT_ROLLING_OUT, str(up.get("message") or "") if rolling else "")
    running, wanted = ctx.status.get("packageVersion"), spec.package_version
    up_to_date = running == wanted and walk.converged and not rolling
    if up_to_date:
        ctx.condition(CT.UP_TO_DATE, True, R.UP_TO_DATE, f"every component runs {wanted}")
    else:
        held = up.get("reason") if up.get("status") == "False" and up.get("reason") not in (
            R.UP_TO_DATE, R.PROVISIONING) else None
        ctx.condition(CT.UP_TO_DATE, False, str(held or R.NOT_UP_TO_DATE),
                      str(up.get("message") or "") if held else
                      f"wants {wanted}, runs {running or 'nothing yet'}" + (" (rolling out)" if rolling else ""))
    ctx.condition(CT.PAUSED, spec.paused, R.PAUSED if spec.paused else R.NOT_PAUSED,
                  "spec.paused is true: not acting" if spec.paused else "")
    # Ready: serving, every component ready, and no release in flight (READY never flips True mid-release)
    ready = cp_ok and walk.all_ready and not rolling
    if spec.paused:
        ctx.condition(CT.READY, ready, R.PAUSED, "spec.paused is true: not acting")
    else:
        bad = [f"{r['name']}: {r.get('message') or 'not ready'}" for r in walk.rows
               if int(r.get("readyReplicas", 0)) < int(r.get("replicas", 0))]
        if rolling and not bad:
            bad = [f"release in progress: {up.get('message') or up.get('reason')}"]
        ctx.condition(CT.READY, ready, R.READY if ready else R.NOT_READY,
                      "control plane ready" if ready else "; ".join(bad) or probe.message)
    return ready


PHASES = (
    PhaseRule("Paused", CT.READY, reasons=(R.PAUSED,)),
    PhaseRule("RollingBack", CT.UPGRADING, reasons=(R.ROLLING_BACK,)),
    PhaseRule("Upgrading", CT.UPGRADING, statuses=("True",)),
    PhaseRule("Degraded", CT.DEGRADED, statuses=("True",)),
    PhaseRule("Ready", CT.READY, statuses=("True",)),
)


def cluster_phase(ctx: ReconcileContext) -> str:
    """For people only, derived last from the conditions."""
    phase = derive_phase(ctx.conditions, PHASES, "")
    if phase:
        return phase
    return "NotReady" if ctx.status.get("packageVersion") else "Provisioning"
