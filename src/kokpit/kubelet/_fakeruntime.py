"""The local kubelet's fake container runtime (``kokpit kubelet --fake-runtime``): no process is started;
every Pod bound to the Node is reported Running and Ready at once (a run-to-completion Pod Succeeded with
exit 0), and a deleted Pod is confirmed gone.  It lets the cluster operator be measured with thousands of
control-plane Pods on one machine (bench/clusters.py) — kubemark's hollow kubelet, for one Node.

Not the fleet simulator: :mod:`kokpit.simulator` simulates whole hosts (thousands of Nodes, their
heartbeats, component installs and faults) for the machine operator; this is one real kubelet whose
container runtime is faked.
"""

from __future__ import annotations

import logging

from kokpit.client import POD, ApiError, Client, NotFoundError, TransportError
from kokpit.kubelet._options import Obj, meta, now_text
from kokpit.runtime import Informer, ShutDownError, WorkQueue

__all__ = ["FakeRuntime"]

log = logging.getLogger("kokpit.kubelet")


class FakeRuntime:
    """Pods of ``pods`` (the Node's informer) are queued by key; ``worker()`` tasks report their status."""

    def __init__(self, client: Client, pods: Informer, address: str = "127.0.0.1") -> None:
        self.client = client
        self.pods = pods
        self.address = address  # the Node's InternalIP: the Pods' hostIP and podIP
        self.queue: WorkQueue[str] = WorkQueue("kubelet-fake-runtime")
        self.writes = 0

    async def worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDownError:
                return
            try:
                pod = self.pods.store.get(key)
                if pod is not None:
                    await self._report(pod)
                self.queue.forget(key)
            except NotFoundError:
                self.queue.forget(key)
            except (ApiError, TransportError) as e:
                log.warning("kubelet: fake-runtime sync of %s failed: %s", key, e)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def _report(self, pod: Obj) -> None:
        m = meta(pod)
        ns, name = str(m.get("namespace")), str(m.get("name"))
        if m.get("deletionTimestamp"):
            await self.client.delete(POD, name, ns, grace_period_seconds=0, precondition_uid=str(m.get("uid")))
            self.writes += 1
            return
        status = pod.get("status") or {}
        if status.get("phase") == "Running" and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        now = now_text()
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
                "phase": "Succeeded", "conditions": conds, "containerStatuses": done, "hostIP": self.address,
                "startTime": now, "qosClass": "BestEffort"}}, ns)
            self.writes += 1
            return
        conds = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                 for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        cs = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": True, "started": True,
               "restartCount": 0, "containerID": f"kokpit-simulated://{m.get('uid')}/{c.get('name')}",
               "state": {"running": {"startedAt": now}}, "lastState": {}}
              for c in (pod.get("spec") or {}).get("containers") or []]
        body = {"status": {"phase": "Running", "conditions": conds, "containerStatuses": cs,
                           "hostIP": self.address, "hostIPs": [{"ip": self.address}], "podIP": self.address,
                           "podIPs": [{"ip": self.address}], "startTime": now, "qosClass": "BestEffort"}}
        await self.client.patch_status(POD, name, body, ns)
        self.writes += 1
