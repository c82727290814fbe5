"""Changes in flight from the risk center: granted Permits whose targets include a faulty node.

A fault on a node that a granted Permit is changing (a component upgrade, a reboot, a drain) names the Permit
in ``possiblyCausedBy``, so the change's owner (a Rollout, the machine operator) can stop and roll back rather
than the node being "repaired" into the bad version.  The Permits live in the meta cluster (namespace of the
Cluster); the machine operator's ``--risk-kubeconfig`` reaches it, and one watch of that namespace's Permits
feeds this lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from kokpit.client import Kind

__all__ = ["PERMIT", "permit_causes"]

Obj = dict[str, Any]
PERMIT: Final = Kind("kokpit.io", "v1alpha1", "Permit", "permits")


def permit_causes(permits: Iterable[Obj], cluster: str, node: str) -> list[Obj]:
    """CauseRefs of the granted node operations of ``cluster`` that target ``node`` (pure)."""
    out = []
    for p in permits:
        spec, st = p.get("spec") or {}, p.get("status") or {}
        if spec.get("cluster") != cluster or st.get("state") != "Granted":
            continue
        op = str(spec.get("operation") or "")
        if not op.startswith(("node-", "component-")):
            continue
        targets = st.get("grantedTargets") or spec.get("targets") or []
        if node not in targets or node in (st.get("targetOutcomes") or {}):  # (finished: no longer changing)
            continue
        meta = p.get("metadata") or {}
        cause: Obj = {"kind": "Permit", "name": str(meta.get("name")), "namespace": str(meta.get("namespace") or ""),
                      "cluster": cluster, "operation": op, "holder": str(spec.get("holder") or "")[:253],
                      "detail": str(spec.get("reason") or "")[:512]}
        if st.get("grantedAt"):
            cause["since"] = st["grantedAt"]
        out.append(cause)
    return out
