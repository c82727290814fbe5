"""Indexed Jobs: one pod per completion index, completedIndexes/failedIndexes, backoffLimitPerIndex — pure
planning first, then through the real controller-manager, scheduler and API server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kokpit.client import POD, ApiError, Client
from kokpit.controllermanager._common import JOB
from kokpit.controllermanager._jobindex import (
    FAILURE_COUNT_ANNOTATION,
    INDEX_ANNOTATION,
    compress_indexes,
    plan_indexes,
)

from .conftest import ControlPlane, eventually

Obj = dict[str, Any]


def _pod(name: str, index: int | str | None, phase: str = "Running", created: str = "2026-01-01T00:00:00Z") -> Obj:
    ann = {} if index is None else {INDEX_ANNOTATION: str(index)}
    return {"metadata": {"name": name, "annotations": ann, "creationTimestamp": created}, "status": {"phase": phase}}


def test_completed_indexes_format() -> None:
    assert compress_indexes([7, 1, 3, 4, 5]) == "1,3-5,7"
    assert compress_indexes([0, 1]) == "0,1"
    assert compress_indexes([]) == ""
    assert compress_indexes(range(10)) == "0-9"


def test_plan_fills_lowest_missing_indexes_and_drops_duplicates() -> None:
    pods = [_pod("a", 0, "Succeeded"), _pod("b", 2), _pod("b2", 2, created="2026-01-01T00:00:01Z"),
            _pod("c", 0), _pod("d", "x"), _pod("e", 9), _pod("f", 1, "Failed"), _pod("g", 1, "Failed")]
    plan = plan_indexes(pods, completions=5, parallelism=3, per_index_limit=None)
    assert plan.succeeded == {0} and plan.failures[1] == 2 and plan.failed == set()
    # the younger duplicate of index 2, a running pod of done index 0 and the pods without a valid index go
    assert sorted(p["metadata"]["name"] for p in plan.delete) == ["b2", "c", "d", "e"]
    assert plan.active == 1 and plan.create == [1, 3]  # parallelism 3: index 2 runs, 1 and 3 start
    limited = plan_indexes(pods, completions=5, parallelism=3, per_index_limit=1)
    assert limited.failed == {1} and limited.create == [3, 4]  # index 1 failed twice: it is given up


async def test_indexed_job_runs_one_pod_per_index(plane: Callable[..., Awaitable[ControlPlane]],
                                                  namespace: str) -> None:
    cp = await plane(nodes=2, controllers=["job"])
    c, ns = cp.client, namespace
    await c.create(JOB, _job("idx", "0.3", completions=3, parallelism=2, completionMode="Indexed"), ns)
    job = await eventually(lambda: c.get(JOB, "idx", ns), lambda j: _conds(j).get("Complete") is not None,
                           what="indexed job completes")
    assert job["status"]["completedIndexes"] == "0-2" and job["status"]["succeeded"] == 3
    pods = (await c.list(POD, ns, label_selector="batch.kubernetes.io/job-name=idx")).items
    by_index = {p["metadata"]["annotations"][INDEX_ANNOTATION]: p for p in pods}
    assert sorted(by_index) == ["0", "1", "2"] and len(pods) == 3  # one pod per index, none twice
    p1 = by_index["1"]
    assert p1["metadata"]["name"].startswith("idx-1-") and p1["spec"]["hostname"] == "idx-1"
    assert p1["metadata"]["labels"][INDEX_ANNOTATION] == "1"
    env = {e["name"]: e for e in p1["spec"]["containers"][0]["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        f"metadata.annotations['{INDEX_ANNOTATION}']"


async def test_backoff_limit_per_index_fails_only_that_index(plane: Callable[..., Awaitable[ControlPlane]],
                                                             namespace: str) -> None:
    cp = await plane(nodes=2, controllers=["job"])
    c, ns = cp.client, namespace
    await c.create(JOB, _job("per", "3600", completions=2, parallelism=2, completionMode="Indexed",
                             backoffLimitPerIndex=1), ns)

    async def running() -> dict[str, Obj]:
        items = (await c.list(POD, ns, label_selector="batch.kubernetes.io/job-name=per")).items
        return {p["metadata"]["annotations"][INDEX_ANNOTATION]: p for p in items
                if (p.get("status") or {}).get("phase") == "Running"}

    first = await eventually(running, lambda r: len(r) == 2, what="both indexes running")
    await _finish(c, first["0"], "Failed")  # index 0 fails once: within its limit, it gets a second pod
    second = await eventually(running, lambda r: "0" in r and r["0"]["metadata"]["uid"] != first["0"]["metadata"]["uid"],
                              what="index 0 retried")
    assert second["0"]["metadata"]["annotations"][FAILURE_COUNT_ANNOTATION] == "1"
    await _finish(c, second["0"], "Failed")  # twice: index 0 is given up, index 1 goes on
    await _finish(c, first["1"], "Succeeded")
    job = await eventually(lambda: c.get(JOB, "per", ns), lambda j: _conds(j).get("Failed") is not None,
                           what="job fails with a failed index")
    assert _conds(job)["Failed"] == "FailedIndexes"
    assert job["status"]["failedIndexes"] == "0" and job["status"]["completedIndexes"] == "1"
    pods = (await c.list(POD, ns, label_selector="batch.kubernetes.io/job-name=per")).items
    assert len(pods) == 3  # no third pod for index 0


@pytest.mark.parametrize(("spec", "field", "detail"), [
    ({"completionMode": "Indexed"}, "spec.completions", "Required value: when completion mode is Indexed"),
    ({"completionMode": "Striped", "completions": 2}, "spec.completionMode", "Unsupported value"),
    ({"backoffLimitPerIndex": 1}, "spec.backoffLimitPerIndex", "requires indexed completion mode"),
    ({"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 0, "maxFailedIndexes": 3},
     "spec.maxFailedIndexes", "must be less than or equal to completions"),
])
async def test_bad_indexed_job_is_refused_naming_the_field(shared_apiserver: Any, spec: Obj, field: str,
                                                           detail: str) -> None:
    c = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    try:
        body = _job("bad", "1", **spec)
        if "completions" not in spec:
            body["spec"]["parallelism"] = 1
        with pytest.raises(ApiError) as e:
            await c.create(JOB, body, "default")
        assert e.value.code == 422 and field in str(e.value) and detail in str(e.value)
    finally:
        await c.close()


def _job(name: str, run_seconds: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {**spec, "template": {
        "metadata": {"annotations": {"simulator.kokpit.io/run-seconds": run_seconds}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}


def _conds(j: Obj) -> dict[str, str]:
    return {x["type"]: x.get("reason", "") for x in (j.get("status") or {}).get("conditions") or []
            if x.get("status") == "True"}


async def _finish(c: Client, pod: Obj, phase: str) -> None:
    """Play the kubelet: the pod's container exits (the simulator keeps these pods running for an hour)."""
    await c.patch_status(POD, pod["metadata"]["name"], {"status": {"phase": phase}}, pod["metadata"]["namespace"])
