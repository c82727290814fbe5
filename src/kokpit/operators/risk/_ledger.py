"""The RiskLedger: the one object every grant is committed to before any actor hears of it.

A decision pass reads the ledger, decides, and writes the ledger back with the resourceVersion it read.  If
anyone else (a second risk center during a leader hand-over, or this one before a kill -9) wrote it in
between, the write fails with 409 and the pass starts over from the fresh ledger, so headroom is never spent
twice.  Only after the ledger write succeeded does a Permit's status say Granted; a restart that finds a
ledger entry whose Permit does not say so yet finishes the job.  Released entries stay while a sliding window
or a failure breaker still needs them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

from kokpit._lib.clock import format_micro_time, parse_time
from kokpit.api.machine import GROUP, VERSION
from kokpit.client import AlreadyExistsError, Kind, NotFoundError
from kokpit.operators.risk._decide import Usage

__all__ = ["LEDGER", "LEDGER_NAME", "decode", "encode", "entries", "entry_of", "fmt", "load_ledger", "released",
           "split_finished", "ts", "usage_of", "with_entries"]

Obj = dict[str, Any]
LEDGER = Kind(GROUP, VERSION, "RiskLedger", "riskledgers", namespaced=False)
LEDGER_NAME = "default"


def ts(text: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time (None stays None; garbage is None too)."""
    if not text:
        return None
    return _ts(text)


@functools.lru_cache(maxsize=1 << 16)
def _ts(text: str) -> float | None:
    """Remembered: every decision pass reads every grant's times again (thousands of grants in flight during a
    fleet-wide wave, the same strings pass after pass; parsing them was a quarter of the risk center's CPU)."""
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return None


def fmt(t: float) -> str:
    return format_micro_time(dt.datetime.fromtimestamp(t, dt.UTC))


def usage_of(e: Obj) -> Usage:
    return Usage(str(e["uid"]), str(e["operation"]), f"{e['namespace']}/{e['cluster']}",
                 tuple(e.get("targets") or ()), ts(e.get("grantedAt")) or 0.0, ts(e.get("releasedAt")),
                 e.get("outcome"))


def entry_of(u: Usage, namespace: str, name: str) -> Obj:
    out: Obj = {"uid": u.uid, "namespace": namespace, "name": name, "operation": u.operation,
                "cluster": u.cluster.split("/", 1)[1], "targets": list(u.targets), "grantedAt": fmt(u.granted_at)}
    if u.released_at is not None:
        out["releasedAt"] = fmt(u.released_at)
    if u.outcome:
        out["outcome"] = u.outcome
    return out


def released(e: Obj, at: float, outcome: str | None) -> Obj:
    out = dict(e)
    out["releasedAt"] = fmt(at)
    if outcome:
        out["outcome"] = outcome
    return out


def split_finished(e: Obj, outcomes: Any, at: float) -> list[Obj]:
    """An in-flight entry whose holder reported some targets finished (``status.targetOutcomes``): one released
    entry per outcome for those targets, then the entry itself, last, with what is still in flight — or, when
    every target is finished, released with the last outcome's targets (``[]``: nothing finished).  Each
    outcome stays an entry of its own, so a breaker counts the failures, not the permits they shared.  A
    split-off entry's uid is the entry's with ``~`` and its first target: unique, and no Permit's uid."""
    if not isinstance(outcomes, dict) or not outcomes:
        return []
    targets = list(e.get("targets") or ())
    groups: dict[str, list[str]] = {}
    for t in targets:
        if t in outcomes:
            groups.setdefault(str(outcomes[t]), []).append(t)
    if not groups:
        return []
    rest = [t for t in targets if t not in outcomes]
    parts = [released({**e, "uid": f"{e['uid']}~{ts_[0]}", "targets": ts_}, at, o) for o, ts_ in groups.items()]
    if rest:
        return [*parts, {**e, "targets": rest}]
    last = parts.pop()
    return [*parts, {**last, "uid": e["uid"]}]


async def load_ledger(client: Any) -> Obj:
    """The ledger as stored now (created empty the first time)."""
    try:
        out: Obj = await client.get(LEDGER, LEDGER_NAME)
        return out
    except NotFoundError:
        pass
    body = {"apiVersion": LEDGER.api_version, "kind": LEDGER.kind, "metadata": {"name": LEDGER_NAME},
            "status": {"entries": []}}
    try:
        made: Obj = await client.create(LEDGER, body)
        return made
    except AlreadyExistsError:
        got: Obj = await client.get(LEDGER, LEDGER_NAME)
        return got


_FIELDS = ("uid", "namespace", "name", "operation", "cluster", "grantedAt", "releasedAt", "outcome")


def encode(e: Obj) -> str:
    """One grant as one line of ``status.grants`` (names, times and reasons never hold spaces or commas)."""
    return " ".join([*(str(e.get(k) or "-") for k in _FIELDS), ",".join(e.get("targets") or ()) or "-"])


def decode(line: str) -> Obj | None:
    """One line of ``status.grants`` as a dict of its own (callers may change it)."""
    e = _decode(line)
    return None if e is None else {**e, "targets": list(e["targets"])}


@functools.lru_cache(maxsize=1 << 16)
def _decode(line: str) -> Obj | None:
    """Remembered per line, as ``_ts``: a grant's line stays the same from pass to pass until it is released."""
    parts = line.split(" ")
    if len(parts) != len(_FIELDS) + 1:
        return None
    out: Obj = {k: v for k, v in zip(_FIELDS, parts, strict=False) if v != "-"}
    out["targets"] = [] if parts[-1] == "-" else parts[-1].split(",")
    return out if {"uid", "namespace", "name", "operation", "cluster", "grantedAt"} <= out.keys() else None


def entries(ledger: Obj) -> list[Obj]:
    """The grants as dicts, from the compact lines (and the older object form, if a ledger still has it)."""
    st = ledger.get("status") or {}
    out = list(st.get("entries") or [])
    out += [e for line in st.get("grants") or [] if (e := decode(str(line))) is not None]
    return out


def with_entries(ledger: Obj, items: Iterable[Obj]) -> Obj:
    out = {k: v for k, v in ledger.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (ledger.get("metadata") or {}).items() if k != "managedFields"}
    out["status"] = {"grants": [encode(e) for e in items]}
    return out
