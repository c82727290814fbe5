"""One Event per cordon flip, even when the Node cache has not yet seen the operator's own write.

In the running operator a Machine's status write wakes its next reconcile before the Node's watch event
arrives; that reconcile used to cordon again and record a second ``Cordoned`` (and likewise ``Uncordoned``).
Here the reconciler reads Nodes from a cache the test holds back, while the fake client's Store is the server.
"""

from __future__ import annotations

import copy
from typing import Any

from kokpit.client import NODE
from kokpit.operators.machine import CORDON_ANNOTATION
from kokpit.runtime import Store

H = Any  # the Harness from conftest


def _lagging_node_cache(h: H) -> Store:
    """Give the reconciler its own Node cache, a snapshot of the server that only moves when told to."""
    cache = Store()
    cache.put(copy.deepcopy(h.nodes.get_by_name("n1")))
    h.rec.nodes = cache
    return cache


def _server_node(h: H) -> dict[str, Any]:
    node: dict[str, Any] = h.nodes.get_by_name("n1")
    return node


async def test_stale_node_cache_cordons_and_uncordons_once(harness: H) -> None:
    h = harness
    h.mpv("containerd-1.7", "containerd", "1.7.0")
    h.machine(packages=["containerd-1.7"])
    cache = _lagging_node_cache(h)

    await h.run()  # install starts; the Machine is not ready: cordon
    assert h.cordoned()
    rv = _server_node(h)["metadata"]["resourceVersion"]
    await h.run()  # woken by its own status write; the cache still shows the Node schedulable
    assert _server_node(h)["metadata"]["resourceVersion"] == rv, "the Node was written a second time"
    assert [(e["type"], e["count"]) for e in h.events("Cordoned")] == [("Normal", 1)]

    cache.put(copy.deepcopy(_server_node(h)))  # the cordon's watch event arrives
    h.driver.complete()
    await h.run()  # installed and healthy: uncordon
    assert not h.cordoned()
    assert CORDON_ANNOTATION not in (_server_node(h)["metadata"].get("annotations") or {})
    rv = _server_node(h)["metadata"]["resourceVersion"]
    await h.run()  # the cache still shows our cordon
    assert _server_node(h)["metadata"]["resourceVersion"] == rv, "the Node was written a second time"
    assert [(e["type"], e["count"]) for e in h.events("Uncordoned")] == [("Normal", 1)]
    assert h.cond("Ready")["status"] == "True"


async def test_node_changed_by_someone_else_is_still_cordoned(harness: H) -> None:
    """A stale cache because of another writer (a heartbeat) must not stop a cordon that is needed."""
    h = harness
    h.mpv("containerd-1.7", "containerd", "1.7.0")
    h.machine(packages=["containerd-1.7"])
    _lagging_node_cache(h)
    # someone else writes the Node (the reconciler's cache does not see it yet)
    await h.client.patch(NODE, "n1",
                         {"metadata": {"labels": {"heartbeat": "1"}}})
    await h.run()
    assert h.cordoned()
    node = _server_node(h)
    assert node["metadata"]["labels"] == {"heartbeat": "1"}
    assert node["metadata"]["annotations"][CORDON_ANNOTATION] == "machine-operator"
    assert [(e["type"], e["count"]) for e in h.events("Cordoned")] == [("Normal", 1)]
