"""/openapi/v3 index and documents, /openapi/v2, and their cache."""

from __future__ import annotations

from typing import Any

import orjson

from kokpit.apiserver import openapi as O
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.schema import builtin_schema

POD = ResourceType(group="", version="v1", kind="Pod", plural="pods", singular="pod", namespaced=True,
                   subresources=("status", "eviction"), schema=builtin_schema("", "v1", "Pod"))
NS = ResourceType(group="", version="v1", kind="Namespace", plural="namespaces", singular="namespace",
                  namespaced=False, subresources=("status",), schema=builtin_schema("", "v1", "Namespace"))
DEPLOY = ResourceType(group="apps", version="v1", kind="Deployment", plural="deployments", singular="deployment",
                      namespaced=True, subresources=("status", "scale"),
                      schema=builtin_schema("apps", "v1", "Deployment"))
MACHINE = ResourceType(
    group="kokpit.io", version="v1alpha1", kind="Machine", plural="machines", singular="machine",
    namespaced=False, subresources=("status",), strategic_merge=False, crd_name="machines.kokpit.io",
    schema={"type": "object", "properties": {
        "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "packages": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}}}}},
)
ALL = [POD, NS, DEPLOY, MACHINE]


def ops(doc: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [item[method] for item in doc["paths"].values() if method in item]


def test_index_lists_group_versions() -> None:
    idx = O.openapi_v3_index(["v1", "apps/v1", "kokpit.io/v1alpha1"], {"v1": "ABC"})
    assert set(idx["paths"]) == {"api/v1", "apis/apps/v1", "apis/kokpit.io/v1alpha1"}
    assert idx["paths"]["api/v1"]["serverRelativeURL"] == "/openapi/v3/api/v1?hash=ABC"
    assert idx["paths"]["apis/apps/v1"]["serverRelativeURL"].startswith("/openapi/v3/apis/apps/v1?hash=")


def test_pod_document_keeps_patch_metadata() -> None:
    doc = O.openapi_v3_document("v1", ALL)
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]
    assert pod["type"] == "object"  # nullable type lists collapse to OpenAPI 3.0 types
    assert "enum" not in pod["properties"]["apiVersion"]
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    # every ref resolves inside the document
    body = orjson.dumps(doc).decode()
    for part in body.split('"$ref":"#/components/schemas/')[1:]:
        assert part.split('"', 1)[0] in schemas
    # only this group-version's kinds
    assert "io.k8s.api.apps.v1.Deployment" not in schemas
    assert "io.k8s.api.policy.v1.Eviction" in schemas


def test_write_operations_carry_field_validation() -> None:
    for gv in ("v1", "apps/v1", "kokpit.io/v1alpha1"):
        doc = O.openapi_v3_document(gv, ALL)
        for method in ("post", "put", "patch"):
            found = ops(doc, method)
            assert found, (gv, method)
            for op in found:
                names = {(p["name"], p["in"]) for p in op["parameters"]}
                assert ("fieldValidation", "query") in names, (gv, method, op["operationId"])


def test_patch_operations_as_kubectl_reads_them() -> None:
    # kubectl matches a PATCH operation by its single-map GVK extension, then looks at the patch types
    doc = O.openapi_v3_document("v1", ALL)
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert "/api/v1/namespaces/{name}" in doc["paths"]
    cr = O.openapi_v3_document("kokpit.io/v1alpha1", ALL)
    mpatch = cr["paths"]["/apis/kokpit.io/v1alpha1/machines/{name}"]["patch"]
    assert mpatch["x-kubernetes-group-version-kind"]["kind"] == "Machine"
    assert "application/strategic-merge-patch+json" not in mpatch["requestBody"]["content"]
    assert "application/merge-patch+json" in mpatch["requestBody"]["content"]


def test_custom_resource_components() -> None:
    doc = O.openapi_v3_document("kokpit.io/v1alpha1", ALL)
    schemas = doc["components"]["schemas"]
    m = schemas["io.kokpit.v1alpha1.Machine"]
    assert m["x-kubernetes-group-version-kind"] == [{"group": "kokpit.io", "version": "v1alpha1",
                                                     "kind": "Machine"}]
    assert m["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert m["properties"]["spec"]["properties"]["packages"]["x-kubernetes-list-type"] == "set"
    assert "io.kokpit.v1alpha1.MachineList" in schemas
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert O.custom_schema_name("kokpit.io", "v1alpha1", "Machine") == "io.kokpit.v1alpha1.Machine"


def test_v2() -> None:
    assert O.openapi_v2_protobuf() == b""
    v2 = O.openapi_v2_json(ALL)
    assert v2["swagger"] == "2.0"
    defs = v2["definitions"]
    assert defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["items"] == {
        "$ref": "#/definitions/io.k8s.api.core.v1.Container"}
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    patch = v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])


def test_cache_rebuilds_only_on_change() -> None:
    cache = O.OpenAPICache()
    assert cache.update(ALL) is True
    body, digest = cache.index()
    index = orjson.loads(body)
    doc_body, doc_hash = cache.document("v1") or (b"", "")
    assert index["paths"]["api/v1"]["serverRelativeURL"] == f"/openapi/v3/api/v1?hash={doc_hash}"
    assert cache.document_for_path("apis/kokpit.io/v1alpha1") is not None
    assert cache.document("batch/v1") is None
    assert cache.update(list(ALL)) is False
    assert cache.index() == (body, digest)
    assert cache.document("v1") == (doc_body, doc_hash)
    changed = ResourceType(**{**MACHINE.__dict__, "schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}})
    assert cache.update([POD, NS, DEPLOY, changed]) is True
    new_index = orjson.loads(cache.index()[0])
    assert new_index["paths"]["api/v1"] == index["paths"]["api/v1"]
    assert new_index["paths"]["apis/kokpit.io/v1alpha1"] != index["paths"]["apis/kokpit.io/v1alpha1"]
