"""Spec mistakes a newcomer makes with kubectl (issue 13): refused at admission with a Status naming the
field when no controller could ever act on them, and made visible in `kubectl get` when a controller must
hold on (a Cluster asking for a release that does not exist shows the wanted release beside the running
one)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client
from kokpit.operators.cluster import CLUSTER
from kokpit.operators.machine import MACHINE


def _machine(name: str, gates: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": name},
            "spec": {"nodeName": name, "readinessGates": gates}}


BAD_GATES = [  # a gate no Condition ConfigMap could ever report (its data keys are [-._a-zA-Z0-9]+)
    ([{"conditionType": "Network Ready"}], "spec.readinessGates[0].conditionType"),
    ([{"conditionType": "NetworkReady!"}], "spec.readinessGates[0].conditionType"),
    ([{"conditionType": "example.com/NetworkReady"}], "spec.readinessGates[0].conditionType"),
    ([{"conditionType": "x" * 254}], "spec.readinessGates[0].conditionType"),
    ([{"conditionType": "NetworkReady", "sources": ["cni operator"]}], "spec.readinessGates[0].sources[0]"),
]


async def test_an_unreportable_readiness_gate_is_refused(apiserver: ApiServerProcess) -> None:
    """A gate whose condition type cannot be a ConfigMap key would keep a healthy node cordoned for good."""
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        await c.create(MACHINE, _machine("good", [{"conditionType": "Network-Ready_2.v1", "sources": ["cni"]}]))
        for i, (gates, field) in enumerate(BAD_GATES):
            with pytest.raises(ApiError) as ei:
                await c.create(MACHINE, _machine(f"bad-{i}", gates))
            assert ei.value.code == 422, ei.value
            fields = [cause.get("field") for cause in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (gates, ei.value.status)
        # the same mistake made later, on a Machine that exists: refused, the Machine unchanged
        with pytest.raises(ApiError) as ei:
            await c.patch(MACHINE, "good", {"spec": {"readinessGates": [{"conditionType": "bad type"}]}})
        assert ei.value.code == 422
        kept = await c.get(MACHINE, "good")
        assert kept["spec"]["readinessGates"] == [{"conditionType": "Network-Ready_2.v1", "sources": ["cni"]}]


async def test_kubectl_shows_the_wanted_release_beside_the_running_one(apiserver: ApiServerProcess,
                                                                        kubectl_bin: str) -> None:
    """`kubectl get clusters`: WANTED (spec) and VERSION (what runs) are separate columns, and AVAILABLE
    (serving) apart from UPTODATE (at the wanted release), so a typo in spec.packageVersion shows."""
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        cl = await c.create(CLUSTER, {"metadata": {"name": "c1"}, "spec": {"packageVersion": "v1.37.O"}},
                            "default")
        cl["status"] = {"packageVersion": "v1.36.2", "conditions": [
            {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"}
            for t, s, r in (("Available", "True", "Serving"), ("UpToDate", "False", "PackageVersionNotFound"),
                            ("Ready", "True", "Ready"))]}
        await c.update_status(CLUSTER, cl)
    def kubectl(*args: str) -> str:
        return subprocess.run([kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), *args],
                              capture_output=True, text=True, timeout=30, check=True).stdout
    out = await asyncio.to_thread(kubectl, "get", "clusters", "-n", "default", "-o", "json")
    assert json.loads(out)["items"][0]["spec"]["packageVersion"] == "v1.37.O"
    table = await asyncio.to_thread(kubectl, "get", "clusters", "-n", "default")
    header, row = (line.split() for line in table.strip().splitlines())
    cells = dict(zip(header, row, strict=False))
    assert (cells["WANTED"], cells["VERSION"]) == ("v1.37.O", "v1.36.2"), table
    assert (cells["AVAILABLE"], cells["UPTODATE"], cells["READY"]) == ("True", "False", "True"), table
