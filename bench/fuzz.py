"""Long API fuzzing run: schemathesis against a fresh `kokpit apiserver`'s own OpenAPI v3 documents.

The suite runs the same thing bounded (tests/e2e/test_api_fuzz.py, ~3,000 cases); this runs >= 20,000 cases
over the core kinds and every kokpit CRD with a fixed seed, then checks what the test checks (no 5xx, no
response contradicting the schema, no dropped connection, the server alive, the seeded objects identical
before and after a kill -9 and restart) and records the result in docs/benchmarks.md.

    nice -n 19 .venv/bin/python bench/fuzz.py --cases 20000 --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _apifuzz import GROUPS, Report, Server, documents, install_crds, run, seed, snapshot
from _common import replace_section
from kokpit.api import crds
from kokpit.apiserver.testing import ApiServerProcess

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## API fuzzing (bench/fuzz.py)"


def _say(line: str) -> None:
    print(line, flush=True)


def _work(job: tuple[tuple[str, str, str], dict[str, Any], int, int, float | None, int, tuple[int, int]]) -> Report:
    where, docs, cases, seed_, deadline, per_round, shard = job
    return run(Server(*where), docs, cases, seed_, deadline=deadline, per_round=per_round, progress=_say,
               shard=shard)


def _merge(parts: list[Report]) -> Report:
    out = Report()
    for p in parts:
        out.cases += p.cases
        out.operations += p.operations
        out.seconds = max(out.seconds, p.seconds)
        out.codes.update(p.codes)
        out.by_method.update(p.by_method)
        out.server_errors += p.server_errors
        out.schema_violations += p.schema_violations
        out.transport_errors += p.transport_errors
        out.not_generated.update(p.not_generated)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (the worker processes)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20_000, help="cases to send (default 20,000)")
    ap.add_argument("--seed", type=int, default=13, help="Hypothesis seed (default 13, as the suite)")
    ap.add_argument("--per-round", type=int, default=24, help="cases per operation per round (default 24: "
                    "each round of an operation starts a Hypothesis engine, a fixed cost per round)")
    ap.add_argument("--workers", type=int, default=1, help="client processes, each fuzzing every n-th "
                    "operation (generation is the client's CPU cost; default 1)")
    ap.add_argument("--minutes", type=float, help="stop sending at this deadline (the result says so)")
    ap.add_argument("--docs", type=Path, help="write the result into this markdown file")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="kokpit-fuzz-"))
    load0 = os.getloadavg()[0]
    srv = ApiServerProcess(base / "apiserver")
    problems: list[str] = []
    try:
        srv.start(timeout=180)  # nice -n 19 on a busy machine: slow; a server that never got ready is ended too
        server = Server(srv.url, str(srv.ca_file), srv.admin_token)
        install_crds(server, crds())
        before = seed(server)
        docs = documents(server, GROUPS)
        assert srv.proc is not None
        server_cpu0, client_cpu0 = _cpu_seconds(srv.proc.pid), _own_cpu_seconds()
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                where = (server.url, server.ca_file, server.token)
                jobs = [(where, docs, args.cases // args.workers, args.seed, deadline, args.per_round,
                         (i, args.workers)) for i in range(args.workers)]
                parts = list(pool.map(_work, jobs))
            report = _merge(parts)
        else:
            report = run(server, docs, args.cases, args.seed, deadline=deadline, per_round=args.per_round,
                         progress=_say)
        alive = srv.proc is not None and srv.proc.poll() is None
        server_cpu = _cpu_seconds(srv.proc.pid) - server_cpu0 if alive else float("nan")
        client_cpu = _own_cpu_seconds() - client_cpu0
        intact = snapshot(server) == before if alive else False
        t0 = time.monotonic()
        srv.kill()
        srv.start(timeout=180)
        restart_s = time.monotonic() - t0
        intact_after = snapshot(server) == before
    finally:
        srv.stop()
    problems += report.server_errors + report.schema_violations + report.transport_errors
    load = f"1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    lines = [
        f"- {report.summary()}" + ("" if report.cases >= args.cases else
                                   f" (stopped at the {args.minutes:g}-minute deadline, short of {args.cases:,})"),
        f"- status codes: {', '.join(f'{c}: {n:,}' for c, n in sorted(report.codes.items()))}",
        f"- by method: {report.by_method_text()}",
        f"- successful writes: {', '.join(f'{w} {n:,}' for w, n in report.writes().items())}",
        f"- server alive after the run: {'yes' if alive else 'NO'}; seeded objects identical after the run: "
        f"{'yes' if intact else 'NO'}; after kill -9 and restart ({restart_s:.1f} s): "
        f"{'yes' if intact_after else 'NO'}",
        f"- operations with nothing to generate in a mode (skipped there): {len(report.not_generated)}",
        f"- CPU per case: client (generation, checks) {1000 * client_cpu / max(report.cases, 1):.0f} ms, "
        f"server {1000 * server_cpu / max(report.cases, 1):.0f} ms",
    ]
    lines += [f"- finding: `{p[:300]}`" for p in problems[:20]]
    print("\n".join(lines))
    print(load)
    if args.docs is not None:
        exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else "python"
        script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
        command = shlex.join(["nice", "-n", str(os.nice(0)), exe, script, *sys.argv[1:]])
        replace_section(args.docs, SECTION, command, f"client and server on the same machine; {load}", lines)
        print(f"wrote the section {SECTION!r} of {args.docs}")
    shutil.rmtree(base, ignore_errors=True)
    return 0 if not problems and alive and intact and intact_after else 1


if __name__ == "__main__":
    sys.exit(main())
