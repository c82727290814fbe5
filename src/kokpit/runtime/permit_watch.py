"""The watch of Permits that answers a PermitClient's waiters: one per Cluster, or one per namespace shared
by the PermitClients of many Clusters.

Why: a PermitClient learns every answer from a watch, never by polling.  An actor of one Cluster (the
machine operator, the controller-manager) watches its Cluster's Permits.  An actor of many Clusters — the
cluster operator asks for every Cluster it releases, thousands of them in one namespace — would hold one
watch stream per Cluster: thousands of long-lived connections, past any client's connection pool (the
streams beyond it wait for a free connection, and their actors for answers they cannot see).  A
:class:`PermitWatch` of the namespace lists and watches its Permits once and hands each Cluster's share to
its PermitClient; a PermitClient that attaches later is given its Cluster's share of the cache at once.

The list → watch → resume / re-list loop is the shared :class:`kokpit.runtime.informer.Informer`'s
(backoff, bookmarks, a re-list on 410 that tells each client only what changed).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from kokpit.api.machine import GROUP, VERSION
from kokpit.client import Kind
from kokpit.runtime.informer import Handlers, Informer, ListWatch

__all__ = ["CLUSTER_LABEL", "PERMIT", "PermitWatch", "Watched"]

Obj = dict[str, Any]
PERMIT = Kind(GROUP, VERSION, "Permit", "permits")
CLUSTER_LABEL = "kokpit.io/cluster"


class Watched(Protocol):
    """What a PermitWatch feeds: :class:`kokpit.runtime.permits.PermitClient`."""

    @property
    def namespace(self) -> str: ...

    @property
    def cluster(self) -> str: ...

    def listed(self, items: list[Obj]) -> None: ...

    def delivered(self, event_type: str, obj: Obj) -> None: ...


def _cluster(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(CLUSTER_LABEL) or "")


class PermitWatch:
    """The Permits of ``namespace`` labelled with a Cluster (with ``cluster``: that Cluster's only), watched
    once, dispatched by Cluster."""

    def __init__(self, client: ListWatch, namespace: str, *, cluster: str | None = None) -> None:
        self.namespace = namespace
        self._informer = Informer(client, PERMIT, namespace=namespace,
                                  label_selector=CLUSTER_LABEL if cluster is None else f"{CLUSTER_LABEL}={cluster}")
        self._informer.add_event_handler(Handlers(add=lambda o: self._changed("ADDED", o),
                                                  update=lambda _old, o: self._changed("MODIFIED", o),
                                                  delete=lambda o: self._changed("DELETED", o)))
        self._clients: dict[str, Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def attach(self, permits: Watched) -> None:
        """Feed ``permits`` (idempotent); starts the watch the first time."""
        if permits.namespace != self.namespace:
            raise ValueError(f"a PermitWatch of namespace {self.namespace} cannot feed permits of "
                             f"{permits.namespace}")
        if self._clients.get(permits.cluster) is not permits:
            self._clients[permits.cluster] = permits
            if self._informer.has_synced:
                permits.listed(self._share(permits.cluster))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"permit-watch-{self.namespace}")

    def detach(self, permits: Watched) -> None:
        if self._clients.get(permits.cluster) is permits:
            del self._clients[permits.cluster]

    def _share(self, cluster: str) -> list[Obj]:
        return self._informer.store.by_label(CLUSTER_LABEL, cluster)

    def _changed(self, event_type: str, obj: Obj) -> None:
        # the first list is handed over whole once it is complete (each client's cache is then ready); after
        # it, a re-list reaches here as the differences it found
        if self._informer.has_synced:
            pc = self._clients.get(_cluster(obj))
            if pc is not None:
                pc.delivered(event_type, obj)

    async def _run(self) -> None:
        informer = self._informer.start()
        try:
            await self._informer.wait_synced()
            for cluster, each in list(self._clients.items()):
                each.listed(self._share(cluster))
            await informer
        finally:
            await self._informer.stop()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
