"""Conditions, finalizers, the status patch helper and the event recorder on plain dicts."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from kokpit._lib.clock import FakeClock
from kokpit.client import EVENT, ApiError, Kind
from kokpit.runtime.conditions import find_condition, is_true, set_condition, set_object_condition
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.finalizers import add_finalizer, has_finalizer, remove_finalizer
from kokpit.runtime.patch import PatchHelper, json_copy, merge_patch

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WIDGET = Kind("example.io", "v1", "Widget", "widgets")


def test_condition_transition_time_only_moves_on_flip() -> None:
    conds: list[dict[str, object]] = []
    assert set_condition(conds, "Ready", False, "Starting", now=T0, observed_generation=1)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    t1 = T0 + dt.timedelta(minutes=1)
    assert not set_condition(conds, "Ready", False, "Starting", now=t1, observed_generation=1)
    assert set_condition(conds, "Ready", "False", "StillStarting", "msg", now=t1, observed_generation=2)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # same status: kept
    assert conds[0]["observedGeneration"] == 2 and conds[0]["reason"] == "StillStarting"
    assert set_condition(conds, "Ready", True, "Up", now=t1)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:01:00Z" and is_true(conds, "Ready")
    with pytest.raises(ValueError):
        set_condition(conds, "Ready", "Yes", "x", now=t1)


def test_object_condition_stamps_generation() -> None:
    o: dict[str, object] = {"metadata": {"name": "a", "generation": 7}}
    set_object_condition(o, "Ready", True, "Ok", now=T0)
    c = find_condition(o["status"]["conditions"], "Ready")  # type: ignore[index]
    assert c is not None and c["observedGeneration"] == 7


async def test_finalizers_add_remove_with_rv_guard(make_fake_client: Any) -> None:
    client = make_fake_client()
    o = await client.create(WIDGET, {"metadata": {"name": "w", "namespace": "default"}})
    o = await add_finalizer(client, WIDGET, o, "kokpit.io/cleanup")
    assert has_finalizer(o, "kokpit.io/cleanup")
    assert await add_finalizer(client, WIDGET, o, "kokpit.io/cleanup") is o  # no write when present
    stale = dict(o, metadata={**o["metadata"], "resourceVersion": "1"})
    with pytest.raises(ApiError) as e:
        await remove_finalizer(client, WIDGET, stale, "kokpit.io/cleanup")
    assert e.value.code == 422
    o = await remove_finalizer(client, WIDGET, o, "kokpit.io/cleanup")
    assert o["metadata"]["finalizers"] == []


def test_merge_patch_diff() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1, "d": 3}, "e": [1]}) == {
        "a": None,
        "b": {"d": 3},
        "e": [1],
    }


async def test_patch_helper_writes_status_once_and_nothing_when_unchanged(make_fake_client: Any) -> None:
    client = make_fake_client()
    o = await client.create(WIDGET, {"metadata": {"name": "w", "namespace": "default"}, "spec": {"value": 3}})
    h = PatchHelper(client, WIDGET, o)
    await h.patch()
    assert h.writes == 0
    h.obj.setdefault("status", {})["value"] = 3
    set_object_condition(h.obj, "Ready", True, "Copied", now=T0)
    out = await h.patch()
    assert h.writes == 1 and out["status"]["value"] == 3
    assert [c[0] for c in client.calls].count("patch:merge:status") == 1
    await h.patch()
    assert h.writes == 1


async def test_event_recorder_concurrent_repeats_land_on_one_event(make_fake_client: Any) -> None:
    client = make_fake_client()
    real_create, real_patch = client.create, client.patch

    async def slow_create(*a: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.01)  # the request is in flight while the repeat arrives
        return await real_create(*a, **kw)

    async def slow_patch(*a: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.01)
        return await real_patch(*a, **kw)

    client.create, client.patch = slow_create, slow_patch
    rec = EventRecorder(client, "kokpit-test", clock=FakeClock())
    target = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u1"}}
    await asyncio.gather(*(rec.normal(target, "Cordoned", "cordoned node n1") for _ in range(3)))
    events = [o for (plural, _, _), o in client.objects.items() if plural == EVENT.plural]
    assert len(events) == 1 and events[0]["count"] == 3
    assert not rec._busy  # nothing kept once no one waits


async def test_event_recorder_memory_is_bounded(make_fake_client: Any) -> None:
    client = make_fake_client()
    rec = EventRecorder(client, "kokpit-test", clock=FakeClock())
    rec.MAX_REMEMBERED = 3
    target = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u1"}}
    for i in range(5):
        await rec.normal(target, "Step", f"step {i}")
    await rec.normal(target, "Step", "step 4")  # still remembered: aggregated
    assert len(rec._seen) == 3
    events = [o for (plural, _, _), o in client.objects.items() if plural == EVENT.plural]
    assert len(events) == 5 and sorted(e["count"] for e in events) == [1, 1, 1, 1, 2]


async def test_event_recorder_aggregates_repeats(make_fake_client: Any) -> None:
    clock, client = FakeClock(), make_fake_client()
    rec = EventRecorder(client, "kokpit-test", clock=clock)
    target = {
        "apiVersion": "example.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1"},
    }
    await rec.warning(target, "Failed", "boom")
    await clock.advance(30)
    await rec.warning(target, "Failed", "boom")
    await rec.warning(target, "Failed", "other")
    events = [o for (plural, _, _), o in client.objects.items() if plural == EVENT.plural]
    assert len(events) == 2
    boom = next(e for e in events if e["message"] == "boom")
    assert boom["count"] == 2 and boom["involvedObject"]["uid"] == "u1"
    assert (
        boom["firstTimestamp"] == "2026-01-01T00:00:00Z" and boom["lastTimestamp"] == "2026-01-01T00:00:30Z"
    )


def test_json_copy_is_a_deep_copy_that_keeps_non_json_types() -> None:
    obj = {"status": {"targets": [{"name": "a", "previous": {"kubelet": "v1"}, "n": 1, "f": 2.5, "ok": None}]}}
    out = json_copy(obj)
    assert out == obj and out is not obj
    out["status"]["targets"][0]["previous"]["kubelet"] = "v2"
    assert obj["status"]["targets"][0]["previous"]["kubelet"] == "v1"  # nothing shared
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    kept = json_copy({"t": when, 1: "int key"})  # not JSON: deepcopy, types kept
    assert kept == {"t": when, 1: "int key"} and type(kept["t"]) is dt.datetime
