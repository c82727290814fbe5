"""What the risk center sees of each business cluster: its Nodes (labels, Ready, cordoned) and a client.

``maxUnavailable`` and percentages need the nodes of every cluster in scope, and the built-in prober needs to
create Pods there, so the risk center keeps one slim Node informer per business cluster, reached through the
cluster's ``<name>-kubeconfig`` Secret in the meta cluster (:func:`kokpit.client.read_business_kubeconfig`, as the
rollout controller reaches it).
A cluster whose nodes are not observed yet reports ``None``: limits that need them then deny (never guess) —
except while the observer is still warming up (its first look, or a cluster's first Node list within
``warmup`` seconds): a restarted risk center must not deny, with a Warning Event each, what it will grant a
second later; those requests simply wait for their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
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
    """A business cluster's client and Node informer, and what the decisions read of its Nodes: one
    :class:`NodeInfo` per Node, kept up to date by the informer's events (not rebuilt per decision pass)."""

    digest: str
    client: Client
    nodes: Informer
    started: float = 0.0  # monotonic: when its Node informer started
    infos: dict[str, NodeInfo] = field(default_factory=dict)
    snapshot: dict[str, NodeInfo] | None = None  # a copy handed to passes; dropped when infos change


def node_info(o: Obj) -> NodeInfo:
    return NodeInfo(str(o["metadata"]["name"]), o["metadata"].get("labels") or {},
                    is_true(o["status"]["conditions"], "Ready") and not o["spec"].get("unschedulable"))


class ClusterObserver:
    """One client and one Node informer per business cluster, (re)started as kubeconfig Secrets appear."""

    def __init__(self, meta: Client, on_change: Callable[[], None], *, timeout: float = 10.0,
                 warmup: float = 30.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.meta = meta
        self.on_change = on_change
        self.timeout = timeout
        self.warmup = warmup
        self._monotonic = monotonic
        self._clusters: dict[str, _Business] = {}
        self._looked = False  # the first sync has run (until then no cluster is known to be unobservable)

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
            b = _Business(kc.digest, client, inf, self._monotonic())
            inf.add_event_handler(Handlers(add=partial(self._seen, b), update=partial(self._updated, b),
                                           delete=partial(self._gone, b)))
            inf.start()
            self._clusters[key] = b
        if not self._looked:
            self._looked = True
            self.on_change()  # what waited for the first look is decided now

    def warming(self, key: str) -> bool:
        """Whether ``key``'s Nodes may still arrive soon: before the first sync, or while its first Node
        list runs (at most ``warmup`` seconds).  A cluster without a kubeconfig after the first sync, or one
        whose Nodes could not be listed in time, is not warming: it is unobservable."""
        if not self._looked:
            return True
        b = self._clusters.get(key)
        return b is not None and not b.nodes.has_synced and self._monotonic() - b.started < self.warmup

    def _seen(self, b: _Business, obj: Obj) -> None:
        """A Node added or updated: only a change of what decisions read (labels, Ready, cordoned) wakes the
        center.  During a kubelet wave every Node's status changes; waking a pass for each, and rebuilding
        10,000 NodeInfos in each pass, kept the risk center at a full core through a 10,000-Machine rollout."""
        info = node_info(obj)
        if b.infos.get(info.name) != info:
            b.infos[info.name] = info
            b.snapshot = None
            self.on_change()

    def _updated(self, b: _Business, _old: Obj, new: Obj) -> None:
        self._seen(b, new)

    def _gone(self, b: _Business, obj: Obj) -> None:
        if b.infos.pop(str(obj["metadata"]["name"]), None) is not None:
            b.snapshot = None
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
        """The cluster's Nodes as decisions read them (None until its informer has synced).  The same dict is
        returned until a Node changes in a way that matters: callers must not modify it."""
        b = self._clusters.get(key)
        if b is None or not b.nodes.has_synced:
            return None
        if b.snapshot is None:
            b.snapshot = dict(b.infos)
        return b.snapshot

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(k) for k in list(self._clusters)))
