"""The node agent process: one or many managed roots, the driver HTTP API over them, fault reports and
metrics.

On a real node the agent manages ``/`` under the node's name.  For tests and the 1,000-agent bench one process
may serve many roots (each a fake host with its own node name) — the same code path, so what the bench
measures is what a fleet of single-root agents does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.asgi import BodyError, Receive, Scope, Send, read_json, send_body
from kokpit.agent._components import ComponentHost
from kokpit.agent._faults import (
    FAULT_TYPES,
    FaultChecker,
    NodeFaultReporter,
    NodeReporter,
    fault_reports,
    possible_reports,
)
from kokpit.agent._host import HostRoot
from kokpit.nodes.driver import ComponentAction, ComponentSpec, DriverError
from kokpit.nodes.repair import SiteRepair
from kokpit.nodes.simulator import DriverHttpError, node_state_to_dict, states_answer

__all__ = ["Agent", "AgentApp", "AgentConfig"]

log = logging.getLogger("kokpit.agent")

@dataclass
class AgentConfig:
    roots: dict[str, Path]  # node name → the root folder it manages ("/" on a real node)
    netns: Path | None = None  # network namespace for sysctls (tests); None: the agent's own
    refresh_interval: float = 30.0  # seconds between looks at the host (states between actions, faults)
    fault_checker: FaultChecker = field(default_factory=FaultChecker)
    repair: SiteRepair | None = None


class Agent:
    def __init__(self, config: AgentConfig, *, reporter: NodeReporter | None = None,
                 fault_reporter: NodeFaultReporter | None = None) -> None:
        self.config = config
        self.reporter = reporter
        self.fault_reporter = fault_reporter
        self.hosts = {node: ComponentHost(node, HostRoot(root, netns=config.netns))
                      for node, root in config.roots.items()}
        self._tasks: list[asyncio.Task[None]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.requests: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        """Load every host's records (resuming interrupted actions), then watch the hosts."""
        sem = asyncio.Semaphore(16)

        async def load(h: ComponentHost) -> None:
            async with sem:
                await h.load()

        await asyncio.gather(*(load(h) for h in self.hosts.values()))
        await self.check_faults()
        self._tasks.append(asyncio.get_running_loop().create_task(self._loop(), name="agent-refresh"))

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for h in self.hosts.values():
            await h.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            for h in self.hosts.values():
                try:
                    await h.refresh_all()
                except Exception:
                    log.exception("%s: refresh failed", h.node)
            await self.check_faults()

    async def check_faults(self) -> None:
        for h in self.hosts.values():
            h.faults = self.config.fault_checker.observe(str(h.host.root), str(h.host.state_dir), h.cache)
            if self.reporter is not None:
                await self.reporter.report(h.node, h.faults)
            if self.fault_reporter is not None:
                await self.fault_reporter.report(h.node, fault_reports(h.faults, h.cache), possible_reports(h.cache))

    def host(self, node: str) -> ComponentHost:
        h = self.hosts.get(node)
        if h is None:
            raise _HttpError(404, f"node {node} is not managed by this agent", retryable=False)
        return h


_HttpError = DriverHttpError


class AgentApp:
    """The node driver HTTP API (the simulator's routes and wire format, :mod:`kokpit.nodes.simulator`)
    plus the agent's own: component details, site repairs and ``/metrics``.  Served only over mutual TLS
    (:mod:`kokpit.nodes.mtls`)::

        GET  /healthz                                  {"ok": true, "nodes": N}
        GET  /metrics                                  Prometheus text
        GET  /v1/nodes                                 {"nodes": [names]}
        POST /v1/states {"nodes": [names]}             {"nodes": {name: NodeState}, "unknown": [...]}
        GET  /v1/nodes/N                               NodeState
        POST /v1/nodes/N/actions {"action", "component"}   ComponentState (400 bad spec, 409 busy)
        GET  /v1/nodes/N/health/C                      {"healthy": bool, "message": str}
        GET  /v1/nodes/N/components/C                  the agent's record and config read back
        POST /v1/nodes/N/repairs {"action", "reason", "requestId"}   RepairResult
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = "?"
        ctype = b"application/json"
        try:
            body = await read_json(receive)
            route, status, data = await self._route(scope["method"], scope["path"], body)
        except BodyError as e:
            status, data = 400, {"error": str(e), "retryable": False}
        except _HttpError as e:
            status, data = e.status, {"error": e.message, "retryable": e.retryable}
        except DriverError as e:
            status = 409 if e.retryable else 400
            data = {"error": str(e), "retryable": e.retryable}
        except (ValueError, KeyError, TypeError) as e:
            status, data = 400, {"error": f"bad request: {e}", "retryable": False}
        if isinstance(data, bytes):
            ctype = b"text/plain; version=0.0.4"
        key = (route, status)
        self.agent.requests[key] = self.agent.requests.get(key, 0) + 1
        await send_body(send, status, data, ctype)

    async def _route(self, method: str, path: str, body: Any) -> tuple[str, int, Any]:
        parts = [p for p in path.split("/") if p]
        agent = self.agent
        if parts == ["healthz"] and method == "GET":
            return "healthz", 200, {"ok": True, "nodes": len(agent.hosts)}
        if parts == ["metrics"] and method == "GET":
            return "metrics", 200, generate_latest(agent.registry)
        if parts[:1] != ["v1"]:
            raise _HttpError(404, f"no route {method} {path}")
        rest = parts[1:]
        if rest == ["nodes"] and method == "GET":
            return "nodes", 200, {"nodes": list(agent.hosts)}
        if rest == ["states"] and method == "POST":
            return "states", 200, states_answer(body, agent.hosts, lambda h: h.node_state())
        if len(rest) >= 2 and rest[0] == "nodes":
            h = agent.host(rest[1])
            if len(rest) == 2 and method == "GET":
                return "state", 200, node_state_to_dict(h.node_state())
            if rest[2:] == ["actions"] and method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("component"), dict):
                    raise _HttpError(400, "body must be {\"action\": ..., \"component\": {...}}")
                action = ComponentAction(body.get("action", "install"))
                spec = ComponentSpec.from_dict(body["component"])
                if not spec.name:
                    raise _HttpError(400, "component.name is required")
                state = await h.start(action, spec)
                return "actions", 200, state.to_dict()
            if len(rest) == 4 and rest[2] == "health" and method == "GET":
                hr = await h.health(rest[3])
                return "health", 200, {"healthy": hr.healthy, "message": hr.message}
            if len(rest) == 4 and rest[2] == "components" and method == "GET":
                await h.refresh(rest[3])
                try:
                    return "components", 200, h.details(rest[3])
                except KeyError:
                    raise _HttpError(404, f"component {rest[3]} is not managed on {h.node}") from None
            if rest[2:] == ["repairs"] and method == "POST":
                return "repairs", *(await self._repair(h.node, body))
        raise _HttpError(404, f"no route {method} {path}")

    async def _repair(self, node: str, body: Any) -> tuple[int, Any]:
        repair = self.agent.config.repair
        if repair is None:
            raise _HttpError(501, "no site repair command or webhook is configured on this agent")
        if not isinstance(body, dict):
            raise _HttpError(400, "body must be {\"action\": ..., \"reason\": ..., \"requestId\": ...}")
        try:
            result = await repair.call(str(body.get("requestId") or ""), node, str(body.get("action") or ""),
                                       str(body.get("reason") or ""))
        except ValueError as e:
            raise _HttpError(400, str(e)) from None
        return (200 if result.accepted or not result.retryable else 503), result.to_dict()


class _Collector:
    """Prometheus metrics computed at scrape time from the agent's hosts (nothing to keep in sync)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Any:
        comps = GaugeMetricFamily("kokpit_agent_components", "Components by install and run state",
                                  labels=["node", "install_state", "run_state"])
        faults = GaugeMetricFamily("kokpit_agent_fault", "1 while the agent sees this fault on the node",
                                   labels=["node", "type"])
        actions = CounterMetricFamily("kokpit_agent_actions", "Actions finished by outcome",
                                      labels=["action", "outcome"])
        inflight = GaugeMetricFamily("kokpit_agent_actions_in_flight", "Actions running now", labels=["node"])
        requests = CounterMetricFamily("kokpit_agent_requests", "Driver API requests by route and status",
                                       labels=["route", "code"])
        totals: dict[tuple[str, str], int] = {}
        for h in self.agent.hosts.values():
            counts: dict[tuple[str, str], int] = {}
            for c in h.cache.values():
                k = (str(c.install_state), str(c.run_state))
                counts[k] = counts.get(k, 0) + 1
            for (ist, rst), n in counts.items():
                comps.add_metric([h.node, ist, rst], n)
            for t in FAULT_TYPES:
                faults.add_metric([h.node, t], 1.0 if t in h.faults else 0.0)
            inflight.add_metric([h.node], sum(1 for r in h.records.values() if r.action))
            for k, n in h.actions_total.items():
                totals[k] = totals.get(k, 0) + n
        for (a, o), n in totals.items():
            actions.add_metric([a, o], n)
        for (route, code), n in self.agent.requests.items():
            requests.add_metric([route, str(code)], n)
        yield from (comps, faults, actions, inflight, requests)
