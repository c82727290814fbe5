"""The business clusters a machine Rollout reaches: one client and slim Machine, MachinePackageVersion and
NodeFault caches per cluster, through the cluster's ``<name>-kubeconfig`` Secret in the meta cluster (read by
:func:`kokpit.client.read_business_kubeconfig`, as the risk center reads it).

Connections are opened when a Rollout first asks for a cluster and kept while any Rollout still does; a
kubeconfig that changes (new credentials) reconnects.  Everything here is a cache a restart rebuilds by
looking again: the rollout's decisions live in its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.api.machine import GROUP, VERSION
from kokpit.client import (
    CRD,
    ApiError,
    Client,
    Kind,
    KubeconfigUnavailable,
    TransportError,
    read_business_kubeconfig,
)
from kokpit.runtime import Handlers, Informer

__all__ = ["MACHINE", "MPV", "NODE_FAULT", "Business", "BusinessClusters"]

log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
MACHINE = Kind(GROUP, VERSION, "Machine", "machines", namespaced=False)
MPV = Kind(GROUP, VERSION, "MachinePackageVersion", "machinepackageversions", namespaced=False)
NODE_FAULT = Kind(GROUP, VERSION, "NodeFault", "nodefaults", namespaced=False)
_OPENED = itertools.count(1)


def _slim_machine(obj: Obj) -> Obj:
    """What the rollout reads of a Machine: labels, spec, its components' status rows, failures and conditions
    (the analysis' health check)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {"metadata": {k: meta[k] for k in ("name", "labels", "resourceVersion", "generation", "uid") if k in meta},
            "spec": obj.get("spec") or {},
            "status": {k: status[k] for k in ("components", "failures", "conditions", "observedGeneration")
                       if k in status}}


def _slim_mpv(obj: Obj) -> Obj:
    spec = obj.get("spec") or {}
    return {"metadata": {"name": (obj.get("metadata") or {}).get("name")},
            "spec": {"component": spec.get("component"), "version": spec.get("version")}}


@dataclass
class Business:
    """One business cluster as the rollout controller sees it."""

    key: str  # namespace/name of the Cluster
    digest: str
    client: Client
    machines: Informer
    mpvs: Informer
    faults: Informer | None = None
    users: set[str] = field(default_factory=set)  # Rollout keys that asked for it
    # What changed here, in order: ``seq`` counts every event of the cluster's caches; each Machine, each
    # node's NodeFaults and the MachinePackageVersions keep the count at their last event.  A reconcile that
    # looked at every target at count N need look again only at those changed after N (see changed_since).
    opened: int = field(default_factory=lambda: next(_OPENED))  # tells a reopened connection from this one
    seq: int = 0
    machine_seq: dict[str, int] = field(default_factory=dict, repr=False)
    fault_seq: dict[str, int] = field(default_factory=dict, repr=False)
    mpv_seq: int = 0

    def saw_machine(self, *objs: Obj) -> None:
        self.seq += 1
        for o in objs:
            self.machine_seq[str(o["metadata"]["name"])] = self.seq

    def saw_fault(self, *objs: Obj) -> None:
        self.seq += 1
        for o in objs:
            for node in _fault_node(o):
                self.fault_seq[node] = self.seq

    def saw_mpv(self) -> None:
        self.seq += 1
        self.mpv_seq = self.seq
        self._mpv_maps = None

    def changed_since(self, seq: int, machine: str, node: str) -> bool:
        """Whether anything a target's observation reads (its Machine, its node's NodeFaults, the
        MachinePackageVersions) had an event after count ``seq``."""
        return self.mpv_seq > seq or self.machine_seq.get(machine, 0) > seq or self.fault_seq.get(node, 0) > seq

    @property
    def synced(self) -> bool:
        return self.machines.has_synced and self.mpvs.has_synced

    _mpv_maps: tuple[dict[str, str], dict[str, str]] | None = field(default=None, repr=False)

    def _maps(self) -> tuple[dict[str, str], dict[str, str]]:
        """MPV name → component and → version, built once per change of the MPVs (asked per target, per
        reconcile: 10,000 times a pass at fleet size)."""
        if self._mpv_maps is None or not self.mpvs.has_synced:
            objs = self.mpvs.objects()
            maps = ({str(o["metadata"]["name"]): str(o["spec"].get("component") or "") for o in objs},
                    {str(o["metadata"]["name"]): str(o["spec"].get("version") or "") for o in objs})
            if not self.mpvs.has_synced:
                return maps
            self._mpv_maps = maps
        return self._mpv_maps

    def mpv_components(self) -> dict[str, str]:
        return self._maps()[0]

    def mpv_versions(self) -> dict[str, str]:
        return self._maps()[1]

    def machine(self, name: str) -> Obj | None:
        return self.machines.store.get_by_name(name)

    def node_faults(self, node: str) -> list[Obj]:
        if self.faults is None or not self.faults.has_synced:
            return []
        return self.faults.store.by_index("node", node)


def _fault_node(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    n = spec.get("nodeName") or spec.get("node") or ((obj.get("metadata") or {}).get("labels") or {}).get(
        "kokpit.io/node")
    return [str(n)] if n else []


class BusinessClusters:
    """Connections to the business clusters Rollouts ask for; ``on_change(cluster_key)`` on every change of
    a Machine, MachinePackageVersion or NodeFault there.

    The kubeconfig Secret of a connected cluster is read again at most every ``recheck`` seconds (when a
    Rollout asks for the cluster, so an idle controller reads nothing) and at once while the connection has
    not synced; another digest — rotated credentials, a moved endpoint — closes the connection and opens one
    on the new kubeconfig (the controller may ``get`` Secrets, not watch them: least privilege)."""

    def __init__(self, meta: Client, on_change: Callable[[str], None], *, timeout: float = 10.0,
                 recheck: float = 30.0, linger: float = 300.0, clock: Clock | None = None) -> None:
        self.meta = meta
        self.on_change = on_change
        self.timeout = timeout
        self.recheck = recheck
        self.clock = clock or RealClock()
        self._clusters: dict[str, Business] = {}
        self._checked: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.linger = linger
        self._idle: dict[str, asyncio.TimerHandle] = {}  # clusters nobody needs, closed when the timer fires
        self._tasks: set[asyncio.Future[None]] = set()

    def error(self, key: str) -> str:
        """Why ``key`` cannot be reached ("" when it can, or has not been tried)."""
        return self._errors.get(key, "")

    def get(self, key: str) -> Business | None:
        b = self._clusters.get(key)
        return b if b is not None and b.synced else None

    async def ensure(self, key: str, user: str) -> Business | None:
        """The cluster's connection (opened on first use, reopened when its kubeconfig changed); None while
        it is not reachable or not synced."""
        async with self._lock:
            b = self._clusters.get(key)
            users: set[str] = set()
            if b is not None and (not b.synced or self.clock.monotonic() - self._checked.get(key, 0.0)
                                  >= self.recheck) and await self._rotated(key, b):
                users = set(b.users)
                await self._close(key)
                b = None
            if b is None:
                b = await self._open(key, users)
            if b is None:
                return None
            b.users.add(user)
            idle = self._idle.pop(key, None)
            if idle is not None:
                idle.cancel()
        return b if b.synced else None

    async def release(self, user: str, keep: set[str]) -> None:
        """``user`` no longer needs the clusters outside ``keep``; those nobody needs are closed ``linger``
        seconds later unless a Rollout asks again (waves often follow each other: the next one finds the
        caches of 10,000 Machines warm instead of listing them again)."""
        async with self._lock:
            for key, b in list(self._clusters.items()):
                if key in keep:
                    continue
                b.users.discard(user)
                if not b.users and key not in self._idle:
                    self._idle[key] = asyncio.get_running_loop().call_later(self.linger, self._start_close, key)

    def _start_close(self, key: str) -> None:
        task = asyncio.ensure_future(self._close_idle(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_idle(self, key: str) -> None:
        async with self._lock:
            self._idle.pop(key, None)
            b = self._clusters.get(key)
            if b is not None and not b.users:
                log.info("business cluster %s: no Rollout needs it; closing its caches", key)
                await self._close(key)

    async def _rotated(self, key: str, b: Business) -> bool:
        """Whether the kubeconfig Secret of ``key`` now says something else than what ``b`` was opened on."""
        ns, name = key.split("/", 1)
        self._checked[key] = self.clock.monotonic()
        try:
            kc = await read_business_kubeconfig(self.meta, ns, name)
        except KubeconfigUnavailable as e:
            # unreadable right now (being rewritten, the meta server busy): keep the connection that works
            log.info("business cluster %s: %s", key, e)
            return False
        if kc.digest == b.digest:
            return False
        log.info("business cluster %s: its kubeconfig changed; reconnecting", key)
        return True

    async def _open(self, key: str, users: set[str]) -> Business | None:
        ns, name = key.split("/", 1)
        self._checked[key] = self.clock.monotonic()
        try:
            kc = await read_business_kubeconfig(self.meta, ns, name)
            client = kc.client(field_manager="kokpit-rollout-controller", timeout=self.timeout, max_retries=2)
        except KubeconfigUnavailable as e:
            self._errors[key] = str(e)
            return None
        except Exception as e:  # a broken Secret must not stop the others
            self._errors[key] = f"the kubeconfig of {key} does not load: {e}"
            return None
        machines = Informer(client, MACHINE, transform=_slim_machine)
        mpvs = Informer(client, MPV, transform=_slim_mpv)
        b = Business(key, kc.digest, client, machines, mpvs, users=users)
        with contextlib.suppress(ApiError, TransportError):  # NodeFaults, where that kind is installed
            await client.get(CRD, f"{NODE_FAULT.plural}.{NODE_FAULT.group}")
            b.faults = Informer(client, NODE_FAULT, indexers={"node": _fault_node})
        # the change counters first, so the wake-up below always finds them moved
        machines.add_event_handler(Handlers(add=b.saw_machine, update=b.saw_machine, delete=b.saw_machine))
        mpvs.add_event_handler(Handlers(add=lambda _o: b.saw_mpv(), update=lambda _a, _b: b.saw_mpv(),
                                        delete=lambda _o: b.saw_mpv()))
        if b.faults is not None:
            b.faults.add_event_handler(Handlers(add=b.saw_fault, update=b.saw_fault, delete=b.saw_fault))
        for inf in (machines, mpvs, b.faults):
            if inf is None:
                continue
            inf.add_event_handler(Handlers(add=lambda _o: self.on_change(key),
                                           update=lambda _a, _b: self.on_change(key),
                                           delete=lambda _o: self.on_change(key)))
            inf.start()
        self._clusters[key] = b
        self._errors.pop(key, None)
        return b

    async def _close(self, key: str) -> None:
        b = self._clusters.pop(key, None)
        self._checked.pop(key, None)
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.cancel()
        if b is None:
            return
        for inf in (b.machines, b.mpvs, b.faults):
            if inf is not None:
                await inf.stop()
        with contextlib.suppress(Exception):
            await b.client.close()

    async def close(self) -> None:
        for key in list(self._clusters):
            await self._close(key)
        for t in list(self._tasks):
            t.cancel()
