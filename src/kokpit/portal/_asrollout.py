"""Changes over many targets run as a Rollout (the rollout controller's kind), not batched by the portal.

A component upgrade on a set of Machines, or a release of several Clusters, is exactly what a Rollout is:
a canary wave of one change over many targets, batch by batch through the risk center, with analysis, pause,
abort and automatic rollback — all the rollout controller's, surviving any restart.  The portal only writes
the Rollout when the change is approved (with the approver's own token, as a release is patched with it) and
reads its progress back:

- **Machines** are named by the change, Rollouts select them by labels: each target Machine gets the label
  ``change.kokpit.io/<change>`` (a key per change, so two changes never overwrite each other's marks), and the
  Rollout selects ``machineSelector: {matchLabels: {change.kokpit.io/<change>: "true"}}`` in that one cluster.
- **Steps**: a first canary of one batch (the covering RiskPolicies' ``maxConcurrent``), then everything,
  ``maxUnavailable`` one batch; the default failure policy (no failure tolerated, roll back on abort).
- **Progress** is the Rollout's: targets Updated of all, Failed; the change closes Succeeded when the Rollout
  is Completed, Failed when it aborted or rolled back by itself, Aborted when a person aborted the change.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kokpit.api.change import ChangeOperation
from kokpit.client import Client
from kokpit.portal._kinds import MACHINE, ROLLOUT

__all__ = ["CHANGE_LABEL_PREFIX", "ROLLOUT", "as_rollout", "label_targets", "rollout_of", "rollout_progress",
           "runs_as_rollout"]

Obj = dict[str, Any]
CHANGE_LABEL_PREFIX = "change.kokpit.io/"


def runs_as_rollout(spec: Obj) -> bool:
    """A component upgrade (any number of Machines), or a release of more than the one ``cluster``."""
    op = spec.get("operation")
    return op == ChangeOperation.COMPONENT_UPGRADE or (
        op == ChangeOperation.CONTROL_PLANE_RELEASE and bool(spec.get("targets")))


def _steps(units: int, batch: int) -> list[Obj]:
    if 0 < batch < units:
        return [{"canary": batch}, {"canary": "100%"}]
    return [{"canary": "100%"}]


def as_rollout(namespace: str, name: str, spec: Obj, st: Obj, author: str, *, replaces: str = "") -> Obj:
    """The Rollout a change becomes (same namespace and name as the ChangeRequest); ``replaces``: the
    MachinePackageVersion the target Machines run now (a component upgrade replaces it)."""
    batch = int((st.get("plan") or {}).get("batchSize") or 1)
    units = len(spec.get("targets") or [])
    target: Obj
    if spec.get("operation") == ChangeOperation.COMPONENT_UPGRADE:
        target = {"machines": {"clusterNames": [spec["cluster"]],
                               "machineSelector": {"matchLabels": {CHANGE_LABEL_PREFIX + name: "true"}},
                               "packages": [{"component": spec["component"], "to": spec["version"],
                                             **({"from": replaces} if replaces else {})}]}}
    else:
        target = {"clusters": {"names": list(spec.get("targets") or []), "packageVersion": spec["version"]}}
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kokpit.io/change-request": name},
                         "annotations": {"kokpit.io/change-author": author[:253],
                                         "kokpit.io/change-reason": str(spec.get("reason") or "")[:1024]}},
            "spec": {"target": target, "strategy": {"steps": _steps(units, batch), "maxUnavailable": max(1, batch)},
                     "paused": bool(spec.get("paused"))}}


async def label_targets(client: Client, name: str, targets: list[str], *, parallel: int = 16) -> None:
    """Mark every target Machine with the change's label (idempotent; a few patches in flight at once)."""
    sem = asyncio.Semaphore(parallel)
    body = {"metadata": {"labels": {CHANGE_LABEL_PREFIX + name: "true"}}}

    async def one(t: str) -> None:
        async with sem:
            await client.patch(MACHINE, t, body)

    await asyncio.gather(*(one(t) for t in targets))


def rollout_of(st: Obj) -> tuple[str, str] | None:
    """(namespace, name) of the Rollout a change became, from its objects."""
    for o in st.get("objects") or []:
        if o.get("kind") == "Rollout":
            return str(o.get("namespace") or ""), str(o.get("name") or "")
    return None


def _true(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_
                 and c.get("status") == "True"), None)


def rollout_progress(rollout: Obj | None, units: int) -> tuple[int, int, int, str, str]:
    """(done, failed, total, outcome or "", message) of a change run as ``rollout``."""
    if rollout is None:
        return 0, 0, units, "", "waiting for the Rollout to appear"
    st = rollout.get("status") or {}
    counts = {str(k): int(v) for k, v in (st.get("counts") or {}).items()}
    total = int(st.get("total") or 0) or len(st.get("targets") or []) or units
    done, failed = counts.get("Updated", 0), counts.get("Failed", 0)
    for kind, outcome in (("RolledBack", "Failed"), ("Aborted", "Failed"), ("Completed", "Succeeded")):
        c = _true(rollout, kind)
        if c is not None and (kind != "Aborted" or _true(rollout, "RolledBack") is not None
                              or not counts.get("RollingBack")):
            return done, failed, total, outcome, f"Rollout {kind}: {c.get('message') or c.get('reason') or ''}"
    return done, failed, total, "", str(st.get("phase") or "Pending")
