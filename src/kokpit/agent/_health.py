"""Component health checks on the host: a systemd unit is active, a command exits 0, a URL answers 2xx.

Commands run inside the managed root with the check's timeout; a timed-out check is a failed one.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from kokpit.agent._host import HostRoot
from kokpit.api.machine import HealthCheck, HealthCheckType
from kokpit.nodes.driver import HealthResult

__all__ = ["check"]


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), ""
    except urllib.error.HTTPError as e:
        return int(e.code), str(e.reason)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return 0, str(getattr(e, "reason", e))


async def check(host: HostRoot, component: str, hc: HealthCheck) -> HealthResult:
    timeout = float(hc.timeout_seconds)
    if hc.type == HealthCheckType.NONE:
        return HealthResult(True, f"{component} is installed (no health check configured)")
    if hc.type == HealthCheckType.SYSTEMD:
        unit = hc.unit or f"{component}.service"
        if not host.systemd_running():
            return HealthResult(False, f"systemd is not running on this host; cannot check {unit}")
        r = await host.run(["systemctl", "is-active", unit], timeout=timeout)
        state = r.stdout.strip() or "unknown"
        return HealthResult(state == "active", f"{unit} is {state}")
    if hc.type == HealthCheckType.COMMAND:
        if not hc.command:
            return HealthResult(False, "healthCheck.command is empty")
        r = await host.run(list(hc.command), timeout=timeout)
        if r.ok:
            return HealthResult(True, f"{' '.join(hc.command)} succeeded")
        return HealthResult(False, f"{' '.join(hc.command)}: {r.error_text()}")
    if hc.type == HealthCheckType.HTTP:
        if not hc.url:
            return HealthResult(False, "healthCheck.url is empty")
        code, why = await asyncio.to_thread(_get, hc.url, timeout)
        ok = 200 <= code < 300
        return HealthResult(ok, f"GET {hc.url}: {code or why}" + (f" {why}" if why and code else ""))
    return HealthResult(False, f"unknown health check type {hc.type}")
