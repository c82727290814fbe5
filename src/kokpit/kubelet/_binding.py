"""Binding: the local kubelet is its Node's scheduler in embedded mode — every pending Pod of the default
scheduler whose nodeSelector fits this Node's labels is bound to it (a ``pods/binding``), through a
rate-limited work queue so a failing bind is retried without spinning."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kokpit.client import POD, ApiError, Client, ConflictError, NotFoundError, TransportError
from kokpit.kubelet._options import Obj, meta, pod_key
from kokpit.runtime import Handlers, Informer, ShutDownError, WorkQueue, strip_managed_fields

__all__ = ["Binder"]

log = logging.getLogger("kokpit.kubelet")


class Binder:
    """Watches unscheduled Pods; ``worker()`` tasks bind those that fit to ``node``."""

    def __init__(self, client: Client, node: str, labels: Callable[[], dict[str, str]]) -> None:
        self.client = client
        self.node = node
        self.labels = labels
        self.pending = Informer(client, POD, field_selector="spec.nodeName=,spec.schedulerName=default-scheduler",
                                transform=strip_managed_fields)
        self.queue: WorkQueue[str] = WorkQueue("kubelet-bind")

    def start(self) -> None:
        self.pending.add_event_handler(Handlers(add=self._on_pending, update=lambda _o, n: self._on_pending(n)))
        self.pending.start()

    async def stop(self) -> None:
        await self.pending.stop()
        await self.queue.shutdown()

    def _on_pending(self, pod: Obj) -> None:
        if not meta(pod).get("deletionTimestamp"):
            self.queue.add(pod_key(pod))

    async def worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDownError:
                return
            try:
                pod = self.pending.store.get(key)
                if pod is not None and self._fits(pod):
                    ns, name = key.split("/", 1)
                    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
                    await self.client.create_subresource(POD, name, "binding", body, ns)
                self.queue.forget(key)
            except (NotFoundError, ConflictError):
                self.queue.forget(key)
            except (ApiError, TransportError) as e:
                log.warning("kubelet: binding %s failed: %s", key, e)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def _fits(self, pod: Obj) -> bool:
        """nodeSelector against this Node's labels (the only node in embedded mode)."""
        want = (pod.get("spec") or {}).get("nodeSelector") or {}
        labels = self.labels()
        return all(labels.get(k) == v for k, v in want.items())
