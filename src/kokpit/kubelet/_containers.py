"""What the local kubelet knows of one container: its process, restarts, crash backoff, probe verdicts, and
the ``containerStatuses`` entry that follows from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from kokpit.kubelet._options import Obj
from kokpit.kubelet._procs import ProcessHandle

__all__ = ["Container", "Probe"]


@dataclass
class Probe:
    spec: Obj
    successes: int = 0
    failures: int = 0
    ok: bool | None = None  # None: not yet decided
    next_at: float = 0.0


@dataclass
class Container:
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
    probes: dict[str, Probe] = field(default_factory=dict)
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
                self.probes[kind] = Probe(spec, next_at=now + float(spec.get("initialDelaySeconds") or 0))

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
