"""Deleting a Cluster: its Pods, Service, Secrets and port records go, then (``deletionPolicy: Delete``) its
data on every node that held it, and only then the finalizer.

A Delete that silently left data behind would be worse than a deletion that waits and says why, so the
finalizer stays until a cleanup Pod succeeded on each node in ``status.dataNodes`` (Ready=False, reason
RemovingData, names what it waits for); a node that no longer exists is skipped (its folders went with it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kokpit.api.cluster import ClusterConditionType, ClusterReason, DeletionPolicy
from kokpit.client import NODE, POD, SECRET, AlreadyExistsError, Kind, NotFoundError, ObjectClient
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import COMPONENT_LABEL, DATA_CLEANUP_COMPONENT, Names, cleanup_pod
from kokpit.operators.cluster._resources import SERVICE, PortAllocator, Resources
from kokpit.runtime import (
    EventRecorder,
    PatchHelper,
    Result,
    find_condition,
    has_finalizer,
    reconcile_view,
    remove_finalizer,
    set_object_condition,
    stamp_phase,
)

__all__ = ["Teardown"]

log = logging.getLogger("kokpit.operators.cluster")

Obj = dict[str, Any]
CT = ClusterConditionType
R = ClusterReason


class Teardown:
    """The deletion of one Cluster, step by step, each safe to repeat."""

    def __init__(self, client: ObjectClient, kind: Kind, finalizer: str, *, resources: Resources,
                 ports: PortAllocator, recorder: EventRecorder, opts: OperatorOptions, clock: Any) -> None:
        self.client, self.kind, self.finalizer = client, kind, finalizer
        self.resources, self.ports, self.recorder, self.opts, self.clock = resources, ports, recorder, opts, clock

    async def run(self, raw: Obj, names: Names) -> Result | None:
        if not has_finalizer(raw, self.finalizer):
            return None
        retain = (raw.get("spec") or {}).get("deletionPolicy") == DeletionPolicy.RETAIN.value
        owned = self.resources.owned_pods(names)
        cleaners = {str(p["metadata"]["name"]): p for p in owned
                    if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == DATA_CLEANUP_COMPONENT}
        left = await self._control_plane_pods_are_gone(names, owned, cleaners)
        await self._service_and_secrets_are_gone(names, retain)
        if left:  # the data dir is in use until the API server Pod is gone
            return Result(requeue_after=self.opts.poll)
        if not retain:
            waiting = await self._data_is_removed(raw, names, cleaners)
            if waiting:
                await self._say_deleting(raw, waiting)
                return Result(requeue_after=self.opts.poll)
        for name in cleaners:
            await self._delete_pod(names, name)
        await self.ports.release(f"{names.namespace}/{names.cluster}")
        await self.ports.release(f"{names.namespace}/{names.cluster}#etcd")  # the Upstream flavor's etcd members
        await remove_finalizer(self.client, self.kind, raw, self.finalizer)
        log.info("cluster %s/%s deleted (%s)", names.namespace, names.cluster,
                 "PKI Secret and data retained" if retain else "everything removed")
        return None

    async def _control_plane_pods_are_gone(self, names: Names, owned: list[Obj], cleaners: dict[str, Obj]) -> int:
        """Deletes every Pod but the cleanup ones; returns how many are still there."""
        left = 0
        for p in owned:
            if p["metadata"]["name"] in cleaners:
                continue
            left += 1
            if not p["metadata"].get("deletionTimestamp"):
                await self._delete_pod(names, p["metadata"]["name"])
        return left

    async def _service_and_secrets_are_gone(self, names: Names, retain: bool) -> None:
        with contextlib.suppress(NotFoundError):
            if self.resources.services.get_by_name(names.service, names.namespace) is not None:
                await self.client.delete(SERVICE, names.service, names.namespace)
        secrets = [names.kubeconfig_secret] + ([] if retain else [names.pki_secret])
        self.resources.forget_pki(names)
        for s in secrets:
            with contextlib.suppress(NotFoundError):
                if self.resources.secrets.get_by_name(s, names.namespace) is not None:
                    await self.client.delete(SECRET, s, names.namespace)

    async def _data_is_removed(self, raw: Obj, names: Names, cleaners: dict[str, Obj]) -> str:
        """Run the cleanup Pods; '' once every node's folder is gone, else what is still awaited."""
        nodes = sorted(set((raw.get("status") or {}).get("dataNodes") or []))
        waiting = []
        for i, node in enumerate(nodes):
            pod_name = names.cleanup_pod(i)
            cur = cleaners.get(pod_name)
            phase = ((cur or {}).get("status") or {}).get("phase")
            if phase == "Succeeded":
                continue
            if phase in (None, "Pending") and not await self._node_exists(node):
                # the node is gone, and its folders with it: nothing left to remove (and nothing would run it)
                if cur is not None:
                    await self._delete_pod(names, pod_name)
                await self.recorder.event(raw, "Normal", "RemovingData",
                                          f"node {node} no longer exists; no data left to remove there")
                continue
            if cur is None:
                try:
                    await self.client.create(POD, cleanup_pod(names, i, node, self.opts.tools_image,
                                                              self.opts.data_root, raw), names.namespace)
                    await self.recorder.event(raw, "Normal", "RemovingData",
                                              f"removing the cluster's data on node {node} ({pod_name})")
                except AlreadyExistsError:
                    pass
                waiting.append(f"{pod_name} on {node}: starting")
            elif phase == "Failed" and not cur["metadata"].get("deletionTimestamp"):
                await self._delete_pod(names, pod_name)  # recreated on the next pass
                waiting.append(f"{pod_name} on {node}: failed, retrying")
            else:
                why = ""
                for c in ((cur.get("status") or {}).get("containerStatuses") or []):
                    w = (c.get("state") or {}).get("waiting") or {}
                    if w.get("reason"):
                        why = f" ({w['reason']}{': ' + w['message'] if w.get('message') else ''})"
                waiting.append(f"{pod_name} on {node}: {phase or 'Pending'}{why}")
        return "; ".join(waiting)

    async def _node_exists(self, node: str) -> bool:
        try:
            await self.client.get(NODE, node)
        except NotFoundError:
            return False
        return True

    async def _say_deleting(self, raw: Obj, waiting: str) -> None:
        """Why the deletion waits, on the Cluster (only when it changed: the cache has the last status)."""
        message = f"deletionPolicy Delete: removing data ({waiting})"
        cur = find_condition((raw.get("status") or {}).get("conditions"), CT.READY) or {}
        if cur.get("reason") == R.REMOVING_DATA and cur.get("message") == message:
            return
        helper = PatchHelper(self.client, self.kind, reconcile_view(raw, self.kind))
        set_object_condition(helper.obj, CT.READY, False, R.REMOVING_DATA, message, now=self.clock.now())
        stamp_phase(helper.obj, "Deleting")
        with contextlib.suppress(NotFoundError):
            await helper.patch()

    async def _delete_pod(self, names: Names, pod: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.client.delete(POD, pod, names.namespace)
