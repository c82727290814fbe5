"""Helpers shared by the benchmarks: process CPU and memory from /proc, machine load, small formatting.

The benchmarks run several processes on one 2-core machine; every figure they record carries the load it
was measured under, so these readings are the same in every script.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return float("nan")


def status_mb(pid: int, key: str) -> float:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), flags=re.M)
    except OSError:
        return float("nan")
    return int(m.group(1)) / 1024 if m else float("nan")


def pressure() -> str:
    """``some avg10/avg60/avg300`` of /proc/pressure/cpu (the share of time something waited for a CPU)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "n/a"
    vals = dict(kv.split("=") for kv in line.split()[1:])
    return f"{vals.get('avg10')}/{vals.get('avg60')}/{vals.get('avg300')}%"


def machine_load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} (1/5/15 min), CPU pressure some avg10/60/300 " \
           f"{pressure()}"


def cores(a: dict[str, float], b: dict[str, float], secs: float) -> dict[str, float]:
    return {k: (b[k] - a.get(k, 0.0)) / secs if secs > 0 else float("nan") for k in b}


def fmt_cores(c: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in c.items())


async def bounded(n: int, concurrency: int, fn: Any) -> float:
    """Run ``fn(0..n-1)`` with ``concurrency`` at once; returns when the last one finished (monotonic)."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await fn(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic()


def ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def log_issues(path: Path, fold: str = "") -> Counter[str]:
    """Warnings/errors in a process log, by message shape: numbers, and names matching `fold`, folded."""
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if " WARNING " in line or " ERROR " in line or line.startswith("Traceback") or "Error:" in line:
            msg = line.split(": ", 1)[-1] if " WARNING " in line or " ERROR " in line else line
            if fold:
                msg = re.sub(fold, "<name>", msg)
            msg = re.sub(r"\d+(\.\d+)?", "N", msg)
            out[msg[:160]] += 1
    return out
