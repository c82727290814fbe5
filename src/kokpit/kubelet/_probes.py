"""Container probes as kubelet runs them: startup first, then liveness and readiness, each on its period,
with success / failure thresholds.  httpGet and tcpSocket dial the container (:mod:`kokpit.kubelet._http`);
exec runs the command with the container's mounts and environment.  A startup or liveness probe that
crosses its failure threshold means the container is restarted — the worker's decision, reported here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from kokpit.client import ApiError, TransportError
from kokpit.kubelet._containers import Container
from kokpit.kubelet._http import http_probe, tcp_probe
from kokpit.kubelet._options import Obj
from kokpit.kubelet._spec import ContainerConfigError, rewrite_paths
from kokpit.kubelet._volumes import PodSetup

__all__ = ["Prober", "run_due_probes"]


PROBE_NAMES = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}


async def run_due_probes(c: Container, now: float, run: Callable[[Obj], Awaitable[tuple[bool, str]]],
                         failed: Callable[[str, str], None] | None = None) -> tuple[str, str, Obj] | None:
    """Run the probes of ``c`` that are due and record their verdicts; ``failed(Startup|Liveness|Readiness,
    why)`` hears of every failed attempt (kubelet's Unhealthy event).  Returns (Startup|Liveness, why, the
    probe's spec) when one crossed its failure threshold and the container must be restarted."""
    order = ["startupProbe"] if "startupProbe" in c.probes and c.probes["startupProbe"].ok is not True \
        else ["livenessProbe", "readinessProbe"]
    for kind in order:
        p = c.probes.get(kind)
        if p is None or now < p.next_at or c.handle is None:
            continue
        p.next_at = now + float(p.spec.get("periodSeconds") or 10)
        passed, why = await run(p.spec)
        if passed:
            p.successes, p.failures = p.successes + 1, 0
            if kind != "readinessProbe" or p.successes >= int(p.spec.get("successThreshold") or 1):
                p.ok = True
        else:
            p.failures, p.successes = p.failures + 1, 0
            if failed is not None:
                failed(PROBE_NAMES[kind], why)
            if p.failures >= int(p.spec.get("failureThreshold") or 3):
                p.ok = False
                if kind != "readinessProbe":
                    return PROBE_NAMES[kind], why, p.spec
    return None


class Prober:
    """Runs one probe of one Pod's container: (passed, why)."""

    def __init__(self, setup: PodSetup, python: str) -> None:
        self.setup = setup
        self.python = python

    async def run(self, c: Container, spec: Obj) -> tuple[bool, str]:
        timeout = float(spec.get("timeoutSeconds") or 1)
        if "httpGet" in spec:
            h = spec["httpGet"] or {}
            port = self._port(c, h.get("port"))
            headers = {str(x.get("name")): str(x.get("value")) for x in h.get("httpHeaders") or []}
            return await http_probe(str(h.get("host") or self.setup.opts.address), port, str(h.get("path") or "/"),
                                    https=str(h.get("scheme") or "HTTP").upper() == "HTTPS", timeout=timeout,
                                    headers=headers)
        if "tcpSocket" in spec:
            t = spec["tcpSocket"] or {}
            return await tcp_probe(str(t.get("host") or self.setup.opts.address), self._port(c, t.get("port")),
                                   timeout=timeout)
        if "exec" in spec:
            return await self._exec(c, [str(a) for a in (spec["exec"] or {}).get("command") or []], timeout)
        return False, "probe type not supported in embedded mode (use httpGet, tcpSocket or exec)"

    @staticmethod
    def _port(c: Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p.get("containerPort") or 0)
        return 0

    async def _exec(self, c: Container, command: list[str], timeout: float) -> tuple[bool, str]:
        if not command:
            return False, "exec probe without a command"
        try:
            mounts, env = await self.setup.exec_env(c)
        except (ContainerConfigError, ApiError, TransportError) as e:
            return False, str(e)
        argv = rewrite_paths(command, mounts)
        if argv[0] == "kokpit" or argv[0].endswith("/kokpit"):
            argv = [self.python, "-m", "kokpit.cli.main", *argv[1:]]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=self.setup.dir,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as e:
            return False, f"exec {argv[0]}: {e}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            return False, f"command timed out after {timeout:g}s"
        finally:
            if proc.returncode is None:  # timed out, or the kubelet is stopping: never leave it behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return proc.returncode == 0, out.decode(errors="replace")[-200:]
