"""The node driver that reaches simulated hosts: a client of the simulator's driver HTTP API.

The wire format of that API (JSON forms of :class:`NodeState` and friends) is defined here, once, and the
simulator's server imports it, so client and server cannot drift apart.  Failures map onto the driver
protocol: an unknown node or a malformed request is a non-retryable :class:`DriverError`; an unreachable,
faulted or silent (timed-out) node is a retryable one — or ``reachable=False`` from :meth:`state`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kokpit.client import HttpTimeoutError, JsonHttpClient, JsonResponse, TransportError
from kokpit.nodes.driver import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    NodeState,
    RepairKind,
    RepairState,
)
from kokpit.nodes.mtls import TLSFiles, client_context

__all__ = ["DriverHttpError", "SimulatorDriver", "node_state_from_dict", "node_state_to_dict", "states_answer"]

_H = TypeVar("_H")


class DriverHttpError(Exception):
    """An error answer of a driver endpoint (the simulator's or the agent's): ``status`` and the body
    ``{"error": message, "retryable": ...}`` that :func:`_error` reads back on the caller's side."""

    def __init__(self, status: int, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable


def states_answer(body: Any, hosts: Mapping[str, _H], state: Callable[[_H], NodeState]) -> dict[str, Any]:
    """``POST /v1/states {"nodes": [names]}``: the states of the nodes asked for (every one without a list),
    and the names not served here; the same answer from every driver endpoint."""
    if body is not None and not isinstance(body, dict):
        raise DriverHttpError(400, 'body must be {"nodes": [names]}')
    names = (body or {}).get("nodes")
    names = list(hosts) if names is None else names
    if not isinstance(names, list):
        raise DriverHttpError(400, "nodes must be a list of node names")
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for n in names:
        h = hosts.get(str(n))
        if h is None:
            unknown.append(str(n))
        else:
            s = state(h)
            out[s.node] = node_state_to_dict(s)
    return {"nodes": out, "unknown": unknown}


def node_state_to_dict(s: NodeState) -> dict[str, Any]:
    return {"node": s.node, "reachable": s.reachable, "message": s.message,
            "components": {n: c.to_dict() for n, c in s.components.items()}}


def node_state_from_dict(d: dict[str, Any]) -> NodeState:
    comps = {n: ComponentState.from_dict(c) for n, c in (d.get("components") or {}).items()}
    return NodeState(node=d["node"], reachable=bool(d.get("reachable")), components=comps,
                     message=str(d.get("message") or ""))


def _error(resp: JsonResponse, what: str) -> DriverError:
    data = resp.data if isinstance(resp.data, dict) else {}
    msg = str(data.get("error") or f"HTTP {resp.status}")
    retryable = bool(data.get("retryable", resp.status >= 500))
    return DriverError(f"{what}: {msg}", retryable=retryable)


class SimulatorDriver:
    """:class:`~kokpit.nodes.driver.NodeDriver` for the simulator at ``url`` (``https://127.0.0.1:9740``).

    ``tls`` are the caller's credentials (:mod:`kokpit.nodes.mtls`): the simulator refuses callers without a
    client certificate from its CA.  ``timeout`` bounds every call: a silently hung node shows as a timeout,
    exactly like a real one.  ``batch_size`` caps nodes per ``states`` request.
    """

    def __init__(self, url: str, *, tls: TLSFiles | None = None, check_hostname: bool = True,
                 timeout: float = 10.0, batch_size: int = 2000) -> None:
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        ctx = client_context(tls, check_hostname=check_hostname) if tls is not None else None
        self._http = JsonHttpClient(self.url, timeout=timeout, ssl_context=ctx)

    async def _call(self, method: str, path: str, body: Any, what: str) -> JsonResponse:
        try:
            resp = await self._http.request(method, path, body)
        except HttpTimeoutError as e:
            raise DriverError(f"{what}: node did not answer in time ({e})", retryable=True) from e
        except TransportError as e:
            raise DriverError(f"{what}: simulator unreachable ({e})", retryable=True) from e
        if not resp.ok:
            raise _error(resp, what)
        return resp

    async def state(self, node: str) -> NodeState:
        try:
            resp = await self._call("GET", f"/v1/nodes/{node}", None, f"state of {node}")
        except DriverError as e:
            if not e.retryable:
                raise
            return NodeState(node, False, {}, str(e))
        return node_state_from_dict(resp.data)

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        out: dict[str, NodeState] = {}
        for i in range(0, len(nodes), self.batch_size):
            chunk = nodes[i:i + self.batch_size]
            try:
                resp = await self._call("POST", "/v1/states", {"nodes": chunk}, "states")
            except DriverError as e:
                if not e.retryable:
                    raise
                out.update({n: NodeState(n, False, {}, str(e)) for n in chunk})
                continue
            data = resp.data or {}
            for name, d in (data.get("nodes") or {}).items():
                out[name] = node_state_from_dict(d)
            for name in data.get("unknown") or []:
                out[name] = NodeState(name, False, {}, f"node {name} is not simulated here")
        return out

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        resp = await self._call("POST", f"/v1/nodes/{node}/actions",
                                {"action": str(action), "component": component.to_dict()},
                                f"{action} {component.name} {component.version} on {node}")
        return ComponentState.from_dict(resp.data)

    async def health(self, node: str, component: str) -> HealthResult:
        resp = await self._call("GET", f"/v1/nodes/{node}/health/{component}", None,
                                f"health of {component} on {node}")
        data = resp.data or {}
        return HealthResult(bool(data.get("healthy")), str(data.get("message") or ""))

    async def repair(self, node: str, action: RepairKind, request_id: str, *, component: str = "",
                     reason: str = "") -> RepairState:
        """Start (or, with the same ``request_id``, look up) a repair: the driver API's ``/repairs``."""
        body = {"action": str(action), "requestId": request_id, "component": component, "reason": reason}
        resp = await self._call("POST", f"/v1/nodes/{node}/repairs", body, f"{action} of {node}")
        return RepairState.from_dict(resp.data or {}, request_id, str(action))

    async def fault(self, node: str | None, kind: str, component: str = "", version: str = "") -> dict[str, Any]:
        """Inject or lift a fault (the simulator's fault API; not part of NodeDriver)."""
        body = {"node": node or "*", "type": kind, "component": component, "version": version}
        resp = await self._call("POST", "/v1/faults", body, f"fault {kind}")
        out: dict[str, Any] = resp.data or {}
        return out

    async def action_log(self) -> dict[str, list[dict[str, Any]]]:
        """Every host's log of what it did (the simulator's audit trail; not part of NodeDriver)."""
        resp = await self._call("GET", "/v1/actionlog", None, "action log")
        return dict((resp.data or {}).get("nodes") or {})

    async def close(self) -> None:
        await self._http.close()
