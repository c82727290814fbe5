"""The local kubelet's pod worker: one task per Pod that holds its processes at the Pod's spec.

Each pass (on a Pod event, or every ``sync_interval``): reap exited processes, prepare volumes once, run
init containers in order, then keep the main containers running — restart policy with CrashLoopBackOff
(10 s doubling to 5 min, reset after 10 min of running), probes — and write the status back when it
changed, then the Events of the pass, with kubelet's reasons: Warning ``BackOff`` when a container is
restarted with back-off, ``Unhealthy`` for each failed probe, ``Failed`` when a container cannot be
started (a non-kokpit image, a missing Secret, a command that cannot run — once per distinct error), and
Normal ``Killing`` before a restart a probe asked for.  A deleted Pod's processes get SIGTERM, its grace period, then SIGKILL, and the worker confirms the
deletion (grace 0).  A worker built for a Pod whose processes a previous kubelet started adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kokpit.client import POD, ApiError, ConflictError, NotFoundError, TransportError
from kokpit.kubelet._containers import Container
from kokpit.kubelet._http import LogRequest, LogSource
from kokpit.kubelet._options import Obj, meta, now_text
from kokpit.kubelet._podstatus import PodStatus
from kokpit.kubelet._probes import Prober, run_due_probes
from kokpit.kubelet._procs import PodRecord, ProcessHandle, wait_ended
from kokpit.kubelet._spec import ContainerConfigError, crash_backoff, pod_dir_name
from kokpit.kubelet._volumes import PodSetup

if TYPE_CHECKING:
    from kokpit.kubelet._kubelet import Kubelet

__all__ = ["PodWorker"]

log = logging.getLogger("kokpit.kubelet")


class PodWorker:
    """Holds one Pod's processes at its spec until the Pod is deleted (then ends them and confirms)."""

    def __init__(self, kubelet: Kubelet, pod: Obj, adopted: PodRecord | None) -> None:
        self.k = kubelet
        self.pod = pod
        m = meta(pod)
        self.namespace = str(m.get("namespace"))
        self.name = str(m.get("name"))
        self.uid = str(m.get("uid"))
        self.dir = kubelet.opts.data_dir / "pods" / pod_dir_name(self.namespace, self.name, self.uid)
        self.gone = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.start_time: str | None = (pod.get("status") or {}).get("startTime")
        self._written: Obj | None = None
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message), recorded after the pass
        self.pod_status = PodStatus(pod.get("status"), kubelet.opts.address)
        self.setup = PodSetup(kubelet.client, kubelet.opts, self.dir, lambda: self.pod, kubelet.tokens)
        self.prober = Prober(self.setup, kubelet.opts.python)
        self._volumes_ready = False
        spec = pod.get("spec") or {}
        self.policy = str(spec.get("restartPolicy") or "Always")
        statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        istatuses = {s.get("name"): s for s in (pod.get("status") or {}).get("initContainerStatuses") or []}
        self.init_containers = [Container(c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [Container(c) for c in spec.get("containers") or []]
        now = kubelet.loop_time()
        for c in self.init_containers + self.containers:
            self._restore(c, (istatuses if c.init else statuses).get(c.name), adopted, now)

    # -------------------------------------------------------------- adoption
    def _restore(self, c: Container, status: Obj | None, adopted: PodRecord | None, now: float) -> None:
        status = status or {}
        c.restart_count = int(status.get("restartCount") or 0)
        rec = adopted.containers.get(c.name) if adopted else None
        if rec is not None:
            c.restart_count = max(c.restart_count, rec.restart_count)
            h = ProcessHandle.adopt(rec.pid, rec.start_time)
            if h is not None:
                c.handle, c.started_at, c.waiting = h, rec.started_at, None
                c.started_mono = now
                c.reset_probes(now)
                # an adopted container keeps its probe verdicts from the API until re-probed
                if status.get("ready"):
                    for kind in ("startupProbe", "readinessProbe"):
                        if kind in c.probes:
                            c.probes[kind].ok = True
                log.info("%s/%s: adopted container %s (pid %d)", self.namespace, self.name, c.name, h.pid)
                return
            self._exited(c, 255, now, rec.started_at, "process ended while the kubelet was down")
            return
        state = status.get("state") or {}
        if "terminated" in state:
            term = state["terminated"]
            self._exited(c, int(term.get("exitCode") or 0), now, term.get("startedAt"), None, term)
        elif "running" in state:
            self._exited(c, 255, now, state["running"].get("startedAt"), "process ended while the kubelet was down")

    # -------------------------------------------------------------- main loop
    async def run(self) -> None:
        while True:
            try:
                if self.gone:
                    spec = self.pod.get("spec") or {}
                    grace = float(spec.get("terminationGracePeriodSeconds") or 0)
                    await self._stop_all(min(grace, self.k.opts.orphan_grace), "pod removed from the API")
                    self._cleanup()
                    return
                if meta(self.pod).get("deletionTimestamp"):
                    await self._terminate_and_confirm()
                    return
                await self._sync()
                await self._write_status()
            except (ApiError, TransportError) as e:
                log.warning("%s/%s: sync failed: %s", self.namespace, self.name, e)
            except Exception:  # a bug must not orphan the pod's processes: log and keep holding them
                log.exception("%s/%s: pod worker failed", self.namespace, self.name)
            if self.events:
                await self._record_events()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.k.opts.sync_interval)

    async def _sync(self) -> None:
        now = self.k.loop_time()
        for c in self.init_containers + self.containers:
            self._reap(c, now)
        if not self._volumes_ready:
            self._prepare_volumes()
            self._volumes_ready = True
        else:
            await self.setup.refresh_tokens(self.uid)
        pending_init = next((c for c in self.init_containers if not (c.done and c.terminated
                                                                      and c.terminated.get("exitCode") == 0)), None)
        if pending_init is not None:
            if not pending_init.done:
                await self._ensure_started(pending_init, now)
            return
        for c in self.containers:
            if c.done:
                continue
            if c.handle is None:
                await self._ensure_started(c, now)
            else:
                if c.crashes and now - c.started_mono >= self.k.opts.backoff_reset:
                    c.crashes = 0
                await self._probe(c, now)

    def _reap(self, c: Container, now: float) -> None:
        if c.handle is None:
            return
        code = c.handle.poll()
        if code is None:
            return
        pid = c.handle.pid
        c.handle = None
        self._exited(c, code, now, c.started_at, c.killing_reason)
        c.killing_reason = None
        self.k.forget_process(self.uid, c.name)
        log.info("%s/%s: container %s (pid %d) exited with %d", self.namespace, self.name, c.name, pid, code)

    def _exited(self, c: Container, code: int, now: float, started_at: str | None, message: str | None,
                term: Obj | None = None) -> None:
        if term is None:
            exit_code = code if code >= 0 else 128 - code
            term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": started_at, "finishedAt": now_text()}
            if message:
                term["message"] = message
        exit_code = int(term.get("exitCode") or 0)
        restart = (self.policy == "Always" and not c.init) or (self.policy != "Never" and exit_code != 0)
        c.probes = {}
        if restart:
            c.last_terminated = term
            c.terminated = term
            delay = crash_backoff(c.crashes, self.k.opts.backoff_base, self.k.opts.backoff_cap)
            c.crashes += 1
            c.next_start = now + delay
            c.waiting = ("CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={c.name} "
                                             f"pod={self.name}_{self.namespace}({self.uid})")
            self._event("Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod "
                                              f"{self.name}_{self.namespace}({self.uid})")
        else:
            c.terminated = term
            c.waiting = None
            c.done = True

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def _record_events(self) -> None:
        """Best effort (the recorder never raises), aggregated by the recorder into counts."""
        events, self.events = self.events, []
        pod = {**self.pod, "apiVersion": "v1", "kind": "Pod"}  # an informer's list items carry no kind
        for type_, reason, message in events:
            await self.k.recorder.event(pod, type_, reason, message)

    def _cannot_start(self, c: Container, reason: str, message: str, now: float) -> None:
        """Waiting with ``reason``, retried in 2 s; a Warning ``Failed`` the first time this error is seen."""
        if c.waiting != (reason, message):
            self._event("Warning", "Failed", f"Error: {reason}: {message}")
        c.waiting = (reason, message)
        c.next_start = now + 2.0

    async def _ensure_started(self, c: Container, now: float) -> None:
        if c.handle is not None or now < c.next_start:
            return
        try:
            if self.setup.error is not None:
                raise self.setup.error
            argv, env, cwd = await self._command(c)
        except ContainerConfigError as e:
            self._cannot_start(c, e.reason, e.message, now)
            return
        except (ApiError, TransportError) as e:
            self._cannot_start(c, "CreateContainerConfigError", str(e), now)
            return
        log_path = self.dir / f"{c.name}.log"
        if c.terminated is not None and log_path.exists():
            os.replace(log_path, self.dir / f"{c.name}.previous.log")
        if c.terminated is not None:
            c.restart_count += 1
        try:
            c.handle = ProcessHandle.spawn(argv, env=env, cwd=cwd, log_path=log_path)
        except OSError as e:
            self._cannot_start(c, "RunContainerError", str(e), now)
            return
        c.started_at = now_text()
        c.started_mono = now
        c.waiting = None
        c.reset_probes(now)
        self.start_time = self.start_time or c.started_at
        self.k.remember_process(self, c)
        log.info("%s/%s: started container %s (pid %d): %s", self.namespace, self.name, c.name,
                 c.handle.pid, " ".join(argv[3:]))

    # -------------------------------------------------------------- volumes, command line, probes
    def _prepare_volumes(self) -> None:
        self.setup.prepare_volumes()

    async def _command(self, c: Container) -> tuple[list[str], dict[str, str], Path]:
        return await self.setup.command(c)

    async def _probe(self, c: Container, now: float) -> None:
        failed = await run_due_probes(c, now, lambda spec: self.prober.run(c, spec),
                                      lambda kind, why: self._event("Warning", "Unhealthy",
                                                                    f"{kind} probe failed: {why}"))
        if failed is None:
            return
        what, why, spec = failed
        log.info("%s/%s: %s probe failed for %s (%s); restarting", self.namespace, self.name, what, c.name, why)
        self._event("Normal", "Killing", f"Container {c.name} failed {what.lower()} probe, will be restarted")
        await self._stop_container(c, float(spec.get("terminationGracePeriodSeconds") or (
            (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)), f"{what} probe failed: {why}")
        self._reap(c, self.k.loop_time())

    # -------------------------------------------------------------- termination
    async def _stop_container(self, c: Container, grace: float, reason: str) -> None:
        h = c.handle
        if h is None:
            return
        c.killing_reason = reason
        h.terminate()
        if not await wait_ended([h], grace):
            h.kill()
            await wait_ended([h], 2.0)

    async def _stop_all(self, grace: float, reason: str) -> None:
        running = [c for c in self.init_containers + self.containers if c.handle is not None]
        await asyncio.gather(*(self._stop_container(c, grace, reason) for c in running))
        for c in running:
            h = c.handle
            c.handle = None
            code = h.poll() if h is not None else None
            term = {"exitCode": 137 if code is None else (code if code >= 0 else 128 - code),
                    "reason": "Completed" if code == 0 else "Error", "startedAt": c.started_at,
                    "finishedAt": now_text(), "message": reason}
            c.terminated, c.waiting, c.done = term, None, True
            c.probes = {}
            self.k.forget_process(self.uid, c.name)

    async def _terminate_and_confirm(self) -> None:
        grace = float(meta(self.pod).get("deletionGracePeriodSeconds") or 0)
        await self._stop_all(grace, "pod deleted")
        with contextlib.suppress(NotFoundError, ApiError, TransportError):
            await self._write_status()
        try:
            await self.k.client.delete(POD, self.name, self.namespace, grace_period_seconds=0,
                                       precondition_uid=self.uid)
        except NotFoundError:
            pass
        except ConflictError:
            pass  # another pod of that name now: ours is gone already
        self._cleanup()

    def _cleanup(self) -> None:
        self.k.forget_pod(self.uid)
        self.k.tokens.forget(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- status
    def build_status(self) -> Obj:
        return self.pod_status.build(self.init_containers, self.containers, self.start_time)

    async def _write_status(self) -> None:
        status = self.build_status()
        if status == self._written:
            return
        try:
            await self.k.client.patch_status(POD, self.name, {"status": status}, self.namespace)
        except NotFoundError:
            self.gone = True
            return
        except (ApiError, TransportError) as e:
            log.warning("%s/%s: status write failed: %s", self.namespace, self.name, e)
            return
        self._written = status

    # -------------------------------------------------------------- logs
    def log_source(self, req: LogRequest) -> LogSource:
        names = [c.name for c in self.init_containers + self.containers]
        if req.container not in names:
            raise LookupError(f'container "{req.container}" in pod "{self.name}" is not valid; '
                              f"choose one of: {names}")
        c = next(c for c in self.init_containers + self.containers if c.name == req.container)
        path = self.dir / (f"{c.name}.previous.log" if req.previous else f"{c.name}.log")
        if not path.exists():
            if req.previous:
                raise LookupError(f'previous terminated container "{c.name}" in pod "{self.name}" not found')
            reason = (c.waiting or ("ContainerCreating", ""))[0]
            raise LookupError(f'container "{c.name}" in pod "{self.name}" is waiting to start: {reason}')
        return LogSource(path, lambda: c.handle is not None and not self.gone)
