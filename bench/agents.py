"""Node agent benchmark (issue 19): one machine operator pushing a component upgrade to N node agents, and
what the same fleet would cost the API server if each node watched its own Machine instead.

Why: the seed's scaling lesson is that node components' list/watch calls load the API server; kokpit's
answer is that the operator pushes work to agents over mutual TLS and nodes never list or watch.  This
measures that push at N = 1,000 on this 2-core machine and sets it beside N watchers.

What happens, all on 127.0.0.1 in a temporary directory (every process is stopped at the end):
1. the API server (ApiServerProcess), the CRDs, N Nodes (address 127.0.0.1), two MachinePackageVersions of
   a config-only component (a config file under /etc whose content is the version), and N fake roots;
2. one ``kokpit node-agent --roots-dir`` process serving all N roots (the same code path a single-root agent
   runs; fake roots need no chroot for config-only components), and ``kokpit machine-operator --driver
   agent`` against it; N Machines at v1, until every one reports v1 Installed (the initial install);
3. **push upgrade**: merge-patch every Machine to v2 and watch (one watch, from this process) until every
   Machine reports v2 Installed; time, operator / agent / server CPU, and the server's request counts by
   verb and resource over the phase (``apiserver_request_total``; the bench's own N patches taken out);
4. **N watchers**: the operator stopped, N watches on Machines, each with ``fieldSelector=metadata.name=<its
   node>`` (what a node pulling its own Machine holds open), then the same N patches back to v1; time until
   every watcher saw its change, server CPU and requests (a watch is counted when it ends, so the open
   watches are counted from ``apiserver_registered_watchers``).

    .venv/bin/python bench/agents.py --docs            # N=1,000, figures into docs/benchmarks.md
    .venv/bin/python bench/agents.py --nodes 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import bounded, cpu_seconds, machine_load, replace_section, status_mb, tail_file
from fleet import request_totals
from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, Client, Kind
from kokpit.nodes.mtls import local_pki

MACHINE = Kind("kokpit.io", "v1alpha1", "Machine", "machines", namespaced=False)
MPV = Kind("kokpit.io", "v1alpha1", "MachinePackageVersion", "machinepackageversions", namespaced=False)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Node agents (bench/agents.py)"


def mpv(version: str) -> dict[str, Any]:
    return {"metadata": {"name": f"bench-{version}"}, "spec": {
        "component": "bench-config", "version": version, "install": {"method": "config"},
        "config": {"files": [{"path": "/etc/kokpit-bench/bench.conf", "content": f"version={version}\n",
                              "mode": "0644", "owner": "root:root"}]}}}


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``kokpit ARGS`` with output into ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", *args], stdout=out,
                                stderr=subprocess.STDOUT)


def make_roots(base: Path, n: int) -> list[str]:
    names = [f"node-{i:05d}" for i in range(1, n + 1)]
    for name in names:
        etc = base / name / "etc"
        etc.mkdir(parents=True)
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
    return names


def registered_watchers(api: ApiServerProcess) -> int:
    status, body = api.request("GET", "/metrics")
    m = re.search(r"^apiserver_registered_watchers (\S+)$", body.decode(errors="replace"), flags=re.M)
    return int(float(m.group(1))) if status == 200 and m else -1


def fmt_requests(c: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{v} {r}: {n:,}" for (v, r), n in c.most_common() if n > 0) or "none"


async def run(n: int, docs: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kokpit-agents-"))
    procs: list[subprocess.Popen[bytes]] = []
    api = ApiServerProcess(tmp / "apiserver", extra_args=["--bookmark-interval", "5"]).start()
    lines: list[str] = []
    try:
        server, client_tls = local_pki(tmp / "pki", ["127.0.0.1"])
        names = make_roots(tmp / "roots", n)
        ready = tmp / "agent.url"
        agent = spawn(["node-agent", "--roots-dir", str(tmp / "roots"), "--tls-dir", str(server.ca_file.parent),
                       "--port", "0", "--ready-file", str(ready), "--refresh-interval", "600",
                       "--disk-min-free-mib", "0", "--disk-min-free-percent", "0"], tmp / "agent.log")
        procs.append(agent)
        async with Client.from_kubeconfig(api.kubeconfig) as c:
            await install_crds(c)
            for v in ("v1", "v2"):
                await c.create(MPV, mpv(v))
            await bounded(n, 32, lambda i: c.create(NODE, {"metadata": {"name": names[i]}, "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}))
            deadline = time.monotonic() + 120
            while not ready.exists():
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"agent did not start: {tail_file(tmp / 'agent.log')}")
                await asyncio.sleep(0.1)
            port = ready.read_text().strip().rsplit(":", 1)[1]
            operator = spawn(["machine-operator", "--kubeconfig", str(api.kubeconfig), "--driver", "agent",
                              "--agent-port", port, "--driver-tls-dir", str(client_tls.ca_file.parent),
                              "--fast-poll", "0.5", "--slow-poll", "10"], tmp / "operator.log")
            procs.append(operator)
            await bounded(n, 32, lambda i: c.create(MACHINE, {"metadata": {"name": names[i]}, "spec": {
                "nodeName": names[i], "packages": ["bench-v1"]}}))
            t_install = await converge(c, names, "v1", time.monotonic())
            print(f"initial install of {n} machines: {t_install:.1f} s", flush=True)

            # ---- push upgrade
            pids = {"operator": operator.pid, "agent": agent.pid, "apiserver": api.proc.pid if api.proc else 0}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            req0 = request_totals(api)
            lists0 = BENCH_LISTS["machines"]
            t0 = time.monotonic()
            await bounded(n, 32, lambda i: c.patch(MACHINE, names[i], {"spec": {"packages": ["bench-v2"]}}))
            t_push = await converge(c, names, "v2", t0)
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            req1 = request_totals(api)
            push_req = req1 - req0
            push_req[("patch", "machines")] -= n  # the bench's own patches and convergence lists
            push_req[("list", "machines")] -= BENCH_LISTS["machines"] - lists0
            watchers_during_push = registered_watchers(api)
            op_rss = status_mb(operator.pid, "VmHWM")
            agent_rss = status_mb(agent.pid, "VmHWM")
            print(f"push upgrade: {t_push:.1f} s; cpu {({k: round(cpu1[k] - cpu0[k], 1) for k in pids})}; "
                  f"requests {fmt_requests(push_req)}", flush=True)
            operator.terminate()
            operator.wait(30)

            # ---- N watchers
            seen: set[str] = set()
            done = asyncio.Event()

            # a client holds at most 100 watch connections: enough clients for one connection per node
            clients = [Client.from_kubeconfig(api.kubeconfig) for _ in range(-(-n // 90))]

            async def watcher(name: str, rv: str, wc: Client) -> None:
                async for ev in wc.watch(MACHINE, field_selector=f"metadata.name={name}", resource_version=rv,
                                         timeout_seconds=600):
                    if ev.type == "MODIFIED" and (ev.object.get("spec") or {}).get("packages") == ["bench-v1"]:
                        seen.add(name)
                        if len(seen) == n:
                            done.set()
                        return

            rv = (await c.list(MACHINE, limit=1)).resource_version
            tasks = [asyncio.get_running_loop().create_task(watcher(nm, rv, clients[i // 90]))
                     for i, nm in enumerate(names)]
            w_deadline = time.monotonic() + 120
            while registered_watchers(api) < n + max(0, watchers_during_push):
                if time.monotonic() > w_deadline:
                    break
                await asyncio.sleep(0.5)
            open_watches = registered_watchers(api)
            cpu_w0 = cpu_seconds(pids["apiserver"])
            req_w0 = request_totals(api)
            t1 = time.monotonic()
            await bounded(n, 32, lambda i: c.patch(MACHINE, names[i], {"spec": {"packages": ["bench-v1"]}}))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(300):
                    await done.wait()
            t_watch = time.monotonic() - t1
            req_w = request_totals(api) - req_w0
            req_w[("patch", "machines")] -= n
            cpu_w = cpu_seconds(pids["apiserver"]) - cpu_w0
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for wc in clients:
                await wc.close()
            print(f"{n} watchers: all saw the change in {t_watch:.1f} s ({len(seen)}/{n}); {open_watches} open "
                  f"watches; server cpu {cpu_w:.1f} s", flush=True)

        push_total = sum(v for v in push_req.values() if v > 0)
        lines = [
            f"N = {n:,} nodes: one `kokpit node-agent --roots-dir` process serving N fake roots, one "
            "`kokpit machine-operator --driver agent`, the API server, and this script; the component is "
            "config-only (one file under /etc whose content is the version), so what is timed is the "
            "operator ↔ agent ↔ API server path, not a package manager.",
            "",
            "| phase | time | operator CPU | agent CPU | API server CPU | API requests (verb resource: count) | "
            "open watches |",
            "|---|---:|---:|---:|---:|---|---:|",
            f"| initial install (create N Machines at v1) | {t_install:.1f} s | | | | | |",
            f"| **push upgrade** v1 → v2 to N agents | **{t_push:.1f} s** | {cpu1['operator'] - cpu0['operator']:.1f} s "
            f"| {cpu1['agent'] - cpu0['agent']:.1f} s | {cpu1['apiserver'] - cpu0['apiserver']:.1f} s | "
            f"{fmt_requests(push_req)} (total {push_total:,}) | {watchers_during_push} |",
            f"| N watchers (each node watching its own Machine) see v2 → v1 | {t_watch:.1f} s "
            f"({len(seen):,}/{n:,}) | — | — | {cpu_w:.1f} s | {fmt_requests(req_w)} + {n:,} watch requests "
            f"held open | {open_watches:,} |",
            "",
            f"- Push: {push_total / n:.2f} operator API requests per node for an upgrade, with "
            f"{watchers_during_push} open watches in all (the operator's informers), whatever N is.",
            f"- Watchers: {open_watches:,} open watches before anything changed — N long-lived connections the "
            "server holds and fans events out to (a pulling node would then also read its MachinePackageVersion "
            "and write its status, which this comparison does not even count).",
            f"- Peak RSS: operator {op_rss:.0f} MB, agent (N roots) {agent_rss:.0f} MB.",
            f"- Load: {machine_load()}.",
        ]
        print("\n".join(lines))
        if docs:
            replace_section(DOCS, SECTION, "`.venv/bin/python bench/agents.py --docs`".strip("`"),
                            "API server, agent, operator and bench on the same machine, shared with other "
                            "workloads", lines)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        api.stop()
        for f in ("agent.log", "operator.log"):
            text = tail_file(tmp / f, 2000)
            if "Traceback" in text or "ERROR" in text:
                print(f"--- {f}:\n{text}")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


BENCH_LISTS = Counter[str]()  # this script's own list pages, taken out of the server's counts


async def converge(c: Client, names: list[str], version: str, t0: float, timeout: float = 600) -> float:
    """Seconds from ``t0`` until every Machine reports the component Installed at ``version``."""
    want = set(names)
    while time.monotonic() - t0 < timeout:
        lst = await c.list(MACHINE, limit=500)
        BENCH_LISTS["machines"] += max(1, -(-len(lst.items) // 500))
        ok = {m["metadata"]["name"] for m in lst.items
              if any(x["name"] == "bench-config" and x.get("version") == version
                     and x.get("installState") == "Installed" for x in (m.get("status") or {}).get("components") or [])}
        if want <= ok:
            return time.monotonic() - t0
        await asyncio.sleep(1.0)
    raise SystemExit(f"not converged to {version} in {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--docs", action="store_true", help="record the figures in docs/benchmarks.md")
    a = ap.parse_args()
    asyncio.run(run(a.nodes, a.docs))


if __name__ == "__main__":
    main()
