"""kubectl 1.37 with CustomResourceDefinitions: establish, validation and defaults, printer columns, apply
(client- and server-side), status subresource, edit, and CRD deletion.

kokpit's own kinds are CRD-shaped, so kubectl must handle them exactly like built-ins: discovery refresh after
a CRD appears, merge patches for custom resources, server-side validation errors naming the field.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Kubectl, table, wait_until

pytestmark = pytest.mark.e2e


def make_crd(group: str, plural: str = "widgets", kind: str = "Widget", short: str = "wdg") -> dict[str, Any]:
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "red"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": [short],
                               "categories": ["kokpit-e2e"]},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema},
                                   "subresources": {"status": {}},
                                   "additionalPrinterColumns": [
                                       {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                                       {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                                       {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                                       {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}}


def widget(group: str, name: str, ns: str, spec: dict[str, Any], kind: str = "Widget") -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def install(kubectl: Kubectl, crd: dict[str, Any]) -> None:
    out = kubectl.apply_obj(crd)
    assert f"customresourcedefinition.apiextensions.k8s.io/{crd['metadata']['name']} created" in out
    out = kubectl.out("wait", "--for", "condition=established", f"crd/{crd['metadata']['name']}", "--timeout=20s")
    assert "condition met" in out


@pytest.fixture(scope="module")
def group(kubectl: Kubectl) -> str:
    """One CRD shared by the module's tests (each test uses its own namespace)."""
    g = f"e2e{uuid.uuid4().hex[:6]}.kokpit.test"
    install(kubectl, make_crd(g))
    return g


def test_crd_established_and_discovered(kubectl: Kubectl, group: str) -> None:
    crd = kubectl.json("get", "crd", f"widgets.{group}")
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    rows = {r["NAME"]: r for r in table(kubectl.out("api-resources", f"--api-group={group}"))}
    assert (rows["widgets"]["SHORTNAMES"], rows["widgets"]["KIND"], rows["widgets"]["NAMESPACED"]) == (
        "wdg", "Widget", "true")
    out = kubectl.out("explain", f"widgets.{group}.spec.color")
    assert "FIELD: color <string>" in out and "ENUM:" in out and "red" in out


def test_cr_validation_defaults_and_columns(kubectl: Kubectl, group: str, ns: str) -> None:
    out = kubectl.create(widget(group, "w1", ns, {"size": 3}), widget(group, "w2", ns, {"size": 7, "color": "blue"}))
    assert f"widget.{group}/w1 created" in out
    got = kubectl.json("get", "widget", "w1", "-n", ns)
    assert got["spec"] == {"size": 3, "color": "red"}      # default applied
    # invalid CRs are rejected with the field named
    err = kubectl.fail("create", "-f", "-", input=json.dumps(widget(group, "bad", ns, {"size": 0})))
    assert "spec.size" in err and "greater than or equal to 1" in err
    err = kubectl.fail("create", "-f", "-", input=json.dumps(widget(group, "bad", ns, {"size": 2, "color": "pink"})))
    assert "spec.color" in err and "Unsupported value" in err and '"pink"' in err
    err = kubectl.fail("create", "-f", "-", input=json.dumps(widget(group, "bad", ns, {"color": "red"})))
    assert "spec.size" in err and "Required value" in err
    err = kubectl.fail("create", "-f", "-", input=json.dumps(widget(group, "bad", ns, {"size": "big"})))
    assert "spec.size" in err
    # unknown fields: strict field validation from kubectl
    err = kubectl.fail("create", "-f", "-", input=json.dumps(widget(group, "bad", ns, {"size": 1, "nope": 1})))
    assert 'unknown field "spec.nope"' in err
    assert not kubectl.exists("widgets", "bad", "-n", ns)
    # status through the status subresource, then printer columns show it
    kubectl.out("patch", "widget", "w2", "-n", ns, "--subresource=status", "--type=merge",
                "-p", '{"status":{"phase":"Ready"}}')
    out = kubectl.out("get", "wdg", "-n", ns)
    assert out.splitlines()[0].split() == ["NAME", "SIZE", "COLOR", "PHASE", "AGE"]
    rows = {r["NAME"]: r for r in table(out)}
    assert (rows["w1"]["SIZE"], rows["w1"]["COLOR"], rows["w1"]["PHASE"]) == ("3", "red", "")
    assert (rows["w2"]["SIZE"], rows["w2"]["COLOR"], rows["w2"]["PHASE"]) == ("7", "blue", "Ready")
    # the main endpoint ignores status; the status endpoint ignores spec
    kubectl.out("patch", "widget", "w2", "-n", ns, "--type=merge", "-p", '{"status":{"phase":"Hacked"}}')
    kubectl.out("patch", "widget", "w2", "-n", ns, "--subresource=status", "--type=merge",
                "-p", '{"spec":{"size":9}}')
    got = kubectl.json("get", "widget", "w2", "-n", ns)
    assert got["status"] == {"phase": "Ready"} and got["spec"]["size"] == 7
    assert got["metadata"]["generation"] == 1
    # categories and -o wide / name / jsonpath work for custom resources too
    assert sorted(kubectl.out("get", "kokpit-e2e", "-n", ns, "-o", "name").split()) == [
        f"widget.{group}/w1", f"widget.{group}/w2"]
    assert kubectl.out("get", "widgets", "-n", ns, "-o", "jsonpath={.items[*].spec.size}") == "3 7"
    rows = table(kubectl.out("get", "widgets", "-A", "--sort-by=.spec.size"))
    assert [(r["NAMESPACE"], r["NAME"]) for r in rows if r["NAMESPACE"] == ns] == [(ns, "w1"), (ns, "w2")]


def test_cr_apply_client_and_server_side(kubectl: Kubectl, group: str, ns: str, tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(yaml.safe_dump(widget(group, "aw", ns, {"size": 2, "tags": ["a", "b"], "extra": {"x": "1"}})))
    assert f"widget.{group}/aw created" in kubectl.out("apply", "-f", str(f))
    # change size, drop "extra": custom resources get a JSON merge patch computed from last-applied
    f.write_text(yaml.safe_dump(widget(group, "aw", ns, {"size": 4, "tags": ["c"]})))
    res = kubectl.run("apply", "-f", str(f), "-v=8")
    assert f"widget.{group}/aw configured" in res.stdout
    assert "application/merge-patch+json" in res.stderr
    got = kubectl.json("get", "widget", "aw", "-n", ns)
    assert got["spec"] == {"size": 4, "tags": ["c"], "color": "red"}
    # server-side apply on a custom resource: ownership and conflicts
    g = tmp_path / "s.yaml"
    g.write_text(yaml.safe_dump(widget(group, "sw", ns, {"size": 2, "color": "green"})))
    assert "serverside-applied" in kubectl.out("apply", "--server-side", "-f", str(g))
    got = kubectl.json("get", "widget", "sw", "-n", ns, "--show-managed-fields")
    mf = {m["manager"]: m for m in got["metadata"]["managedFields"]}
    assert mf["kubectl"]["operation"] == "Apply" and "f:size" in mf["kubectl"]["fieldsV1"]["f:spec"]
    g.write_text(yaml.safe_dump(widget(group, "sw", ns, {"size": 5})))
    err = kubectl.fail("apply", "--server-side", "--field-manager=scaler", "-f", str(g))
    assert "conflict" in err.lower() and ".spec.size" in err
    kubectl.out("apply", "--server-side", "--field-manager=scaler", "--force-conflicts", "-f", str(g))
    got = kubectl.json("get", "widget", "sw", "-n", ns)
    assert got["spec"] == {"size": 5, "color": "green"}
    # an apply that violates the schema fails with the field named
    g.write_text(yaml.safe_dump(widget(group, "sw", ns, {"size": 50})))
    err = kubectl.fail("apply", "--server-side", "--field-manager=scaler", "-f", str(g))
    assert "spec.size" in err


def test_cr_edit(kubectl: Kubectl, group: str, ns: str, tmp_path: Path) -> None:
    kubectl.create(widget(group, "ew", ns, {"size": 2}))
    script = tmp_path / "ed.py"
    script.write_text("import os, re, sys\np = sys.argv[-1]\nt = open(p).read()\n"
                      "open(os.environ['EDIT_LOG'], 'a').write(t + '\\n=====\\n')\n"
                      "open(p, 'w').write(re.sub(os.environ['EDIT_FROM'], os.environ['EDIT_TO'], t, "
                      "count=1, flags=re.M))\n")
    log = tmp_path / "log"
    env = {"KUBE_EDITOR": f"{sys.executable} {script}", "EDIT_LOG": str(log)}
    res = kubectl.run("edit", "widget", "ew", "-n", ns, "-v=6",
                      env={**env, "EDIT_FROM": r"^  size: 2$", "EDIT_TO": "  size: 6"})
    assert f"widget.{group}/ew edited" in res.stdout
    assert "PATCH" in res.stderr and "fieldManager=kubectl-edit" in res.stderr
    assert kubectl.json("get", "widget", "ew", "-n", ns)["spec"]["size"] == 6
    log.write_text("")
    res = kubectl.run("edit", "widget", "ew", "-n", ns, check=False,
                      env={**env, "EDIT_FROM": r"^  size: 6$", "EDIT_TO": "  size: 60"})
    assert res.returncode != 0 and "is invalid" in res.stderr
    second = log.read_text().split("=====")[1]
    assert "# * spec.size: Invalid value" in second, second
    assert kubectl.json("get", "widget", "ew", "-n", ns)["spec"]["size"] == 6


def test_crd_delete_removes_custom_resources(kubectl: Kubectl, ns: str) -> None:
    g = f"gone{uuid.uuid4().hex[:6]}.kokpit.test"
    crd = make_crd(g, plural="gadgets", kind="Gadget", short="gdg")
    install(kubectl, crd)
    kubectl.create(widget(g, "g1", ns, {"size": 1}, kind="Gadget"), widget(g, "g2", ns, {"size": 2}, kind="Gadget"))
    assert len(kubectl.out("get", f"gadgets.{g}", "-n", ns, "-o", "name").split()) == 2
    kubectl.out("delete", "crd", f"gadgets.{g}", "--timeout=30s")
    assert not kubectl.exists("crd", f"gadgets.{g}")
    err = kubectl.fail("get", f"gadgets.{g}", "-n", ns)
    assert "the server doesn't have a resource type" in err
    status, body = kubectl.server.request("GET", f"/apis/{g}/v1/namespaces/{ns}/gadgets")
    assert status == 404, body
    # recreating the CRD does not bring the old objects back
    kubectl.apply_obj(crd)
    kubectl.out("wait", "--for", "condition=established", f"crd/gadgets.{g}", "--timeout=20s")
    wait_until(lambda: kubectl.run("get", f"gadgets.{g}", "-n", ns, "-o", "name", check=False).returncode == 0,
               msg="recreated CRD served")
    assert kubectl.out("get", f"gadgets.{g}", "-n", ns, "-o", "name").strip() == ""
