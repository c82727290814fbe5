"""Failure memory kept in the object's status, so a restarted operator resumes the same backoff.

An operator that retries something (an install, a Pod replacement) must remember how often it failed, since
when, and when it may try again; a probe that keeps failing must remember since when.  Kept in a dict, all of
it is forgotten by kill -9: the backoff restarts at its shortest delay, a Degraded object looks fine, and a
rollback timer starts over.  :class:`FailureMemory` keeps each such record as one entry of a list in the
object's status (``status.failures``, a list-map keyed by ``name``; the wire shape is
:class:`kokpit.api.meta.FailureRecord`), with wall-clock MicroTime timestamps, so the next reconcile — in this
process or another — reads the same deadlines.  Records change only when a failure is counted or cleared,
so a settled object's status does not change from one reconcile to the next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import format_micro_time, parse_time

__all__ = ["Failure", "FailureMemory"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """One remembered failure: ``count`` in a row since ``first``, last seen ``last``; retry from ``retry_at``."""

    name: str
    count: int
    first: dt.datetime
    last: dt.datetime
    retry_at: dt.datetime
    message: str = ""
    signature: str = ""

    def retry_in(self, now: dt.datetime) -> float:
        """Seconds until the next retry is due (0 when it is)."""
        return max(0.0, (self.retry_at - now).total_seconds())

    def age(self, now: dt.datetime) -> float:
        """Seconds since the first failure of this run."""
        return max(0.0, (now - self.first).total_seconds())

    def to_wire(self) -> Obj:
        out: Obj = {"name": self.name, "count": self.count, "firstFailureTime": format_micro_time(self.first),
                    "lastFailureTime": format_micro_time(self.last),
                    "nextRetryTime": format_micro_time(self.retry_at)}
        if self.message:
            out["message"] = self.message[:1024]
        if self.signature:
            out["signature"] = self.signature[:1024]
        return out

    @classmethod
    def from_wire(cls, raw: Obj) -> Failure | None:
        try:
            first = parse_time(str(raw["firstFailureTime"]))
            return cls(str(raw["name"]), int(raw.get("count") or 0), first,
                       parse_time(str(raw.get("lastFailureTime") or raw["firstFailureTime"])),
                       parse_time(str(raw.get("nextRetryTime") or raw["firstFailureTime"])),
                       str(raw.get("message") or ""), str(raw.get("signature") or ""))
        except (KeyError, TypeError, ValueError):
            return None  # written by hand or by an older operator: treated as no memory


class FailureMemory:
    """The failure records in ``obj.status.<field>``, read and written in place on the reconcile's working
    copy (the status patch at the end of the reconcile makes them durable)."""

    def __init__(self, obj: Obj, backoff: ExponentialBackoff, *, field: str = "failures") -> None:
        self.obj = obj
        self.backoff = backoff
        self.field = field

    def _rows(self) -> list[Obj]:
        rows = (self.obj.get("status") or {}).get(self.field)
        return rows if isinstance(rows, list) else []

    def get(self, name: str) -> Failure | None:
        for raw in self._rows():
            if isinstance(raw, dict) and raw.get("name") == name:
                return Failure.from_wire(raw)
        return None

    def all(self, prefix: str = "") -> list[Failure]:
        out = []
        for raw in self._rows():
            if isinstance(raw, dict) and str(raw.get("name", "")).startswith(prefix):
                f = Failure.from_wire(raw)
                if f is not None:
                    out.append(f)
        return out

    def _put(self, f: Failure) -> Failure:
        status = self.obj.setdefault("status", {})
        rows = [r for r in self._rows() if not (isinstance(r, dict) and r.get("name") == f.name)]
        rows.append(f.to_wire())
        rows.sort(key=lambda r: str(r.get("name")))
        status[self.field] = rows
        return f

    def record(self, name: str, message: str, now: dt.datetime, *, signature: str = "",
               restart: bool = False) -> Failure:
        """Count one more failure of ``name``; the next retry waits the backoff for that count.  With
        ``restart`` (what fails is a different thing now, e.g. a new target version) the count starts over."""
        prev = None if restart else self.get(name)
        count = (prev.count if prev is not None else 0) + 1
        first = prev.first if prev is not None else now
        retry_at = now + dt.timedelta(seconds=self.backoff.delay(count - 1))
        return self._put(Failure(name, count, first, now, retry_at, message, signature))

    def since(self, name: str, message: str, now: dt.datetime) -> Failure:
        """Remember that ``name`` is failing from now on (kept as it is when already remembered): the
        "bad since" of a probe, whose age decides when to give up on it."""
        prev = self.get(name)
        if prev is not None:
            return prev
        return self._put(Failure(name, 1, now, now, now, message))

    def clear(self, name: str) -> bool:
        """Forget ``name`` (it works again); True when there was something to forget."""
        rows = self._rows()
        keep = [r for r in rows if not (isinstance(r, dict) and r.get("name") == name)]
        if len(keep) == len(rows):
            return False
        status = self.obj.setdefault("status", {})
        if keep:
            status[self.field] = keep
        else:
            status.pop(self.field, None)
        return True

    def clear_prefix(self, prefix: str, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget every record under ``prefix`` except the names in ``keep``."""
        for f in self.all(prefix):
            if f.name not in keep:
                self.clear(f.name)
