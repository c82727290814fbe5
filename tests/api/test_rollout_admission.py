"""Rollout admission: every bad input of the rollout issue that admission can know is refused by the real
(embedded) API server with a 422 Status naming the field, the pydantic model refuses the same, and good
Rollouts of both target kinds pass (with their defaults)."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kokpit.api import install_crds
from kokpit.api.rollout import RolloutSpec, canary_size
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client, Kind

ROLLOUT = Kind("kokpit.io", "v1alpha1", "Rollout", "rollouts")

CLUSTERS: dict[str, Any] = {
    "apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "cp", "namespace": "default"},
    "spec": {"target": {"clusters": {"selector": {"matchLabels": {"env": "prod"}}, "packageVersion": "v2"}},
             "strategy": {"steps": [{"canary": 1}, {"pause": {}}, {"canary": "10%"},
                                    {"analysis": {"duration": "1m"}}, {"canary": "100%"}]}},
}
MACHINES: dict[str, Any] = {
    "apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "kubelet", "namespace": "default"},
    "spec": {"target": {"machines": {"clusterNames": ["c1"], "machineSelector": {"matchLabels": {"pool": "a"}},
                                     "packages": [{"component": "kubelet", "from": "kubelet-1.30",
                                                   "to": "kubelet-1.31"},
                                                  {"component": "node-exporter", "to": "ne-1.8"}]}},
             "strategy": {"steps": [{"canary": 1}, {"pause": {"duration": "30s"}}, {"canary": "100%"}],
                          "maxUnavailable": "25%", "bakeTime": "10s",
                          "order": {"priorityLabel": "kokpit.io/priority",
                                    "topologyLabel": "topology.kubernetes.io/zone"}},
             "failurePolicy": {"maxFailures": 1, "rollback": True}},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    node: Any = obj
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


BAD: list[tuple[dict[str, Any], str, Any, str]] = [
    # steps that do not end at 100%
    (CLUSTERS, "spec.strategy.steps", [{"canary": 1}, {"canary": "50%"}], "spec.strategy.steps"),
    (CLUSTERS, "spec.strategy.steps", [{"pause": {}}], "spec.strategy.steps"),
    # a percentage over 100
    (CLUSTERS, "spec.strategy.steps.2.canary", "150%", "spec.strategy.steps[2].canary"),
    (CLUSTERS, "spec.strategy.steps.0.canary", 0, "spec.strategy.steps[0].canary"),
    (MACHINES, "spec.strategy.maxUnavailable", "101%", "spec.strategy.maxUnavailable"),
    (MACHINES, "spec.failurePolicy.maxFailures", -1, "spec.failurePolicy.maxFailures"),
    # a negative pause
    (CLUSTERS, "spec.strategy.steps.1.pause", {"duration": "-5m"}, "spec.strategy.steps[1].pause.duration"),
    (MACHINES, "spec.strategy.bakeTime", "-1s", "spec.strategy.bakeTime"),
    # a step with two actions, or none
    (CLUSTERS, "spec.strategy.steps.1", {"pause": {}, "canary": 2}, "spec.strategy.steps[1]"),
    (CLUSTERS, "spec.strategy.steps.1", {}, "spec.strategy.steps[1]"),
    # a package change that gives one component two versions
    (MACHINES, "spec.target.machines.packages",
     [{"component": "kubelet", "to": "kubelet-1.31"}, {"component": "kubelet", "to": "kubelet-1.32"}],
     "spec.target.machines.packages[1]"),
    (MACHINES, "spec.target.machines.packages",
     [{"component": "kubelet", "from": "kubelet-1.31", "to": "kubelet-1.31"}],
     "spec.target.machines.packages[0].to"),
    (MACHINES, "spec.target.machines.packages", [], "spec.target.machines.packages"),
    # the target: both kinds, neither, or nothing named
    (CLUSTERS, "spec.target.machines", MACHINES["spec"]["target"]["machines"], "spec.target"),
    (CLUSTERS, "spec.target", {}, "spec.target"),
    (CLUSTERS, "spec.target.clusters", {"packageVersion": "v2"}, "spec.target.clusters"),
    (CLUSTERS, "spec.target.clusters.packageVersion", "Not_A_Name", "spec.target.clusters.packageVersion"),
    (MACHINES, "spec.target.machines.clusterNames", [], "spec.target.machines"),
    (MACHINES, "spec.target.machines.machineSelector", {"matchLabels": {"bad key!": "x"}},
     "spec.target.machines.machineSelector.matchLabels"),
    # an empty Cluster selector would select every Cluster of the namespace by accident
    (CLUSTERS, "spec.target.clusters.selector", {}, "spec.target.clusters.selector"),
    (CLUSTERS, "spec.target.clusters.selector", {"matchLabels": {}, "matchExpressions": []},
     "spec.target.clusters.selector"),
    (MACHINES, "spec.target.machines.clusterSelector", {}, "spec.target.machines.clusterSelector"),
]


def test_canary_sizes() -> None:
    assert [canary_size(v, 1000) for v in (1, "1%", "10%", "50%", "100%", 5000)] == [1, 10, 100, 500, 1000, 1000]
    assert canary_size("1%", 10) == 1 and canary_size("10%", 15) == 2 and canary_size("100%", 0) == 0


CPV = Kind("kokpit.io", "v1alpha1", "ClusterPackageVersion", "clusterpackageversions", namespaced=False)


async def test_bad_rollouts_are_refused_naming_the_field(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        # a ClusterPackageVersion that does not exist: the API server's declared-reference admission
        with pytest.raises(ApiError) as ei:
            await c.create(ROLLOUT, CLUSTERS)
        assert ei.value.code == 422 and ei.value.status.get("reason") == "Invalid"
        causes = (ei.value.status.get("details") or {}).get("causes", [])
        assert {"field": "spec.target.clusters.packageVersion", "reason": "FieldValueNotFound"}.items() <= \
            causes[0].items() and '"v2"' in causes[0]["message"], causes
        await c.create(CPV, {"metadata": {"name": "v2"}, "spec": {
            "kubernetesVersion": "v1.31.0", "components": [{"name": "kube-apiserver", "image": "kokpit"}]}})
        made = await c.create(ROLLOUT, CLUSTERS)
        assert made["spec"]["failurePolicy"] == {"maxFailures": 0, "rollback": True}  # defaults
        assert made["spec"]["strategy"]["maxUnavailable"] == 1 and made["spec"]["paused"] is False
        await c.create(ROLLOUT, MACHINES)
        for i, (base, path, value, field) in enumerate(BAD):
            obj = _with(base, path, value)
            obj["metadata"]["name"] = f"bad-{i}"
            with pytest.raises(ApiError) as ei:
                await c.create(ROLLOUT, obj)
            assert ei.value.code == 422, (path, value, ei.value)
            assert ei.value.status.get("reason") == "Invalid"
            fields = [x.get("field") for x in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields, (path, value, fields, ei.value.message)
            if field.endswith("matchLabels"):
                continue  # label keys: admission's CEL rule (the controller never sees such a spec)
            # the model the controller and the CLI validate with refuses the same spec
            with pytest.raises(ValidationError):
                RolloutSpec.model_validate(obj["spec"])
        names = sorted(r["metadata"]["name"] for r in (await c.list(ROLLOUT, "default")).items)
        assert names == ["cp", "kubelet"]
        # kubectl patch-style edits to a bad value are refused too and lose nothing
        with pytest.raises(ApiError) as ei:
            await c.patch(ROLLOUT, "cp", {"spec": {"strategy": {"steps": [{"canary": "200%"}]}}}, "default")
        assert ei.value.code == 422 and "spec.strategy.steps[0].canary" in ei.value.message
        assert (await c.get(ROLLOUT, "cp", "default"))["spec"]["strategy"]["steps"][0] == {"canary": 1}
        # so is a patch to a release that does not exist; a patch that leaves it alone is not checked again
        with pytest.raises(ApiError) as ei:
            await c.patch(ROLLOUT, "cp", {"spec": {"target": {"clusters": {"packageVersion": "v9"}}}}, "default")
        assert ei.value.code == 422 and "spec.target.clusters.packageVersion" in ei.value.message
        await c.patch(ROLLOUT, "cp", {"spec": {"paused": True}}, "default")


def test_good_specs_validate() -> None:
    for base in (CLUSTERS, MACHINES):
        spec = RolloutSpec.model_validate(base["spec"])
        assert RolloutSpec.model_validate(spec.to_wire()) == spec
        assert spec.to_wire()["target"]["clusters" if "clusters" in base["spec"]["target"] else "machines"]


async def test_kubectl_apply_shows_the_field(apiserver: ApiServerProcess, kubectl_bin: str, tmp_path: Path) -> None:
    """What a person sees with kubectl: the API server's Status, naming the field, and nothing created."""
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
    cases = [(_with(CLUSTERS, "metadata.name", "no-release"), 'spec.target.clusters.packageVersion: Not found: "v2"'),
             (_with(MACHINES, "spec.target.machines.clusterSelector", {}), "spec.target.machines.clusterSelector: "
              "Invalid value"),
             (_with(CLUSTERS, "spec.strategy.steps.4.canary", "90%"), "spec.strategy.steps: Invalid value")]
    for obj, want in cases:
        path = tmp_path / "rollout.yaml"
        path.write_text(yaml.safe_dump(obj))
        out = await asyncio.to_thread(subprocess.run, [kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig),
                                                       "apply", "-f", str(path)],
                                      capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and want in out.stderr, (want, out.stderr)
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        assert (await c.list(ROLLOUT, "default")).items == []
