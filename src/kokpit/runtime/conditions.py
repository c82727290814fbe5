"""Status conditions with Kubernetes' rules, on plain-dict objects.

Conditions drive decisions in kokpit (never phases), so they must be trustworthy: ``lastTransitionTime``
moves only when the status flips (so "how long has it been False" is answerable) and each condition
carries the ``observedGeneration`` it was computed from (so stale conditions are recognisable).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kokpit._lib.clock import format_time

__all__ = [
    "find_condition",
    "is_false",
    "is_true",
    "remove_condition",
    "set_condition",
    "set_object_condition",
]

Obj = dict[str, Any]


def find_condition(conditions: list[Obj] | None, type_: str) -> Obj | None:
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: list[Obj] | None, type_: str) -> bool:
    c = find_condition(conditions, type_)
    return c is not None and c.get("status") == "True"


def is_false(conditions: list[Obj] | None, type_: str) -> bool:
    c = find_condition(conditions, type_)
    return c is not None and c.get("status") == "False"


def set_condition(
    conditions: list[Obj],
    type_: str,
    status: str | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: dt.datetime,
) -> bool:
    """Set a condition in place; returns True when anything changed.

    ``lastTransitionTime`` is set to ``now`` only for a new condition or a status flip.
    """
    st = ("True" if status else "False") if isinstance(status, bool) else status
    if st not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {st!r}")
    new: Obj = {"type": type_, "status": st, "reason": reason, "message": message}
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    old = find_condition(conditions, type_)
    if old is None:
        new["lastTransitionTime"] = format_time(now)
        conditions.append(new)
        return True
    if old.get("status") != st or not old.get("lastTransitionTime"):
        new["lastTransitionTime"] = format_time(now)
    else:
        new["lastTransitionTime"] = old["lastTransitionTime"]
    if new == old:
        return False
    old.clear()
    old.update(new)
    return True


def set_object_condition(
    obj: Obj, type_: str, status: str | bool, reason: str, message: str = "", *, now: dt.datetime
) -> bool:
    """:func:`set_condition` on ``obj.status.conditions``, stamping ``metadata.generation`` as observed."""
    status_obj = obj.setdefault("status", {})
    conds = status_obj.setdefault("conditions", [])
    gen = (obj.get("metadata") or {}).get("generation")
    return set_condition(
        conds,
        type_,
        status,
        reason,
        message,
        observed_generation=int(gen) if gen is not None else None,
        now=now,
    )


def remove_condition(conditions: list[Obj], type_: str) -> bool:
    for i, c in enumerate(conditions):
        if c.get("type") == type_:
            del conditions[i]
            return True
    return False
