"""The merge of one fault report into a NodeFault's status (pure), and the reporter's checks before writing."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from kokpit._lib.backoff import ExponentialBackoff
from kokpit.api.fault import HISTORY_MAX, SOURCES_MAX, NodeFaultStatus, SourceKind
from kokpit.client import AlreadyExistsError, ConflictError, NotFoundError
from kokpit.runtime.faultreports import FaultReport, FaultReporter, apply_report

T0 = dt.datetime(2026, 12, 7, 1, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def rep(reporter: str = "node-agent/n1", **kw: object) -> FaultReport:
    return FaultReport("n1", "disk-failure", reporter, **kw)  # type: ignore[arg-type]


def test_repeated_reports_update_one_fault_and_keep_every_source() -> None:
    s1 = apply_report(None, rep(message="sda: I/O error"), at(0))
    assert s1 is not None and s1["state"] == "Active" and s1["count"] == 1
    s2 = apply_report(s1, rep(message="sda: I/O error again"), at(5))
    assert s2 is not None and s2["count"] == 2 and s2["firstSeen"] == s1["firstSeen"] != s2["lastSeen"]
    s3 = apply_report(s2, rep("kernel-monitor/n1", kind=SourceKind.NODE_PROBLEM_DETECTOR, message="IOError"), at(7))
    assert s3 is not None and s3["count"] == 3 and s3["reporter"] == "kernel-monitor/n1"
    by = {s["reporter"]: s for s in s3["sources"]}
    assert by["node-agent/n1"]["count"] == 2 and by["node-agent/n1"]["message"] == "sda: I/O error again"
    assert by["kernel-monitor/n1"]["kind"] == "NodeProblemDetector" and by["kernel-monitor/n1"]["count"] == 1
    NodeFaultStatus.model_validate(s3)  # what the schema accepts
    assert s1["count"] == 1  # inputs are not mutated


def test_clears_resolve_only_when_every_reporter_cleared() -> None:
    s = apply_report(None, rep(), at(0))
    s = apply_report(s, rep("other/n1"), at(1))
    assert apply_report(s, rep("stranger/n1", cleared=True), at(2)) is None  # never reported it
    s = apply_report(s, rep(cleared=True), at(3))
    assert s is not None and s["state"] == "Active"
    s = apply_report(s, rep("other/n1", cleared=True, message="fixed"), at(4))
    assert s is not None and s["state"] == "Resolved" and s["resolution"]["by"] == "other/n1"
    assert s["resolution"]["reason"] == "ReportCleared" and s["endedAt"]
    assert apply_report(s, rep(cleared=True), at(5)) is None  # nothing active to clear


def test_a_report_after_the_end_opens_a_new_episode_and_keeps_history() -> None:
    s = apply_report(None, rep(), at(0))
    s = apply_report(s, rep(), at(1))
    assert s is not None
    s = {**s, "state": "Expired", "endedAt": "2026-12-07T01:05:00.000000Z", "maintenanceFlow": "flow-1",
         "severity": "Critical"}
    s2 = apply_report(s, rep(message="back"), at(600))
    assert s2 is not None and s2["state"] == "Active" and s2["count"] == 1
    assert s2["firstSeen"] == s2["lastSeen"] and "maintenanceFlow" not in s2 and s2["severity"] == "Critical"
    assert s2["history"][0]["state"] == "Expired" and s2["history"][0]["count"] == 2
    assert s2["history"][0]["maintenanceFlow"] == "flow-1"
    assert s2["history"][0]["endedAt"] == "2026-12-07T01:05:00.000000Z"
    for i in range(HISTORY_MAX + 3):  # history is bounded
        s2 = apply_report({**s2, "state": "Resolved"}, rep(), at(700 + i))
        assert s2 is not None
    assert len(s2["history"]) == HISTORY_MAX


def test_sources_are_bounded_keeping_the_most_recent() -> None:
    s = None
    for i in range(SOURCES_MAX + 5):
        s = apply_report(s, rep(f"agent-{i}/n1"), at(i))
    assert s is not None and len(s["sources"]) == SOURCES_MAX
    assert {x["reporter"] for x in s["sources"]} == {f"agent-{i}/n1" for i in range(5, SOURCES_MAX + 5)}
    assert s["count"] == SOURCES_MAX + 5


def test_bad_reports_are_refused_before_any_request() -> None:
    for kw in ({"node": "Bad_Node"}, {"type": "Disk Failure"}, {"reporter": ""}, {"reporter": "has space"},
               {"component": "Bad!"}):
        args = {"node": "n1", "type": "disk-failure", "reporter": "a/b", **kw}
        with pytest.raises(ValidationError):
            FaultReport(**args)  # type: ignore[arg-type]
    assert FaultReport("n1", "component-unhealthy", "a/b", component="kubelet").name == \
        "n1.component-unhealthy.kubelet"


class _CountingApi:
    """get / create / update_status of NodeFaults, recording each request."""

    def __init__(self, conflicts: int = 0) -> None:
        self.objs: dict[str, dict[str, object]] = {}
        self.calls: list[str] = []
        self.conflicts = conflicts  # how many status writes to refuse with 409 first

    async def get(self, kind: object, name: str) -> dict[str, object]:
        self.calls.append("get")
        if name not in self.objs:
            raise NotFoundError(404, {"message": "not found"})
        return self.objs[name]

    async def create(self, kind: object, body: dict[str, object]) -> dict[str, object]:
        self.calls.append("create")
        name = body["metadata"]["name"]  # type: ignore[index]
        if name in self.objs:
            raise AlreadyExistsError(409, {"message": "exists", "reason": "AlreadyExists"})
        self.objs[name] = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}  # type: ignore[dict-item]
        return self.objs[name]

    async def update_status(self, kind: object, body: dict[str, object]) -> dict[str, object]:
        self.calls.append("update_status")
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError(409, {"message": "the object has been modified", "reason": "Conflict"})
        self.objs[body["metadata"]["name"]]["status"] = body["status"]  # type: ignore[index]
        return self.objs[body["metadata"]["name"]]  # type: ignore[index]


async def test_a_report_likely_new_is_created_without_a_read_and_an_existing_one_still_lands() -> None:
    """A storm of new reports costs two requests each, not three (the simulator's hosts pass likely_new for a
    fault they have not reported yet); a guess that was wrong costs one refused create and still counts."""
    api = _CountingApi()
    reporter = FaultReporter(api)
    out = await reporter.report(rep(), likely_new=True)
    assert api.calls == ["create", "update_status"] and out is not None and out["status"]["count"] == 1
    api.calls.clear()
    out = await reporter.report(rep(), likely_new=True)  # it exists already: refused create, read, write
    assert api.calls == ["create", "get", "update_status"] and out is not None and out["status"]["count"] == 2
    api.calls.clear()
    await reporter.report(rep())
    assert api.calls == ["get", "update_status"]


async def test_a_conflicting_write_is_retried_after_a_growing_backoff_and_gives_up_with_a_conflict() -> None:
    """Writers of one NodeFault that retry at once collide again: each retry waits a little longer, the
    report still lands, and a write that keeps conflicting ends in a 409 naming the fault."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    api = _CountingApi(conflicts=3)
    reporter = FaultReporter(api, backoff=ExponentialBackoff(base=0.01, factor=2.0, cap=0.5), sleep=sleep)
    out = await reporter.report(rep(), likely_new=True)
    assert out is not None and out["status"]["count"] == 1
    assert slept == [0.01, 0.02, 0.04], slept
    assert api.calls == ["create", "update_status"] + ["get", "update_status"] * 3

    slept.clear()
    api.conflicts = 100
    reporter = FaultReporter(api, max_conflicts=4, sleep=sleep)  # the default backoff: jittered, capped
    with pytest.raises(ConflictError, match="still conflicting after 4 attempts"):
        await reporter.report(rep())
    assert len(slept) == 3 and all(0 < s <= 1.0 for s in slept) and slept[0] < slept[2], slept
