"""Bad input against the real server over HTTPS: every mistake a client can make gets a 4xx `Status`.

kube-apiserver never answers a client error with a 500 or a half-stored object; clients (kubectl, kopf, the
official client) show `Status.message` to people and branch on `reason`/`code`. Each test sends one kind of
bad request and checks the Status, that nothing was stored, and that the server still answers /readyz.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e

NS = "bad-input"
CM = f"/api/v1/namespaces/{NS}/configmaps"


def call(srv: ApiServerProcess, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    raw: bytes | None
    if body is None or isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    code, data = srv.request(method, path, raw, content_type=content_type)
    try:
        return code, json.loads(data)
    except ValueError:
        return code, data


def assert_status(code: int, body: Any, want_code: int, reason: str, *words: str) -> dict[str, Any]:
    assert code == want_code, body
    assert isinstance(body, dict), body
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["status"] == "Failure"
    assert body["code"] == want_code
    assert body["reason"] == reason, body
    for w in words:
        assert w in body["message"], (w, body["message"])
    return body


def cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def assert_absent(srv: ApiServerProcess, path: str) -> None:
    code, body = call(srv, "GET", path)
    assert_status(code, body, 404, "NotFound")


@pytest.fixture(scope="module")
def srv(shared_apiserver: ApiServerProcess) -> ApiServerProcess:
    code, body = call(shared_apiserver, "POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    assert code == 201, body
    return shared_apiserver


@pytest.fixture(autouse=True)
def still_ready(srv: ApiServerProcess) -> Iterator[None]:
    yield
    assert srv.request("GET", "/readyz", auth=False) == (200, b"ok")


# ------------------------------------------------------------------------------------------ decoding
def test_malformed_json(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", CM, b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mj"')
    assert_status(code, body, 400, "BadRequest", "JSON")
    assert_absent(srv, f"{CM}/mj")


def test_malformed_yaml(srv: ApiServerProcess) -> None:
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: my\ndata: [a\n  b: :\n"
    code, body = call(srv, "POST", CM, doc, content_type="application/yaml")
    assert_status(code, body, 400, "BadRequest", "YAML")
    assert_absent(srv, f"{CM}/my")


def test_valid_yaml_is_accepted(srv: ApiServerProcess) -> None:
    """The control for the test above: the same content type with a good document works."""
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good-yaml\ndata:\n  a: b\n"
    code, body = call(srv, "POST", CM, doc, content_type="application/yaml")
    assert code == 201, body
    assert body["data"] == {"a": "b"}


@pytest.mark.parametrize(("api_version", "kind", "word"), [
    ("apps/v1", "ConfigMap", "apps/v1"),
    ("v1", "Secret", "Secret"),
    ("v2", "ConfigMap", "v2"),
])
def test_wrong_api_version_or_kind_for_url(srv: ApiServerProcess, api_version: str, kind: str,
                                           word: str) -> None:
    code, body = call(srv, "POST", CM, {"apiVersion": api_version, "kind": kind, "metadata": {"name": "wk"}})
    assert_status(code, body, 400, "BadRequest", word)
    assert_absent(srv, f"{CM}/wk")


def test_missing_api_version_and_kind_come_from_the_url(srv: ApiServerProcess) -> None:
    """Not an error: kube's decoder defaults them from the endpoint, and the official client omits them."""
    code, body = call(srv, "POST", CM, {"metadata": {"name": "nogvk"}, "data": {"a": "b"}})
    assert code == 201, body
    assert body["apiVersion"] == "v1" and body["kind"] == "ConfigMap"
    code, body = call(srv, "POST", CM, {"apiVersion": "v1", "metadata": {"name": "nokind"}})
    assert code == 201 and body["kind"] == "ConfigMap", body


# ------------------------------------------------------------------------------------------ names
def test_missing_name(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    st_ = assert_status(code, body, 422, "Invalid", "metadata.name", "name or generateName is required")
    assert st_["details"]["causes"][0]["field"] == "metadata.name"
    assert st_["details"]["causes"][0]["reason"] == "FieldValueRequired"


@pytest.mark.parametrize("name", ["UpperCase", "under_score", "a" * 254, "-lead", "trail.", "sp ace"])
def test_invalid_names(srv: ApiServerProcess, name: str) -> None:
    code, body = call(srv, "POST", CM, cm(name))
    st_ = assert_status(code, body, 422, "Invalid", "metadata.name", "Invalid value")
    assert st_["details"]["kind"] == "ConfigMap"
    assert any(c["field"] == "metadata.name" for c in st_["details"]["causes"])
    if len(name) > 253:
        assert "253" in body["message"]
    code, listing = call(srv, "GET", CM)
    assert name not in {i["metadata"]["name"] for i in listing["items"]}


def test_invalid_namespace_name(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "has.dot"}})
    assert_status(code, body, 422, "Invalid", "metadata.name", "RFC 1123 label")
    assert_absent(srv, "/api/v1/namespaces/has.dot")


# ------------------------------------------------------------------------------------------ size
def test_body_over_3_mib(srv: ApiServerProcess) -> None:
    big = cm("big", data={"k": "x" * (3 * 1024 * 1024 + 16)})
    code, body = call(srv, "POST", CM, big)
    assert_status(code, body, 413, "RequestEntityTooLarge", "too large")
    assert_absent(srv, f"{CM}/big")


# ------------------------------------------------------------------------------------------ field validation
def test_unknown_field_strict(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", f"{CM}?fieldValidation=Strict", cm("fv-strict", bogusField=1))
    assert code in (400, 422), body  # kube: 400 BadRequest "strict decoding error"; kokpit: 422 Invalid
    assert_status(code, body, code, body["reason"], 'unknown field "bogusField"')
    assert_absent(srv, f"{CM}/fv-strict")


def test_unknown_nested_field_strict(srv: ApiServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fv-nested"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolcy": "Always"}]}}
    code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/pods?fieldValidation=Strict", pod)
    assert code in (400, 422), body
    assert "spec.containers[0].imagePullPolcy" in body["message"]
    assert_absent(srv, f"/api/v1/namespaces/{NS}/pods/fv-nested")


def test_unknown_field_warn_drops_and_warns(srv: ApiServerProcess) -> None:
    import urllib.request

    req = urllib.request.Request(f"{srv.url}{CM}?fieldValidation=Warn", method="POST",
                                 data=json.dumps(cm("fv-warn", data={"a": "b"}, bogusField=1)).encode())
    req.add_header("Authorization", f"Bearer {srv.admin_token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, context=srv.ssl_context(), timeout=10) as resp:
        assert resp.status == 201
        warnings = resp.headers.get_all("Warning") or []
        created = json.loads(resp.read())
    assert warnings == ['299 - "unknown field \\"bogusField\\""'], warnings
    assert "bogusField" not in created and created["data"] == {"a": "b"}
    code, stored = call(srv, "GET", f"{CM}/fv-warn")
    assert code == 200 and "bogusField" not in stored and stored["data"] == {"a": "b"}


def test_unknown_field_ignore_drops_silently(srv: ApiServerProcess) -> None:
    code, created = call(srv, "POST", f"{CM}?fieldValidation=Ignore", cm("fv-ignore", bogusField=1))
    assert code == 201, created
    code, stored = call(srv, "GET", f"{CM}/fv-ignore")
    assert code == 200 and "bogusField" not in stored
    assert "bogusField" not in json.dumps(stored.get("metadata", {}).get("managedFields", []))


def test_bad_field_validation_value(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", f"{CM}?fieldValidation=Sometimes", cm("fv-bad"))
    assert_status(code, body, 400, "BadRequest", "fieldValidation")
    assert_absent(srv, f"{CM}/fv-bad")


# ------------------------------------------------------------------------------------------ schema violations
def test_pod_image_is_a_number(srv: ApiServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "num-image"},
           "spec": {"containers": [{"name": "c", "image": 5}]}}
    code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/pods", pod)
    st_ = assert_status(code, body, 422, "Invalid", "spec.containers[0].image", "string")
    assert st_["details"]["causes"][0]["field"] == "spec.containers[0].image"
    assert_absent(srv, f"/api/v1/namespaces/{NS}/pods/num-image")


def test_deployment_replicas_not_a_number(srv: ApiServerProcess) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "abc-replicas"},
           "spec": {"replicas": "abc", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    code, body = call(srv, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", dep)
    st_ = assert_status(code, body, 422, "Invalid", "spec.replicas", "integer")
    assert st_["details"]["group"] == "apps"
    assert_absent(srv, f"/apis/apps/v1/namespaces/{NS}/deployments/abc-replicas")


def test_pod_without_containers(srv: ApiServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-containers"}, "spec": {}}
    code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/pods", pod)
    assert_status(code, body, 422, "Invalid", "spec.containers")
    assert_absent(srv, f"/api/v1/namespaces/{NS}/pods/no-containers")


def test_configmap_data_value_not_a_string(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", CM, cm("data-int", data={"k": 1}))
    assert_status(code, body, 422, "Invalid", "data")
    assert_absent(srv, f"{CM}/data-int")


def test_invalid_label_value_on_object(srv: ApiServerProcess) -> None:
    obj = cm("bad-label")
    obj["metadata"]["labels"] = {"ok": "not valid!"}
    code, body = call(srv, "POST", CM, obj)
    assert_status(code, body, 422, "Invalid", "metadata.labels")
    assert_absent(srv, f"{CM}/bad-label")


# ------------------------------------------------------------------------------------------ namespaces
def test_namespace_does_not_exist(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", "/api/v1/namespaces/no-such-ns/configmaps", cm("x"))
    st_ = assert_status(code, body, 404, "NotFound", 'namespaces "no-such-ns" not found')
    assert st_["details"]["kind"] == "namespaces"
    assert_absent(srv, "/api/v1/namespaces/no-such-ns/configmaps/x")


def test_create_into_terminating_namespace(srv: ApiServerProcess) -> None:
    ns = "bad-input-terminating"
    code, body = call(srv, "POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert code == 201, body
    # a finalizer nobody removes keeps the namespace Terminating for the rest of the test
    held = cm("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    assert call(srv, "POST", f"/api/v1/namespaces/{ns}/configmaps", held)[0] == 201
    code, body = call(srv, "DELETE", f"/api/v1/namespaces/{ns}")
    assert code in (200, 202), body
    code, body = call(srv, "GET", f"/api/v1/namespaces/{ns}")
    assert code == 200 and body["status"]["phase"] == "Terminating"
    code, body = call(srv, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm("late"))
    st_ = assert_status(code, body, 403, "Forbidden", 'configmaps "late" is forbidden',
                        f"unable to create new content in namespace {ns} because it is being terminated")
    assert st_["details"]["kind"] == "configmaps"
    assert_absent(srv, f"/api/v1/namespaces/{ns}/configmaps/late")


# ------------------------------------------------------------------------------------------ queries
@pytest.mark.parametrize("selector", ["a===b", "a in (b", "!!", "a=b,,=c", "x=" + "v" * 64])
def test_invalid_label_selector(srv: ApiServerProcess, selector: str) -> None:
    from urllib.parse import quote

    code, body = call(srv, "GET", f"{CM}?labelSelector={quote(selector)}")
    assert_status(code, body, 400, "BadRequest", "label selector")


@pytest.mark.parametrize("selector", ["data.foo=bar", "spec.nodeName=n1", "metadata.labels=x"])
def test_unsupported_field_selector(srv: ApiServerProcess, selector: str) -> None:
    code, body = call(srv, "GET", f"{CM}?fieldSelector={selector}")
    assert_status(code, body, 400, "BadRequest", selector.split("=")[0])


def test_field_selector_works_when_supported(srv: ApiServerProcess) -> None:
    assert call(srv, "POST", CM, cm("fsel-target"))[0] == 201
    code, body = call(srv, "GET", f"{CM}?fieldSelector=metadata.name=fsel-target")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["fsel-target"]


@pytest.mark.parametrize("param", ["limit=abc", "watch=maybe", "timeoutSeconds=soon&watch=true"])
def test_bad_query_parameters(srv: ApiServerProcess, param: str) -> None:
    code, body = call(srv, "GET", f"{CM}?{param}")
    assert_status(code, body, 400, "BadRequest", param.split("=")[0])


def test_garbled_continue_token(srv: ApiServerProcess) -> None:
    code, body = call(srv, "GET", f"{CM}?limit=1&continue=not-a-token")
    assert_status(code, body, 400, "BadRequest", "continue")


@pytest.mark.parametrize("path", [
    f"/api/v1/namespaces/{NS}/widgets",
    "/apis/example.com/v1/widgets",
    "/apis/apps/v9/deployments",
    f"/api/v1/namespaces/{NS}/configmaps/x/nosuchsub",
])
def test_unknown_resource(srv: ApiServerProcess, path: str) -> None:
    code, body = call(srv, "GET", path)
    assert_status(code, body, 404, "NotFound", "could not find the requested resource")


def test_post_to_unknown_resource(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/widgets",
                      {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert_status(code, body, 404, "NotFound")


# ------------------------------------------------------------------------------------------ writes on objects
_counter: list[int] = []


@pytest.fixture
def target(srv: ApiServerProcess, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    _counter.append(1)
    name = f"t{len(_counter)}-" + request.node.name.split("[")[0].replace("_", "-")[:40].strip("-")
    code, body = call(srv, "POST", CM, cm(name, data={"k": "v"}))
    assert code == 201, body
    return f"{CM}/{name}", body


def _unchanged(srv: ApiServerProcess, path: str, before: dict[str, Any]) -> None:
    code, now = call(srv, "GET", path)
    assert code == 200
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert now.get("data") == before.get("data")


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/apply-patch+cbor"])
def test_bad_patch_content_type(srv: ApiServerProcess, target: tuple[str, dict[str, Any]], ctype: str) -> None:
    path, before = target
    code, body = call(srv, "PATCH", path, {"data": {"k": "changed"}}, content_type=ctype)
    assert_status(code, body, 415, "UnsupportedMediaType", ctype)
    _unchanged(srv, path, before)


def test_json_patch_failed_test(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "999999"},
           {"op": "replace", "path": "/data/k", "value": "changed"}]
    code, body = call(srv, "PATCH", path, ops, content_type="application/json-patch+json")
    assert_status(code, body, 422, "Invalid", "/metadata/resourceVersion")
    _unchanged(srv, path, before)


def test_json_patch_not_a_list(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    code, body = call(srv, "PATCH", path, {"op": "add"}, content_type="application/json-patch+json")
    assert 400 <= code < 500, body
    assert_status(code, body, code, body["reason"])
    _unchanged(srv, path, before)


def test_json_patch_bad_path(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    ops = [{"op": "remove", "path": "/data/missing"}]
    code, body = call(srv, "PATCH", path, ops, content_type="application/json-patch+json")
    assert 400 <= code < 500, body
    assert_status(code, body, code, body["reason"], "missing")  # kube also quotes the path "/data/missing"
    _unchanged(srv, path, before)


def test_merge_patch_not_an_object(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    code, body = call(srv, "PATCH", path, [1, 2], content_type="application/merge-patch+json")
    assert 400 <= code < 500, body
    assert_status(code, body, code, body["reason"])
    _unchanged(srv, path, before)


def test_patch_that_breaks_the_schema(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    code, body = call(srv, "PATCH", path, {"data": {"k": 7}}, content_type="application/merge-patch+json")
    assert_status(code, body, 422, "Invalid", "data")
    _unchanged(srv, path, before)


def test_put_with_mismatched_name(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    other = dict(before, metadata=dict(before["metadata"], name="someone-else"), data={"k": "changed"})
    code, body = call(srv, "PUT", path, other)
    assert_status(code, body, 400, "BadRequest", "someone-else")
    _unchanged(srv, path, before)
    assert_absent(srv, f"{CM}/someone-else")


def test_put_with_wrong_kind(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    other = dict(before, kind="Secret", data={"k": "Y2hhbmdlZA=="})
    code, body = call(srv, "PUT", path, other)
    assert_status(code, body, 400, "BadRequest", "Secret")
    _unchanged(srv, path, before)


def test_put_with_garbage_resource_version(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    other = dict(before, metadata=dict(before["metadata"], resourceVersion="abc"), data={"k": "changed"})
    code, body = call(srv, "PUT", path, other)
    assert 400 <= code < 500, body
    assert_status(code, body, code, body["reason"])
    _unchanged(srv, path, before)


def test_create_with_resource_version(srv: ApiServerProcess) -> None:
    obj = cm("with-rv")
    obj["metadata"]["resourceVersion"] = "5"
    code, body = call(srv, "POST", CM, obj)
    assert_status(code, body, 400, "BadRequest", "resourceVersion")
    assert_absent(srv, f"{CM}/with-rv")


def test_namespace_in_body_differs_from_url(srv: ApiServerProcess) -> None:
    obj = cm("ns-mismatch")
    obj["metadata"]["namespace"] = "default"
    code, body = call(srv, "POST", CM, obj)
    assert_status(code, body, 400, "BadRequest", "namespace")
    assert_absent(srv, f"{CM}/ns-mismatch")
    assert_absent(srv, "/api/v1/namespaces/default/configmaps/ns-mismatch")


def test_post_to_named_resource(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    code, body = call(srv, "POST", path, before)
    assert_status(code, body, 405, "MethodNotAllowed")
    _unchanged(srv, path, before)


def test_empty_body(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", CM, b"")
    assert_status(code, body, 400, "BadRequest", "empty")


@pytest.mark.parametrize("payload", [b"[]", b"42", b'"str"', b"null", b"true"])
def test_body_is_not_an_object(srv: ApiServerProcess, payload: bytes) -> None:
    code, body = call(srv, "POST", CM, payload)
    assert 400 <= code < 500, body
    assert_status(code, body, code, body["reason"])


def test_bad_propagation_policy(srv: ApiServerProcess, target: tuple[str, dict[str, Any]]) -> None:
    path, before = target
    code, body = call(srv, "DELETE", f"{path}?propagationPolicy=Sideways")
    assert_status(code, body, 400, "BadRequest", "propagationPolicy")
    _unchanged(srv, path, before)


def test_delete_missing_object(srv: ApiServerProcess) -> None:
    code, body = call(srv, "DELETE", f"{CM}/never-was")
    st_ = assert_status(code, body, 404, "NotFound", 'configmaps "never-was" not found')
    assert st_["details"] == {"name": "never-was", "group": "", "kind": "configmaps"}


# ------------------------------------------------------------------------------------------ fuzz
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False,
                     allow_infinity=False), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
_names = st.one_of(st.from_regex(r"\Afz-[a-z0-9]{1,8}\Z"), st.text(max_size=20), st.integers(), st.none())
_metadata = st.fixed_dictionaries({"name": _names}, optional={
    "labels": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), _json),
    "annotations": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), _json),
    "generateName": st.one_of(st.just("fz-"), st.text(max_size=5)),
    "finalizers": st.one_of(st.lists(st.text(max_size=10), max_size=2), _json),
    "namespace": st.sampled_from([NS, "other", ""]),
})
_configmapish = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["v1", "apps/v1", ""]), "kind": st.sampled_from(["ConfigMap", "Pod", ""])},
    optional={"metadata": st.one_of(_metadata, _json),
              "data": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), _json),
              "binaryData": st.one_of(st.dictionaries(st.text(max_size=5), st.sampled_from(["YQ==", "!!"])),
                                      _json),
              "immutable": _json})
_bodies = st.one_of(_json.map(lambda v: json.dumps(v).encode()), _configmapish.map(lambda v: json.dumps(v).encode()),
                    st.binary(max_size=40))


@settings(derandomize=True, max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_bodies, yaml_ct=st.booleans())
def test_fuzz_post_configmaps(srv: ApiServerProcess, body: bytes, yaml_ct: bool) -> None:
    code, data = srv.request("POST", CM, body, content_type="application/yaml" if yaml_ct else "application/json")
    assert code < 500, (code, data)
    doc = json.loads(data)
    if code == 201:
        assert doc["kind"] == "ConfigMap" and doc["metadata"]["namespace"] == NS
        assert call(srv, "GET", f"{CM}/{doc['metadata']['name']}")[0] == 200
    else:
        assert 400 <= code < 500
        assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == code, doc
        assert isinstance(doc["message"], str) and doc["message"] and doc["reason"]


_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
     "path": st.sampled_from(["/data", "/data/k", "/data/x", "/metadata/labels", "/metadata/name", "", "/",
                              "/metadata/resourceVersion", "/kind", "/data/~2", "/metadata/annotations/a~1b"])},
    optional={"value": _json, "from": st.sampled_from(["/data/k", "/metadata", "/nope"])})
_patch_keys = st.sampled_from(["data", "metadata", "labels", "name", "k", "$patch", "$retainKeys",
                               "$setElementOrder/data", "finalizers", "apiVersion", "kind", "resourceVersion"])
_patch_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_patch_keys | st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@settings(derandomize=True, max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(st.lists(_ops, max_size=3), _patch_json),
       ctype=st.sampled_from(["application/merge-patch+json", "application/json-patch+json",
                              "application/strategic-merge-patch+json", "application/apply-patch+yaml"]))
def test_fuzz_patch_configmap(srv: ApiServerProcess, body: Any, ctype: str) -> None:
    path = f"{CM}/fuzz-patch-target"
    if srv.request("GET", path)[0] == 404:
        assert call(srv, "POST", CM, cm("fuzz-patch-target", data={"k": "v"}))[0] == 201
    query = "?fieldManager=fuzz" if "apply" in ctype else ""
    code, data = srv.request("PATCH", path + query, json.dumps(body).encode(), content_type=ctype)
    assert code < 500, (code, data)
    doc = json.loads(data)
    if code >= 400:
        assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == code, doc
    else:
        assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "fuzz-patch-target"


# ------------------------------------------------------------------------------------------ regressions
# Each of these once answered 500 or dropped the connection (found by fuzzing this server).
def test_post_to_status_subresource_is_405(srv: ApiServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "via-status"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/pods/via-status/status", pod)
    assert_status(code, body, 405, "MethodNotAllowed", "pods/status")
    assert_absent(srv, f"/api/v1/namespaces/{NS}/pods/via-status")


def test_unknown_field_with_control_character(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", f"{CM}?fieldValidation=Warn", cm("ctrl-field", **{"\x1fodd\nname": 1}))
    assert code == 201, body
    assert "\x1fodd\nname" not in body
    code, body = call(srv, "POST", f"{CM}?fieldValidation=Strict", cm("ctrl-field-2", **{"\x1f": 1}))
    assert code in (400, 422), body


def test_pod_spec_of_wrong_type_is_422(srv: ApiServerProcess) -> None:
    for spec in ([1, 2], "text", 5):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "spec-type"}, "spec": spec}
        code, body = call(srv, "POST", f"/api/v1/namespaces/{NS}/pods", pod)
        assert_status(code, body, 422, "Invalid", "spec")
    assert_absent(srv, f"/api/v1/namespaces/{NS}/pods/spec-type")


def test_null_spec_is_an_absent_spec(srv: ApiServerProcess) -> None:
    code, body = call(srv, "POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "null-spec"}, "spec": None,
                       "status": None})
    assert code == 201, body
    assert body["status"]["phase"] == "Active"


def test_missing_kind_message_with_multibyte_text(srv: ApiServerProcess) -> None:
    """The error quotes the start of the body: cutting it must not split a UTF-8 character."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mb"}, "data": {"k": "é" * 300}}
    code, out = call(srv, "PATCH", f"{CM}/mb?fieldManager=t", {k: v for k, v in body.items() if k != "kind"},
                     content_type="application/apply-patch+yaml")
    assert 400 <= code < 500, out
    assert_status(code, out, code, out["reason"], "kind")
