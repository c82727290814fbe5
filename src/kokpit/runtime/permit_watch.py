"""One watch of a namespace's Permits for the PermitClients of many Clusters.

Why: a PermitClient watches its own Cluster's Permits, which is right for an actor of one Cluster (the
machine operator, the controller-manager).  An actor of many Clusters — the cluster operator asks for every
Cluster it releases, thousands of them in one namespace — would hold one watch stream per Cluster: thousands
of long-lived connections, past any client's connection pool (the streams beyond it wait for a free
connection, and their actors for answers they cannot see).  :class:`PermitWatch` lists and watches the
namespace's Permits once and hands each Cluster's share to its PermitClient; a PermitClient that attaches
later is given the last list's view of its Cluster at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kokpit.client import ApiError, TransportError
from kokpit.runtime.permits import CLUSTER_LABEL, PERMIT, PermitApi, PermitClient

__all__ = ["PermitWatch"]

log = logging.getLogger("kokpit.runtime.permit_watch")

Obj = dict[str, Any]


def _cluster(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(CLUSTER_LABEL) or "")


class PermitWatch:
    """The Permits of ``namespace`` (those labelled with a Cluster), watched once, dispatched by Cluster."""

    def __init__(self, client: PermitApi, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._clients: dict[str, PermitClient] = {}
        self._known: dict[str, Obj] = {}  # name -> the latest of every permit: what a late attach starts from
        self._listed = False
        self._task: asyncio.Task[None] | None = None

    def attach(self, permits: PermitClient) -> None:
        """Feed ``permits`` (idempotent); starts the watch the first time."""
        if permits.namespace != self.namespace:
            raise ValueError(f"a PermitWatch of namespace {self.namespace} cannot feed permits of "
                             f"{permits.namespace}")
        if self._clients.get(permits.cluster) is not permits:
            self._clients[permits.cluster] = permits
            if self._listed:
                permits.listed([o for o in self._known.values() if _cluster(o) == permits.cluster])
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"permit-watch-{self.namespace}")

    def detach(self, permits: PermitClient) -> None:
        if self._clients.get(permits.cluster) is permits:
            del self._clients[permits.cluster]

    async def _run(self) -> None:
        while True:
            try:
                listed = await self.client.list(PERMIT, self.namespace, label_selector=CLUSTER_LABEL)
                self._known = {str(o["metadata"]["name"]): o for o in listed.items}
                self._listed = True
                by_cluster: dict[str, list[Obj]] = {}
                for o in listed.items:
                    by_cluster.setdefault(_cluster(o), []).append(o)
                for cluster, each in list(self._clients.items()):
                    each.listed(by_cluster.get(cluster, []))
                stream = self.client.watch(PERMIT, self.namespace, resource_version=listed.resource_version,
                                           label_selector=CLUSTER_LABEL, timeout_seconds=300)
                async with contextlib.aclosing(stream):
                    async for ev in stream:
                        name = str(ev.object["metadata"]["name"])
                        if ev.type in ("ADDED", "MODIFIED"):
                            self._known[name] = ev.object
                        elif ev.type == "DELETED":
                            self._known.pop(name, None)
                        pc = self._clients.get(_cluster(ev.object))
                        if pc is not None:
                            pc.delivered(ev.type, ev.object)
            except asyncio.CancelledError:
                raise
            except (ApiError, TransportError, OSError) as e:
                log.info("permit watch of namespace %s broke (%s); re-listing", self.namespace, e)
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._listed = False
