"""MaintenancePolicy and MaintenanceFlow admission: a flow template with an unknown step or repair, a cycle
(a repeated flow) in the escalation, an escalation or route naming an undefined flow, a malformed duration or
limit are refused by the real (embedded) API server with a 422 Status naming the field; the shipped default
passes, and the typed model refuses the same input (the controller never acts on what admission would not
let in)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from kokpit.api import install_crds
from kokpit.api.maintenance import MaintenancePolicySpec, default_policy_spec, parse_duration
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client
from kokpit.operators.maintenance import FLOW, POLICY

GOOD: dict[str, Any] = {"apiVersion": "kokpit.io/v1alpha1", "kind": "MaintenancePolicy",
                        "metadata": {"name": "default"}, "spec": default_policy_spec().to_wire()}

BAD: list[tuple[str, Any, str]] = [
    ("flows.1.steps", ["Isolate", "Reboot", "Restore"], "spec.flows[1].steps[1]"),
    ("flows.1.steps", ["Isolate", "Repair"], "spec.flows[1].steps"),
    ("flows.1.repair", "Pray", "spec.flows[1].repair"),
    ("flows.1.timeout", "ten minutes", "spec.flows[1].timeout"),
    ("flows.1.timeout", "-5m", "spec.flows[1].timeout"),
    ("flows.1.maxAttempts", 0, "spec.flows[1].maxAttempts"),
    ("flows.1.name", "Reboot!", "spec.flows[1].name"),
    ("escalation", ["component-restart", "reboot", "component-restart"], "spec.escalation"),
    ("escalation", ["component-restart", "format-disk"], "spec.escalation"),
    ("faultTypes", [{"type": "disk-failure", "flow": "shrug"}], "spec.faultTypes"),
    ("migrationDeadline", "soon", "spec.migrationDeadline"),
    ("storm", {"maxFaulty": "150%"}, "spec.storm.maxFaulty"),
    ("storm", {"maxFaulty": 3, "window": "a while"}, "spec.storm.window"),
]


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    node: Any = obj["spec"]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[keys[-1]] = value
    return obj


def test_durations_and_the_typed_model_refuse_the_same() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
    for path, value, _field in BAD:
        with pytest.raises(ValidationError):
            MaintenancePolicySpec.model_validate(_with(path, value)["spec"])
    spec = default_policy_spec()
    assert spec.next_flow("reboot") == "reinstall" and spec.next_flow("hardware-repair") is None
    assert spec.flow_for("disk-failure", "hardware-repair") == "hardware-repair"
    assert spec.flow_for("unknown", "") == "reboot"


async def test_bad_policies_and_flows_are_refused_naming_the_field(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        made = await c.create(POLICY, GOOD)
        assert made["spec"]["storm"]["window"] == "10m"
        for i, (path, value, field) in enumerate(BAD):
            obj = _with(path, value)
            obj["metadata"] = {"name": f"bad-{i}"}
            with pytest.raises(ApiError) as ei:
                await c.create(POLICY, obj)
            assert ei.value.code == 422, (path, value, ei.value)
            assert ei.value.status.get("reason") == "Invalid"
            fields = [x.get("field") for x in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (path, value, fields, ei.value.message)
        assert [p["metadata"]["name"] for p in (await c.list(POLICY)).items] == ["default"]
        # an update that would make a cycle is refused and loses nothing
        cur = await c.get(POLICY, "default")
        cur["spec"]["escalation"] = ["reboot", "reinstall", "reboot"]
        with pytest.raises(ApiError) as ei:
            await c.update(POLICY, cur)
        assert ei.value.code == 422 and "spec.escalation" in ei.value.message
        assert (await c.get(POLICY, "default"))["spec"]["escalation"][0] == "component-restart"

        flow = {"apiVersion": "kokpit.io/v1alpha1", "kind": "MaintenanceFlow", "metadata": {"name": "n1-abc"},
                "spec": {"nodeName": "n1", "flow": "reboot", "faultType": "kernel-deadlock"}}
        assert (await c.create(FLOW, flow))["spec"]["policy"] == "default"
        for spec, field in (({"flow": "Re Boot"}, "spec.flow"), ({"nodeName": ""}, "spec.nodeName"),
                            ({"request": {"id": "r1", "action": "Pray"}}, "spec.request.action"),
                            ({"request": {"action": "Retry"}}, "spec.request.id")):
            obj = copy.deepcopy(flow)
            obj["metadata"]["name"] = "bad"
            obj["spec"].update(spec)
            with pytest.raises(ApiError) as ei:
                await c.create(FLOW, obj)
            assert ei.value.code == 422, (spec, ei.value)
            fields = [x.get("field") for x in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (spec, fields, ei.value.message)
