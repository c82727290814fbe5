"""Helpers shared by the benchmarks: process CPU and memory from /proc, machine load, small formatting,
and writing a script's own section of docs/benchmarks.md.

The benchmarks run several processes on one 2-core machine; every figure they record carries the load it
was measured under, so these readings are the same in every script. Each script owns one section of the
shared docs page, so refreshing one must leave the others byte-identical.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kokpit.client import Client, Kind, ResourceExpiredError

__all__ = [
    "NOTES_MARKER",
    "bounded",
    "cores",
    "cpu_seconds",
    "fmt_cores",
    "follow",
    "log_issues",
    "machine_load",
    "ok",
    "pressure",
    "replace_section",
    "scrape_metrics",
    "status_mb",
    "tail_file",
]

_DOCS_PREAMBLE = ("# Benchmarks\n\nFigures measured by the scripts under `bench/`, each section with the command "
                 "that produced it and when. Re-run the command to refresh a section.\n")

TICK = os.sysconf("SC_CLK_TCK")


def stop_children_on_sigterm() -> None:
    """``kill <bench>`` (SIGTERM) ends a run the way Ctrl-C does, so its ``finally`` blocks stop every process
    it started (Python's default for SIGTERM exits at once and leaves them running)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


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


NOTES_MARKER = "<!-- notes below are hand-written: kept when the benchmark re-runs -->"


def _keep_notes(body: str, replaced: str) -> str:
    i = replaced.find(NOTES_MARKER)
    if i < 0:
        return body
    return body + "\n" + replaced[i:].rstrip("\n") + "\n"


def replace_section(path: Path, section: str, command: str, setup: str, lines: list[str],
                    sub: str | None = None) -> None:
    """Write one run into ``section`` (a ``## `` heading line) of the markdown file at ``path``.

    The file is re-read right before writing, as other benchmarks may have refreshed their sections
    meanwhile; everything outside the part replaced stays byte-identical. Without ``sub`` the section's head
    (down to its first ``### `` subsection, or the whole section if it has none) is replaced, so hand-written
    subsections survive a re-run; with ``sub`` only the subsection ``### <sub>`` is, so runs of different
    sizes stand side by side. A missing section or subsection is appended. ``setup`` says what shared the
    machine, and under what load, after the CPU/OS/Python description every section starts with.
    Hand-written notes that follow the line ``NOTES_MARKER`` in the replaced part are kept after the new run.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
               f"{platform.python_version()}; {setup}")
    title = f"### {sub}" if sub else section
    body = "\n".join([title, "", f"Command: `{command}`  ", f"Date: {now}  ", f"Machine: {machine}", "",
                      *lines]).rstrip() + "\n"
    text = path.read_text() if path.exists() else _DOCS_PREAMBLE
    m = re.search(rf"^{re.escape(section)}\s*$", text, flags=re.M)
    if m is None:
        text = text.rstrip("\n") + "\n\n" + (f"{section}\n\n{body}" if sub else body)
    else:
        nxt = re.search(r"^## ", text[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        old = text[m.start():end].rstrip("\n") + "\n"
        if sub:
            s = re.search(rf"^{re.escape(title)}\s*$", old, flags=re.M)
            if s:
                after = re.search(r"^#{2,3} ", old[s.end():], flags=re.M)
                stop = s.end() + after.start() if after else len(old)
                new = old[: s.start()] + _keep_notes(body, old[s.start():stop]) + ("\n" if after else "") \
                    + old[stop:]
            else:
                new = old + "\n" + body
        else:
            first_sub = re.search(r"^### ", old, flags=re.M)
            head = old[: first_sub.start()] if first_sub else old
            new = _keep_notes(body, head) + ("\n" + old[first_sub.start():] if first_sub else "")
        text = text[: m.start()] + new + ("\n" if nxt else "") + text[end:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def stop_processes(procs: Sequence[subprocess.Popen[bytes] | None], wait: float = 20.0, *,
                   interrupt: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """SIGTERM every process still running at once, then wait for each (SIGKILL after ``wait`` seconds): the
    benches end every process they started, even on error.  ``interrupt`` get SIGINT instead, first, and are
    waited for last (py-spy writes its profile on SIGINT)."""
    live = [p for p in procs if p is not None]
    for p in interrupt:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in live:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in [*live, *interrupt]:
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def tail_file(path: Path, n: int = 3000) -> str:
    """The last ``n`` bytes of a process log (for error messages), or "" if there is none."""
    return path.read_bytes()[-n:].decode(errors="replace") if path.exists() else ""


async def follow(client: Client, kind: Kind, see: Callable[..., None],
                 on_event: Callable[[], None] | None = None) -> None:
    """List (paginated) then watch ``kind``, relisting on 410, until cancelled: ``see(obj)`` for listed
    objects, ``see(obj, deleted)`` for watched ones (``on_event`` counts those)."""
    while True:
        lst = await client.list(kind, limit=500)
        for o in lst.items:
            see(o)
        try:
            async for ev in client.watch_resumable(kind, resource_version=lst.resource_version,
                                                   timeout_seconds=300):
                if ev.type == "BOOKMARK":
                    continue
                if on_event is not None:
                    on_event()
                see(ev.object, ev.type == "DELETED")
        except ResourceExpiredError:
            continue


def scrape_metrics(port: int, token_file: Path, path: str = "/metrics") -> tuple[int, str]:
    """GET a kokpit process's metrics endpoint (HTTPS, self-signed, bearer token from the API server's
    tokens.json); raises OSError when nothing answers."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    token = json.loads(token_file.read_text())["readonly"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), ""
