"""In-memory stand-ins for the machine operator's unit tests: a node driver and an API client over Stores."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from kokpit.apiserver.patch import json_merge_patch
from kokpit.client import AlreadyExistsError, ConflictError, Kind, NotFoundError
from kokpit.nodes import (
    ComponentAction,
    ComponentSpec,
    ComponentState,
    DriverError,
    HealthResult,
    InstallState,
    NodeState,
    RunState,
)
from kokpit.runtime import Store

Obj = dict[str, Any]


class FakeDriver:
    """Actions start in flight and finish on :meth:`complete` (or on the next read with ``auto=True``).

    Same contract as the simulator: idempotent starts, a Failed component can be started again, the node's
    report is the truth.  ``log`` lists every action that really started (repeats would show up twice).
    """

    def __init__(self, *, auto: bool = False) -> None:
        self.nodes: dict[str, dict[str, ComponentState]] = {}
        self.unreachable: set[str] = set()
        self.fail: dict[tuple[str, str], str] = {}  # (component, version) -> message
        self.unhealthy: dict[tuple[str, str], str] = {}  # (node, component) -> message
        self.stopped: set[tuple[str, str]] = set()
        self.log: list[tuple[str, str, str, str]] = []  # (node, action, component, version)
        self.health_calls: list[tuple[str, str]] = []
        self.batch_calls: list[int] = []
        self.auto = auto
        self._t = itertools.count(1)

    def add_node(self, name: str) -> None:
        self.nodes.setdefault(name, {})

    def _ts(self) -> str:
        return f"2026-01-01T00:{next(self._t) % 60:02d}:00Z"

    def _node(self, node: str) -> dict[str, ComponentState]:
        if node not in self.nodes:
            raise DriverError(f"node {node} is not simulated here", retryable=False)
        return self.nodes[node]

    def complete(self, node: str | None = None) -> int:
        """Finish every in-flight action (on one node or all); returns how many finished."""
        n = 0
        for name, comps in self.nodes.items():
            if node is not None and name != node:
                continue
            for cname, c in list(comps.items()):
                if c.install_state == InstallState.UNINSTALLING:
                    del comps[cname]
                    n += 1
                elif c.install_state in (InstallState.INSTALLING, InstallState.UPGRADING):
                    target = c.target_version or c.version
                    msg = self.fail.get((cname, target))
                    if msg is not None:
                        comps[cname] = ComponentState(cname, c.version, InstallState.FAILED, RunState.STOPPED,
                                                      msg, target, self._ts())
                    else:
                        run = RunState.STOPPED if (name, cname) in self.stopped else RunState.RUNNING
                        comps[cname] = ComponentState(cname, target, InstallState.INSTALLED, run, "", "",
                                                      self._ts())
                    n += 1
        return n

    def _report(self, node: str) -> NodeState:
        if node not in self.nodes:
            return NodeState(node, False, {}, "unknown node")
        if self.auto:
            self.complete(node)
        if node in self.unreachable:
            return NodeState(node, False, {}, "hardware fault")
        return NodeState(node, True, dict(self.nodes[node]))

    async def state(self, node: str) -> NodeState:
        return self._report(node)

    async def states(self, nodes: list[str]) -> dict[str, NodeState]:
        self.batch_calls.append(len(nodes))
        return {n: self._report(n) for n in nodes}

    async def start(self, node: str, action: ComponentAction, component: ComponentSpec) -> ComponentState:
        comps = self._node(node)
        if node in self.unreachable:
            raise DriverError(f"node {node} unreachable", retryable=True)
        cur = comps.get(component.name)
        if action == ComponentAction.UNINSTALL:
            if cur is None:
                return ComponentState(component.name, component.version, InstallState.PENDING)
            if cur.install_state == InstallState.UNINSTALLING:
                return cur
            new = ComponentState(component.name, cur.version, InstallState.UNINSTALLING, cur.run_state, "",
                                 "", self._ts())
        else:
            if cur is not None and cur.install_state in (InstallState.INSTALLING, InstallState.UPGRADING) \
                    and cur.target_version == component.version:
                return cur
            if cur is not None and cur.install_state == InstallState.INSTALLED \
                    and cur.version == component.version:
                return cur
            upgrading = cur is not None and bool(cur.version) and cur.install_state == InstallState.INSTALLED
            st = InstallState.UPGRADING if upgrading else InstallState.INSTALLING
            new = ComponentState(component.name, cur.version if cur else "", st,
                                 cur.run_state if cur else RunState.UNKNOWN, "", component.version,
                                 self._ts())
        comps[component.name] = new
        self.log.append((node, str(action), component.name, component.version))
        return new

    async def health(self, node: str, component: str) -> HealthResult:
        self.health_calls.append((node, component))
        msg = self.unhealthy.get((node, component))
        return HealthResult(msg is None, msg or "ok")

    async def close(self) -> None:
        return None


class StoreClient:
    """A client whose objects live in informer Stores (writes show up in the cache at once, like a watch)."""

    def __init__(self, stores: dict[str, Store]) -> None:
        self.stores = stores  # by plural
        self.extra: dict[str, Store] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._rv = itertools.count(100)

    def _store(self, kind: Kind) -> Store:
        if kind.plural in self.stores:
            return self.stores[kind.plural]
        return self.extra.setdefault(kind.plural, Store())

    def writes(self, plural: str | None = None) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "get" and (plural is None or c[1] == plural)]

    async def get(self, kind: Kind, name: str, namespace: str | None = None, *,
                  subresource: str | None = None) -> Obj:
        self.calls.append(("get", kind.plural, name))
        o = self._store(kind).get_by_name(name, namespace if kind.namespaced else None)
        if o is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        return copy.deepcopy(o)

    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None, *,
                     dry_run: bool = False) -> Obj:
        self.calls.append(("create", kind.plural, obj["metadata"]["name"]))
        st = self._store(kind)
        o = copy.deepcopy(obj)
        if kind.namespaced:
            o["metadata"]["namespace"] = namespace or o["metadata"].get("namespace") or "default"
        if st.get_by_name(o["metadata"]["name"], o["metadata"].get("namespace")) is not None:
            raise AlreadyExistsError(409, {"reason": "AlreadyExists"})
        o["metadata"]["resourceVersion"] = str(next(self._rv))
        st.put(o)
        return copy.deepcopy(o)

    async def patch(self, kind: Kind, name: str, body: Any, namespace: str | None = None, *,
                    patch_type: Any = "merge", subresource: str | None = None,
                    field_manager: str | None = None, force: bool = False) -> Obj:
        self.calls.append((f"patch{'/' + subresource if subresource else ''}", kind.plural, name))
        st = self._store(kind)
        cur = st.get_by_name(name, namespace if kind.namespaced else None)
        if cur is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        want_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if want_rv and want_rv != cur["metadata"].get("resourceVersion"):  # a precondition, as the server does
            raise ConflictError(409, {"reason": "Conflict"})
        new = json_merge_patch(cur, body)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        st.put(new)
        return copy.deepcopy(new)


# ------------------------------------------------------------------------------------------ harness
import pytest  # noqa: E402

from kokpit._lib.clock import FakeClock  # noqa: E402
from kokpit.operators.machine import MachineReconciler, NodeStatePoller, OperatorOptions  # noqa: E402
from kokpit.operators.machine.operator import INDEXERS_CM, INDEXERS_MACHINE, INDEXERS_MPV  # noqa: E402
from kokpit.runtime import EventRecorder, Request, Result  # noqa: E402


class Harness:
    """A MachineReconciler over Stores, a FakeDriver and a FakeClock; ``await h.run()`` reconciles."""

    def __init__(self, *, auto: bool = False, **opts: Any) -> None:
        self.clock = FakeClock()
        self.machines = Store(INDEXERS_MACHINE)
        self.mpvs = Store(INDEXERS_MPV)
        self.nodes = Store()
        self.configmaps = Store(INDEXERS_CM)
        self.client = StoreClient({"machines": self.machines, "machinepackageversions": self.mpvs,
                                   "nodes": self.nodes, "configmaps": self.configmaps})
        self.driver = FakeDriver(auto=auto)
        self.woken: list[str] = []
        self.options = OperatorOptions(**{"retry_base": 1.0, "retry_cap": 60.0, "background_events": False,
                                          **opts})
        self.new_reconciler()

    def next_rv(self) -> str:
        """A resourceVersion for a write made by "a user" of the test, after every one before (as a server's)."""
        return str(next(self.client._rv))

    def new_reconciler(self) -> MachineReconciler:
        """A fresh reconciler (empty memory), as after an operator restart."""
        self.poller = NodeStatePoller(self.driver, self.woken.append, clock=self.clock,
                                      batch_size=self.options.batch_size)
        self.rec = MachineReconciler(self.client, self.driver, machines=self.machines, mpvs=self.mpvs,
                                     nodes=self.nodes, configmaps=self.configmaps, poller=self.poller,
                                     recorder=EventRecorder(self.client, "machine-operator", clock=self.clock),
                                     options=self.options, clock=self.clock)
        return self.rec

    # ---------------------------------------------------------------- objects
    def mpv(self, name: str, component: str, version: str, depends_on: tuple[str, ...] = (),
            health: bool = True) -> None:
        spec: Obj = {"component": component, "version": version, "dependsOn": list(depends_on)}
        if health:
            spec["healthCheck"] = {"type": "systemd", "unit": component}
        self.mpvs.put({"apiVersion": "kokpit.io/v1alpha1", "kind": "MachinePackageVersion",
                       "metadata": {"name": name, "resourceVersion": self.next_rv()}, "spec": spec})

    def machine(self, name: str = "n1", packages: list[str] | None = None, gates: list[str] | None = None,
                unschedulable: bool = False, node: bool = True) -> None:
        cur = self.machines.get_by_name(name)
        gen = int((cur or {}).get("metadata", {}).get("generation", 0)) + 1
        obj: Obj = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine",
                    "metadata": {"name": name, "generation": gen, "resourceVersion": self.next_rv(), "uid": f"uid-{name}"},
                    "spec": {"nodeName": name, "packages": packages or [],
                             "readinessGates": [{"conditionType": g} for g in gates or []],
                             "unschedulable": unschedulable}}
        if cur is not None and "status" in cur:
            obj["status"] = cur["status"]
        self.machines.put(obj)
        if node:
            self.driver.add_node(name)
            if self.nodes.get_by_name(name) is None:
                self.node(name)

    def node(self, name: str, ready: str = "True", unschedulable: bool = False,
             annotations: dict[str, str] | None = None) -> None:
        self.nodes.put({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "resourceVersion": self.next_rv(), "annotations": annotations or {}},
                        "spec": {"unschedulable": unschedulable} if unschedulable else {},
                        "status": {"conditions": [{"type": "Ready", "status": ready}]}})

    def report(self, node: str, source: str, data: dict[str, str], name: str = "", ns: str = "default") -> None:
        self.configmaps.put({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": name or f"{source}-{node}", "namespace": ns,
                                          "labels": {"kokpit.io/node": node,
                                                     "kokpit.io/condition-source": source}},
                             "data": data})

    # ---------------------------------------------------------------- reading
    def status(self, name: str = "n1") -> Obj:
        m = self.machines.get_by_name(name)
        assert m is not None
        out: Obj = m.get("status") or {}
        return out

    def cond(self, type_: str, name: str = "n1") -> Obj:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return c
        raise AssertionError(f"no condition {type_} in {self.status(name).get('conditions')}")

    def components(self, name: str = "n1") -> dict[str, Obj]:
        return {c["name"]: c for c in self.status(name).get("components") or []}

    def cordoned(self, name: str = "n1") -> bool:
        n = self.nodes.get_by_name(name)
        assert n is not None
        return bool((n.get("spec") or {}).get("unschedulable"))

    def events(self, reason: str | None = None) -> list[Obj]:
        st = self.client.extra.get("events")
        evs = st.list() if st else []
        return [e for e in evs if reason is None or e["reason"] == reason]

    # ---------------------------------------------------------------- driving
    async def run(self, name: str = "n1") -> Result | None:
        """Refresh the node report (as the poller would) and reconcile once."""
        await self.poller.poll_once(full=True)
        return await self.rec.reconcile(Request("", name))

    async def converge(self, name: str = "n1", limit: int = 30) -> int:
        """Reconcile, finishing driver actions, until nothing is in flight and a reconcile starts nothing."""
        for i in range(limit):
            before = len(self.driver.log)
            await self.run(name)
            finished = self.driver.complete()
            if len(self.driver.log) == before and finished == 0:
                return i
        raise AssertionError(f"no convergence in {limit} rounds; log={self.driver.log}")


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def make_harness() -> type[Harness]:
    return Harness
