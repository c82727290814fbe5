"""Pure decisions of the flow controller: which flow a fault starts, the storm breaker, escalation.

Everything here takes plain objects and ``now`` and returns an answer, so it is unit-tested without a server;
the reconciler (``_flow.py``) applies the answers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kokpit._lib.clock import parse_time
from kokpit.api.maintenance import (
    DEFAULT_ESCALATION,
    FlowConditionType,
    MaintenancePolicySpec,
    parse_duration,
)
from kokpit.operators.maintenance._faultref import ACCEPTED, ACTIVE, OBSERVE_ONLY
from kokpit.runtime import find_condition, is_true

__all__ = [
    "Escalation",
    "Storm",
    "active_faults",
    "escalate",
    "flow_is_open",
    "policy_spec",
    "reported_faults",
    "resolve_limit",
    "starting_flow",
    "storm",
]

Obj = dict[str, Any]


def policy_spec(policy: Obj | None) -> tuple[MaintenancePolicySpec | None, str]:
    """The typed spec of a MaintenancePolicy, or None and why it cannot be used."""
    if policy is None:
        return None, "not found"
    try:
        return MaintenancePolicySpec.model_validate(policy.get("spec") or {}), ""
    except ValidationError as e:
        first = e.errors()[0]
        return None, f"spec.{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"


def active_faults(faults: Iterable[Obj]) -> list[Obj]:
    """NodeFaults a flow acts on: Active, accepted by the event center, and not observe-only."""
    return [f for f in reported_faults(faults) if is_true((f.get("status") or {}).get("conditions"), ACCEPTED)]


def reported_faults(faults: Iterable[Obj]) -> list[Obj]:
    """NodeFaults the storm breaker counts: the Active ones a flow acts on *or will once the event center has
    judged them* (no ``Accepted`` condition yet).  In a storm reports arrive faster than the event center
    can judge them (four writes each): at 10,000 nodes 3,467 storm nodes were reported within a minute while
    fewer than 900 were accepted, and a breaker waiting for the judgement did not trip.  A report the
    center refuses stops counting once it is judged."""
    out = []
    for f in faults:
        st = f.get("status") or {}
        if st.get("state") != ACTIVE or st.get("flow") == OBSERVE_ONLY:
            continue
        accepted = find_condition(st.get("conditions") or [], ACCEPTED)
        if accepted is not None and accepted.get("status") != "True":
            continue
        out.append(f)
    return out


def starting_flow(spec: MaintenancePolicySpec, faults: list[Obj]) -> tuple[str, Obj]:
    """The flow a set of faults starts with (the strongest any of them asks for) and the fault it is for."""
    order = list(spec.escalation) or list(DEFAULT_ESCALATION)

    def rank(f: Obj) -> tuple[int, str]:
        flow = spec.flow_for(str(f["spec"]["type"]), str((f.get("status") or {}).get("flow") or ""))
        return (order.index(flow) if flow in order else -1), str(f["metadata"]["name"])

    best = max(faults, key=rank)
    return spec.flow_for(str(best["spec"]["type"]), str((best.get("status") or {}).get("flow") or "")), best


def flow_is_open(flow: Obj) -> bool:
    return not is_true((flow.get("status") or {}).get("conditions"), FlowConditionType.COMPLETED.value) \
        and not (flow.get("metadata") or {}).get("deletionTimestamp")


def resolve_limit(value: int | str, total: int) -> int:
    """An integer or a percentage of ``total`` (rounded down, as the risk center and Cluster API do)."""
    if isinstance(value, int):
        return value
    return math.floor(total * int(value.rstrip("%")) / 100)


@dataclass(frozen=True)
class Storm:
    open: bool
    arrivals: int  # nodes that turned faulty within the window (a fault's episode began, or a flow was opened)
    faulty: int  # nodes faulty now (an Active fault a flow would act on, or a flow still open)
    nodes: int
    limit: int
    message: str


def _age(when: object, now: dt.datetime) -> float | None:
    return (now - parse_time(str(when))).total_seconds() if when else None


def storm(spec: MaintenancePolicySpec, flows: Iterable[Obj], nodes: int, was_open: bool, now: dt.datetime,
          faults: Iterable[Obj] = ()) -> Storm:
    """The storm breaker: trips when more of the cluster's nodes than the limit turned faulty within the
    window; once open it stays open until no more than the limit are still faulty (hysteresis: a storm is an
    arrival rate, its end is the fleet being back).

    A node is faulty on a reporter's word (an Active fault a flow acts on or will once judged, see
    :func:`reported_faults`; its episode's ``firstSeen`` is its arrival) or while a flow of this policy is open
    on it.  Counting faults, not only flows, is what lets the breaker trip *during* a storm: flows are opened
    only as fast as the controllers write them, so in a 5,000-node storm a count of flows saw 981 in the first
    minute and never reached its limit of 3,000 (bench/maintenance.py at 10,000 nodes) while every one of those nodes was known faulty.
    A node counts once however many faults and flows it has."""
    window = parse_duration(spec.storm.window)
    limit = resolve_limit(spec.storm.max_faulty, nodes)
    arrived: set[str] = set()
    faulty: set[str] = set()
    for f in flows:
        meta = f.get("metadata") or {}
        node = str((f.get("spec") or {}).get("nodeName") or f"flow/{meta.get('name')}")
        age = _age(meta.get("creationTimestamp"), now)
        if age is not None and age <= window:
            arrived.add(node)
        if flow_is_open(f):
            faulty.add(node)
    for f in reported_faults(faults):
        node = str(f["spec"].get("nodeName") or "")
        if not node:
            continue
        age = _age((f.get("status") or {}).get("firstSeen") or f["metadata"].get("creationTimestamp"), now)
        if age is not None and age <= window:
            arrived.add(node)
        faulty.add(node)
    arrivals, n_faulty = len(arrived), len(faulty)
    is_open = n_faulty > limit if was_open else arrivals > limit
    if is_open:
        msg = (f"fault storm: {arrivals} nodes turned faulty within {spec.storm.window}, {n_faulty} still "
               f"faulty or under repair, limit {limit} of {nodes} nodes (maxFaulty {spec.storm.max_faulty}); "
               "no new node is isolated until no more than the limit are faulty")
    else:
        msg = (f"{arrivals} nodes turned faulty within {spec.storm.window}, {n_faulty} faulty; limit {limit} of "
               f"{nodes} nodes")
    return Storm(is_open, arrivals, n_faulty, nodes, limit, msg)


@dataclass(frozen=True)
class Escalation:
    """What happens after a failed repair attempt: try ``flow`` again as attempt ``attempt`` (possibly a
    stronger flow), or hand the node to a person (``flow`` None)."""

    flow: str | None
    attempt: int
    level: int
    message: str


def escalate(spec: MaintenancePolicySpec, flow: str, attempt: int, level: int, why: str) -> Escalation:
    tpl = spec.flow(flow)
    if tpl is not None and attempt < tpl.max_attempts:
        return Escalation(flow, attempt + 1, level, f"{why}; retrying {flow} (attempt {attempt + 1} of "
                                                   f"{tpl.max_attempts})")
    nxt = spec.next_flow(flow)
    if nxt is None:
        return Escalation(None, attempt, level, f"{why}; {flow} was the last automatic repair: a person must "
                                                f"finish it (kokpit fault resolve|retry)")
    return Escalation(nxt, 1, level + 1, f"{why}; escalating from {flow} to {nxt}")


def timed_out(started_at: str | None, timeout: str, now: dt.datetime) -> bool:
    if not started_at:
        return False
    return (now - parse_time(started_at)).total_seconds() > parse_duration(timeout)


def condition_true(obj: Obj | None, type_: str) -> bool:
    return bool(obj) and is_true(((obj or {}).get("status") or {}).get("conditions"), type_)


def condition_status(obj: Obj | None, type_: str) -> str | None:
    c = find_condition(((obj or {}).get("status") or {}).get("conditions"), type_)
    return str(c.get("status")) if c else None
