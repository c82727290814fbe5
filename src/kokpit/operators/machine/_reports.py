"""Condition ConfigMaps: how other operators report conditions about a node, and how gates read them.

Any component may put a ConfigMap labelled ``kokpit.io/node=<node>`` and
``kokpit.io/condition-source=<reporter>`` in any namespace; each data key is a condition type and its value
JSON ``{"status": "True|False|Unknown", "reason": ..., "message": ...}`` or a bare ``True``/``False``.
A value may also carry ``"heartbeatTime"`` (RFC 3339) and ``"ttlSeconds"``: a report not refreshed within
its TTL is *stale* and counts as ``Unknown`` (reason ``ReportStale``) — a node is never schedulable on stale
good news; the machine operator looks again when the TTL runs out.
Parsing is strict about what it accepts and explicit about what it rejects: a malformed value becomes an
``Unknown`` condition whose message names the ConfigMap and key, so the reporter can fix it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import parse_time
from kokpit.api import MachineConditionType, MachineReason

__all__ = [
    "NODE_LABEL",
    "SOURCE_LABEL",
    "GateResult",
    "Report",
    "Untrusted",
    "evaluate_gates",
    "merge_reports",
    "parse_configmap",
    "trusted_reports",
]

NODE_LABEL = "kokpit.io/node"
SOURCE_LABEL = "kokpit.io/condition-source"
OWN_TYPES = frozenset(str(t) for t in MachineConditionType)
_STATUSES = {"true": "True", "false": "False", "unknown": "Unknown"}
_RANK = {"False": 0, "Unknown": 1, "True": 2}

Obj = dict[str, Any]


@dataclass(frozen=True)
class Report:
    """One reported condition: type, status, reason, message and who reported it."""

    type: str
    status: str
    reason: str
    message: str
    source: str
    heartbeat_time: str = ""  # when the reporter last said so (its own clock), if it says
    expires_at: dt.datetime | None = None  # a report with a TTL turns stale then


def _source(cm: Obj) -> str:
    meta = cm.get("metadata") or {}
    src = (meta.get("labels") or {}).get(SOURCE_LABEL)
    return str(src) if src else f"configmap/{meta.get('namespace', '')}/{meta.get('name', '')}"


Parsed = tuple[str, str, str, str, float | None]


def _parse_value(raw: str) -> Parsed | str:
    """(status, reason, message, heartbeatTime, ttlSeconds), or an error string."""
    text = raw.strip()
    bare = _STATUSES.get(text.lower())
    if bare is not None:
        return bare, MachineReason.REPORTED, "", "", None
    try:
        val = json.loads(text)
    except ValueError:
        return 'is neither JSON nor a bare True/False'
    if not isinstance(val, dict):
        return "must be a JSON object or a bare True/False"
    status = _STATUSES.get(str(val.get("status", "")).lower()) if isinstance(val.get("status"), str) else None
    if status is None:
        return f'has status {val.get("status")!r}; want "True", "False" or "Unknown"'
    reason = val.get("reason") or MachineReason.REPORTED
    message = val.get("message") or ""
    heartbeat, ttl = val.get("heartbeatTime"), val.get("ttlSeconds")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            return f"has ttlSeconds {ttl!r}; want a positive number of seconds"
        if not heartbeat:
            return "has ttlSeconds but no heartbeatTime (when the reporter last said so)"
    if heartbeat is not None:
        try:
            parse_time(str(heartbeat))
        except ValueError:
            return f"has heartbeatTime {heartbeat!r}; want an RFC 3339 time"
    return status, str(reason), str(message), str(heartbeat or ""), float(ttl) if ttl is not None else None


def parse_configmap(cm: Obj, now: dt.datetime | None = None) -> list[Report]:
    """Every condition a Condition ConfigMap reports (invalid values become Unknown + InvalidReport; with
    ``now``, a report past its TTL becomes Unknown + ReportStale)."""
    meta = cm.get("metadata") or {}
    where = f"ConfigMap {meta.get('namespace', '')}/{meta.get('name', '')}"
    src = _source(cm)
    out: list[Report] = []
    for key, raw in sorted((cm.get("data") or {}).items()):
        if key in OWN_TYPES:
            continue  # the operator's own conditions cannot be overridden by a report
        parsed = _parse_value(str(raw))
        if isinstance(parsed, str):
            out.append(Report(key, "Unknown", MachineReason.INVALID_REPORT,
                              f"{where} key {key} {parsed}", src))
        else:
            status, reason, message, heartbeat, ttl = parsed
            expires = parse_time(heartbeat) + dt.timedelta(seconds=ttl) if ttl is not None else None
            if expires is not None and now is not None and now >= expires:
                out.append(Report(key, "Unknown", MachineReason.REPORT_STALE,
                                  f"{where} key {key}: {status} reported at {heartbeat} was not refreshed within "
                                  f"{ttl:g}s", src, heartbeat, None))
            else:
                out.append(Report(key, status, reason, message, src, heartbeat, expires))
    return out


def _merge(reports: Iterable[Report]) -> dict[str, Report]:
    best: dict[str, Report] = {}
    for r in reports:
        cur = best.get(r.type)
        if cur is None or (_RANK[r.status], r.source) < (_RANK[cur.status], cur.source):
            best[r.type] = r
    return best


def merge_reports(configmaps: list[Obj], now: dt.datetime | None = None) -> dict[str, Report]:
    """One report per condition type; when reporters disagree the most pessimistic one wins
    (False over Unknown over True), ties broken by source name, so the answer is deterministic."""
    return _merge(r for cm in configmaps for r in parse_configmap(cm, now))


@dataclass(frozen=True)
class Untrusted:
    """A report ignored because its source is not among those its readiness gate trusts."""

    report: Report
    configmap: str  # namespace/name, so a person can find and remove it


def trusted_reports(configmaps: list[Obj], trusted: Mapping[str, Collection[str]],
                    now: dt.datetime | None = None) -> tuple[dict[str, Report], list[Untrusted]]:
    """:func:`merge_reports` over the reports a gate trusts: a condition type with a non-empty list of
    trusted sources takes reports from those sources only; the others are returned to be flagged.

    Without this, anyone who may write a ConfigMap in some namespace could cordon nodes (a pessimistic
    report wins the merge) or uncordon them."""
    kept: list[Report] = []
    ignored: list[Untrusted] = []
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        for r in parse_configmap(cm, now):
            allowed = trusted.get(r.type)
            if allowed and r.source not in allowed:
                ignored.append(Untrusted(r, where))
            else:
                kept.append(r)
    ignored.sort(key=lambda u: (u.report.type, u.report.source, u.configmap))
    return _merge(kept), ignored


@dataclass(frozen=True)
class GateResult:
    met: bool
    reason: str
    message: str


def evaluate_gates(gates: list[str], reports: dict[str, Report]) -> GateResult:
    """Every readiness gate must have a True report; a missing report counts as not met."""
    if not gates:
        return GateResult(True, MachineReason.NO_GATES, "no readiness gates")
    missing = [g for g in gates if g not in reports]
    not_true = [g for g in gates if g in reports and reports[g].status != "True"]
    if not missing and not not_true:
        return GateResult(True, MachineReason.ALL_GATES_TRUE, f"all {len(gates)} readiness gates are True")
    parts: list[str] = []
    if not_true:
        parts.append("; ".join(f"{g} is {reports[g].status} ({reports[g].source}: "
                               f"{reports[g].reason}{': ' + reports[g].message if reports[g].message else ''})"
                               for g in not_true))
    if missing:
        parts.append(f"no report yet for {', '.join(missing)} (a ConfigMap labelled {NODE_LABEL}=<node> "
                     f"with key {missing[0]})")
    reason = MachineReason.GATE_NOT_TRUE if not_true else MachineReason.GATE_NOT_REPORTED
    return GateResult(False, reason, "; ".join(parts))
