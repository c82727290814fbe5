"""Readiness sub-states with provenance and a TTL (issue 15 item 6): a Condition ConfigMap entry with a
heartbeatTime and ttlSeconds that is not refreshed in time turns Unknown, and the gate with it — the node is
not schedulable on stale good news; the Machine says who reported each condition and when."""

from __future__ import annotations

import datetime as dt
import json

from kokpit._lib.clock import RealClock, format_micro_time
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP
from kokpit.operators.machine import evaluate_gates, merge_reports, parse_configmap

from .conftest import FakeDriver
from .test_operator_integration import cond, make_node, running_operator

NOW = dt.datetime(2026, 12, 7, 2, 0, 0, tzinfo=dt.UTC)


def cm(value: object, source: str = "csi") -> dict[str, object]:
    return {"metadata": {"name": f"{source}-n1", "namespace": "default",
                         "labels": {"kokpit.io/node": "n1", "kokpit.io/condition-source": source}},
            "data": {"StorageReady": value if isinstance(value, str) else json.dumps(value)}}


def test_ttl_turns_a_stale_report_unknown() -> None:
    fresh = {"status": "True", "heartbeatTime": "2026-12-07T01:59:50Z", "ttlSeconds": 30}
    [r] = parse_configmap(cm(fresh), NOW)
    assert r.status == "True" and r.heartbeat_time == "2026-12-07T01:59:50Z"
    assert r.expires_at == dt.datetime(2026, 12, 7, 2, 0, 20, tzinfo=dt.UTC)
    [r] = parse_configmap(cm({**fresh, "heartbeatTime": "2026-12-07T01:59:00Z"}), NOW)
    assert r.status == "Unknown" and r.reason == "ReportStale" and "not refreshed within 30s" in r.message
    assert not evaluate_gates(["StorageReady"], {"StorageReady": r}).met
    # no TTL: never stale (today's behaviour); heartbeat alone is provenance only
    [r] = parse_configmap(cm({"status": "True", "heartbeatTime": "2026-12-07T00:00:00Z"}), NOW)
    assert r.status == "True" and r.expires_at is None and r.heartbeat_time
    # malformed: Unknown + InvalidReport naming the key
    for bad, why in (({"status": "True", "ttlSeconds": 30}, "no heartbeatTime"),
                     ({"status": "True", "heartbeatTime": "yesterday", "ttlSeconds": 3}, "RFC 3339"),
                     ({"status": "True", "heartbeatTime": "2026-12-07T01:59:50Z", "ttlSeconds": -1}, "positive"),
                     ({"status": "True", "heartbeatTime": "2026-12-07T01:59:50Z", "ttlSeconds": "x"}, "positive")):
        [r] = parse_configmap(cm(bad), NOW)
        assert r.status == "Unknown" and r.reason == "InvalidReport" and why in r.message, (bad, r)
    # a stale True loses to nothing else: the most pessimistic report wins
    merged = merge_reports([cm({**fresh, "heartbeatTime": "2026-12-07T01:00:00Z"}), cm("True", "other")], NOW)
    assert merged["StorageReady"].status == "Unknown"


async def test_a_gate_turns_unknown_when_its_report_is_not_refreshed(apiserver: ApiServerProcess) -> None:
    driver = FakeDriver(auto=True)
    async with running_operator(apiserver, driver) as env:
        c = env.client
        driver.add_node("w1")
        await make_node(c, "w1")
        await env.set_machine("w1", [], gates=["StorageReady"])
        await env.wait_cond("w1", "ReadinessGatesMet", "False", "GateNotReported")
        hb = format_micro_time(RealClock().now())
        await c.create(CONFIGMAP, {"metadata": {"name": "csi-w1", "namespace": "default",
                                                "labels": {"kokpit.io/node": "w1",
                                                           "kokpit.io/condition-source": "csi"}},
                                   "data": {"StorageReady": json.dumps({"status": "True", "heartbeatTime": hb,
                                                                        "ttlSeconds": 4})}})
        m = await env.wait_cond("w1", "ReadinessGatesMet", "True")
        synced = cond(m, "StorageReady")
        assert synced["source"] == "csi" and synced["lastHeartbeatTime"] == hb
        await env.wait_schedulable("w1", True)
        # no refresh: the operator looks again when the TTL runs out (no event wakes it) and cordons
        m = await env.wait_cond("w1", "StorageReady", "Unknown", "ReportStale", timeout=20)
        assert "not refreshed within 4s" in cond(m, "StorageReady")["message"]
        await env.wait_schedulable("w1", False)
        # a fresh heartbeat restores it
        hb = format_micro_time(RealClock().now())
        await c.patch(CONFIGMAP, "csi-w1", {"data": {"StorageReady": json.dumps(
            {"status": "True", "heartbeatTime": hb, "ttlSeconds": 60})}}, "default")
        await env.wait_cond("w1", "ReadinessGatesMet", "True")
        await env.wait_schedulable("w1", True)
