"""Faults attributed to a rollout: NodeFaults (issue 15) on a target's node that name the rollout — or one of
the risk-center Permits it holds — as what possibly caused them.

The fault catalog owns the NodeFault kind and how attribution is written; the rollout only reads it, and reads
it tolerantly (``possiblyCausedBy`` in spec or status, entries as objects or strings), so a fault counts
whether the detector attributed it by Permit or by Rollout.  A fault that is already resolved does not count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kokpit.operators.rollout._reconciler import RolloutCtx

__all__ = ["attributed_faults", "fault_names_rollout"]

Obj = dict[str, Any]
_RESOLVED = {"Resolved", "Expired", "Invalid", "Cleared", "Closed"}


def _entries(fault: Obj) -> list[Any]:
    out: list[Any] = []
    for part in (fault.get("spec") or {}, fault.get("status") or {}):
        v = part.get("possiblyCausedBy")
        if isinstance(v, list):
            out += v
        elif v:
            out.append(v)
    return out


def _resolved(fault: Obj) -> bool:
    status = fault.get("status") or {}
    if str(status.get("state") or "") in _RESOLVED or str((fault.get("spec") or {}).get("state") or "") in _RESOLVED:
        return True
    return any(c.get("type") in ("Resolved", "Expired") and c.get("status") == "True"
               for c in status.get("conditions") or [])


def fault_names_rollout(fault: Obj, rollout_ns: str, rollout: str, permits: set[str]) -> bool:
    """Whether ``fault`` names the Rollout ``rollout_ns/rollout`` or one of ``permits`` (namespace/name or name)
    as a possible cause."""
    names = {f"{rollout_ns}/{rollout}", f"rollout/{rollout_ns}/{rollout}"}
    short = {p.split("/", 1)[-1] for p in permits} | set(permits)
    for e in _entries(fault):
        if isinstance(e, str):
            if e in names or e in short or e.split("/", 1)[-1] in short:
                return True
            continue
        if not isinstance(e, dict):
            continue
        kind = str(e.get("kind") or "")
        name = str(e.get("name") or "")
        ns = str(e.get("namespace") or rollout_ns)
        if kind == "Rollout" and name == rollout and ns == rollout_ns:
            return True
        if kind == "Permit" and (name in short or f"{ns}/{name}" in short):
            return True
        for k in ("rollout", "permit", "holder"):
            v = str(e.get(k) or "")
            if v and (v in names or (v == rollout and ns == rollout_ns) or v in short):
                return True
    return False


def attributed_faults(ctx: RolloutCtx, target: Obj) -> str:
    """A message naming the open faults on ``target``'s node attributed to this rollout ("" when none)."""
    if ctx.spec is None or ctx.spec.target.machines is None or not target.get("touchedAt"):
        return ""
    cluster = str(target["name"]).split("/", 1)[0]
    b = ctx.business.get(cluster)
    if b is None:
        return ""
    ns = ctx.request.namespace or ""
    permits = {str(target.get("permit") or "")} - {""}
    found = [f for f in b.node_faults(str(target.get("node") or ""))
             if not _resolved(f) and fault_names_rollout(f, ns, ctx.request.name, permits)]
    if not found:
        return ""
    what = ", ".join(f"{(f.get('spec') or {}).get('type') or f['metadata'].get('name')}" for f in found)
    return f"{len(found)} fault(s) on node {target.get('node')} attributed to the rollout: {what}"
