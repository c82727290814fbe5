"""Generated CRDs: structural, accepted by the embedded server, and enforcing the models' rules there."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field

from kokpit.api import (
    KINDS,
    KindInfo,
    Machine,
    MachinePackageVersion,
    crd_for,
    crds,
    install_crds,
    list_map,
    structural_schema,
)
from kokpit.api.meta import ResourceModel, SpecModel
from kokpit.apiserver.schema import validate, validate_crd
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client, Kind
from kokpit.nodes import InstallState as DriverInstallState
from kokpit.nodes import RunState as DriverRunState

MACHINE = Kind("kokpit.io", "v1alpha1", "Machine", "machines", namespaced=False)
MPV = Kind("kokpit.io", "v1alpha1", "MachinePackageVersion", "machinepackageversions", namespaced=False)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in (node.get("properties") or {}).items():
            out += _walk(v, f"{path}.{k}")
        for k in ("items", "additionalProperties"):
            if isinstance(node.get(k), dict):
                out += _walk(node[k], f"{path}[{k}]")
    return out


def test_crds_are_structural_and_complete() -> None:
    for crd in crds():
        assert validate_crd(crd) == [], crd["metadata"]["name"]
        v = crd["spec"]["versions"][0]
        schema = v["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node and "anyOf" not in node, path
            # int-or-string is the one untyped node a structural schema allows (maxUnavailable: 10% or 3)
            assert node.get("type") or node.get("x-kubernetes-int-or-string"), \
                f"{crd['metadata']['name']}{path} has no type"
        assert crd["spec"]["names"]["categories"] == ["kokpit"]
        assert crd["spec"]["names"]["shortNames"]
    m = crd_for(Machine)
    v = m["spec"]["versions"][0]
    assert v["subresources"] == {"status": {}}
    assert [c["name"] for c in v["additionalPrinterColumns"]] == ["Node", "Ready", "Components", "Phase", "Age"]
    props = v["schema"]["openAPIV3Schema"]["properties"]
    comps = props["status"]["properties"]["components"]
    assert comps["x-kubernetes-list-type"] == "map" and comps["x-kubernetes-list-map-keys"] == ["name"]
    assert comps["items"]["properties"]["installState"]["enum"] == [s.value for s in DriverInstallState]
    assert comps["items"]["properties"]["runState"]["enum"] == [s.value for s in DriverRunState]
    gates = props["spec"]["properties"]["readinessGates"]
    assert gates["x-kubernetes-list-map-keys"] == ["conditionType"]
    assert props["spec"]["required"] == ["nodeName"]
    assert props["spec"]["properties"]["unschedulable"]["default"] is False
    hc = crd_for(MachinePackageVersion)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    timeout = hc["properties"]["spec"]["properties"]["healthCheck"]["properties"]["timeoutSeconds"]
    assert (timeout["minimum"], timeout["maximum"], timeout["default"]) == (1, 600, 10)
    assert {k.KIND_INFO.kind for k in KINDS} >= {"Machine", "MachinePackageVersion"}


def test_generator_is_generic() -> None:
    class Color(StrEnum):
        RED = "red"
        BLUE = "blue"

    class Port(SpecModel):
        name: str
        number: int = Field(gt=0, lt=65536)

    class WidgetSpec(SpecModel):
        color: Color = Color.RED
        ports: list[Port] = Field(default_factory=list, json_schema_extra=list_map("name"))
        target: int | str = 1
        note: str | None = None
        labels: dict[str, str] = Field(default_factory=dict)

    class Widget(ResourceModel):
        KIND_INFO: ClassVar[KindInfo] = KindInfo("example.kokpit.io", "v1", "Widget", "widgets")
        spec: WidgetSpec

    crd = crd_for(Widget)
    assert validate_crd(crd) == []
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    p = spec["properties"]
    assert p["color"] == {"enum": ["red", "blue"], "type": "string", "default": "red"} or \
        (p["color"]["enum"] == ["red", "blue"] and p["color"]["default"] == "red")
    num = p["ports"]["items"]["properties"]["number"]
    assert (num["minimum"], num["exclusiveMinimum"], num["maximum"], num["exclusiveMaximum"]) == (0, True, 65536, True)
    assert p["target"].get("x-kubernetes-int-or-string") is True
    assert p["note"]["type"] == "string" and "default" not in p["note"]
    assert p["labels"]["additionalProperties"] == {"type": "string"}
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["listKind"] == "WidgetList"

    class Tree(BaseModel):
        children: list[Tree] = []

    with pytest.raises(ValueError, match="recursive"):
        structural_schema(Tree)


def _machine(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": "n1"},
            "spec": {"nodeName": "n1", **spec}}


def test_schema_validation_in_process() -> None:
    schema = crd_for(Machine)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validate(_machine(packages=["kubelet-1.30"], readinessGates=[{"conditionType": "X"}]), schema)
    ok = Machine.model_validate(_machine(packages=["a"]))
    assert ok.spec.node_name == "n1" and ok.to_wire()["spec"]["nodeName"] == "n1"


async def test_embedded_server_accepts_crds_and_enforces_them(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        applied = await install_crds(c)
        assert {a["metadata"]["name"] for a in applied} >= {"machines.kokpit.io",
                                                            "machinepackageversions.kokpit.io"}
        await install_crds(c)  # idempotent
        await c.create(MPV, {"metadata": {"name": "kubelet-1.30"},
                             "spec": {"component": "kubelet", "version": "1.30.0", "dependsOn": ["containerd"],
                                      "healthCheck": {"type": "systemd", "unit": "kubelet"}}})
        mpv = await c.get(MPV, "kubelet-1.30")
        assert mpv["spec"]["healthCheck"]["timeoutSeconds"] == 10  # defaulted by the schema
        created = await c.create(MACHINE, _machine(packages=["kubelet-1.30"]))
        assert created["spec"]["unschedulable"] is False  # defaulted by the schema
        # a valid status through the status subresource
        await c.patch(MACHINE, "n1", {"status": {"components": [
            {"name": "kubelet", "version": "1.30.0", "installState": "Installed", "runState": "Running"}]}},
            subresource="status")
        bad = [
            (_machine(packages=[]) | {"spec": {"packages": []}}, "spec.nodeName"),
            (_machine(readinessGates=[{"conditionType": ""}]), "spec.readinessGates[0].conditionType"),
            (_machine(nodeName="Bad_Name"), "spec.nodeName"),
            (_machine(readinessGates=[{"conditionType": "X", "sources": ["not a label value!"]}]),
             "spec.readinessGates[0].sources[0]"),
        ]
        for i, (obj, field) in enumerate(bad):
            obj["metadata"] = {"name": f"bad{i}"}
            with pytest.raises(ApiError) as ei:
                await c.create(MACHINE, obj)
            assert ei.value.code == 422, ei.value
            fields = [cause.get("field") for cause in (ei.value.status.get("details") or {}).get("causes", [])]
            assert field in fields or field in ei.value.message, (field, ei.value.status)
        with pytest.raises(ApiError) as ei:
            await c.patch(MACHINE, "n1", {"status": {"components": [
                {"name": "kubelet", "installState": "Exploded"}]}}, subresource="status")
        assert ei.value.code == 422 and "status.components[0].installState" in ei.value.message
        with pytest.raises(ApiError) as ei:
            await c.create(MPV, {"metadata": {"name": "x"}, "spec": {"component": "x", "version": "1",
                                                                     "healthCheck": {"timeoutSeconds": 0}}})
        assert "spec.healthCheck.timeoutSeconds" in ei.value.message


def test_kokpit_crds_cli_applies_with_kubectl(apiserver: ApiServerProcess, kubectl_bin: str) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "kokpit.cli.main", "crds"], capture_output=True, check=True)
    kc = ["--kubeconfig", str(apiserver.kubeconfig)]
    subprocess.run([kubectl_bin, *kc, "apply", "--server-side", "-f", "-"], input=out.stdout, check=True,
                   capture_output=True)
    subprocess.run([kubectl_bin, *kc, "wait", "--for=condition=Established", "--timeout=20s",
                    "crd/machines.kokpit.io", "crd/machinepackageversions.kokpit.io"], check=True,
                   capture_output=True)
    m = b"""{"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": "n1"},
             "spec": {"nodeName": "n1", "packages": []}}"""
    subprocess.run([kubectl_bin, *kc, "apply", "-f", "-"], input=m, check=True, capture_output=True)
    got = subprocess.run([kubectl_bin, *kc, "get", "mach"], capture_output=True, check=True, text=True).stdout
    header = got.splitlines()[0].split()
    assert header == ["NAME", "NODE", "READY", "COMPONENTS", "AGE"], got
    assert got.splitlines()[1].split()[:2] == ["n1", "n1"]
    cats = subprocess.run([kubectl_bin, *kc, "get", "kokpit"], capture_output=True, text=True)
    assert cats.returncode == 0 and "machine.kokpit.io/n1" in cats.stdout, cats.stdout + cats.stderr
    bad = subprocess.run([kubectl_bin, *kc, "apply", "-f", "-"], capture_output=True, text=True,
                         input='{"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": "n2"},'
                               ' "spec": {"packages": []}}')
    assert bad.returncode != 0 and "spec.nodeName" in bad.stderr, bad.stderr
