"""The local kubelet: one Node in the meta cluster whose Pods are local ``kokpit`` processes (embedded mode).

The cluster operator manages a business cluster's control plane as plain Pods, the same way on a real meta
cluster and on a laptop; on a laptop this kubelet is what runs them.  :class:`Kubelet` composes the parts,
each in its module:

- :mod:`~kokpit.kubelet._node` — the Node: registration, status, the Lease heartbeat;
- :mod:`~kokpit.kubelet._binding` — binding pending Pods whose nodeSelector fits this Node;
- :mod:`~kokpit.kubelet._worker` — one worker per Pod holding its processes at the spec (restart policy,
  CrashLoopBackOff, graceful deletion), with :mod:`~kokpit.kubelet._volumes` (volumes, env, command line),
  :mod:`~kokpit.kubelet._probes` and :mod:`~kokpit.kubelet._podstatus`;
- :mod:`~kokpit.kubelet._procs` — processes and the state file through which a restarted kubelet adopts what
  it started; :mod:`~kokpit.kubelet._http` — the containerLogs endpoint behind ``pods/log``;
- :mod:`~kokpit.kubelet._fakeruntime` — ``--fake-runtime``: start nothing, report Pods Running/Ready.

Supported: init containers, restartPolicy Always/OnFailure/Never, CrashLoopBackOff (10 s doubling to 5 min,
reset after 10 min of running), startup/liveness/readiness probes (httpGet, tcpSocket, exec), graceful
deletion (SIGTERM to the process group, grace period, SIGKILL, then delete with grace 0), binding of pending
Pods whose nodeSelector fits.  Not supported: lifecycle hooks, gRPC probes, resource limits, changing a
running Pod's image, ephemeral containers, log timestamps and ``sinceSeconds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.metricsserver import MetricsServer
from kokpit.client import POD, Client
from kokpit.kubelet._binding import Binder
from kokpit.kubelet._containers import Container
from kokpit.kubelet._fakeruntime import FakeRuntime
from kokpit.kubelet._http import LogRequest, LogServer, LogSource
from kokpit.kubelet._node import NodeReporter
from kokpit.kubelet._options import KubeletOptions, Obj, meta, now_text, pod_key
from kokpit.kubelet._procs import ContainerRecord, PodRecord, ProcessHandle, StateFile, wait_ended
from kokpit.kubelet._projected import TokenCache
from kokpit.kubelet._spec import pod_dir_name
from kokpit.kubelet._worker import PodWorker
from kokpit.runtime import EventRecorder, Handlers, Informer, strip_managed_fields
from kokpit.runtime.metricsauth import DelegatedMetricsAuth

__all__ = ["Kubelet", "KubeletOptions", "cluster_ca", "run_kubelet"]

log = logging.getLogger("kokpit.kubelet")


class Kubelet:
    """Registers the Node and runs its Pods; ``run()`` until cancelled, then ``close()``."""

    def __init__(self, client: Client, opts: KubeletOptions) -> None:
        self.client = client
        self.opts = opts
        self.opts.data_dir = Path(opts.data_dir).resolve()
        self.node = opts.node_name
        self.state = StateFile(self.opts.data_dir / "kubelet-state.json")
        self.records: dict[str, PodRecord] = {}
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self.log_server = LogServer(self._log_lookup, host=opts.address, port=opts.log_port,
                                    client_ca_pem=opts.client_ca_pem or cluster_ca(client),
                                    authorize=DelegatedMetricsAuth(client, resource={
                                        "verb": "get", "resource": "nodes", "subresource": "proxy",
                                        "name": opts.node_name}))
        self.pods = Informer(client, POD, field_selector=f"spec.nodeName={self.node}",
                             transform=strip_managed_fields)
        self.node_reporter = NodeReporter(client, self.opts, lambda: self.log_server.port)
        self.binder = Binder(client, self.node, self.node_reporter.labels)
        self.tokens = TokenCache()  # ServiceAccount tokens of the Pods' projected volumes
        self.recorder = EventRecorder(client, "kubelet", host=self.node)  # Events on its Pods, as kubelet's
        self.fake_runtime = FakeRuntime(client, self.pods, opts.address) if opts.fake_runtime else None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ready = asyncio.Event()
        self.metrics: MetricsServer | None = None

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    # -------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Register, adopt, serve; returns only when cancelled (processes keep running unless ``close``
        is asked to end them)."""
        self.opts.data_dir.mkdir(parents=True, exist_ok=True)
        (self.opts.data_dir / "pods").mkdir(exist_ok=True)
        fake = self.fake_runtime
        if self.opts.metrics_port is not None:
            self.client.metrics.registry.register(_PodsCollector(self))
            self.metrics = MetricsServer(self.client.metrics.registry, host=self.opts.metrics_host,
                                         port=self.opts.metrics_port, tokens=self.opts.metrics_tokens,
                                         ready=self._ready.is_set, authorize=None if self.opts.metrics_tokens
                                         else DelegatedMetricsAuth(self.client))  # as kubelet's webhook authz
            await self.metrics.start()
        if fake is None:
            await self.log_server.start()
            self.records = self.state.load()
        await self.node_reporter.register()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.node_reporter.heartbeat_loop(), name="kubelet-lease"))
        self._tasks.append(loop.create_task(self.node_reporter.status_loop(), name="kubelet-node-status"))
        self.pods.add_event_handler(Handlers(add=self._on_pod, update=lambda _o, n: self._on_pod(n),
                                             delete=self._on_pod_deleted))
        self.pods.start()
        if self.opts.bind_pending:
            self.binder.start()
            workers = max(self.opts.bind_workers, self.opts.fake_runtime_workers if fake is not None else 1)
            for i in range(workers):
                self._tasks.append(loop.create_task(self.binder.worker(), name=f"kubelet-bind-{i}"))
        if fake is not None:
            for i in range(self.opts.fake_runtime_workers):
                self._tasks.append(loop.create_task(fake.worker(), name=f"kubelet-fake-runtime-{i}"))
        await self.pods.wait_synced()
        if fake is None:
            await self._end_orphans()
        self._ready.set()
        log.info("kubelet: node %s ready (logs on %s:%d, %d pods)", self.node, self.opts.address,
                 self.log_server.port, len(self.pods.store))
        await asyncio.Event().wait()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def close(self, *, stop_pods: bool = False) -> None:
        """Stop watching and serving. Pods' processes keep running for the next kubelet to adopt, unless
        ``stop_pods`` (then they end gracefully, like a node drain without the API)."""
        await self.pods.stop()
        await self.binder.stop()
        if self.fake_runtime is not None:
            await self.fake_runtime.queue.shutdown()
        # cancel_and_wait: a cancellation swallowed by wait_for (Python 3.11) would hang a plain await
        await cancel_and_wait([*self._tasks, *(w.task for w in self.workers.values() if w.task is not None)])
        if stop_pods:  # all at once: one slow Pod's grace period must not add up with the next one's
            async def stop(w: PodWorker) -> None:
                grace = float((w.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 0)
                await w._stop_all(min(grace, self.opts.orphan_grace), "kubelet stopped")
                self.forget_pod(w.uid)

            await asyncio.gather(*(stop(w) for w in list(self.workers.values())))
        await self.log_server.stop()
        if self.metrics is not None:
            await self.metrics.stop()

    # -------------------------------------------------------------- process records
    def remember_process(self, w: PodWorker, c: Container) -> None:
        if c.handle is None or c.handle.start_time is None:
            return
        rec = self.records.setdefault(w.uid, PodRecord(w.namespace, w.name, w.uid))
        rec.containers[c.name] = ContainerRecord(c.handle.pid, c.handle.start_time, c.started_at or now_text(),
                                                 c.restart_count)
        self.state.save(self.records)

    def forget_process(self, uid: str, container: str) -> None:
        rec = self.records.get(uid)
        if rec is not None and rec.containers.pop(container, None) is not None:
            self.state.save(self.records)

    def forget_pod(self, uid: str) -> None:
        self.workers.pop(uid, None)
        if self.records.pop(uid, None) is not None:
            self.state.save(self.records)

    async def _end_orphans(self) -> None:
        """Processes recorded for Pods that are gone: end them (SIGTERM, then SIGKILL) and drop their dirs."""
        live = {str(meta(p).get("uid")) for p in self.pods.store.list()}
        for uid, rec in list(self.records.items()):
            if uid in live:
                continue
            handles = [h for c in rec.containers.values() if (h := ProcessHandle.adopt(c.pid, c.start_time))]
            for h in handles:
                h.terminate()
            if not await wait_ended(handles, self.opts.orphan_grace):
                for h in handles:
                    h.kill()
                await wait_ended(handles, 2.0)
            log.info("kubelet: ended %d processes of vanished pod %s/%s", len(handles), rec.namespace, rec.name)
            self.records.pop(uid, None)
            shutil.rmtree(self.opts.data_dir / "pods" / pod_dir_name(rec.namespace, rec.name, uid),
                          ignore_errors=True)
        self.state.save(self.records)
        for d in (self.opts.data_dir / "pods").iterdir():
            if d.is_dir() and d.name.rsplit("_", 1)[-1] not in live:
                shutil.rmtree(d, ignore_errors=True)

    # -------------------------------------------------------------- pod events
    def _on_pod(self, pod: Obj) -> None:
        if self.fake_runtime is not None:
            self.fake_runtime.queue.add(pod_key(pod))
            return
        uid = str(meta(pod).get("uid"))
        w = self.workers.get(uid)
        if w is None:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and uid not in self.records and not meta(pod).get(
                    "deletionTimestamp"):
                return  # finished before this kubelet started: nothing to run
            w = PodWorker(self, pod, self.records.get(uid))
            self.workers[uid] = w
            w.task = asyncio.get_running_loop().create_task(w.run(), name=f"pod {pod_key(pod)}")
        else:
            w.pod = pod
        w.wake.set()

    def _on_pod_deleted(self, pod: Obj) -> None:
        if self.fake_runtime is not None:
            return
        w = self.workers.get(str(meta(pod).get("uid")))
        if w is not None:
            w.gone = True
            w.wake.set()

    # -------------------------------------------------------------- logs
    def _log_lookup(self, req: LogRequest) -> LogSource:
        for w in list(self.workers.values()):
            if w.namespace == req.namespace and w.name == req.pod:
                return w.log_source(req)
        raise LookupError(f'pod "{req.pod}" in namespace "{req.namespace}" is not running on node {self.node}')


def cluster_ca(client: Client) -> bytes | None:
    """The CA of the kubelet's kubeconfig (or in-cluster config): the cluster CA, which signs the API
    server's kubelet client certificate — kubeadm points kubelet's --client-ca-file at the same file."""
    cluster = client.config.cluster
    with contextlib.suppress(ValueError, OSError):
        if cluster.certificate_auth_data:
            return base64.b64decode(cluster.certificate_auth_data)
        if cluster.certificate_auth:
            return Path(cluster.certificate_auth).read_bytes()
    return None


class _PodsCollector(Collector):
    """The kubelet's own figures next to its API client's: Pods it runs, and their containers' restarts."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet

    def collect(self) -> Iterator[Metric]:
        workers = list(self.kubelet.workers.values())
        yield GaugeMetricFamily("kokpit_kubelet_pods", "Pods this kubelet runs", value=float(len(workers)))
        restarts = sum(c.restart_count for w in workers for c in w.containers)
        yield GaugeMetricFamily("kokpit_kubelet_container_restarts", "Container restarts of those Pods",
                                value=float(restarts))


async def run_kubelet(kubeconfig: str | os.PathLike[str] | None, opts: KubeletOptions, *,
                      stop_pods_on_exit: bool = False) -> None:
    """The ``kokpit kubelet`` process: run until SIGINT/SIGTERM, then close (leaving Pods' processes
    running for the next kubelet to adopt, unless ``stop_pods_on_exit``)."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-kubelet")
    kubelet = Kubelet(client, opts)
    loop = asyncio.get_running_loop()
    main = loop.create_task(kubelet.run(), name="kubelet")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await main
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await kubelet.close(stop_pods=stop_pods_on_exit)
        await client.close()
