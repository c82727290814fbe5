"""Indexed Jobs (``completionMode: Indexed``): which completion indexes are done, failed, running or missing.

Each pod of an Indexed Job carries its index (annotation and label ``batch.kubernetes.io/job-completion-index``,
the env ``JOB_COMPLETION_INDEX`` through the downward API, hostname ``<job>-<index>``), and the Job is
complete when every index in ``0..completions-1`` has one Succeeded pod.  With ``backoffLimitPerIndex`` an
index fails on its own once more pods of it failed than the limit, and the Job fails when more indexes
failed than ``maxFailedIndexes`` or when every index is either done or failed.  Everything is counted from
the Job's pods (the controller keeps finished ones), so a restarted controller-manager sees the same.
Pure functions, unit-tested without a server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.podutil import is_active

__all__ = [
    "FAILURE_COUNT_ANNOTATION",
    "INDEX_ANNOTATION",
    "INDEX_ENV",
    "IndexPlan",
    "compress_indexes",
    "index_of",
    "indexed_pod",
    "plan_indexes",
]

Obj = dict[str, Any]
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_ENV = "JOB_COMPLETION_INDEX"


def index_of(pod: Obj, completions: int) -> int | None:
    """The pod's completion index, None when it has none or one outside ``0..completions-1``."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    try:
        i = int(str(raw))
    except ValueError:
        return None
    return i if 0 <= i < completions and str(i) == str(raw) else None


def compress_indexes(indexes: Iterable[int]) -> str:
    """``status.completedIndexes``' format: increasing, comma-separated, three or more consecutive indexes
    written ``first-last`` (``1,3-5,7``; two consecutive ones stay ``1,2``)."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if len(run) >= 3:
            out.append(f"{run[0]}-{run[-1]}")
        else:
            out.extend(str(i) for i in run)

    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        flush()
        run = [i]
    flush()
    return ",".join(out)


@dataclass
class IndexPlan:
    """What the Indexed Job's pods say, and what to do next."""

    succeeded: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)  # indexes that exhausted backoffLimitPerIndex
    failures: Counter[int] = field(default_factory=Counter)  # failed pods per index
    create: list[int] = field(default_factory=list)  # indexes to start a pod for, lowest first
    delete: list[Obj] = field(default_factory=list)  # duplicates, pods of finished indexes, bad indexes
    active: int = 0  # active pods kept


def plan_indexes(pods: list[Obj], completions: int, parallelism: int, per_index_limit: int | None) -> IndexPlan:
    """Count the indexes from the pods and decide which indexes get a new pod: the lowest ones that have
    neither succeeded, failed for good, nor an active pod, up to ``parallelism`` active pods in total.
    Active pods of an index that is already done, with no valid index, or a second one for the same index
    (the youngest goes, upstream keeps the oldest) are deleted."""
    plan = IndexPlan()
    for p in pods:
        phase = (p.get("status") or {}).get("phase")
        i = index_of(p, completions)
        if i is None:
            continue
        if phase == "Succeeded":
            plan.succeeded.add(i)
        elif phase == "Failed":
            plan.failures[i] += 1
    if per_index_limit is not None:
        plan.failed = {i for i, n in plan.failures.items() if n > per_index_limit} - plan.succeeded
    running: dict[int, Obj] = {}
    for p in sorted((p for p in pods if is_active(p)),
                    key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or "")):
        i = index_of(p, completions)
        if i is None or i in plan.succeeded or i in plan.failed or i in running:
            plan.delete.append(p)
        else:
            running[i] = p
    plan.active = len(running)
    remaining = completions - len(plan.succeeded) - len(plan.failed)
    room = min(parallelism, remaining) - plan.active
    if room > 0:
        for i in range(completions):
            if i not in plan.succeeded and i not in plan.failed and i not in running:
                plan.create.append(i)
                if len(plan.create) >= room:
                    break
    return plan


def indexed_pod(pod: Obj, job_name: str, index: int, failures: int, *, per_index: bool) -> Obj:
    """Give a pod made from the Job's template its index: annotation and label, ``JOB_COMPLETION_INDEX`` in
    every container (from the annotation, as upstream's downward API reference), hostname ``<job>-<index>``
    and the name prefix ``<job>-<index>-``."""
    meta = pod["metadata"]
    meta["generateName"] = f"{job_name}-{index}-"
    meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
    if per_index:
        meta["annotations"][FAILURE_COUNT_ANNOTATION] = str(failures)
    meta.setdefault("labels", {})[INDEX_ANNOTATION] = str(index)
    spec = pod["spec"]
    spec["hostname"] = f"{job_name}-{index}"
    env_var = {"name": INDEX_ENV, "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            env = c.setdefault("env", [])
            if not any(e.get("name") == INDEX_ENV for e in env):
                env.append(dict(env_var))
    return pod
