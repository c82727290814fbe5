"""JSON null in written objects: stored and served as kube-apiserver would, never against the schema.

Each case here was found by the API fuzzer (bench/fuzz.py) stored as null and served back to clients whose
schema says the field is a string or an object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from kokpit.apiserver import nulls
from kokpit.apiserver import schema as S
from kokpit.apiserver.testing import ApiServerProcess


def _schema(kind: str) -> dict[str, Any]:
    sch = S.builtin_schema("", "v1", kind)
    assert sch is not None
    return sch


def test_null_fields_drop_and_null_items_become_zero() -> None:
    ev: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "labels": None, "annotations": {"a": None}},
        "involvedObject": {"kind": "Pod", "name": "p"}, "source": {"host": None, "component": "x"},
        "eventTime": None, "reason": "R"}
    nulls.normalize(ev, _schema("Event"))
    assert ev == {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "annotations": {"a": ""}},
                  "involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "x"}, "reason": "R"}
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": [
        None, {"name": "c", "image": "i", "args": [None, "x"], "ports": [{"containerPort": None}]}]}}
    nulls.normalize(pod, _schema("Pod"))
    assert pod["spec"]["containers"] == [{}, {"name": "c", "image": "i", "args": ["", "x"], "ports": [{}]}]
    # an object without null is left as it is (and not walked)
    clean = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    before = orjson.dumps(clean)
    nulls.normalize(clean, _schema("Pod"))
    assert orjson.dumps(clean) == before


def _req(srv: ApiServerProcess, method: str, path: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, body = srv.request(method, path, orjson.dumps(obj))
    return code, orjson.loads(body)


def test_server_stores_no_null_and_refuses_what_kube_refuses(tmp_path: Path) -> None:
    with ApiServerProcess(tmp_path / "d") as srv:
        code, ev = _req(srv, "POST", "/api/v1/namespaces/default/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "eventTime": None,
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "source": {"host": None}, "reason": "Test", "message": "hello", "type": "Normal"})
        assert code == 201, ev
        code, got = _req(srv, "GET", "/api/v1/namespaces/default/events/e1", {})
        assert code == 200 and "eventTime" not in got and got["source"] == {}, got
        code, node = _req(srv, "POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "annotations": None},
            "spec": {"unschedulable": None}})
        assert code == 201, node
        assert node["spec"] == {} and "annotations" not in node["metadata"], node
        # a port sent as null is a missing port: kube's "Required value", not a stored null
        code, st = _req(srv, "POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": None}]}]}})
        assert code == 422, st
        assert [(c["field"], c["reason"]) for c in st["details"]["causes"]] == [
            ("spec.containers[0].ports[0].containerPort", "FieldValueRequired")]
        assert srv.request("GET", "/api/v1/namespaces/default/pods/p")[0] == 404  # nothing stored
        # a built-in time that is not a time (an empty string included) is refused, as kube's decoder does
        code, st = _req(srv, "POST", "/api/v1/namespaces/default/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2"}, "eventTime": "",
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R"})
        assert code == 422 and [c["field"] for c in st["details"]["causes"]] == ["eventTime"], st
        # YAML spells null without the word (`~`, an empty value): still read as kube reads it
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  labels:\n    a: ~\ndata:\n  k:\n"
        code, raw = srv.request("POST", "/api/v1/namespaces/default/configmaps", body,
                                content_type="application/yaml")
        cm = orjson.loads(raw)
        assert code == 201, cm
        assert cm["metadata"]["labels"] == {"a": ""} and cm["data"] == {"k": ""}, cm
