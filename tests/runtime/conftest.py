"""Fixtures for runtime unit tests: in-memory stand-ins for an API server client and an event source."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import jsonpatch
import pytest

from kokpit.apiserver.patch import json_merge_patch
from kokpit.client import AlreadyExistsError, ApiError, ConflictError, Kind, NotFoundError
from kokpit.runtime.informer import EventHandler, object_key

Obj = dict[str, Any]


class FakeClient:
    """Enough of kokpit.client.Client for leader election, events, finalizers and the patch helper."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = itertools.count(1)
        self.calls: list[tuple[str, str, str]] = []
        self.fail_next: list[Exception] = []
        self.namespace = "default"

    def _key(self, kind: Kind, name: str, ns: str | None) -> tuple[str, str, str]:
        return (kind.plural, (ns or "") if kind.namespaced else "", name)

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, *, subresource: str | None = None
    ) -> Obj:
        self.calls.append(("get", kind.plural, name))
        self._maybe_fail()
        o = self.objects.get(self._key(kind, name, namespace))
        if o is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        return copy.deepcopy(o)

    async def create(
        self, kind: Kind, obj: Obj, namespace: str | None = None, *, dry_run: bool = False
    ) -> Obj:
        self.calls.append(("create", kind.plural, obj["metadata"]["name"]))
        self._maybe_fail()
        ns = namespace or obj["metadata"].get("namespace")
        key = self._key(kind, obj["metadata"]["name"], ns)
        if key in self.objects:
            raise AlreadyExistsError(409, {"reason": "AlreadyExists"})
        o = copy.deepcopy(obj)
        o["metadata"]["resourceVersion"] = str(next(self._rv))
        if ns and kind.namespaced:
            o["metadata"]["namespace"] = ns
        self.objects[key] = o
        return copy.deepcopy(o)

    async def update(self, kind: Kind, obj: Obj, *, subresource: str | None = None) -> Obj:
        meta = obj["metadata"]
        self.calls.append(("update", kind.plural, meta["name"]))
        self._maybe_fail()
        key = self._key(kind, meta["name"], meta.get("namespace"))
        cur = self.objects.get(key)
        if cur is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        if meta.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise ConflictError(409, {"reason": "Conflict"})
        o = copy.deepcopy(obj)
        o["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = o
        return copy.deepcopy(o)

    async def patch(
        self,
        kind: Kind,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        patch_type: Any = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        self.calls.append((f"patch:{patch_type}:{subresource or ''}", kind.plural, name))
        self._maybe_fail()
        key = self._key(kind, name, namespace)
        cur = self.objects.get(key)
        if cur is None:
            raise NotFoundError(404, {"reason": "NotFound"})
        if patch_type == "json":
            try:
                new = jsonpatch.apply_patch(cur, body)
            except jsonpatch.JsonPatchTestFailed as e:
                raise ApiError(422, {"reason": "Invalid", "message": str(e)}) from e
        else:
            new = json_merge_patch(cur, body)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)


class FakeSource:
    """An in-memory event source: tests call add/update/delete; handlers see them synchronously."""

    def __init__(self) -> None:
        self.handlers: list[EventHandler] = []
        self.items: dict[str, Obj] = {}

    def add_event_handler(self, handler: EventHandler) -> None:
        self.handlers.append(handler)
        for o in self.items.values():
            handler.on_add(o)

    async def wait_synced(self) -> None:
        return None

    def objects(self) -> list[Obj]:
        return list(self.items.values())

    def add(self, obj: Obj) -> None:
        self.items[object_key(obj)] = obj
        for h in self.handlers:
            h.on_add(obj)

    def update(self, obj: Obj) -> None:
        old = self.items[object_key(obj)]
        self.items[object_key(obj)] = obj
        for h in self.handlers:
            h.on_update(old, obj)

    def delete(self, obj: Obj) -> None:
        self.items.pop(object_key(obj), None)
        for h in self.handlers:
            h.on_delete(obj)


def obj(name: str, ns: str = "default", **extra: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, **extra}}


@pytest.fixture
def fake_client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def make_fake_client() -> type[FakeClient]:
    return FakeClient


@pytest.fixture
def make_source() -> type[FakeSource]:
    return FakeSource


@pytest.fixture
def make_obj() -> Any:
    return obj
