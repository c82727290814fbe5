"""What each simulated host reports as a kubelet would: Node registration, Lease heartbeats and node status.

Only the reporting half of a kubelet, for thousands of hosts at once; nothing runs (pods on these hosts are
:mod:`kokpit.simulator._pods`).  Not :mod:`kokpit.kubelet`, the local kubelet that runs one Node's Pods as
processes (or, with ``--fake-runtime``, reports them Ready without processes).

Thousands of hosts share one process, so nothing here is per-node concurrency: a single scheduler heap
spreads Lease renewals evenly across the period (with kubelet's jitter) and hands due work to a small
worker pool; node status is posted like kubelet does — on change (readiness, installed versions) and
otherwise only every ``status_report_period`` — because the Lease is the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import random
import time
from typing import Any

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.clock import Clock, RealClock, format_micro_time, format_time
from kokpit.client import (
    LEASE,
    NODE,
    AlreadyExistsError,
    ApiError,
    Client,
    NotFoundError,
    TransportError,
)
from kokpit.runtime import ShutDownError, WorkQueue
from kokpit.simulator._hosts import Host, HostBook

__all__ = ["LEASE_NAMESPACE", "SIMULATED_LABEL", "NodeHeartbeats", "node_ip", "pod_cidr"]

log = logging.getLogger("kokpit.simulator.heartbeats")

LEASE_NAMESPACE = "kube-node-lease"
SIMULATED_LABEL = "kokpit.io/simulated"
DRIVER_ANNOTATION = "kokpit.io/simulator-driver"

# (instance type, cpu cores, memory GiB), picked per host from the seed
_INSTANCE_TYPES = (("sim.large", 2, 8), ("sim.xlarge", 4, 16), ("sim.2xlarge", 8, 32), ("sim.4xlarge", 16, 64))
_ZONES = ("sim-zone-a", "sim-zone-b", "sim-zone-c")
_KERNEL = "6.8.0-kokpit-sim"


def node_ip(index: int) -> str:
    """Fake InternalIP (data only, never contacted)."""
    return f"10.{64 + ((index >> 16) & 63)}.{(index >> 8) & 255}.{index & 255}"


def pod_cidr(index: int) -> str:
    return f"10.{128 + ((index >> 8) & 127)}.{index & 255}.0/24"


def _versioned(prefix: str, version: str) -> str:
    return f"{prefix}{version}" if version else ""


def _kubelet_version(v: str) -> str:
    return ("" if not v else v if v.startswith("v") else f"v{v}")


class NodeHeartbeats:
    """Registers and heartbeats every host of a :class:`HostBook` against the API server."""

    def __init__(
        self,
        client: Client,
        book: HostBook,
        *,
        seed: int = 0,
        lease_period: float = 10.0,
        lease_jitter: float = 0.04,
        status_report_period: float = 300.0,
        driver_url: str = "",
        workers: int = 32,
        status_coalesce: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.book = book
        self.seed = seed
        self.lease_period = lease_period
        self.lease_jitter = lease_jitter
        self.status_report_period = status_report_period
        self.lease_duration = max(1, round(lease_period * 4))  # kubelet: renew every 1/4 of the duration
        self.driver_url = driver_url
        self.workers = workers
        # changes within this many seconds share one status post (an operator installing four components
        # back to back: one write, not four — the server's write budget is the fleet's bottleneck)
        self.status_coalesce = status_coalesce
        self._clock: Clock = clock or RealClock()
        self._rng = random.Random(seed)
        self.uids: dict[str, str] = {}
        self._ready: dict[str, tuple[bool, str]] = {}  # node -> (ready, lastTransitionTime)
        self._posted: dict[str, tuple[Any, ...]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._jobs: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._status_q: WorkQueue[str] = WorkQueue("simulator-node-status")
        self._force: set[str] = set()
        self._frozen: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.registered = asyncio.Event()
        self.registration_seconds = 0.0
        self.lease_renewals = 0
        self.status_posts = 0
        self.errors = 0

    # ------------------------------------------------------------------ objects
    def _shape(self, host: Host) -> tuple[str, int, int, str]:
        rng = random.Random(f"{self.seed}/{host.name}")
        itype, cpu, mem = rng.choice(_INSTANCE_TYPES)
        return itype, cpu, mem, rng.choice(_ZONES)

    def node_ip(self, name: str) -> str:
        return node_ip(self.book.host(name).index)

    def _node_info(self, host: Host) -> dict[str, str]:
        digest = hashlib.sha256(f"{self.seed}/{host.name}".encode()).hexdigest()
        kernel = host.installed_version("kernel-patch")
        return {
            "machineID": digest[:32],
            "systemUUID": f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
            "bootID": digest[32:64],
            "kernelVersion": f"{_KERNEL}+{kernel}" if kernel else _KERNEL,
            "osImage": "Ubuntu 24.04 LTS (kokpit simulated)",
            "containerRuntimeVersion": _versioned("containerd://", host.installed_version("containerd")),
            "kubeletVersion": _kubelet_version(host.installed_version("kubelet")),
            "kubeProxyVersion": _kubelet_version(host.installed_version("kube-proxy")),
            "operatingSystem": "linux",
            "architecture": "amd64",
        }

    def _conditions(self, host: Host, now: str) -> list[dict[str, Any]]:
        ready, reason, message = host.readiness()
        prev = self._ready.get(host.name)
        if prev is None or prev[0] != ready:
            self._ready[host.name] = (ready, now)
        since = self._ready[host.name][1]
        created = host.created or now

        def cond(t: str, status: str, r: str, m: str, transition: str) -> dict[str, Any]:
            return {"type": t, "status": status, "reason": r, "message": m, "lastHeartbeatTime": now,
                    "lastTransitionTime": transition}

        return [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                 "kubelet has sufficient memory available", created),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", created),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available",
                 created),
            cond("NetworkUnavailable", "False", "RouteCreated", "simulated network is configured", created),
            cond("Ready", "True" if ready else "False", reason, message, since),
        ]

    def _status(self, host: Host, now: str) -> dict[str, Any]:
        return {"conditions": self._conditions(host, now), "nodeInfo": self._node_info(host)}

    def _fingerprint(self, host: Host) -> tuple[Any, ...]:
        info = self._node_info(host)
        return (host.readiness(), info["kubeletVersion"], info["containerRuntimeVersion"],
                info["kernelVersion"], info["kubeProxyVersion"])

    def node_object(self, host: Host, now: str) -> dict[str, Any]:
        itype, cpu, mem, zone = self._shape(host)
        mem_ki = mem * 1024 * 1024
        cidr = pod_cidr(host.index)
        status = self._status(host, now)
        status.update({
            "capacity": {"cpu": str(cpu), "memory": f"{mem_ki}Ki", "pods": "110",
                         "ephemeral-storage": "104857600Ki", "hugepages-2Mi": "0"},
            "allocatable": {"cpu": f"{cpu * 1000 - 100}m", "memory": f"{mem_ki - 512 * 1024}Ki", "pods": "110",
                            "ephemeral-storage": "94371840Ki", "hugepages-2Mi": "0"},
            "addresses": [{"type": "InternalIP", "address": node_ip(host.index)},
                          {"type": "Hostname", "address": host.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": host.name,
                "labels": {
                    "kubernetes.io/hostname": host.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": itype,
                    "topology.kubernetes.io/zone": zone,
                    SIMULATED_LABEL: "true",
                },
                "annotations": {DRIVER_ANNOTATION: self.driver_url} if self.driver_url else {},
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": f"kokpit-sim://{host.name}"},
            "status": status,
        }

    # ------------------------------------------------------------------ registration
    async def register(self, concurrency: int = 64) -> float:
        """Create (or adopt) every Node and Lease; returns the seconds it took."""
        t0 = time.monotonic()
        sem = asyncio.Semaphore(concurrency)

        async def one(host: Host) -> None:
            async with sem:
                for attempt in range(5):
                    try:
                        await self._register_one(host)
                        return
                    except (ApiError, TransportError) as e:
                        log.warning("registering %s failed (%s); attempt %d", host.name, e, attempt + 1)
                        await asyncio.sleep(0.2 * (attempt + 1))
                self.errors += 1

        await asyncio.gather(*(one(h) for h in self.book.hosts.values()))
        self.registration_seconds = time.monotonic() - t0
        self.registered.set()
        return self.registration_seconds

    async def _register_one(self, host: Host) -> None:
        now = format_time(self._clock.now())
        obj = self.node_object(host, now)
        fp = self._fingerprint(host)  # of what we post: the host may change while we await
        try:
            node = await self.client.create(NODE, obj)
            fresh = True
        except AlreadyExistsError:
            node = await self.client.get(NODE, host.name)
            fresh = False
            for c in (node.get("status") or {}).get("conditions") or []:
                if c.get("type") == "Ready" and c.get("lastTransitionTime"):  # keep the real transition time
                    self._ready[host.name] = (c.get("status") == "True", str(c["lastTransitionTime"]))
            obj = self.node_object(host, now)
            fp = self._fingerprint(host)
        self.uids[host.name] = str(node["metadata"].get("uid") or "")
        if not fresh or not (node.get("status") or {}).get("conditions"):
            await self.client.patch_status(NODE, host.name, {"status": obj["status"]}, patch_type="strategic")
        self._posted[host.name] = fp
        if not host.hung:
            try:
                await self.client.create(LEASE, self._lease(host.name), LEASE_NAMESPACE)
                self.lease_renewals += 1
            except AlreadyExistsError:
                await self._renew(host.name)

    def _lease(self, name: str) -> dict[str, Any]:
        owner = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.uids[name]}] \
            if self.uids.get(name) else []
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": self.lease_duration,
                         "renewTime": format_micro_time(self._clock.now())}}

    async def _renew(self, name: str) -> None:
        now = format_micro_time(self._clock.now())
        body = {"spec": {"renewTime": now, "holderIdentity": name, "leaseDurationSeconds": self.lease_duration}}
        try:
            await self.client.patch(LEASE, name, body, LEASE_NAMESPACE)
        except NotFoundError:
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(LEASE, self._lease(name), LEASE_NAMESPACE)
        self.lease_renewals += 1

    # ------------------------------------------------------------------ status
    def host_changed(self, name: str) -> None:
        """HostBook listener: something the Node reports may have changed (queued even during
        registration: the status workers start right after it, so no change is lost)."""
        host = self.book.hosts.get(name)
        if host is not None and host.hung:
            self._frozen.add(name)
        elif name in self._frozen:  # back from a silent hang: report fresh status whatever we posted before
            self._frozen.discard(name)
            self._force.add(name)
        if self.status_coalesce > 0:
            self._status_q.add_after(name, self.status_coalesce)
        else:
            self._status_q.add(name)

    def node_seen(self, node: dict[str, Any]) -> None:
        """Node informer handler: if someone else changed our Ready condition (a node lifecycle controller
        marking a silent node Unknown), post ours again — as kubelet does on its next status update."""
        name = str((node.get("metadata") or {}).get("name") or "")
        host = self.book.hosts.get(name)
        if host is None or host.hung or name not in self._posted:
            return
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and (c.get("status") == "True") != host.readiness()[0]:
                self._force.add(name)
                self._status_q.add(name)

    async def _post_status(self, name: str) -> None:
        host = self.book.hosts.get(name)
        if host is None or host.hung:
            return
        force = name in self._force
        self._force.discard(name)
        fp = self._fingerprint(host)
        if not force and self._posted.get(name) == fp:
            return
        status = self._status(host, format_time(self._clock.now()))
        try:
            await self.client.patch_status(NODE, name, {"status": status}, patch_type="strategic")
        except NotFoundError:  # someone deleted our Node: register again, as a restarted kubelet would
            await self._register_one(host)
        self._posted[name] = fp
        self.status_posts += 1

    async def _status_worker(self) -> None:
        while True:
            try:
                name = await self._status_q.get()
            except ShutDownError:
                return
            try:
                await self._post_status(name)
                self._status_q.forget(name)
            except (ApiError, TransportError) as e:
                self.errors += 1
                log.warning("posting status of %s failed: %s", name, e)
                self._status_q.add_rate_limited(name)
            finally:
                self._status_q.done(name)

    # ------------------------------------------------------------------ heartbeat scheduling
    def _push(self, due: float, kind: str, name: str) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), kind, name))

    def _next_lease(self) -> float:
        return self.lease_period * (1.0 + self._rng.random() * self.lease_jitter)

    async def _scheduler(self) -> None:
        tick = min(0.05, self.lease_period / 20)
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, _, kind, name = heapq.heappop(self._heap)
                self._jobs.put_nowait((kind, name))
            wait = (self._heap[0][0] - now) if self._heap else 1.0
            await asyncio.sleep(min(1.0, max(tick, wait)))

    async def _worker(self) -> None:
        while True:
            kind, name = await self._jobs.get()
            host = self.book.hosts.get(name)
            if host is None:
                continue
            try:
                if kind == "lease":
                    if not host.hung:
                        await self._renew(name)
                elif not host.hung:
                    self._force.add(name)
                    self._status_q.add(name)
            except (ApiError, TransportError) as e:
                self.errors += 1
                log.warning("%s renewal for %s failed: %s", kind, name, e)
            except Exception:
                self.errors += 1
                log.exception("%s renewal for %s failed", kind, name)
            finally:
                nxt = self._next_lease() if kind == "lease" else self.status_report_period
                self._push(time.monotonic() + nxt, kind, name)

    def start(self) -> None:
        """Begin heartbeats (after :meth:`register`), spreading first renewals evenly over the period."""
        now = time.monotonic()
        hosts = list(self.book.hosts)
        n = max(1, len(hosts))
        for i, name in enumerate(hosts):
            self._push(now + self.lease_period * (i + 0.5) / n, "lease", name)
            self._push(now + self.status_report_period * (i + 0.5) / n, "status", name)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._scheduler(), name="sim-heartbeats")]
        self._tasks += [loop.create_task(self._worker(), name=f"sim-heartbeat-{i}") for i in range(self.workers)]
        # status posts are latency-bound like renewals: with a fixed 8 they fell behind a busy server (a fleet-wide
        # kubelet swap waited on them, bench/fleet.py), so they scale with the heartbeat workers
        self._tasks += [loop.create_task(self._status_worker(), name=f"sim-status-{i}")
                        for i in range(max(8, self.workers))]
        for name in hosts:  # anything that changed while registering
            self._status_q.add(name)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._status_q.shutdown()
