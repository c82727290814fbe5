"""The business clusters a machine Rollout reaches: one client and slim Machine, MachinePackageVersion and
NodeFault caches per cluster, through the cluster's ``<name>-kubeconfig`` Secret in the meta cluster (the way
``kokpit status`` and ``kokpit simulator fault --cluster`` reach a business cluster).

Connections are opened when a Rollout first asks for a cluster and kept while any Rollout still does; a
kubeconfig that changes (new credentials) reconnects.  Everything here is a cache a restart rebuilds by
looking again: the rollout's decisions live in its status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.machine import GROUP, VERSION
from kokpit.client import CRD, SECRET, ApiError, Client, Kind, NotFoundError, TransportError
from kokpit.runtime import Handlers, Informer

__all__ = ["MACHINE", "MPV", "NODE_FAULT", "Business", "BusinessClusters"]

log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
MACHINE = Kind(GROUP, VERSION, "Machine", "machines", namespaced=False)
MPV = Kind(GROUP, VERSION, "MachinePackageVersion", "machinepackageversions", namespaced=False)
NODE_FAULT = Kind(GROUP, VERSION, "NodeFault", "nodefaults", namespaced=False)
KUBECONFIG_KEY = "value"


def _slim_machine(obj: Obj) -> Obj:
    """What the rollout reads of a Machine: labels, spec, and the status rows of its components."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {"metadata": {k: meta[k] for k in ("name", "labels", "resourceVersion", "generation", "uid") if k in meta},
            "spec": obj.get("spec") or {},
            "status": {k: status[k] for k in ("components", "failures", "conditions") if k in status}}


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

    @property
    def synced(self) -> bool:
        return self.machines.has_synced and self.mpvs.has_synced

    def mpv_components(self) -> dict[str, str]:
        return {str(o["metadata"]["name"]): str(o["spec"].get("component") or "") for o in self.mpvs.objects()}

    def mpv_versions(self) -> dict[str, str]:
        return {str(o["metadata"]["name"]): str(o["spec"].get("version") or "") for o in self.mpvs.objects()}

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
    a Machine, MachinePackageVersion or NodeFault there."""

    def __init__(self, meta: Client, on_change: Callable[[str], None], *, timeout: float = 10.0) -> None:
        self.meta = meta
        self.on_change = on_change
        self.timeout = timeout
        self._clusters: dict[str, Business] = {}
        self._errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._dir = tempfile.mkdtemp(prefix="kokpit-rollout-")  # 0700: the kubeconfigs hold credentials

    def error(self, key: str) -> str:
        """Why ``key`` cannot be reached ("" when it can, or has not been tried)."""
        return self._errors.get(key, "")

    def get(self, key: str) -> Business | None:
        b = self._clusters.get(key)
        return b if b is not None and b.synced else None

    async def ensure(self, key: str, user: str) -> Business | None:
        """The cluster's connection (opened on first use); None while it is not reachable or not synced."""
        async with self._lock:
            b = self._clusters.get(key)
            if b is None:
                b = await self._open(key)
            if b is None:
                return None
            b.users.add(user)
        return b if b.synced else None

    async def release(self, user: str, keep: set[str]) -> None:
        """``user`` no longer needs the clusters outside ``keep``; close those nobody needs."""
        async with self._lock:
            for key, b in list(self._clusters.items()):
                if key in keep:
                    continue
                b.users.discard(user)
                if not b.users:
                    await self._close(key)

    async def _open(self, key: str) -> Business | None:
        ns, name = key.split("/", 1)
        try:
            secret = await self.meta.get(SECRET, f"{name}-kubeconfig", ns)
        except NotFoundError:
            self._errors[key] = f"Secret {ns}/{name}-kubeconfig does not exist (the Cluster has no kubeconfig yet)"
            return None
        except (ApiError, TransportError) as e:
            self._errors[key] = f"cannot read Secret {ns}/{name}-kubeconfig: {e}"
            return None
        raw = (secret.get("data") or {}).get(KUBECONFIG_KEY)
        if not raw:
            self._errors[key] = f"Secret {ns}/{name}-kubeconfig has no key {KUBECONFIG_KEY}"
            return None
        digest = hashlib.sha256(raw.encode()).hexdigest()
        path = os.path.join(self._dir, f"{ns}.{name}.kubeconfig")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(raw))
            client = Client.from_kubeconfig(path, field_manager="kokpit-rollout-controller", timeout=self.timeout,
                                            max_retries=2)
        except Exception as e:  # a broken Secret must not stop the others
            self._errors[key] = f"the kubeconfig of {key} does not load: {e}"
            return None
        machines = Informer(client, MACHINE, transform=_slim_machine)
        mpvs = Informer(client, MPV, transform=_slim_mpv)
        b = Business(key, digest, client, machines, mpvs)
        with contextlib.suppress(ApiError, TransportError):  # NodeFaults, where that kind is installed
            await client.get(CRD, f"{NODE_FAULT.plural}.{NODE_FAULT.group}")
            b.faults = Informer(client, NODE_FAULT, indexers={"node": _fault_node})
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
        if b is None:
            return
        for inf in (b.machines, b.mpvs, b.faults):
            if inf is not None:
                await inf.stop()
        with contextlib.suppress(Exception):
            await b.client.close()

    async def refresh(self, key: str) -> None:
        """Reconnect when the cluster's kubeconfig Secret changed (new credentials or endpoint)."""
        b = self._clusters.get(key)
        if b is None:
            return
        ns, name = key.split("/", 1)
        with contextlib.suppress(ApiError, TransportError):
            raw = ((await self.meta.get(SECRET, f"{name}-kubeconfig", ns)).get("data") or {}).get(KUBECONFIG_KEY)
            if raw and hashlib.sha256(raw.encode()).hexdigest() != b.digest:
                users = set(b.users)
                async with self._lock:
                    await self._close(key)
                    nb = await self._open(key)
                    if nb is not None:
                        nb.users |= users

    async def close(self) -> None:
        for key in list(self._clusters):
            await self._close(key)
        shutil.rmtree(self._dir, ignore_errors=True)
