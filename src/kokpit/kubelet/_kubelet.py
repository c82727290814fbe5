"""The local kubelet: one Node in the meta cluster whose Pods are local ``kokpit`` processes (embedded mode).

The cluster operator manages a business cluster's control plane as plain Pods, the same way on a real meta
cluster and on a laptop; on a laptop this kubelet is what runs them.  It registers the Node (Ready condition,
capacity, Lease heartbeats), binds pending Pods it can run, and gives each of its Pods a worker task that
holds the processes at the Pod's spec: restart policy with CrashLoopBackOff, probes, status written back,
graceful deletion.  Every process is recorded in a state file so a restarted kubelet adopts what it started.
With ``simulate`` it starts nothing and only reports Pods Running/Ready (the scale benchmark's mode).

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
import datetime as dt
import logging
import os
import platform
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.clock import format_micro_time, format_time
from kokpit.client import (
    CONFIGMAP,
    LEASE,
    NODE,
    POD,
    SECRET,
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
    TransportError,
)
from kokpit.kubelet._http import LogRequest, LogServer, LogSource, http_probe, tcp_probe
from kokpit.kubelet._procs import ContainerRecord, PodRecord, ProcessHandle, StateFile, wait_ended
from kokpit.kubelet._spec import (
    ContainerConfigError,
    Mount,
    container_args,
    crash_backoff,
    hostpath_folder,
    mount_env_name,
    pod_dir_name,
    rewrite_paths,
    rewrite_value,
)
from kokpit.runtime import Handlers, Informer, ShutDownError, WorkQueue, strip_managed_fields

__all__ = ["Kubelet", "KubeletOptions", "run_kubelet"]

log = logging.getLogger("kokpit.kubelet")

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.37.0-kokpit"
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass
class KubeletOptions:
    """Knobs; the defaults are kubelet's (backoff 10 s → 5 min, 40 s leases renewed every 10 s)."""

    data_dir: Path
    node_name: str = "local"
    simulate: bool = False
    bind_pending: bool = True
    log_host: str = "127.0.0.1"
    log_port: int = 0
    lease_duration: int = 40
    lease_renew_interval: float = 10.0
    node_status_interval: float = 60.0
    sync_interval: float = 0.5
    backoff_base: float = 10.0
    backoff_cap: float = 300.0
    backoff_reset: float = 600.0
    orphan_grace: float = 10.0
    python: str = field(default_factory=lambda: sys.executable)
    simulate_workers: int = 16
    bind_workers: int = 4


def _now() -> str:
    return format_time(dt.datetime.now(dt.UTC))


def _meta(obj: Obj) -> Obj:
    m: Obj = obj.get("metadata") or {}
    return m


def _pod_key(pod: Obj) -> str:
    m = _meta(pod)
    return f"{m.get('namespace')}/{m.get('name')}"


def _expand(s: str, env: dict[str, str]) -> str:
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), s)


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 8 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- containers
@dataclass
class _Probe:
    spec: Obj
    successes: int = 0
    failures: int = 0
    ok: bool | None = None  # None: not yet decided
    next_at: float = 0.0


@dataclass
class _Container:
    spec: Obj
    init: bool = False
    handle: ProcessHandle | None = None
    restart_count: int = 0
    crashes: int = 0  # drives the backoff; reset after running backoff_reset seconds
    started_at: str | None = None
    started_mono: float = 0.0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: Obj | None = None
    last_terminated: Obj | None = None
    done: bool = False  # terminated and will not be restarted
    next_start: float = 0.0
    probes: dict[str, _Probe] = field(default_factory=dict)
    killing_reason: str | None = None

    @property
    def name(self) -> str:
        return str(self.spec.get("name"))

    @property
    def running(self) -> bool:
        return self.handle is not None

    def reset_probes(self, now: float) -> None:
        self.probes = {}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = self.spec.get(kind)
            if spec:
                self.probes[kind] = _Probe(spec, next_at=now + float(spec.get("initialDelaySeconds") or 0))

    @property
    def started(self) -> bool:
        p = self.probes.get("startupProbe")
        return self.running and (p is None or p.ok is True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        p = self.probes.get("readinessProbe")
        return p is None or p.ok is True

    def state(self) -> Obj:
        if self.handle is not None:
            return {"running": {"startedAt": self.started_at}}
        if self.terminated is not None and self.waiting is None:
            return {"terminated": self.terminated}
        reason, message = self.waiting or ("ContainerCreating", "")
        w: Obj = {"reason": reason}
        if message:
            w["message"] = message
        return {"waiting": w}

    def status(self) -> Obj:
        out: Obj = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
                    "ready": self.ready, "restartCount": self.restart_count, "started": self.started,
                    "state": self.state(), "lastState": {}}
        if self.handle is not None:
            out["containerID"] = f"kokpit://{self.handle.pid}"
        if self.last_terminated is not None:
            out["lastState"] = {"terminated": self.last_terminated}
        return out


# ---------------------------------------------------------------------------------------------- pods
class _PodWorker:
    """Holds one Pod's processes at its spec until the Pod is deleted (then ends them and confirms)."""

    def __init__(self, kubelet: Kubelet, pod: Obj, adopted: PodRecord | None) -> None:
        self.k = kubelet
        self.pod = pod
        m = _meta(pod)
        self.namespace = str(m.get("namespace"))
        self.name = str(m.get("name"))
        self.uid = str(m.get("uid"))
        self.dir = kubelet.opts.data_dir / "pods" / pod_dir_name(self.namespace, self.name, self.uid)
        self.gone = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.start_time: str | None = (pod.get("status") or {}).get("startTime")
        self._written: Obj | None = None
        # conditions keep their lastTransitionTime across kubelet restarts
        self._conditions: dict[str, Obj] = {str(c.get("type")): c for c in (pod.get("status") or {}).get(
            "conditions") or []}
        self._volumes: dict[str, Path] = {}
        self._volumes_ready = False
        self._volume_error: ContainerConfigError | None = None
        spec = pod.get("spec") or {}
        self.policy = str(spec.get("restartPolicy") or "Always")
        statuses = {s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        istatuses = {s.get("name"): s for s in (pod.get("status") or {}).get("initContainerStatuses") or []}
        self.init_containers = [_Container(c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [_Container(c) for c in spec.get("containers") or []]
        now = kubelet.loop_time()
        for c in self.init_containers + self.containers:
            self._restore(c, (istatuses if c.init else statuses).get(c.name), adopted, now)

    # -------------------------------------------------------------- adoption
    def _restore(self, c: _Container, status: Obj | None, adopted: PodRecord | None, now: float) -> None:
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
                if _meta(self.pod).get("deletionTimestamp"):
                    await self._terminate_and_confirm()
                    return
                await self._sync()
                await self._write_status()
            except (ApiError, TransportError) as e:
                log.warning("%s/%s: sync failed: %s", self.namespace, self.name, e)
            except Exception:  # a bug must not orphan the pod's processes: log and keep holding them
                log.exception("%s/%s: pod worker failed", self.namespace, self.name)
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

    def _reap(self, c: _Container, now: float) -> None:
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

    def _exited(self, c: _Container, code: int, now: float, started_at: str | None, message: str | None,
                term: Obj | None = None) -> None:
        if term is None:
            exit_code = code if code >= 0 else 128 - code
            term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": started_at, "finishedAt": _now()}
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
        else:
            c.terminated = term
            c.waiting = None
            c.done = True

    async def _ensure_started(self, c: _Container, now: float) -> None:
        if c.handle is not None or now < c.next_start:
            return
        try:
            if self._volume_error is not None:
                raise self._volume_error
            argv, env, cwd = await self._command(c)
        except ContainerConfigError as e:
            c.waiting = (e.reason, e.message)
            c.next_start = now + 2.0
            return
        except (ApiError, TransportError) as e:
            c.waiting = ("CreateContainerConfigError", str(e))
            c.next_start = now + 2.0
            return
        log_path = self.dir / f"{c.name}.log"
        if c.terminated is not None and log_path.exists():
            os.replace(log_path, self.dir / f"{c.name}.previous.log")
        if c.terminated is not None:
            c.restart_count += 1
        try:
            c.handle = ProcessHandle.spawn(argv, env=env, cwd=cwd, log_path=log_path)
        except OSError as e:
            c.waiting = ("RunContainerError", str(e))
            c.next_start = now + 2.0
            return
        c.started_at = _now()
        c.started_mono = now
        c.waiting = None
        c.reset_probes(now)
        self.start_time = self.start_time or c.started_at
        self.k.remember_process(self, c)
        log.info("%s/%s: started container %s (pid %d): %s", self.namespace, self.name, c.name,
                 c.handle.pid, " ".join(argv[3:]))

    # -------------------------------------------------------------- volumes, env, command line
    def _prepare_volumes(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        try:
            for v in (self.pod.get("spec") or {}).get("volumes") or []:
                name = str(v.get("name"))
                if "hostPath" in v:
                    hp = v["hostPath"] or {}
                    folder = hostpath_folder(self.k.opts.data_dir, str(hp.get("path") or name))
                    if hp.get("type") in ("File", "FileOrCreate", "Socket", "CharDevice", "BlockDevice"):
                        folder.parent.mkdir(parents=True, exist_ok=True)
                    else:
                        folder.mkdir(parents=True, exist_ok=True)
                elif "emptyDir" in v or "secret" in v or "configMap" in v:
                    folder = self.dir / "volumes" / name
                    folder.mkdir(parents=True, exist_ok=True)
                else:
                    continue  # unsupported kinds fail only when a container mounts them
                out[name] = folder
        except OSError as e:
            self._volume_error = ContainerConfigError("CreateContainerConfigError", f"volume: {e}")
            return
        self._volumes = out

    async def _write_projected(self, v: Obj, folder: Path) -> None:
        """Secret and ConfigMap volumes: one file per key (or per ``items`` entry), refreshed at each start."""
        secret = "secret" in v
        src = v["secret"] if secret else v["configMap"]
        src = src or {}
        ref = str(src.get("secretName") if secret else src.get("name"))
        try:
            obj = await self.k.client.get(SECRET if secret else CONFIGMAP, ref, self.namespace)
        except NotFoundError:
            if src.get("optional"):
                return
            kind = "secret" if secret else "configmap"
            raise ContainerConfigError("CreateContainerConfigError", f'{kind} "{ref}" not found') from None
        data: dict[str, bytes] = {}
        if secret:
            data = {k: base64.b64decode(s) for k, s in (obj.get("data") or {}).items()}
        else:
            data = {k: str(s).encode() for k, s in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(s) for k, s in (obj.get("binaryData") or {}).items()})
        items = src.get("items")
        files = ({str(i["path"]): data[i["key"]] for i in items if i.get("key") in data} if items
                 else dict(data))
        default_mode = 0o600 if secret else int(src.get("defaultMode") or 0o644)
        for rel, content in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, default_mode)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(tmp, default_mode)
            os.replace(tmp, target)

    async def _mounts(self, c: _Container) -> list[Mount]:
        volumes = {str(v.get("name")): v for v in (self.pod.get("spec") or {}).get("volumes") or []}
        out: list[Mount] = []
        for vm in c.spec.get("volumeMounts") or []:
            vname = str(vm.get("name"))
            v = volumes.get(vname)
            folder = self._volumes.get(vname)
            if v is None or folder is None:
                why = "is not defined" if v is None else "has a type that does not run in embedded mode"
                raise ContainerConfigError("CreateContainerConfigError", f'volume "{vname}" {why}')
            if "secret" in v or "configMap" in v:
                await self._write_projected(v, folder)
            if vm.get("subPath"):
                folder = folder / str(vm["subPath"]).lstrip("/")
                folder.mkdir(parents=True, exist_ok=True)
            out.append(Mount(vname, str(vm.get("mountPath") or ""), folder))
        return out

    async def _ref_value(self, kind: str, ref: Obj) -> str | None:
        k = SECRET if kind == "secret" else CONFIGMAP
        name, key = str(ref.get("name")), str(ref.get("key"))
        try:
            obj = await self.k.client.get(k, name, self.namespace)
        except NotFoundError:
            if ref.get("optional"):
                return None
            raise ContainerConfigError("CreateContainerConfigError", f'{kind} "{name}" not found') from None
        val: str | None
        if kind == "secret":
            raw = (obj.get("data") or {}).get(key)
            val = base64.b64decode(raw).decode() if raw is not None else None
        else:
            val = (obj.get("data") or {}).get(key)
        if val is None and not ref.get("optional"):
            raise ContainerConfigError("CreateContainerConfigError",
                                       f"couldn't find key {key} in {kind.capitalize()} {self.namespace}/{name}")
        return val

    def _field_value(self, path: str) -> str:
        m = _meta(self.pod)
        if path in ("status.podIP", "status.hostIP"):
            return "127.0.0.1"
        simple = {"metadata.name": m.get("name"), "metadata.namespace": m.get("namespace"),
                  "metadata.uid": m.get("uid"), "spec.nodeName": self.k.opts.node_name,
                  "spec.serviceAccountName": (self.pod.get("spec") or {}).get("serviceAccountName")}
        if path in simple:
            return str(simple[path] or "")
        mm = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if mm:
            return str((m.get(mm.group(1)) or {}).get(mm.group(2)) or "")
        return ""

    async def _env(self, c: _Container, mounts: list[Mount]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.spec.get("envFrom") or []:
            prefix = str(src.get("prefix") or "")
            for kind, k in (("configMapRef", CONFIGMAP), ("secretRef", SECRET)):
                ref = src.get(kind)
                if not ref:
                    continue
                try:
                    obj = await self.k.client.get(k, str(ref.get("name")), self.namespace)
                except NotFoundError:
                    if ref.get("optional"):
                        continue
                    what = "configmap" if k is CONFIGMAP else "secret"
                    raise ContainerConfigError("CreateContainerConfigError",
                                               f'{what} "{ref.get("name")}" not found') from None
                for key, raw in (obj.get("data") or {}).items():
                    env[prefix + key] = base64.b64decode(raw).decode() if k is SECRET else str(raw)
        for e in c.spec.get("env") or []:
            name = str(e.get("name"))
            if "value" in e:
                env[name] = _expand(str(e.get("value") or ""), env)
                continue
            vf = e.get("valueFrom") or {}
            val: str | None = ""
            if "secretKeyRef" in vf:
                val = await self._ref_value("secret", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                val = await self._ref_value("configmap", vf["configMapKeyRef"])
            elif "fieldRef" in vf:
                val = self._field_value(str(vf["fieldRef"].get("fieldPath") or ""))
            if val is not None:
                env[name] = val
        env = {k: rewrite_value(v, mounts) for k, v in env.items()}
        for m in mounts:
            env[mount_env_name(m.name)] = str(m.folder)
        return env

    async def _command(self, c: _Container) -> tuple[list[str], dict[str, str], Path]:
        args = container_args(c.spec)
        mounts = await self._mounts(c)
        pod_env = await self._env(c, mounts)
        args = rewrite_paths([_expand(a, pod_env) for a in args], mounts)
        env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
        env.update({"PYTHONUNBUFFERED": "1", "HOSTNAME": self.name, "KOKPIT_POD_DIR": str(self.dir)})
        env.update(pod_env)
        wd = c.spec.get("workingDir")
        cwd = Path(rewrite_value(str(wd), mounts)) if wd else self.dir
        if not cwd.is_dir():
            raise ContainerConfigError("CreateContainerConfigError", f"workingDir {wd} is not a folder")
        return [self.k.opts.python, "-m", "kokpit.cli.main", *args], env, cwd

    # -------------------------------------------------------------- probes
    async def _probe(self, c: _Container, now: float) -> None:
        order = ["startupProbe"] if "startupProbe" in c.probes and c.probes["startupProbe"].ok is not True \
            else ["livenessProbe", "readinessProbe"]
        for kind in order:
            p = c.probes.get(kind)
            if p is None or now < p.next_at or c.handle is None:
                continue
            p.next_at = now + float(p.spec.get("periodSeconds") or 10)
            passed, why = await self._run_probe(c, p.spec)
            if passed:
                p.successes, p.failures = p.successes + 1, 0
                if kind != "readinessProbe" or p.successes >= int(p.spec.get("successThreshold") or 1):
                    p.ok = True
            else:
                p.failures, p.successes = p.failures + 1, 0
                if p.failures >= int(p.spec.get("failureThreshold") or 3):
                    p.ok = False
                    if kind != "readinessProbe":
                        what = "Liveness" if kind == "livenessProbe" else "Startup"
                        log.info("%s/%s: %s probe failed for %s (%s); restarting", self.namespace, self.name,
                                 what, c.name, why)
                        await self._stop_container(c, float(p.spec.get("terminationGracePeriodSeconds") or (
                            (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)),
                            f"{what} probe failed: {why}")
                        self._reap(c, self.k.loop_time())
                        return

    async def _run_probe(self, c: _Container, spec: Obj) -> tuple[bool, str]:
        timeout = float(spec.get("timeoutSeconds") or 1)
        if "httpGet" in spec:
            h = spec["httpGet"] or {}
            port = self._port(c, h.get("port"))
            headers = {str(x.get("name")): str(x.get("value")) for x in h.get("httpHeaders") or []}
            return await http_probe(str(h.get("host") or "127.0.0.1"), port, str(h.get("path") or "/"),
                                    https=str(h.get("scheme") or "HTTP").upper() == "HTTPS", timeout=timeout,
                                    headers=headers)
        if "tcpSocket" in spec:
            t = spec["tcpSocket"] or {}
            return await tcp_probe(str(t.get("host") or "127.0.0.1"), self._port(c, t.get("port")),
                                   timeout=timeout)
        if "exec" in spec:
            return await self._exec_probe(c, [str(a) for a in (spec["exec"] or {}).get("command") or []], timeout)
        return False, "probe type not supported in embedded mode (use httpGet, tcpSocket or exec)"

    def _port(self, c: _Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p.get("containerPort") or 0)
        return 0

    async def _exec_probe(self, c: _Container, command: list[str], timeout: float) -> tuple[bool, str]:
        if not command:
            return False, "exec probe without a command"
        try:
            mounts = await self._mounts(c)
            env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
            env.update(await self._env(c, mounts))
        except (ContainerConfigError, ApiError, TransportError) as e:
            return False, str(e)
        argv = rewrite_paths(command, mounts)
        if argv[0] == "kokpit" or argv[0].endswith("/kokpit"):
            argv = [self.k.opts.python, "-m", "kokpit.cli.main", *argv[1:]]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=self.dir,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as e:
            return False, f"exec {argv[0]}: {e}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            return False, f"command timed out after {timeout:g}s"
        finally:
            if proc.returncode is None:  # timed out, or the kubelet is stopping: never leave it behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return proc.returncode == 0, out.decode(errors="replace")[-200:]

    # -------------------------------------------------------------- termination
    async def _stop_container(self, c: _Container, grace: float, reason: str) -> None:
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
                    "finishedAt": _now(), "message": reason}
            c.terminated, c.waiting, c.done = term, None, True
            c.probes = {}
            self.k.forget_process(self.uid, c.name)

    async def _terminate_and_confirm(self) -> None:
        grace = float(_meta(self.pod).get("deletionGracePeriodSeconds") or 0)
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
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- status
    def _condition(self, ctype: str, ok: bool, reason: str | None = None) -> Obj:
        status = "True" if ok else "False"
        old = self._conditions.get(ctype)
        if old is not None and old["status"] == status and old.get("reason") == reason:
            return old
        cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": _now()}
        if reason:
            cond["reason"] = reason
        self._conditions[ctype] = cond
        return cond

    def build_status(self) -> Obj:
        inits_done = all(c.done and c.terminated and c.terminated.get("exitCode") == 0
                         for c in self.init_containers)
        init_failed = any(c.done and c.terminated and c.terminated.get("exitCode") != 0
                          for c in self.init_containers)
        mains = self.containers
        all_ready = inits_done and bool(mains) and all(c.ready for c in mains)
        if init_failed:
            phase = "Failed"
        elif mains and all(c.done for c in mains):
            phase = "Succeeded" if all((c.terminated or {}).get("exitCode") == 0 for c in mains) else "Failed"
        elif inits_done and any(c.running or c.restart_count or c.terminated for c in mains):
            phase = "Running"
        else:
            phase = "Pending"
        not_ready = None if all_ready else ("PodCompleted" if phase in ("Succeeded", "Failed")
                                            else "ContainersNotReady")
        conditions = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", inits_done, None if inits_done else "ContainersNotInitialized"),
            self._condition("Ready", all_ready, not_ready),
            self._condition("ContainersReady", all_ready, not_ready),
            self._condition("PodScheduled", True),
        ]
        status: Obj = {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1",
                       "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                       "containerStatuses": [c.status() for c in mains], "qosClass": "BestEffort"}
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.start_time:
            status["startTime"] = self.start_time
        return status

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


# ---------------------------------------------------------------------------------------------- kubelet
class Kubelet:
    """Registers the Node and runs its Pods; ``run()`` until cancelled, then ``close()``."""

    def __init__(self, client: Client, opts: KubeletOptions) -> None:
        self.client = client
        self.opts = opts
        self.opts.data_dir = Path(opts.data_dir).resolve()
        self.node = opts.node_name
        self.state = StateFile(self.opts.data_dir / "kubelet-state.json")
        self.records: dict[str, PodRecord] = {}
        self.workers: dict[str, _PodWorker] = {}  # by pod uid
        self.log_server = LogServer(self._log_lookup, host=opts.log_host, port=opts.log_port)
        self.pods = Informer(client, POD, field_selector=f"spec.nodeName={self.node}",
                             transform=strip_managed_fields)
        self.pending = Informer(client, POD, field_selector="spec.nodeName=,spec.schedulerName=default-scheduler",
                                transform=strip_managed_fields)
        self._bind_queue: WorkQueue[str] = WorkQueue("kubelet-bind")
        self._sim_queue: WorkQueue[str] = WorkQueue("kubelet-simulate")
        self._tasks: list[asyncio.Task[Any]] = []
        self._ready = asyncio.Event()
        self._started = _now()
        self.simulated_writes = 0

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    # -------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Register, adopt, serve; returns only when cancelled (processes keep running unless ``close``
        is asked to end them)."""
        self.opts.data_dir.mkdir(parents=True, exist_ok=True)
        (self.opts.data_dir / "pods").mkdir(exist_ok=True)
        if not self.opts.simulate:
            await self.log_server.start()
            self.records = self.state.load()
        await self._register_node()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat_loop(), name="kubelet-lease"))
        self._tasks.append(loop.create_task(self._node_status_loop(), name="kubelet-node-status"))
        self.pods.add_event_handler(Handlers(add=self._on_pod, update=lambda _o, n: self._on_pod(n),
                                             delete=self._on_pod_deleted))
        self.pods.start()
        if self.opts.bind_pending:
            self.pending.add_event_handler(Handlers(add=self._on_pending, update=lambda _o, n: self._on_pending(n)))
            self.pending.start()
            workers = max(self.opts.bind_workers, self.opts.simulate_workers if self.opts.simulate else 1)
            for i in range(workers):
                self._tasks.append(loop.create_task(self._bind_worker(), name=f"kubelet-bind-{i}"))
        if self.opts.simulate:
            for i in range(self.opts.simulate_workers):
                self._tasks.append(loop.create_task(self._simulate_worker(), name=f"kubelet-sim-{i}"))
        await self.pods.wait_synced()
        if not self.opts.simulate:
            await self._end_orphans()
        self._ready.set()
        log.info("kubelet: node %s ready (logs on %s:%d, %d pods)", self.node, self.opts.log_host,
                 self.log_server.port, len(self.pods.store))
        await asyncio.Event().wait()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def close(self, *, stop_pods: bool = False) -> None:
        """Stop watching and serving. Pods' processes keep running for the next kubelet to adopt, unless
        ``stop_pods`` (then they end gracefully, like a node drain without the API)."""
        await self.pods.stop()
        await self.pending.stop()
        await self._bind_queue.shutdown()
        await self._sim_queue.shutdown()
        # cancel_and_wait: a cancellation swallowed by wait_for (Python 3.11) would hang a plain await
        await cancel_and_wait([*self._tasks, *(w.task for w in self.workers.values() if w.task is not None)])
        if stop_pods:  # all at once: one slow Pod's grace period must not add up with the next one's
            async def stop(w: _PodWorker) -> None:
                grace = float((w.pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 0)
                await w._stop_all(min(grace, self.opts.orphan_grace), "kubelet stopped")
                self.forget_pod(w.uid)

            await asyncio.gather(*(stop(w) for w in list(self.workers.values())))
        await self.log_server.stop()

    # -------------------------------------------------------------- process records
    def remember_process(self, w: _PodWorker, c: _Container) -> None:
        if c.handle is None or c.handle.start_time is None:
            return
        rec = self.records.setdefault(w.uid, PodRecord(w.namespace, w.name, w.uid))
        rec.containers[c.name] = ContainerRecord(c.handle.pid, c.handle.start_time, c.started_at or _now(),
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
        live = {str(_meta(p).get("uid")) for p in self.pods.store.list()}
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
        if self.opts.simulate:
            self._sim_queue.add(_pod_key(pod))
            return
        uid = str(_meta(pod).get("uid"))
        w = self.workers.get(uid)
        if w is None:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and uid not in self.records and not _meta(pod).get(
                    "deletionTimestamp"):
                return  # finished before this kubelet started: nothing to run
            w = _PodWorker(self, pod, self.records.get(uid))
            self.workers[uid] = w
            w.task = asyncio.get_running_loop().create_task(w.run(), name=f"pod {_pod_key(pod)}")
        else:
            w.pod = pod
        w.wake.set()

    def _on_pod_deleted(self, pod: Obj) -> None:
        if self.opts.simulate:
            return
        w = self.workers.get(str(_meta(pod).get("uid")))
        if w is not None:
            w.gone = True
            w.wake.set()

    def _on_pending(self, pod: Obj) -> None:
        if not _meta(pod).get("deletionTimestamp"):
            self._bind_queue.add(_pod_key(pod))

    async def _bind_worker(self) -> None:
        while True:
            try:
                key = await self._bind_queue.get()
            except ShutDownError:
                return
            try:
                pod = self.pending.store.get(key)
                if pod is not None and self._fits(pod):
                    ns, name = key.split("/", 1)
                    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
                    await self.client.create_subresource(POD, name, "binding", body, ns)
                self._bind_queue.forget(key)
            except (NotFoundError, ConflictError):
                self._bind_queue.forget(key)
            except (ApiError, TransportError) as e:
                log.warning("kubelet: binding %s failed: %s", key, e)
                self._bind_queue.add_rate_limited(key)
            finally:
                self._bind_queue.done(key)

    def _fits(self, pod: Obj) -> bool:
        """nodeSelector against this Node's labels (the only node in embedded mode)."""
        want = (pod.get("spec") or {}).get("nodeSelector") or {}
        labels = self._labels()
        return all(labels.get(k) == v for k, v in want.items())

    async def _simulate_worker(self) -> None:
        while True:
            try:
                key = await self._sim_queue.get()
            except ShutDownError:
                return
            try:
                pod = self.pods.store.get(key)
                if pod is not None:
                    await self._simulate(pod)
                self._sim_queue.forget(key)
            except NotFoundError:
                self._sim_queue.forget(key)
            except (ApiError, TransportError) as e:
                log.warning("kubelet: simulated sync of %s failed: %s", key, e)
                self._sim_queue.add_rate_limited(key)
            finally:
                self._sim_queue.done(key)

    async def _simulate(self, pod: Obj) -> None:
        m = _meta(pod)
        ns, name = str(m.get("namespace")), str(m.get("name"))
        if m.get("deletionTimestamp"):
            await self.client.delete(POD, name, ns, grace_period_seconds=0, precondition_uid=str(m.get("uid")))
            self.simulated_writes += 1
            return
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        now = _now()
        if ((pod.get("spec") or {}).get("restartPolicy") or "Always") != "Always":
            # a run-to-completion Pod (a data cleanup, a Job's): simulated as having exited 0 at once
            done = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": False,
                     "started": False, "restartCount": 0,
                     "containerID": f"kokpit-simulated://{m.get('uid')}/{c.get('name')}",
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                              "finishedAt": now}}, "lastState": {}}
                    for c in (pod.get("spec") or {}).get("containers") or []]
            conds = [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now,
                      **({"reason": "PodCompleted"} if s == "False" else {})}
                     for t, s in (("Initialized", "True"), ("Ready", "False"), ("ContainersReady", "False"),
                                  ("PodScheduled", "True"))]
            await self.client.patch_status(POD, name, {"status": {
                "phase": "Succeeded", "conditions": conds, "containerStatuses": done, "hostIP": "127.0.0.1",
                "startTime": now, "qosClass": "BestEffort"}}, ns)
            self.simulated_writes += 1
            return
        conds = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                 for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        cs = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": True, "started": True,
               "restartCount": 0, "containerID": f"kokpit-simulated://{m.get('uid')}/{c.get('name')}",
               "state": {"running": {"startedAt": now}}, "lastState": {}}
              for c in (pod.get("spec") or {}).get("containers") or []]
        body = {"status": {"phase": "Running", "conditions": conds, "containerStatuses": cs,
                           "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1",
                           "podIPs": [{"ip": "127.0.0.1"}], "startTime": now, "qosClass": "BestEffort"}}
        await self.client.patch_status(POD, name, body, ns)
        self.simulated_writes += 1

    # -------------------------------------------------------------- logs
    def _log_lookup(self, req: LogRequest) -> LogSource:
        for w in list(self.workers.values()):
            if w.namespace == req.namespace and w.name == req.pod:
                return w.log_source(req)
        raise LookupError(f'pod "{req.pod}" in namespace "{req.namespace}" is not running on node {self.node}')

    # -------------------------------------------------------------- node and lease
    def _labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                                  platform.machine()),
                "kokpit.io/embedded": "true"}

    def _node_status(self) -> Obj:
        now = _now()
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
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                         "osImage": f"kokpit embedded ({platform.system()})",
                         "containerRuntimeVersion": "kokpit-process://1",
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": self._labels()["kubernetes.io/arch"]},
        }

    async def _register_node(self) -> None:
        self._started = _now()
        node = {"metadata": {"name": self.node, "labels": self._labels()}, "spec": {}}
        try:
            await self.client.create(NODE, node)
        except AlreadyExistsError:
            await self.client.patch(NODE, self.node, {"metadata": {"labels": self._labels()}})
        await self.client.patch_status(NODE, self.node, {"status": self._node_status()})
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
        return str(_meta(await self.client.get(NODE, self.node)).get("uid"))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.lease_renew_interval)
            try:
                await self._renew_lease()
            except (ApiError, TransportError) as e:
                log.warning("kubelet: lease renewal failed: %s", e)

    async def _node_status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.node_status_interval)
            try:
                try:
                    await self.client.patch_status(NODE, self.node, {"status": self._node_status()})
                except NotFoundError:
                    await self._register_node()
            except (ApiError, TransportError) as e:
                log.warning("kubelet: node status update failed: %s", e)


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
