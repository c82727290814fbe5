"""Cache transforms: objects enter an informer's cache transformed (managedFields stripped), from the list
and from the watch alike, while handlers and resourceVersion bookkeeping keep working."""

from __future__ import annotations

import asyncio
import time

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, Client
from kokpit.runtime import Handlers, Manager, strip_managed_fields


async def test_manager_cache_transform_strips_managed_fields(apiserver: ApiServerProcess) -> None:
    client = Client.from_kubeconfig(apiserver.kubeconfig)
    try:
        await client.create(CONFIGMAP, {"metadata": {"name": "listed", "namespace": "default"}, "data": {}})
        mgr = Manager(client, http_port=None, handle_signals=False, cache_transform=strip_managed_fields)
        inf = mgr.informers.informer(CONFIGMAP, "default")
        seen: list[str] = []
        inf.add_event_handler(Handlers(add=lambda o: seen.append(o["metadata"]["name"])))
        inf.start()
        await asyncio.wait_for(inf.wait_synced(), 10)
        watched = await client.create(
            CONFIGMAP, {"metadata": {"name": "watched", "namespace": "default"}, "data": {}}
        )
        assert watched["metadata"].get("managedFields"), "the server does send managedFields"
        deadline = time.monotonic() + 10
        while inf.store.get_by_name("watched", "default") is None:
            assert time.monotonic() < deadline, "watched object never reached the cache"
            await asyncio.sleep(0.02)
        for name in ("listed", "watched"):
            cached = inf.store.get_by_name(name, "default")
            assert cached is not None and "managedFields" not in cached["metadata"]
            assert cached["metadata"]["resourceVersion"]
        assert "listed" in seen and "watched" in seen
        await mgr.informers.stop()
    finally:
        await client.close()


def test_strip_managed_fields_keeps_everything_else() -> None:
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}], "labels": {"k": "v"}}, "data": {}}
    assert strip_managed_fields(obj) == {"metadata": {"name": "a", "labels": {"k": "v"}}, "data": {}}
    assert strip_managed_fields({"kind": "X"}) == {"kind": "X"}
