"""A machine operator restarted in the middle of a failing install resumes the same backoff.

Failure memory lives in the Machine's status (``status.failures``), written through the real API server's
CRD schema, so a second operator — a new process as far as memory goes — reads the same attempt count and
the same retry deadline: it neither retries early (as a fresh backoff would) nor starts counting at 1.
"""

from __future__ import annotations

import time
from typing import Any

from kokpit._lib.clock import parse_time
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.nodes import ComponentAction, ComponentSpec, ComponentState
from kokpit.operators.machine import OperatorOptions

from .conftest import FakeDriver
from .test_operator_integration import Env, _stack, cond, make_node, running_operator, wait_for

Obj = dict[str, Any]

OPTS = OperatorOptions(workers=4, fast_poll=0.05, slow_poll=0.5, retry_base=1.0, retry_cap=30.0,
                       progress_requeue=0.5, health_ttl=5.0)


class TimedDriver(FakeDriver):
    """Also remembers when each install of a component started (wall clock)."""

    def __init__(self) -> None:
        super().__init__(auto=True)
        self.started: list[tuple[str, float]] = []

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        n = len(self.log)
        out = await super().start(node, action, component)
        if len(self.log) > n:  # really started (not an idempotent repeat)
            self.started.append((component.name, time.time()))
        return out


def _record(m: Obj, name: str) -> Obj | None:
    return next((f for f in (m.get("status") or {}).get("failures") or [] if f["name"] == name), None)


def _ts(s: str) -> float:
    return parse_time(s).timestamp()


async def _failures_at(env: Env, count: int) -> Obj:
    async def check() -> Obj | None:
        r = _record(await env.machine("w1"), "install/kubelet")
        return r if r is not None and int(r["count"]) >= count else None
    out: Obj = await wait_for(check, f"install/kubelet failed {count} times", 20)
    return out


async def test_restart_mid_failing_install_keeps_the_attempt_count_and_the_retry_deadline(
        apiserver: ApiServerProcess) -> None:
    driver = TimedDriver()
    driver.fail[("kubelet", "1.30.0")] = "package kubelet-1.30.0 not found in repo"
    driver.add_node("w1")
    async with running_operator(apiserver, driver, OPTS) as env:
        await _stack(env)
        await make_node(env.client, "w1")
        await env.set_machine("w1", ["containerd-1.7", "kubelet-1.30"])
        second = await _failures_at(env, 2)
    # the operator is gone; what it must remember is in the Machine
    assert int(second["count"]) == 2
    deadline = _ts(second["nextRetryTime"])
    assert abs(deadline - _ts(second["lastFailureTime"]) - 2.0) < 0.01  # base 1s, doubled once
    kubelet_starts = [t for c, t in driver.started if c == "kubelet"]
    assert len(kubelet_starts) == 2

    async with running_operator(apiserver, driver, OPTS) as env:
        third = await _failures_at(env, 3)
        m = await env.machine("w1")
    kubelet_starts = [t for c, t in driver.started if c == "kubelet"]
    assert len(kubelet_starts) == 3
    # the retry waited for the deadline the first operator set (a fresh backoff would have retried at once)
    assert kubelet_starts[2] >= deadline - 0.01, (kubelet_starts[2], deadline)
    # and the count went on from 2: the next delay is 4s, not the first 1s
    assert int(third["count"]) == 3 and third["firstFailureTime"] == second["firstFailureTime"]
    assert abs(_ts(third["nextRetryTime"]) - _ts(third["lastFailureTime"]) - 4.0) < 0.01
    assert "attempt 3" in cond(m, "ComponentsReady")["message"]
