"""The simulator's HTTP face: the node driver API the machine operator calls, and the fault-injection API.

A raw ASGI app (served by uvicorn, like the API server) with JSON in and out, because one process answers
for thousands of hosts and every request should cost as little as possible.  Routes::

    GET  /healthz                              {"ok": true, "nodes": N}
    GET  /v1/nodes                             {"nodes": [names]}
    POST /v1/states      {"nodes": [names]}    {"nodes": {name: NodeState}, "unknown": [names]}
    GET  /v1/nodes/N                           NodeState
    POST /v1/nodes/N/actions {"action": "install"|"uninstall", "component": ComponentSpec}  ComponentState
    GET  /v1/nodes/N/health/C                  {"healthy": bool, "message": str}
    POST /v1/nodes/N/repairs {"action": "restart-component"|"reboot"|"reinstall", "requestId", "component",
                              "reason"}        RepairState (idempotent by requestId; reaches hung hosts too)
    GET  /v1/actionlog                         {"nodes": {name: [{"event", "component", "version", "at"}]}}
    GET  /v1/faults                            {"installFailures": [...], "nodes": {name: faults}}
    POST /v1/faults {"type", "node", "component", "version"}   the node's (or every node's) faults

Errors are ``{"error": message, "retryable": bool}`` with 400 (bad request), 404 (unknown node), 503 (node
unreachable: hardware fault).  A hung node never answers single-node calls (they wait until it recovers or
``hang_seconds`` pass), so the caller's timeout fires as it would against a frozen machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kokpit._lib.asgi import BodyError, Receive, Scope, Send, read_json, send_body
from kokpit.nodes.driver import ComponentAction, ComponentSpec
from kokpit.nodes.simulator import DriverHttpError, node_state_to_dict, states_answer
from kokpit.simulator._hosts import FaultError, HostBook, UnknownNodeError

__all__ = ["DriverApp"]

_HttpError = DriverHttpError


class DriverApp:
    """ASGI application over a :class:`HostBook`."""

    def __init__(self, book: HostBook, *, hang_seconds: float = 300.0) -> None:
        self.book = book
        self.hang_seconds = hang_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            body = await read_json(receive)
            status, data = await self._route(scope["method"], scope["path"], body)
        except BodyError as e:
            status, data = 400, {"error": str(e), "retryable": False}
        except _HttpError as e:
            status, data = e.status, {"error": e.message, "retryable": e.retryable}
        except UnknownNodeError as e:
            status, data = 404, {"error": f"node {e.args[0]} is not simulated here", "retryable": False}
        except (FaultError, ValueError, KeyError, TypeError) as e:
            status, data = 400, {"error": str(e), "retryable": False}
        await send_body(send, status, data)

    async def _reachable(self, node: str) -> None:
        """Wait out a silent hang (like a frozen host); refuse a hardware-faulted one."""
        host = self.book.host(node)
        waited = 0.0
        while host.hung:
            if waited >= self.hang_seconds:
                raise _HttpError(504, f"node {node} did not answer", retryable=True)
            await asyncio.sleep(0.1)
            waited += 0.1
        if host.hardware:
            raise _HttpError(503, f"node {node} unreachable: {host.hardware}", retryable=True)

    async def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        book = self.book
        if parts == ["healthz"] and method == "GET":
            return 200, {"ok": True, "nodes": len(book.hosts)}
        if parts[:1] != ["v1"]:
            raise _HttpError(404, f"no route {method} {path}")
        rest = parts[1:]
        if rest == ["nodes"] and method == "GET":
            return 200, {"nodes": list(book.hosts)}
        if rest == ["states"] and method == "POST":
            return 200, states_answer(body, book.hosts, lambda h: h.node_state())
        if len(rest) >= 2 and rest[0] == "nodes":
            node = rest[1]
            book.host(node)  # 404 first
            if len(rest) == 2 and method == "GET":
                host = book.host(node)
                if host.hung:
                    await self._reachable(node)
                return 200, node_state_to_dict(host.node_state())
            if rest[2:] == ["actions"] and method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("component"), dict):
                    raise _HttpError(400, "body must be {\"action\": ..., \"component\": {...}}")
                action = ComponentAction(body.get("action", "install"))
                spec = ComponentSpec.from_dict(body["component"])
                if not spec.name:
                    raise _HttpError(400, "component.name is required")
                await self._reachable(node)
                state = book.start_action(node, action, spec)
                await book.persist()  # the decision (and any instant result) is durable before we answer
                return 200, state.to_dict()
            if rest[2:] == ["repairs"] and method == "POST":
                if not isinstance(body, dict):
                    raise _HttpError(400, "body must be {\"action\": ..., \"requestId\": ..., \"component\": ...}")
                host, rid = book.host(node), str(body.get("requestId") or "")
                if host.repairing and rid not in host.repairs:  # like a BMC busy with the last one: later
                    raise _HttpError(409, f"node {node} is being repaired ({host.repairing}); retry later",
                                     retryable=True)
                state = book.repair(node, str(body.get("action") or ""), str(body.get("requestId") or ""),
                                    str(body.get("component") or ""), str(body.get("reason") or ""))
                await book.persist()  # the repair is on record before the caller hears of it
                return 200, state.to_dict()
            if len(rest) == 4 and rest[2] == "health" and method == "GET":
                await self._reachable(node)
                hr = book.health(node, rest[3])
                return 200, {"healthy": hr.healthy, "message": hr.message}
        if rest == ["actionlog"] and method == "GET":
            return 200, {"nodes": {name: list(h.log) for name, h in book.hosts.items()}}
        if rest == ["faults"] and method == "GET":
            return 200, book.faults()
        if rest == ["faults"] and method == "POST":
            if not isinstance(body, dict):
                raise _HttpError(400, "body must be {\"type\": ..., \"node\": ..., \"component\": ..., "
                                      "\"version\": ...}")
            target = body.get("node")
            result = book.fault(str(target) if target else None, str(body.get("type") or ""),
                                str(body.get("component") or ""), str(body.get("version") or ""))
            await book.persist()
            return 200, result
        raise _HttpError(404, f"no route {method} {path}")
