"""The node driver that reaches real hosts through ``kokpit node-agent``, and driver selection per node.

An agent serves the same driver HTTP API as the simulator (one wire format, :mod:`kokpit.nodes.simulator`),
over mutual TLS; what differs is *where*: each node has its own agent.  :class:`AgentDriver` groups the nodes
of a batch by agent endpoint and asks each agent once, concurrently, so an operator over thousands of nodes
makes one request per agent per poll — pushed from the operator, never a watch from the node.

:class:`DriverRouter` lets one machine operator drive some nodes through the simulator and others through
agents (per cluster: its default; per Machine: ``spec.driver``), with no other difference in the operator.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from kokpit.nodes.driver import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    NodeDriver,
    NodeState,
    RepairKind,
    RepairState,
)
from kokpit.nodes.mtls import TLSFiles
from kokpit.nodes.simulator import SimulatorDriver

__all__ = ["AGENT", "DEFAULT_AGENT_PORT", "DRIVER_NAMES", "SIMULATOR", "AgentDriver", "DriverRouter", "RoutedDriver",
           "machine_route"]

AGENT = "agent"
SIMULATOR = "simulator"
DRIVER_NAMES = (SIMULATOR, AGENT)
DEFAULT_AGENT_PORT = 9750

Obj = dict[str, Any]


def _node_address(node: Obj | None) -> str:
    for kind in ("InternalIP", "ExternalIP", "Hostname"):
        for a in ((node or {}).get("status") or {}).get("addresses") or []:
            if a.get("type") == kind and a.get("address"):
                return str(a["address"])
    return ""


def machine_route(machine: Obj | None, node: Obj | None, *, default_driver: str,
                  agent_port: int = DEFAULT_AGENT_PORT) -> tuple[str, str]:
    """(driver name, agent endpoint) for one node: the Machine's ``spec.driver`` first, else the cluster's
    default; an agent's endpoint is ``spec.driver.endpoint`` or ``https://<Node address>:<agent_port>``
    ("" when neither is known yet)."""
    drv = ((machine or {}).get("spec") or {}).get("driver") or {}
    name = str(drv.get("name") or default_driver)
    if name != AGENT:
        return name, ""
    endpoint = str(drv.get("endpoint") or "")
    if not endpoint:
        addr = _node_address(node)
        if addr:
            try:
                host = f"[{addr}]" if ipaddress.ip_address(addr).version == 6 else addr
            except ValueError:
                host = addr
            endpoint = f"https://{host}:{agent_port}"
    return name, endpoint


class AgentDriver:
    """:class:`~kokpit.nodes.driver.NodeDriver` over node agents; ``endpoint(node)`` says where a node's
    agent listens (``https://host:port``; "" or None when unknown: the node reports unreachable).

    ``tls`` are the operator's client credentials from the node-driver CA; agents refuse anything else, and
    the agent's certificate must name the address dialled unless ``check_hostname`` is False.
    """

    def __init__(self, endpoint: Callable[[str], str | None], *, tls: TLSFiles, check_hostname: bool = True,
                 timeout: float = 30.0, batch_size: int = 2000) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self.check_hostname = check_hostname
        self.timeout = timeout
        self.batch_size = batch_size
        self._clients: dict[str, SimulatorDriver] = {}

    def _client(self, node: str) -> SimulatorDriver:
        url = (self.endpoint(node) or "").rstrip("/")
        if not url:
            raise DriverError(f"no node agent endpoint known for node {node} (set the Machine's "
                              "spec.driver.endpoint or give the Node an address)", retryable=True)
        if not url.startswith("https://"):
            raise DriverError(f"node agent endpoint {url} for {node} is not https://", retryable=False)
        c = self._clients.get(url)
        if c is None:
            c = SimulatorDriver(url, tls=self.tls, check_hostname=self.check_hostname, timeout=self.timeout,
                                batch_size=self.batch_size)
            self._clients[url] = c
        return c

    async def state(self, node: str) -> NodeState:
        try:
            c = self._client(node)
        except DriverError as e:
            return NodeState(node, False, {}, str(e))
        return await c.state(node)

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        groups: dict[str, list[str]] = {}
        out: dict[str, NodeState] = {}
        for n in nodes:
            try:
                c = self._client(n)
            except DriverError as e:
                out[n] = NodeState(n, False, {}, str(e))
                continue
            groups.setdefault(c.url, []).append(n)
        results = await asyncio.gather(*(self._clients[url].states(ns) for url, ns in groups.items()),
                                       return_exceptions=True)
        for (url, ns), res in zip(groups.items(), results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, DriverError | OSError):
                    raise res
                out.update({n: NodeState(n, False, {}, f"agent {url}: {res}") for n in ns})
            else:
                out.update(res)
        return out

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        return await self._client(node).start(node, action, component)

    async def health(self, node: str, component: str) -> HealthResult:
        return await self._client(node).health(node, component)

    async def repair(self, node: str, action: RepairKind, request_id: str, *, component: str = "",
                     reason: str = "") -> RepairState:
        return await self._client(node).repair(node, action, request_id, component=component, reason=reason)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()


class DriverRouter:
    """A NodeDriver that sends each node to the driver ``choose(node)`` names (one of ``drivers``)."""

    def __init__(self, drivers: Mapping[str, NodeDriver], choose: Callable[[str], str]) -> None:
        self.drivers = dict(drivers)
        self.choose = choose

    def _driver(self, node: str) -> NodeDriver:
        name = self.choose(node)
        d = self.drivers.get(name)
        if d is None:
            raise DriverError(f"node {node}: driver {name!r} is not configured in this operator (have "
                              f"{', '.join(sorted(self.drivers))})", retryable=False)
        return d

    async def state(self, node: str) -> NodeState:
        return await self._driver(node).state(node)

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        groups: dict[str, list[str]] = {}
        out: dict[str, NodeState] = {}
        for n in nodes:
            name = self.choose(n)
            if name not in self.drivers:
                out[n] = NodeState(n, False, {}, f"driver {name!r} is not configured in this operator")
            else:
                groups.setdefault(name, []).append(n)
        for res in await asyncio.gather(*(self.drivers[k].states(v) for k, v in groups.items())):
            out.update(res)
        return out

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        return await self._driver(node).start(node, action, component)

    async def health(self, node: str, component: str) -> HealthResult:
        return await self._driver(node).health(node, component)

    async def repair(self, node: str, action: RepairKind, request_id: str, *, component: str = "",
                     reason: str = "") -> RepairState:
        d = self._driver(node)
        fn = getattr(d, "repair", None)
        if fn is None:
            raise DriverError(f"node {node}: driver {self.choose(node)!r} cannot repair nodes", retryable=False)
        out: RepairState = await fn(node, action, request_id, component=component, reason=reason)
        return out

    async def close(self) -> None:
        for d in self.drivers.values():
            await d.close()


class RoutedDriver(DriverRouter):
    """The machine operator's driver: each node goes to the driver its Machine names (``spec.driver``), or
    to the operator's ``default`` (per cluster); agents are found at ``spec.driver.endpoint`` or the Node's
    address and ``agent_port``.  The operator hands its caches over once with :meth:`bind` — that is the
    only place it knows about driver selection."""

    def __init__(self, *, default: str, simulator: NodeDriver | None = None, tls: TLSFiles | None = None,
                 agent_port: int = DEFAULT_AGENT_PORT, check_hostname: bool = True, timeout: float = 30.0) -> None:
        if default not in DRIVER_NAMES:
            raise ValueError(f"driver must be one of {', '.join(DRIVER_NAMES)}, not {default!r}")
        self.default = default
        self.agent_port = agent_port
        self._machine: Callable[[str], Obj | None] = lambda node: None
        self._node: Callable[[str], Obj | None] = lambda node: None
        drivers: dict[str, NodeDriver] = {}
        if simulator is not None:
            drivers[SIMULATOR] = simulator
        if tls is not None:
            drivers[AGENT] = AgentDriver(self._endpoint, tls=tls, check_hostname=check_hostname, timeout=timeout)
        super().__init__(drivers, self._choose)

    def bind(self, machine: Callable[[str], Obj | None], node: Callable[[str], Obj | None]) -> None:
        """``machine(node name)`` → that node's Machine, ``node(name)`` → the Node (from informer caches)."""
        self._machine, self._node = machine, node

    def _route(self, node: str) -> tuple[str, str]:
        return machine_route(self._machine(node), self._node(node), default_driver=self.default,
                             agent_port=self.agent_port)

    def _choose(self, node: str) -> str:
        return self._route(node)[0]

    def _endpoint(self, node: str) -> str:
        return self._route(node)[1]
