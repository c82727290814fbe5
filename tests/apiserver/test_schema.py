"""Validation, metadata names, CRD structural checks, pruning, defaulting and CEL rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kokpit.apiserver import schema as S
from kokpit.apiserver.errors import Cause


def _builtin(group: str, version: str, kind: str) -> dict[str, Any]:
    schema = S.builtin_schema(group, version, kind)
    assert schema is not None
    return schema


POD = _builtin("", "v1", "Pod")
CM = _builtin("", "v1", "ConfigMap")
DEPLOY = _builtin("apps", "v1", "Deployment")


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}], **spec},
    }


def fields(causes: list[Cause]) -> dict[str, str]:
    return {c.field: c.reason for c in causes}


# --- built-in definitions -----------------------------------------------------------------------------------


def test_builtin_definitions_and_resolve() -> None:
    defs = S.load_builtin_definitions()
    assert "io.k8s.api.core.v1.Pod" in defs
    assert S.load_builtin_definitions() is defs  # loaded once
    assert POD == {"$ref": "#/$defs/io.k8s.api.core.v1.Pod"}
    assert S.builtin_schema("", "v1", "Pod") is POD
    assert S.builtin_schema("apps", "v1", "Nope") is None
    spec = S.resolve(S.resolve(POD)["properties"]["spec"])
    assert spec["required"] == ["containers"]
    assert S.resolve({"$ref": "/api/_definitions.json#/$defs/io.k8s.api.core.v1.PodSpec"}) is spec
    plain = {"type": "string"}
    assert S.resolve(plain) is plain


# --- validate -----------------------------------------------------------------------------------------------


def test_valid_objects_pass() -> None:
    assert S.validate(pod(), POD) == ([], [])
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    assert S.validate(cm, CM) == ([], [])


def test_type_errors_have_kube_paths_and_messages() -> None:
    p = pod()
    p["spec"]["containers"][0]["image"] = 5
    p["spec"]["containers"][0]["ports"][0]["containerPort"] = "80"
    errors, _ = S.validate(p, POD)
    by_field = {c.field: c for c in errors}
    img = by_field["spec.containers[0].image"]
    assert img.reason == "FieldValueTypeInvalid"
    assert img.message.startswith('Invalid value: "integer": spec.containers[0].image in body must be of type '
                                  "string")
    assert by_field["spec.containers[0].ports[0].containerPort"].reason == "FieldValueTypeInvalid"
    assert len(errors) == 2


def test_int_or_string_and_quantities() -> None:
    p = pod()
    c = p["spec"]["containers"][0]
    c["readinessProbe"] = {"httpGet": {"port": "http"}}
    c["livenessProbe"] = {"httpGet": {"port": 8080}}
    c["resources"] = {"limits": {"cpu": "500m", "memory": 1024}, "requests": {"cpu": 0.5}}
    assert S.validate(p, POD)[0] == []
    c["readinessProbe"]["httpGet"]["port"] = True
    c["resources"]["limits"]["cpu"] = ["1"]
    assert fields(S.validate(p, POD)[0]) == {
        "spec.containers[0].readinessProbe.httpGet.port": "FieldValueTypeInvalid",
        "spec.containers[0].resources.limits.cpu": "FieldValueTypeInvalid",
    }


def test_integral_floats_are_integers_and_bools_are_not() -> None:
    d: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
         "spec": {"replicas": 3.0, "selector": {}, "template": {}}}
    assert S.validate(d, DEPLOY)[0] == []
    d["spec"]["replicas"] = 2.5
    assert fields(S.validate(d, DEPLOY)[0]) == {"spec.replicas": "FieldValueTypeInvalid"}
    d["spec"]["replicas"] = True
    assert fields(S.validate(d, DEPLOY)[0]) == {"spec.replicas": "FieldValueTypeInvalid"}


def test_required_fields_and_nulls() -> None:
    p = pod()
    del p["spec"]["containers"][0]["name"]
    assert fields(S.validate(p, POD)[0]) == {"spec.containers[0].name": "FieldValueRequired"}
    p = pod()
    p["spec"]["containers"] = None  # null counts as absent
    errors, _ = S.validate(p, POD)
    assert [(c.field, c.message) for c in errors] == [("spec.containers", "Required value")]
    p = pod(nodeName=None, hostname=None)
    p["metadata"]["labels"] = None
    assert S.validate(p, POD)[0] == []


@pytest.mark.parametrize(
    ("mode", "n_errors", "warnings"),
    [("Strict", 2, []), ("Warn", 0, ['unknown field "spec.foo"', 'unknown field "spec.containers[0].bar"']),
     ("Ignore", 0, [])],
)
def test_unknown_fields(mode: str, n_errors: int, warnings: list[str]) -> None:
    p = pod(foo=1)
    p["spec"]["containers"][0]["bar"] = {"x": 1}
    errors, warns = S.validate(p, POD, field_validation=mode)
    assert len(errors) == n_errors
    assert sorted(warns) == sorted(warnings)
    if mode == "Strict":
        assert {c.field for c in errors} == {"spec.foo", "spec.containers[0].bar"}
        assert all(c.reason == "FieldValueUnknown" for c in errors)
        assert any(c.message == 'unknown field "spec.foo"' for c in errors)


def test_unknown_metadata_field_and_opaque_builtins() -> None:
    p = pod()
    p["metadata"]["bogus"] = 1
    p["metadata"]["managedFields"] = [{"manager": "m", "operation": "Apply", "fieldsType": "FieldsV1",
                                       "fieldsV1": {"f:spec": {"f:x": {}}}}]
    assert fields(S.validate(p, POD)[0]) == {"metadata.bogus": "FieldValueUnknown"}


def test_duplicate_map_list_keys() -> None:
    p = pod()
    p["spec"]["containers"].append({"name": "web", "image": "x"})
    errors, _ = S.validate(p, POD)
    assert fields(errors) == {"spec.containers[1]": "FieldValueDuplicate"}


# --- metadata -----------------------------------------------------------------------------------------------


def test_object_meta_names() -> None:
    causes = S.validate_object_meta({"name": "Foo_bar", "namespace": "default"}, namespaced=True)
    assert len(causes) == 1
    assert causes[0].field == "metadata.name"
    assert causes[0].message.startswith('Invalid value: "Foo_bar": a lowercase RFC 1123 subdomain must consist '
                                        "of lower case alphanumeric characters, '-' or '.'")
    assert "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'" in (
        causes[0].message)
    assert S.validate_object_meta({"name": "a.b-c", "namespace": "x"}, namespaced=True) == []
    assert S.validate_object_meta({"name": "a" * 254}, namespaced=False)[0].message.endswith(
        "must be no more than 253 characters")
    label = S.validate_object_meta({"name": "a.b"}, namespaced=False, name_rule="dns1123label")
    assert "RFC 1123 label" in label[0].message
    assert S.validate_object_meta({"generateName": "web-"}, namespaced=False) == []
    missing = S.validate_object_meta({}, namespaced=False)
    assert [(c.field, c.reason) for c in missing] == [("metadata.name", "FieldValueRequired")]
    assert fields(S.validate_object_meta({"name": "a"}, namespaced=True)) == {
        "metadata.namespace": "FieldValueRequired"}


def test_labels_and_annotations() -> None:
    meta = {"name": "a", "labels": {"bad key": "ok", "example.com/app": "x" * 64, "ok": "-bad"},
            "annotations": {"a": "x" * (256 * 1024)}}
    causes = S.validate_object_meta(meta, namespaced=False)
    msgs = [(c.field, c.message) for c in causes]
    assert any(f == "metadata.labels" and 'Invalid value: "bad key": name part must consist' in m for f, m in msgs)
    assert any(f == "metadata.labels" and m.endswith("must be no more than 63 characters") for f, m in msgs)
    assert any(f == "metadata.labels" and "a valid label must be an empty string" in m for f, m in msgs)
    assert ("metadata.annotations", "Too long: may not be more than 262144 bytes") in msgs
    ok = {"name": "a", "labels": {"kokpit.io/node": "n-1", "empty": ""}, "annotations": {"x/y": "z"}}
    assert S.validate_object_meta(ok, namespaced=False) == []
    nulls = {"name": "a", "labels": {"k": None, "j": "v"}, "annotations": {"a": None}}
    assert S.validate_object_meta(nulls, namespaced=False) == []
    assert nulls["labels"] == {"k": "", "j": "v"} and nulls["annotations"] == {"a": ""}  # as kube decodes null


# --- CRDs ---------------------------------------------------------------------------------------------------


def machine_crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["nodeName"],
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}],
                "properties": {
                    "nodeName": {"type": "string", "maxLength": 10, "pattern": "^[a-z0-9-]+$"},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                    "port": {"x-kubernetes-int-or-string": True},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
                    "opts": {"type": "object", "default": {}, "properties": {"x": {"type": "integer",
                                                                                  "default": 7}}},
                    "note": {"type": "string", "nullable": True},
                    "range": {
                        "type": "object",
                        "x-kubernetes-validations": [{
                            "rule": "self.min <= self.max",
                            "messageExpression": "'min ' + string(self.min) + ' exceeds max'"}],
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    },
                },
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "machines.kokpit.io"},
        "spec": {
            "group": "kokpit.io",
            "scope": "Cluster",
            "names": {"plural": "machines", "singular": "machine", "kind": "Machine", "listKind": "MachineList"},
            "versions": [{"name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": schema}}],
        },
    }


def machine_schema() -> dict[str, Any]:
    schema: dict[str, Any] = machine_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def machine(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": "m1"},
            "spec": {"nodeName": "n1", **spec}}


def test_valid_crd() -> None:
    assert S.validate_crd(machine_crd()) == []


def test_crd_errors() -> None:
    crd = machine_crd()
    crd["metadata"]["name"] = "wrong"
    crd["spec"]["scope"] = "Galaxy"
    crd["spec"]["names"].pop("kind")
    v = crd["spec"]["versions"][0]
    v["storage"] = False
    spec_schema = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["untyped"] = {"description": "no type"}
    spec_schema["properties"]["list"] = {"type": "array"}
    spec_schema["properties"]["both"] = {"type": "object", "properties": {"a": {"type": "string"}},
                                         "additionalProperties": {"type": "string"}}
    spec_schema["properties"]["ios"] = {"x-kubernetes-int-or-string": True}
    spec_schema["properties"]["free"] = {"x-kubernetes-preserve-unknown-fields": True}
    spec_schema["x-kubernetes-validations"].append({"rule": "self =="})
    got = {(c.field, c.reason) for c in S.validate_crd(crd)}
    base = "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
    assert got == {
        ("metadata.name", "FieldValueInvalid"),
        ("spec.scope", "FieldValueNotSupported"),
        ("spec.names.kind", "FieldValueRequired"),
        ("spec.versions", "FieldValueInvalid"),
        (f"{base}.properties[untyped].type", "FieldValueRequired"),
        (f"{base}.properties[list].items", "FieldValueRequired"),
        (f"{base}.properties[both].additionalProperties", "FieldValueForbidden"),
        (f"{base}.x-kubernetes-validations[1].rule", "FieldValueInvalid"),
    }
    name_cause = next(c for c in S.validate_crd(crd) if c.field == "metadata.name")
    assert name_cause.message == 'Invalid value: "wrong": must be spec.names.plural+"."+spec.group'


def test_crd_needs_versions_and_schema() -> None:
    crd = machine_crd()
    crd["spec"]["versions"] = []
    assert ("spec.versions", "FieldValueInvalid") in {(c.field, c.reason) for c in S.validate_crd(crd)}
    crd = machine_crd()
    del crd["spec"]["versions"][0]["schema"]
    assert ("spec.versions[0].schema.openAPIV3Schema", "FieldValueRequired") in {
        (c.field, c.reason) for c in S.validate_crd(crd)}


def test_prune() -> None:
    obj = machine(bogus=1, extra={"any": {"thing": [1]}}, opts={"x": 1, "y": 2})
    obj["metadata"]["junk"] = True
    obj["metadata"]["labels"] = {"a": "b"}
    obj["top"] = 1
    removed = S.prune(obj, machine_schema())
    assert sorted(removed) == ["metadata.junk", "spec.bogus", "spec.opts.y", "top"]
    assert obj["spec"]["extra"] == {"any": {"thing": [1]}}
    assert obj["metadata"] == {"name": "m1", "labels": {"a": "b"}}
    assert obj["apiVersion"] == "kokpit.io/v1alpha1"
    assert S.prune(obj, machine_schema()) == []


def test_prune_schema_without_root_fields_keeps_them() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object"}}}
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 1}}
    assert S.prune(obj, schema) == ["spec.a"]
    assert obj == {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {}}
    assert S.validate(obj, schema) == ([], [])


def test_defaults() -> None:
    obj = machine(opts=None)
    S.apply_defaults(obj, machine_schema())
    assert obj["spec"] == {"nodeName": "n1", "replicas": 1, "mode": "a", "opts": {"x": 7}}
    obj = machine(replicas=3, opts={"x": 2})
    S.apply_defaults(obj, machine_schema())
    assert obj["spec"]["replicas"] == 3 and obj["spec"]["opts"] == {"x": 2}
    # defaults are copied, not shared
    a, b = machine(), machine()
    S.apply_defaults(a, machine_schema())
    S.apply_defaults(b, machine_schema())
    a["spec"]["opts"]["x"] = 99
    assert b["spec"]["opts"]["x"] == 7


def test_custom_resource_validation() -> None:
    schema = machine_schema()
    assert S.validate(machine(port="http", tags=["a"], note=None), schema) == ([], [])
    assert S.validate(machine(port=8080), schema)[0] == []
    bad = machine(replicas=9, mode="z", port=1.5, tags=["a", "b", "c"])
    bad["spec"]["nodeName"] = "N_1 is far too long"
    errors, _ = S.validate(bad, schema)
    got = {(c.field, c.reason) for c in errors}
    assert got == {
        ("spec.nodeName", "FieldValueTooLong"),
        ("spec.nodeName", "FieldValueInvalid"),
        ("spec.replicas", "FieldValueInvalid"),
        ("spec.mode", "FieldValueNotSupported"),
        ("spec.port", "FieldValueTypeInvalid"),
        ("spec.tags", "FieldValueTooMany"),
    }
    msgs = {c.message for c in errors}
    assert "Invalid value: 9: spec.replicas in body should be less than or equal to 5" in msgs
    assert 'Unsupported value: "z": supported values: "a", "b"' in msgs
    assert "Invalid value: \"N_1 is far too long\": spec.nodeName in body should match '^[a-z0-9-]+$'" in msgs
    errors, _ = S.validate(machine(tags=[]), schema)
    assert fields(errors) == {"spec.tags": "FieldValueInvalid"}
    no_node = machine()
    del no_node["spec"]["nodeName"]
    assert fields(S.validate(no_node, schema)[0]) == {"spec.nodeName": "FieldValueRequired"}
    # a null list item is refused as kube refuses it (a null field is pruned instead, see above)
    nulls = machine(tags=[None, "a"])
    assert [(c.field, c.reason, c.message) for c in S.validate(nulls, schema)[0]] == [
        ("spec.tags[0]", "FieldValueTypeInvalid",
         'Invalid value: "null": spec.tags[0] in body must be of type string: "null"')]
    unknown = machine(extra={"free": 1})
    unknown["spec"]["zzz"] = 1
    assert fields(S.validate(unknown, schema)[0]) == {"spec.zzz": "FieldValueUnknown"}


def test_cel_rules_and_immutability() -> None:
    schema = machine_schema()
    errors, _ = S.validate(machine(range={"min": 3, "max": 1}), schema)
    assert [(c.field, c.message) for c in errors] == [("spec.range", 'Invalid value: "object": min 3 exceeds max')]
    old = machine(replicas=2)
    # create: transition rules do not run
    assert S.validate(machine(replicas=3), schema)[0] == []
    # update with the same spec passes, a changed spec fails
    assert S.validate(copy.deepcopy(old), schema, old=old)[0] == []
    errors, _ = S.validate(machine(replicas=3), schema, old=old)
    assert [(c.field, c.message, c.reason) for c in errors] == [
        ("spec", 'Invalid value: "object": spec is immutable', "FieldValueInvalid")]


def test_cel_rule_options() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "items": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.v >= oldSelf.v", "message": "v may not shrink"}]},
        }},
        "x-kubernetes-validations": [
            {"rule": "self.a > 0", "fieldPath": ".a", "reason": "FieldValueForbidden", "message": "positive"},
            {"rule": "self.nope > 0"},
        ],
    }}}
    obj: dict[str, Any] = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
           "spec": {"a": 0, "items": [{"name": "p", "v": 1}, {"name": "q", "v": 5}]}}
    errors, _ = S.validate(obj, schema)
    assert ("spec.a", "Forbidden: positive", "FieldValueForbidden") in [(c.field, c.message, c.reason)
                                                                         for c in errors]
    assert any(c.field == "spec" and "rule evaluation error" in c.message for c in errors)
    old = copy.deepcopy(obj)
    old["spec"]["items"] = [{"name": "q", "v": 9}]
    errors, _ = S.validate(obj, schema, old=old)
    assert [(c.field, c.message) for c in errors if c.field.startswith("spec.items")] == [
        ("spec.items[1]", 'Invalid value: "object": v may not shrink')]
