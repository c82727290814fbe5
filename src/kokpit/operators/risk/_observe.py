"""What the risk center sees of each business cluster: its Nodes (labels, Ready, cordoned) and a client.

``maxUnavailable`` and percentages need the nodes of every cluster in scope, and the built-in prober needs to
create Pods there, so the risk center keeps one slim Node informer per business cluster, reached through the
cluster's ``<name>-kubeconfig`` Secret in the meta cluster (as every kokpit tool reaches a business cluster).
A cluster whose nodes are not observed yet reports ``None``: limits that need them then deny (never guess).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kokpit.client import NODE, SECRET, ApiError, Client, NotFoundError, TransportError
from kokpit.operators.risk._decide import NodeInfo
from kokpit.runtime import Handlers, Informer, is_true

__all__ = ["KUBECONFIG_KEY", "ClusterObserver"]

log = logging.getLogger("kokpit.operators.risk.observe")

Obj = dict[str, Any]
KUBECONFIG_KEY = "value"


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
        self._dir = tempfile.mkdtemp(prefix="kokpit-risk-")  # 0700: the business kubeconfigs hold tokens

    async def sync(self, keys: set[str]) -> None:
        """Observe exactly the clusters ``keys`` (namespace/name)."""
        for key in list(self._clusters):
            if key not in keys:
                await self._stop(key)
        for key in keys:
            ns, name = key.split("/", 1)
            try:
                secret = await self.meta.get(SECRET, f"{name}-kubeconfig", ns)
            except NotFoundError:
                continue
            except (ApiError, TransportError) as e:
                log.info("cannot read the kubeconfig of %s: %s", key, e)
                continue
            raw = (secret.get("data") or {}).get(KUBECONFIG_KEY)
            if not raw:
                continue
            digest = hashlib.sha256(raw.encode()).hexdigest()
            cur = self._clusters.get(key)
            if cur is not None and cur.digest == digest:
                continue
            if cur is not None:
                await self._stop(key)
            path = os.path.join(self._dir, f"{ns}.{name}.kubeconfig")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64decode(raw))
                client = Client.from_kubeconfig(path, field_manager="kokpit-risk-center", timeout=self.timeout,
                                                max_retries=1)
            except Exception as e:  # a broken Secret must not stop the others
                log.warning("kubeconfig of %s does not load: %s", key, e)
                continue
            inf = Informer(client, NODE, transform=_slim_node)
            inf.add_event_handler(Handlers(add=self._changed, update=lambda _a, b: self._changed(b),
                                           delete=self._changed))
            inf.start()
            self._clusters[key] = _Business(digest, client, inf)

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
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
