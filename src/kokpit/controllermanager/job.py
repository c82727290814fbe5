"""Job controller: run pods until ``completions`` succeeded, at most ``parallelism`` at once; fail the Job
when more than ``backoffLimit`` pods failed (or ``activeDeadlineSeconds`` passed).

Counts come from the Job's own pods (the controller never deletes finished ones, so a restart counts
the same), status is ``active/ready/succeeded/failed`` with ``startTime``/``completionTime`` and the
conditions kubectl and clients read: ``SuccessCriteriaMet`` + ``Complete``, or ``FailureTarget`` +
``Failed`` (reason BackoffLimitExceeded / DeadlineExceeded).  A finished Job deletes its running pods.
Pods carry ``batch.kubernetes.io/job-name`` and ``batch.kubernetes.io/controller-uid`` labels.
An Indexed Job (``completionMode: Indexed``) runs one pod per completion index (see :mod:`._jobindex`),
reports ``status.completedIndexes`` (and ``failedIndexes`` with ``backoffLimitPerIndex``) and fails with
reason FailedIndexes or MaxFailedIndexesExceeded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kokpit._lib.clock import format_time, parse_time
from kokpit._lib.podutil import is_active, is_ready
from kokpit.controllermanager._common import (
    JOB,
    delete_pods,
    pod_from_template,
    write_status,
)
from kokpit.controllermanager._jobindex import compress_indexes, indexed_pod, plan_indexes
from kokpit.controllermanager._pods import POD_UPDATE_BATCH_PERIOD, PodControl
from kokpit.runtime import Manager, Request, Result

__all__ = ["JobController"]

Obj = dict[str, Any]


def _finished(job: Obj) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


class JobController:
    def __init__(self, manager: Manager, *, workers: int = 4,
                 batch_period: float = POD_UPDATE_BATCH_PERIOD) -> None:
        self.client = manager.client
        self.jobs = manager.informers.informer(JOB)
        c = manager.controller("job", self.reconcile, workers=workers)
        c.for_(self.jobs)
        self.pods = PodControl(manager, c, JOB, "job-controller", batch_period=batch_period)
        self.events = self.pods.events

    async def reconcile(self, req: Request) -> Result | None:
        return await self.pods.guard(req, self._reconcile)

    async def _reconcile(self, req: Request) -> Result | None:
        key = str(req)
        job = self.jobs.store.get(key)
        if job is None:
            self.pods.forget(key)
            return None
        meta, spec = job.get("metadata") or {}, job.get("spec") or {}
        pods = self.pods.owned(job)
        active = [p for p in pods if is_active(p)]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        now = dt.datetime.now(dt.UTC)
        stamp = format_time(now)
        status: Obj = dict(job.get("status") or {})
        status.setdefault("startTime", stamp)
        conds = list(status.get("conditions") or [])
        done = _finished(job)
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) or 0)
        indexed = spec.get("completionMode") == "Indexed" and completions is not None
        per_index = spec.get("backoffLimitPerIndex") if indexed else None
        plan = plan_indexes(pods, int(completions or 0), parallelism, per_index) if indexed else None
        if plan is not None:
            succeeded = len(plan.succeeded)
            status["completedIndexes"] = compress_indexes(plan.succeeded)
            if per_index is not None:
                status["failedIndexes"] = compress_indexes(plan.failed)
        requeue: float | None = None
        if done is None and not meta.get("deletionTimestamp"):
            deadline = spec.get("activeDeadlineSeconds")
            started = parse_time(str(status["startTime"]))
            reason = message = ""
            max_failed = spec.get("maxFailedIndexes")
            if plan is not None and per_index is not None:
                if max_failed is not None and len(plan.failed) > int(max_failed):
                    reason, message = ("MaxFailedIndexesExceeded",
                                       "Job has exceeded the specified maximal number of failed indexes")
                elif plan.failed and len(plan.succeeded) + len(plan.failed) >= int(completions or 0):
                    reason, message = "FailedIndexes", "Job has failed indexes"
            elif failed > int(spec.get("backoffLimit", 6)):
                reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            elif deadline is not None and (now - started).total_seconds() >= int(deadline):
                reason, message = "DeadlineExceeded", "Job was active longer than specified deadline"
            elif completions is not None and succeeded >= int(completions):
                conds += [self._cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of "
                                     "succeeded pods", stamp),
                          self._cond("Complete", "", "", stamp)]
                status["completionTime"] = stamp
                done = "Complete"
                await self.events.normal(job, "Completed", "Job completed")
            elif completions is None and succeeded > 0 and not active:
                conds.append(self._cond("Complete", "", "", stamp))  # work-queue Job: one success and no one left
                status["completionTime"] = stamp
                done = "Complete"
            if reason:
                conds += [self._cond("FailureTarget", reason, message, stamp), self._cond("Failed", reason, message, stamp)]
                done = "Failed"
                await self.events.warning(job, reason, message)
            if done is None and not spec.get("suspend") and self.pods.satisfied(key):
                want = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
                need = want - len(active)
                name, uid = str(meta.get("name")), str(meta.get("uid"))
                labels = {"batch.kubernetes.io/job-name": name, "job-name": name,
                          "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
                template = spec.get("template") or {}
                if plan is not None:
                    await self.pods.apply(key, job, [indexed_pod(
                        pod_from_template(template, job, JOB, generate_name=f"{name}-", labels=labels), name, i,
                        plan.failures[i], per_index=per_index is not None) for i in plan.create], plan.delete)
                else:
                    await self.pods.apply(key, job, [
                        pod_from_template(template, job, JOB, generate_name=f"{name}-", labels=labels)
                        for _ in range(max(0, need))], active[:max(0, -need)])
            if done is None and deadline is not None:
                requeue = max(0.5, int(deadline) - (now - started).total_seconds())
        if done is not None and active:
            await delete_pods(self.client, active)
        status.update({"active": len(active) if done is None else 0, "succeeded": succeeded, "failed": failed,
                       "ready": sum(1 for p in active if is_ready(p)) if done is None else 0,
                       "terminating": sum(1 for p in pods if (p.get("metadata") or {}).get("deletionTimestamp")),
                       "conditions": conds or None})
        await write_status(self.client, JOB, job, status)
        return Result(requeue_after=requeue) if requeue else None

    @staticmethod
    def _cond(type_: str, reason: str, message: str, stamp: str) -> Obj:
        c: Obj = {"type": type_, "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c
