"""RiskPolicy and Permit admission: every bad input the risk issue lists is refused by the real (embedded) API
server with a 422 Status naming the field, and good policies (the shipped defaults among them) pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.api.risk import SCHEDULE_PATTERN, OperationType, TargetKind
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client, Kind

POLICY = Kind("kokpit.io", "v1alpha1", "RiskPolicy", "riskpolicies", namespaced=False)
PERMIT = Kind("kokpit.io", "v1alpha1", "Permit", "permits")

GOOD: dict[str, Any] = {
    "apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": "good"},
    "spec": {
        "operations": ["node-isolate", "node-reinstall"],
        "scope": {"clusterSelector": {"matchLabels": {"env": "prod"},
                                      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
                  "nodeSelector": {"matchExpressions": [{"key": "kokpit.io/pool", "operator": "Exists"}]}},
        "maxConcurrent": "10%", "maxUnavailable": 3, "maxPerWindow": {"count": 5, "window": "1h"},
        "blackouts": [{"name": "weekend", "schedule": "0 18 * * 5", "duration": "60h",
                       "timeZone": "Europe/Berlin"}],
        "gates": [{"name": "pods", "builtin": "podCreationSuccessRate", "threshold": 0.99, "window": "5m"},
                  {"name": "prom", "prometheus": {"url": "http://127.0.0.1:9090", "query": "up"},
                   "comparison": "<", "threshold": 1}],
        "failureBreaker": {"maxFailures": 3, "window": "30m"},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    node = obj
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


_DELETE = object()

BAD: list[tuple[str, Any, str]] = [
    ("spec.maxConcurrent", -1, "spec.maxConcurrent"),
    ("spec.maxConcurrent", "ten", "spec.maxConcurrent"),
    ("spec.maxUnavailable", "150%", "spec.maxUnavailable"),
    ("spec.maxPerWindow", {"count": -2, "window": "1h"}, "spec.maxPerWindow.count"),
    ("spec.maxPerWindow", {"count": 2, "window": "an hour"}, "spec.maxPerWindow.window"),
    ("spec.operations", ["node-isolate", "node-explode"], "spec.operations[1]"),
    ("spec.operations", [], "spec.operations"),
    ("spec.scope", {}, "spec.scope"),
    ("spec.scope", {"allClusters": True, "clusterSelector": {}}, "spec.scope"),
    ("spec.scope.clusterSelector.matchLabels", {"bad key!": "x"}, "spec.scope.clusterSelector.matchLabels"),
    ("spec.scope.clusterSelector.matchExpressions", [{"key": "tier", "operator": "In"}],
     "spec.scope.clusterSelector.matchExpressions[0]"),
    ("spec.scope.clusterSelector.matchExpressions", [{"key": "tier", "operator": "Like", "values": ["a"]}],
     "spec.scope.clusterSelector.matchExpressions[0].operator"),
    ("spec.blackouts.0.schedule", "every friday", "spec.blackouts[0].schedule"),
    ("spec.blackouts.0.schedule", "61 18 * * 5", "spec.blackouts[0].schedule"),
    ("spec.blackouts.0.duration", "-1h", "spec.blackouts[0].duration"),
    ("spec.gates.1.prometheus.url", "not a url", "spec.gates[1].prometheus.url"),
    ("spec.gates.1.prometheus.url", "ftp://prom:9090", "spec.gates[1].prometheus.url"),
    ("spec.gates.0.prometheus", {"url": "http://p:9090", "query": "up"}, "spec.gates[0]"),
    ("spec.gates.0.builtin", "cpuHappiness", "spec.gates[0].builtin"),
    ("spec.failureBreaker.maxFailures", 0, "spec.failureBreaker.maxFailures"),
]


def test_operation_vocabulary_is_one_line_per_type() -> None:
    assert {o.value for o in OperationType} >= {
        "node-isolate", "node-drain", "node-reboot", "node-reinstall", "node-delete", "component-upgrade",
        "control-plane-release", "control-plane-repair", "cluster-delete"}
    assert OperationType.NODE_DRAIN.target_kind is TargetKind.NODE
    assert OperationType.COMPONENT_UPGRADE.target_kind is TargetKind.NODE
    assert OperationType.CONTROL_PLANE_RELEASE.target_kind is TargetKind.CLUSTER
    import re
    for ok in ("0 2 * * *", "*/15 0-6 1,15 * 1-5", "@daily", "30 23 31 12 7"):
        assert re.fullmatch(SCHEDULE_PATTERN, ok), ok
    for bad in ("0 24 * * *", "* * * *", "0 0 32 * *", "0 0 * 13 *", "0 0 * * 8", "@sometimes"):
        assert not re.fullmatch(SCHEDULE_PATTERN, bad), bad


async def test_bad_policies_and_permits_are_refused_naming_the_field(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        created = await c.create(POLICY, GOOD)
        assert created["spec"]["scope"]["perCluster"] is True  # defaulted by the schema
        for i, (path, value, field) in enumerate(BAD):
            obj = _with(path, value)
            obj["metadata"] = {"name": f"bad-{i}"}
            with pytest.raises(ApiError) as ei:
                await c.create(POLICY, obj)
            assert ei.value.code == 422, (path, value, ei.value)
            assert ei.value.status.get("kind") == "Status" and ei.value.status.get("reason") == "Invalid"
            fields = [x.get("field") for x in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (path, value, fields, ei.value.message)
        # nothing bad got in, the good one is untouched
        names = [p["metadata"]["name"] for p in (await c.list(POLICY)).items]
        assert names == ["good"]
        # an update to a bad value is refused as well, and loses nothing
        cur = await c.get(POLICY, "good")
        cur["spec"]["maxConcurrent"] = "101%"
        with pytest.raises(ApiError) as ei:
            await c.update(POLICY, cur)
        assert ei.value.code == 422 and "spec.maxConcurrent" in ei.value.message
        assert (await c.get(POLICY, "good"))["spec"]["maxConcurrent"] == "10%"

        permit = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Permit",
                  "metadata": {"name": "p1", "namespace": "default"},
                  "spec": {"operation": "node-drain", "cluster": "cluster-1", "targets": ["n1", "n2"],
                           "holder": "test"}}
        made = await c.create(PERMIT, permit)
        assert made["spec"]["ttlSeconds"] == 300
        for spec, field in ((
                {"operation": "node-melt"}, "spec.operation"), ({"targets": []}, "spec.targets"),
                ({"targets": ["a", "a"]}, "spec.targets[1]"), ({"ttlSeconds": 0}, "spec.ttlSeconds"),
                ({"holder": ""}, "spec.holder"), ({"cluster": "Bad_Name"}, "spec.cluster")):
            obj = copy.deepcopy(permit)
            obj["metadata"]["name"] = "bad"
            obj["spec"].update(spec)
            with pytest.raises(ApiError) as ei:
                await c.create(PERMIT, obj)
            assert ei.value.code == 422, (spec, ei.value)
            fields = [x.get("field") for x in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (spec, fields, ei.value.message)
