"""What the risk center sees of each business cluster: its Nodes (labels, Ready, cordoned) and a client.

``maxUnavailable`` and percentages need the nodes of every cluster in scope, and the built-in prober needs to
create Pods there, so the risk center keeps one slim Node informer per business cluster, reached through the
cluster's ``<name>-kubeconfig`` Secret in the meta cluster (:func:`kokpit.client.read_business_kubeconfig`, as the
rollout controller reaches it).
A cluster whose nodes are not observed yet reports ``None``: limits that need them then deny (never guess).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kokpit.client import NODE, Client, KubeconfigUnavailable, read_business_kubeconfig
from kokpit.operators.risk._decide import NodeInfo
from kokpit.runtime import Handlers, Informer, is_true

__all__ = ["ClusterObserver"]

log = logging.getLogger("kokpit.operators.risk.observe")

Obj = dict[str, Any]


def _slim_node(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    ready = is_true((obj.get("status") or {}).get("conditions"), "Ready")
    return {"metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {},
                         "resourceVersion": meta.get("resourceVersion")},
            "spec": {"unschedulable": bool((obj.get("spec") or {}).get("unschedulable"))},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@dataclass
class _Business:
    digest: str
    client: Client
    nodes: Informer


class ClusterObserver:
    """One client and one Node informer per business cluster, (re)started as kubeconfig Secrets appear."""

    def __init__(self, meta: Client, on_change: Callable[[], None], *, timeout: float = 10.0) -> None:
        self.meta = meta
        self.on_change = on_change
        self.timeout = timeout
        self._clusters: dict[str, _Business] = {}

    async def sync(self, keys: set[str]) -> None:
        """Observe exactly the clusters ``keys`` (namespace/name)."""
        for key in list(self._clusters):
            if key not in keys:
                await self._stop(key)
        for key in keys:
            ns, name = key.split("/", 1)
            try:
                kc = await read_business_kubeconfig(self.meta, ns, name)
            except KubeconfigUnavailable as e:  # not there yet (a new Cluster), or broken: the next sync looks again
                log.debug("business cluster %s: %s", key, e)
                continue
            cur = self._clusters.get(key)
            if cur is not None and cur.digest == kc.digest:
                continue
            if cur is not None:
                await self._stop(key)
            client = kc.client(field_manager="kokpit-risk-center", timeout=self.timeout, max_retries=1)
            inf = Informer(client, NODE, transform=_slim_node)
            inf.add_event_handler(Handlers(add=self._changed, update=lambda _a, b: self._changed(b),
                                           delete=self._changed))
            inf.start()
            self._clusters[key] = _Business(kc.digest, client, inf)

    def _changed(self, _obj: Obj) -> None:
        self.on_change()

    async def _stop(self, key: str) -> None:
        b = self._clusters.pop(key, None)
        if b is not None:
            await b.nodes.stop()
            with contextlib.suppress(Exception):
                await b.client.close()

    def client(self, key: str) -> Client | None:
        b = self._clusters.get(key)
        return b.client if b is not None else None

    def nodes(self, key: str) -> dict[str, NodeInfo] | None:
        b = self._clusters.get(key)
        if b is None or not b.nodes.has_synced:
            return None
        out = {}
        for o in b.nodes.objects():
            name = str(o["metadata"]["name"])
            ready = is_true(o["status"]["conditions"], "Ready")
            out[name] = NodeInfo(name, o["metadata"].get("labels") or {},
                                 ready and not o["spec"].get("unschedulable"))
        return out

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(k) for k in list(self._clusters)))
