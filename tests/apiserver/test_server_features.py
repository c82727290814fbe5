"""Server behaviours that need a running server with non-default settings: Event TTL, periodic compaction,
several served CRD versions, and CEL transition rules enforced on update."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from kokpit.apiserver.testing import ApiServerProcess


def wait_until(fn: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def post(srv: ApiServerProcess, path: str, obj: dict) -> tuple[int, dict]:
    code, body = srv.request("POST", path, orjson.dumps(obj))
    return code, orjson.loads(body)


def test_events_expire_after_ttl_and_compaction_runs_on_its_own(tmp_path: Path) -> None:
    srv = ApiServerProcess(tmp_path / "d", extra_args=["--event-ttl", "1", "--compaction-interval", "0.5",
                                                       "--compaction-window", "2"]).start()
    try:
        code, ev = post(srv, "/api/v1/namespaces/default/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "hello", "type": "Normal"})
        assert code == 201, ev
        code, cm = post(srv, "/api/v1/namespaces/default/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}})
        assert code == 201
        first_rv = int(cm["metadata"]["resourceVersion"])
        wait_until(lambda: srv.request("GET", "/api/v1/namespaces/default/events/e1")[0] == 404, 10,
                   "the event to expire")
        # the ConfigMap is not an event: it stays
        assert srv.request("GET", "/api/v1/namespaces/default/configmaps/keep")[0] == 200
        for i in range(5):
            post(srv, "/api/v1/namespaces/default/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}})

        def expired() -> bool:
            code, body = srv.request("GET", f"/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"
                                            f"&resourceVersion={first_rv - 1}")
            return code == 200 and b'"code":410' in body

        wait_until(expired, 10, "periodic compaction to expire old revisions")
    finally:
        srv.stop()


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.test.kokpit.io"},
    "spec": {
        "group": "test.kokpit.io", "scope": "Cluster",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {"name": "v1beta1", "served": True, "storage": False,
             "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                 "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}},
            {"name": "v1", "served": True, "storage": True,
             "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                 "spec": {"type": "object", "properties": {"size": {"type": "integer"}},
                          "x-kubernetes-validations": [
                              {"rule": "self == oldSelf", "message": "spec is immutable"}]}}}}},
        ],
    },
}


def test_crd_versions_share_storage_and_cel_transition_rule_holds(apiserver: ApiServerProcess) -> None:
    code, body = post(apiserver, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert code == 201, body
    wait_until(lambda: apiserver.request("GET", "/apis/test.kokpit.io/v1/gadgets")[0] == 200, 10,
               "the CRD to be served")
    code, g = post(apiserver, "/apis/test.kokpit.io/v1beta1/gadgets", {
        "apiVersion": "test.kokpit.io/v1beta1", "kind": "Gadget", "metadata": {"name": "g1"},
        "spec": {"size": 3}})
    assert code == 201, g
    code, raw = apiserver.request("GET", "/apis/test.kokpit.io/v1/gadgets/g1")
    as_v1 = orjson.loads(raw)
    assert code == 200 and as_v1["apiVersion"] == "test.kokpit.io/v1" and as_v1["spec"] == {"size": 3}
    # the v1 schema's transition rule refuses a spec change, and says why
    as_v1["spec"]["size"] = 4
    code, raw = apiserver.request("PUT", "/apis/test.kokpit.io/v1/gadgets/g1", orjson.dumps(as_v1))
    err = orjson.loads(raw)
    assert code == 422 and "spec is immutable" in err["message"], err
    code, raw = apiserver.request("GET", "/apis/test.kokpit.io/v1beta1/gadgets/g1")
    assert orjson.loads(raw)["spec"] == {"size": 3}, "nothing stored by the refused update"
    # metadata changes pass the rule
    as_v1["spec"]["size"] = 3
    as_v1["metadata"]["labels"] = {"x": "y"}
    code, raw = apiserver.request("PUT", "/apis/test.kokpit.io/v1/gadgets/g1", orjson.dumps(as_v1))
    assert code == 200, raw


def _widget_crd(name_limit: int | None) -> dict:
    name: dict = {"type": "string"}
    if name_limit is not None:
        name["maxLength"] = name_limit
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "ratchets.test.kokpit.io"},
            "spec": {"group": "test.kokpit.io", "scope": "Namespaced",
                     "names": {"plural": "ratchets", "singular": "ratchet", "kind": "Ratchet"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object", "properties": {
                             "name": name, "tags": {"type": "array", "maxItems": 10 if name_limit is None else 1,
                                                    "items": {"type": "string"}},
                             "size": {"type": "integer"}}}}}}}]}}


def test_a_tightened_crd_schema_ratchets_unchanged_values(apiserver: ApiServerProcess) -> None:
    """Like kube's CRD validation ratcheting: values stored before a schema got stricter do not block updates
    of other fields, but any changed value must pass the new schema."""
    code, body = post(apiserver, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", _widget_crd(None))
    assert code == 201, body
    path = "/apis/test.kokpit.io/v1/namespaces/default/ratchets"
    wait_until(lambda: apiserver.request("GET", path)[0] == 200, 10, "the CRD to be served")
    code, body = post(apiserver, path, {"apiVersion": "test.kokpit.io/v1", "kind": "Ratchet",
                                        "metadata": {"name": "r"},
                                        "spec": {"name": "much-too-long", "tags": ["a", "b"], "size": 1}})
    assert code == 201, body
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ratchets.test.kokpit.io"
    code, raw = apiserver.request("GET", crd_path)
    tightened = _widget_crd(5)
    tightened["metadata"]["resourceVersion"] = orjson.loads(raw)["metadata"]["resourceVersion"]
    code, raw = apiserver.request("PUT", crd_path, orjson.dumps(tightened))
    assert code == 200, raw

    def patch(spec: dict) -> tuple[int, dict]:
        code, raw = apiserver.request("PATCH", f"{path}/r", orjson.dumps({"spec": spec}),
                                      content_type="application/merge-patch+json")
        return code, orjson.loads(raw)

    wait_until(lambda: patch({"name": "still-too-long"})[0] == 422, 10, "the tightened schema in effect")
    code, err = patch({"name": "still-too-long"})
    assert "spec.name" in err["message"], err
    code, body = patch({"size": 2})  # name and tags unchanged: not judged again
    assert code == 200, body
    code, err = patch({"tags": ["a", "b", "c"]})
    assert code == 422 and "spec.tags" in err["message"], err
    code, ok = patch({"name": "ok", "tags": ["z"]})
    assert code == 200 and ok["spec"] == {"name": "ok", "tags": ["z"], "size": 2}, ok


def test_deleting_a_crd_removes_its_resources_cluster_scoped_too(apiserver: ApiServerProcess) -> None:
    """The CRD's cleanup finalizer deletes every resource, then the CRD goes (kube's customresourcecleanup) —
    for cluster-scoped resources as for namespaced ones."""
    for scope, plural in (("Cluster", "globals"), ("Namespaced", "locals")):
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.test.kokpit.io"},
               "spec": {"group": "test.kokpit.io", "scope": scope,
                        "names": {"plural": plural, "singular": plural[:-1], "kind": plural[:-1].title()},
                        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
        code, body = post(apiserver, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert code == 201, body
        base = "/apis/test.kokpit.io/v1" + ("/namespaces/default" if scope == "Namespaced" else "") + f"/{plural}"
        wait_until(lambda base=base: apiserver.request("GET", base)[0] == 200, 10, f"{plural} served")
        code, body = post(apiserver, base, {"apiVersion": "test.kokpit.io/v1", "kind": plural[:-1].title(),
                                            "metadata": {"name": "one"}})
        assert code == 201, body
        crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.test.kokpit.io"
        assert apiserver.request("DELETE", crd_path)[0] == 200
        wait_until(lambda crd_path=crd_path: apiserver.request("GET", crd_path)[0] == 404, 10,
                   f"the {scope} CRD gone once its resources are")


def test_a_crd_created_with_a_status_is_served(apiserver: ApiServerProcess) -> None:
    """A CRD exported from another cluster carries status (Established): the server resets status on
    create, as kube does, and serves the type once it has established it itself."""
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "exports.test.kokpit.io"},
           "spec": {"group": "test.kokpit.io", "scope": "Namespaced",
                    "names": {"plural": "exports", "singular": "export", "kind": "Export"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
           "status": {"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                      "lastTransitionTime": "2020-01-01T00:00:00Z", "message": "old"}],
                      "acceptedNames": {"plural": "exports", "kind": "Export"}, "storedVersions": ["v1"]}}
    code, body = post(apiserver, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201, body
    assert "status" not in body or body["status"].get("conditions", [{}])[0].get("message") != "old", body
    wait_until(lambda: apiserver.request("GET", "/apis/test.kokpit.io/v1/namespaces/default/exports")[0] == 200,
               10, "the CRD served")
