"""A Pod's status as the local kubelet reports it: phase, conditions and container statuses derived from
what its containers are doing.  Conditions keep their lastTransitionTime while their status and reason
hold (also across kubelet restarts: the last written conditions seed them)."""

from __future__ import annotations

from kokpit.kubelet._containers import Container
from kokpit.kubelet._options import Obj, now_text

__all__ = ["PodStatus"]


class PodStatus:
    def __init__(self, written: Obj | None, address: str = "127.0.0.1") -> None:
        self.address = address  # the Node's InternalIP: every Pod shares the host's network
        self._conditions: dict[str, Obj] = {str(c.get("type")): c for c in (written or {}).get("conditions") or []}

    def _condition(self, ctype: str, ok: bool, reason: str | None = None) -> Obj:
        status = "True" if ok else "False"
        old = self._conditions.get(ctype)
        if old is not None and old["status"] == status and old.get("reason") == reason:
            return old
        cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": now_text()}
        if reason:
            cond["reason"] = reason
        self._conditions[ctype] = cond
        return cond

    def build(self, init_containers: list[Container], containers: list[Container], start_time: str | None) -> Obj:
        inits_done = all(c.done and c.terminated and c.terminated.get("exitCode") == 0
                         for c in init_containers)
        init_failed = any(c.done and c.terminated and c.terminated.get("exitCode") != 0
                          for c in init_containers)
        mains = containers
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
        ip = self.address
        status: Obj = {"phase": phase, "conditions": conditions, "hostIP": ip, "hostIPs": [{"ip": ip}],
                       "podIP": ip, "podIPs": [{"ip": ip}],
                       "containerStatuses": [c.status() for c in mains], "qosClass": "BestEffort"}
        if init_containers:
            status["initContainerStatuses"] = [c.status() for c in init_containers]
        if start_time:
            status["startTime"] = start_time
        return status
