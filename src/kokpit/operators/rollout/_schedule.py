"""Durations of a Rollout's spec (``30s``, ``5m``, ``1h30m``) as seconds: admission already refused anything
else (``kokpit.api.risk.DURATION_PATTERN``), so parsing cannot fail on a stored spec."""

from __future__ import annotations

import re

__all__ = ["seconds"]

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str | None) -> float:
    """Seconds of a Go-style duration without sign; ``None`` or "" is 0."""
    return sum(float(n) * _UNIT[u] for n, u in _PART.findall(text or ""))
