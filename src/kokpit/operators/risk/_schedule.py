"""Durations and cron blackouts: when a policy refuses everything, computed from the schedule and ``now``.

The CRD's patterns already refuse malformed durations and schedules at admission; this module gives them a
meaning.  A blackout window starts at every time the five-field cron schedule matches (in the blackout's
time zone, so "Friday 18:00 in Berlin" follows daylight saving) and lasts ``duration``.  Pure functions of
``now``, memoized per minute, because every permit decision asks.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronSchedule", "ScheduleError", "blackout_end", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@hourly": "0 * * * *"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MAX_BLACKOUT = 31 * 86400.0  # longest window looked back for (longer ones are refused as invalid)


class ScheduleError(ValueError):
    """A schedule, time zone or duration that cannot be used (the message says what to fix)."""


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration without sign: ``90s``, ``5m``, ``1h30m``."""
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ScheduleError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m")
    return total


def _field(text: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step_s = item.partition("/")
        step = int(step_s) if step_s else 1
        if step < 1:
            raise ScheduleError(f"step must be at least 1 in {item!r}")
        if base == "*":
            a, b = lo, hi
        else:
            a_s, _, b_s = base.partition("-")
            a = int(a_s)
            b = int(b_s) if b_s else (hi if step_s else a)
        if not (lo <= a <= hi and lo <= b <= hi and a <= b):
            raise ScheduleError(f"{item!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed five-field cron schedule (Vixie semantics: with both day fields restricted, either may
    match)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        text = _MACROS.get(text.strip(), text.strip())
        parts = text.split()
        if len(parts) != 5:
            raise ScheduleError(f"schedule {text!r} must have five fields: minute hour day month weekday")
        sets = [_field(p, lo, hi) for p, (lo, hi) in zip(parts, _RANGES, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def day_matches(self, d: dt.date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = d.isoweekday() % 7 in self.weekdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def starts_between(self, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
        """Every start time in [lo, hi] (aware datetimes in the schedule's zone), oldest first."""
        out: list[dt.datetime] = []
        tz = lo.tzinfo
        day = lo.date()
        while day <= hi.date():
            if self.day_matches(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        t = dt.datetime(day.year, day.month, day.day, h, m, tzinfo=tz)
                        if lo <= t <= hi:
                            out.append(t)
            day += dt.timedelta(days=1)
        return out


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") \
            from None


@functools.lru_cache(maxsize=4096)
def _end_at_minute(schedule: str, tz_name: str, duration: float, minute: int) -> float | None:
    cron = CronSchedule.parse(schedule)
    tz = zone(tz_name)
    now = dt.datetime.fromtimestamp(minute * 60, tz)
    starts = cron.starts_between(now - dt.timedelta(seconds=duration), now)
    ends = [s.timestamp() + duration for s in starts]
    return max(ends) if ends else None


def blackout_end(schedule: str, tz_name: str, duration: float, now: float) -> float | None:
    """The end (epoch seconds) of the blackout window ``now`` falls in, or None outside every window."""
    if duration > MAX_BLACKOUT:
        raise ScheduleError(f"blackout duration {duration:.0f}s is longer than {MAX_BLACKOUT:.0f}s")
    end = _end_at_minute(schedule, tz_name, duration, int(now // 60))
    return end if end is not None and end > now else None
