"""The local kubelet's Node: registration with labels, capacity and conditions, the status posted every
``node_status_interval`` (re-registering a deleted Node), and the Lease in ``kube-node-lease`` renewed every
``lease_renew_interval`` — the heartbeat the node lifecycle controller watches."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path

from kokpit._lib.clock import format_micro_time
from kokpit.client import LEASE, NODE, AlreadyExistsError, ApiError, Client, NotFoundError, TransportError
from kokpit.kubelet._options import KubeletOptions, Obj, meta, now_text

__all__ = ["KUBELET_VERSION", "LEASE_NAMESPACE", "NodeReporter"]

log = logging.getLogger("kokpit.kubelet")

LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.37.0-kokpit"


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 8 * 1024 * 1024



class NodeReporter:
    """Registers the Node and keeps its status and Lease fresh (``heartbeat_loop``, ``status_loop``)."""

    def __init__(self, client: Client, opts: KubeletOptions, log_port: Callable[[], int]) -> None:
        self.client = client
        self.opts = opts
        self.node = opts.node_name
        self.log_port = log_port  # published as daemonEndpoints.kubeletEndpoint: where pods/log asks
        self._started = now_text()

    def labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                  platform.machine()),
                "kokpit.io/embedded": "true"}

    def _status(self) -> Obj:
        now = now_text()
        mem = f"{_memory_kib()}Ki"
        cpu = str(os.cpu_count() or 1)
        resources = {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "100Gi"}

        def cond(t: str, ok: bool, reason: str, message: str) -> Obj:
            return {"type": t, "status": "True" if ok else "False", "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": self._started}

        return {
            "capacity": resources, "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                cond("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", True, "KubeletReady", "kokpit local kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.opts.address},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port()}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                         "osImage": f"kokpit embedded ({platform.system()})",
                         "containerRuntimeVersion": "kokpit-process://1",
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": self.labels()["kubernetes.io/arch"]},
        }

    async def register(self) -> None:
        self._started = now_text()
        node = {"metadata": {"name": self.node, "labels": self.labels()}, "spec": {}}
        try:
            await self.client.create(NODE, node)
        except AlreadyExistsError:
            await self.client.patch(NODE, self.node, {"metadata": {"labels": self.labels()}})
        await self.client.patch_status(NODE, self.node, {"status": self._status()})
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        now = format_micro_time(dt.datetime.now(dt.UTC))
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": self.opts.lease_duration, "renewTime": now}
        try:
            await self.client.patch(LEASE, self.node, {"spec": spec}, LEASE_NAMESPACE)
        except NotFoundError:
            lease = {"metadata": {"name": self.node, "namespace": LEASE_NAMESPACE,
                                  "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node,
                                                       "uid": await self._node_uid()}]},
                     "spec": {**spec, "acquireTime": now}}
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(LEASE, lease, LEASE_NAMESPACE)

    async def _node_uid(self) -> str:
        return str(meta(await self.client.get(NODE, self.node)).get("uid"))

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.lease_renew_interval)
            try:
                await self._renew_lease()
            except (ApiError, TransportError) as e:
                log.warning("kubelet: lease renewal failed: %s", e)

    async def status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.node_status_interval)
            try:
                try:
                    await self.client.patch_status(NODE, self.node, {"status": self._status()})
                except NotFoundError:
                    await self.register()
            except (ApiError, TransportError) as e:
                log.warning("kubelet: node status update failed: %s", e)
