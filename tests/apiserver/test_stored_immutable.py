"""Writes never touch a stored object: the old side of an update is the stored entry's own dict (no copy),
so every part of it that flows into the new object must be cloned.  Here every write path that reuses the
old object — merge/JSON/strategic patches, /status writes that carry spec and metadata over, main-resource
writes that carry status over, server-side apply, CRD defaults added after objects were stored — runs, and
then every revision ever stored must still equal its own serialized form."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from kokpit.apiserver.rest import WriteOptions
from kokpit.apiserver.server import ServerOptions, build
from kokpit.apiserver.storage.store import Entry

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {"group": "example.io", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                               "status": {"type": "object", "properties": {
                                   "phase": {"type": "string"}}}}}}}]},
}


async def _registered(reg: Any, extra_default: bool = False) -> Any:
    """The Widget type once the CRD controller has (re)registered it (with the new default, if asked)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rt = reg.get("example.io", "v1", "widgets")
        if rt is not None and (not extra_default or "color" in orjson.dumps(rt.schema).decode()):
            return rt
        await asyncio.sleep(0.01)
    raise AssertionError("Widget type not registered")


def _opts(**kw: Any) -> WriteOptions:
    return WriteOptions(field_manager="t", **kw)


async def test_no_write_path_mutates_a_stored_revision(tmp_path: Path) -> None:
    built = await build(ServerOptions(data_dir=tmp_path), None)
    rest, reg = built.rest, built.registry
    seen: list[Entry] = []

    def keep(result: Any) -> None:
        value = result[0] if isinstance(result, tuple) else result
        if isinstance(value, Entry):
            seen.append(value)

    try:
        pods = reg.get("", "v1", "pods")
        assert pods is not None
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default",
                                                               "labels": {"a": "1"}},
               "spec": {"containers": [{"name": "c", "image": "kokpit"}]}}
        keep(await rest.create(pods, "default", pod, _opts()))
        keep(await rest.patch(pods, "default", "p", "merge", {"metadata": {"labels": {"b": "2"}}}, _opts()))
        keep(await rest.patch(pods, "default", "p", "merge", {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}}, _opts(subresource="status")))
        keep(await rest.patch(pods, "default", "p", "strategic", {"metadata": {"annotations": {"x": "y"}}},
                              _opts()))
        keep(await rest.patch(pods, "default", "p", "json", [
            {"op": "add", "path": "/metadata/labels/c", "value": "3"}], _opts()))
        keep(await rest.patch(pods, "default", "p", "merge", {"metadata": {"labels": {"a": None}},
                                                               "status": {"phase": "Succeeded"}},
                              _opts(subresource="status")))
        keep(await rest.patch(pods, "default", "p", "apply", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default",
                                                            "annotations": {"applied": "yes"}}},
                              WriteOptions(field_manager="applier", force=True)))
        # a /status PUT that also tries to change spec and metadata: those come from the stored object
        live = built.store.get(pods.key("default", "p"))
        assert live is not None
        body = orjson.loads(live.raw)
        body["spec"]["containers"][0]["image"] = "changed"
        body["metadata"]["finalizers"] = ["x/y"]
        body["status"]["phase"] = "Failed"
        keep(await rest.update(pods, "default", "p", body, _opts(subresource="status")))
        after = built.store.get(pods.key("default", "p"))
        assert after is not None and after.obj["status"]["phase"] == "Failed"
        assert after.obj["spec"]["containers"][0]["image"] == "kokpit" and "finalizers" not in after.obj["metadata"]
        nodes = reg.get("", "v1", "nodes")
        assert nodes is not None
        keep(await rest.create(nodes, None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}},
                               _opts()))
        for i in range(3):
            keep(await rest.patch(nodes, None, "n", "strategic", {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": f"r{i}"}]}}, _opts(subresource="status")))
        keep(await rest.patch(nodes, None, "n", "merge", {"spec": {"unschedulable": True}}, _opts()))

        crds = reg.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crds is not None
        keep(await rest.create(crds, None, CRD, _opts()))
        widgets = await _registered(reg)
        keep(await rest.create(widgets, "default", {"apiVersion": "example.io/v1", "kind": "Widget",
                                                     "metadata": {"name": "w"}, "spec": {"size": 1}}, _opts()))
        keep(await rest.patch(widgets, "default", "w", "merge", {"status": {"phase": "Up"}},
                              _opts(subresource="status")))
        # a default added to the schema after the object was stored: applied to the new object only
        crd = orjson.loads(orjson.dumps(CRD))
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        props["status"]["properties"]["extra"] = {"type": "string", "default": "d"}
        props["spec"]["properties"]["color"] = {"type": "string", "default": "blue"}
        cur = built.store.get(crds.key(None, "widgets.example.io"))
        assert cur is not None
        crd["metadata"]["resourceVersion"] = str(cur.rv)
        keep(await rest.update(crds, None, "widgets.example.io", crd, _opts()))
        widgets = await _registered(reg, extra_default=True)
        keep(await rest.patch(widgets, "default", "w", "merge", {"spec": {"size": 2}}, _opts()))
        keep(await rest.patch(widgets, "default", "w", "merge", {"status": {"phase": "Down"}},
                              _opts(subresource="status")))
        last = built.store.get(widgets.key("default", "w"))
        assert last is not None
        assert last.obj["spec"] == {"size": 2, "color": "blue"} and last.obj["status"]["extra"] == "d"

        assert len(seen) >= 15
        for e in seen:
            assert e.obj == orjson.loads(e.raw), e.obj["metadata"]["name"]
        # and the live view of each object is its latest revision, intact
        for key, e in built.store.all_entries():
            assert e.obj == orjson.loads(e.raw), key
    finally:
        await built.controllers.stop()
        await built.store.close()
        built.lock.close()
