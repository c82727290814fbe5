"""The runtime against the real embedded API server (a subprocess over HTTPS, like envtest)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kokpit._lib.metricsserver import scrape
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, CRD, LEASE, ApiError, Client, Kind, NotFoundError, ResourceExpiredError
from kokpit.runtime import (
    Handlers,
    Informer,
    LeaderElectionConfig,
    Manager,
    PatchHelper,
    Request,
    Result,
    field_indexer,
    object_key,
)

WIDGET = Kind("example.io", "v1", "Widget", "widgets")


async def eventually(cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await cond() if asyncio.iscoroutinefunction(cond) else cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def client(apiserver: ApiServerProcess) -> AsyncIterator[Client]:
    c = Client.from_kubeconfig(apiserver.kubeconfig)
    try:
        yield c
    finally:
        await c.close()


async def server_state(client: Client, kind: Kind, ns: str) -> dict[str, str]:
    lst = await client.list(kind, ns, limit=50)
    return {object_key(o): o["metadata"]["resourceVersion"] for o in lst.items}


def cache_state(inf: Informer) -> dict[str, str]:
    return {object_key(o): o["metadata"]["resourceVersion"] for o in inf.store.list()}


async def test_informer_cache_equals_server_after_storm(client: Client) -> None:
    inf = Informer(client, CONFIGMAP, namespace="default", page_size=7)
    inf.add_indexer("by-shard", field_indexer("data.shard"))
    events: list[str] = []
    inf.add_event_handler(Handlers(add=lambda o: events.append("add"), delete=lambda o: events.append("del")))
    for i in range(15):  # some objects exist before the informer lists (paginated: 7 per page)
        await client.create(
            CONFIGMAP, {"metadata": {"name": f"pre-{i}", "namespace": "default"}, "data": {"shard": "0"}}
        )
    inf.start()
    await asyncio.wait_for(inf.wait_synced(), 10)
    assert len([k for k in cache_state(inf) if k.startswith("default/pre-")]) == 15

    rng = random.Random(7)
    names = [f"cm-{i}" for i in range(40)]

    async def worker(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(25):
            name = r.choice(names)
            op = r.random()
            try:
                if op < 0.4:
                    await client.create(
                        CONFIGMAP,
                        {
                            "metadata": {"name": name, "namespace": "default", "labels": {"app": "storm"}},
                            "data": {"shard": str(r.randrange(3))},
                        },
                    )
                elif op < 0.8:
                    await client.patch(CONFIGMAP, name, {"data": {"shard": str(r.randrange(3))}}, "default")
                else:
                    await client.delete(CONFIGMAP, name, "default")
            except ApiError as e:  # already exists / not found are part of the storm
                if e.code not in (404, 409):
                    raise

    await asyncio.gather(*(worker(rng.randrange(10**6)) for _ in range(8)))
    await client.delete(CONFIGMAP, "pre-0", "default")

    async def converged() -> bool:
        return cache_state(inf) == await server_state(client, CONFIGMAP, "default")

    await eventually(converged)
    # indexes agree with the cache contents
    for shard in ("0", "1", "2"):
        expect = sorted(
            k
            for k, o in ((object_key(o), o) for o in inf.store.list())
            if (o.get("data") or {}).get("shard") == shard
        )
        assert inf.store.index_keys("by-shard", shard) == expect
    storm = await client.list(CONFIGMAP, "default", label_selector={"app": "storm"})
    assert sorted(object_key(o) for o in inf.store.by_label("app", "storm")) == sorted(
        object_key(o) for o in storm.items
    )
    assert inf.lists == 1  # no relist was needed
    await inf.stop()


async def test_resume_after_server_kill_and_restart(apiserver: ApiServerProcess, client: Client) -> None:
    mgr = Manager(client, http_port=None, handle_signals=False)
    inf = mgr.informers.informer(CONFIGMAP, "default")
    reconciled: dict[str, str] = {}

    async def reconcile(req: Request) -> None:
        o = inf.store.get_by_name(req.name, req.namespace)
        reconciled[req.name] = o["data"]["v"] if o else "<gone>"

    mgr.controller("copy", reconcile, needs_leader_election=False).for_(inf)
    for i in range(5):
        await client.create(
            CONFIGMAP, {"metadata": {"name": f"o{i}", "namespace": "default"}, "data": {"v": "1"}}
        )
    run = asyncio.create_task(mgr.run())
    await eventually(lambda: all(reconciled.get(f"o{i}") == "1" for i in range(5)))

    await asyncio.to_thread(apiserver.kill)  # the informer's watch breaks; it retries with backoff until
    await asyncio.to_thread(apiserver.start)  # the server answers again (start waits for /readyz: seconds)
    await client.patch(CONFIGMAP, "o1", {"data": {"v": "2"}}, "default")
    await client.delete(CONFIGMAP, "o2", "default")
    await client.create(CONFIGMAP, {"metadata": {"name": "o9", "namespace": "default"}, "data": {"v": "3"}})

    async def converged() -> bool:
        return cache_state(inf) == await server_state(client, CONFIGMAP, "default")

    await eventually(converged, timeout=20)
    await eventually(
        lambda: (
            reconciled.get("o1") == "2" and reconciled.get("o2") == "<gone>" and reconciled.get("o9") == "3"
        )
    )
    assert inf.lists == 1, "resumed from the last resourceVersion rather than relisting"
    mgr.stop()
    await asyncio.wait_for(run, 10)


async def test_410_triggers_relist_and_handlers_see_missed_changes(
    apiserver: ApiServerProcess, client: Client
) -> None:
    for i in range(3):
        await client.create(
            CONFIGMAP, {"metadata": {"name": f"k{i}", "namespace": "default"}, "data": {"v": "1"}}
        )
    inf = Informer(client, CONFIGMAP, namespace="default")
    seen: list[tuple[str, str]] = []
    inf.add_event_handler(
        Handlers(
            add=lambda o: seen.append(("add", o["metadata"]["name"])),
            update=lambda a, b: seen.append(("update", b["metadata"]["name"])),
            delete=lambda o: seen.append(("delete", o["metadata"]["name"])),
        )
    )
    inf.start()
    await asyncio.wait_for(inf.wait_synced(), 10)
    old_rv = inf.last_resource_version
    await inf.stop()  # disconnected while the world moves on and history is compacted
    seen.clear()
    await client.delete(CONFIGMAP, "k0", "default")
    await client.patch(CONFIGMAP, "k1", {"data": {"v": "2"}}, "default")
    await client.create(CONFIGMAP, {"metadata": {"name": "k9", "namespace": "default"}, "data": {"v": "1"}})
    await asyncio.to_thread(apiserver.compact)

    with pytest.raises(ResourceExpiredError):  # the raw client reports 410 to its caller
        async for _ in client.watch(CONFIGMAP, "default", resource_version=old_rv, timeout_seconds=5):
            pass

    inf.start()  # resumes from old_rv -> 410 -> relist
    await eventually(lambda: inf.lists == 2)

    async def converged() -> bool:
        return cache_state(inf) == await server_state(client, CONFIGMAP, "default")

    await eventually(converged)
    assert sorted(seen) == [("add", "k9"), ("delete", "k0"), ("update", "k1")]
    await inf.stop()


async def _leader_manager(
    apiserver: ApiServerProcess, ident: str, calls: dict[str, int]
) -> tuple[Manager, Client]:
    c = Client.from_kubeconfig(apiserver.kubeconfig)
    le = LeaderElectionConfig(
        "test-op",
        "default",
        identity=ident,
        lease_duration=2.0,
        renew_deadline=1.5,
        retry_period=0.2,
        release_on_cancel=False,
    )
    mgr = Manager(c, leader_election=le, http_port=None, handle_signals=False)
    inf = mgr.informers.informer(CONFIGMAP, "default")

    async def reconcile(req: Request) -> None:
        calls[ident] = calls.get(ident, 0) + 1

    mgr.controller("le", reconcile).for_(inf)
    return mgr, c


async def test_two_managers_one_leader_and_takeover_within_lease(
    apiserver: ApiServerProcess, client: Client
) -> None:
    calls: dict[str, int] = {}
    (ma, ca), (mb, cb) = [await _leader_manager(apiserver, i, calls) for i in ("a", "b")]
    ta, tb = asyncio.create_task(ma.run()), asyncio.create_task(mb.run())
    await eventually(lambda: ma.is_leader or mb.is_leader)
    for _ in range(30):  # never two leaders at once
        assert ma.is_leader + mb.is_leader == 1
        await asyncio.sleep(0.05)
    _leader, follower, ltask, lname = (ma, mb, ta, "a") if ma.is_leader else (mb, ma, tb, "b")
    fname = "b" if lname == "a" else "a"
    await client.create(CONFIGMAP, {"metadata": {"name": "x", "namespace": "default"}, "data": {}})
    await eventually(lambda: calls.get(lname, 0) >= 1)
    assert calls.get(fname, 0) == 0  # the follower's leader-only controller does not run

    ltask.cancel()  # the leader dies without releasing the lease
    await asyncio.gather(ltask, return_exceptions=True)
    died = time.monotonic()
    await eventually(lambda: follower.is_leader, timeout=5)
    took = time.monotonic() - died
    assert took <= 2.0 + 0.2 + 0.5, f"takeover took {took:.2f}s"
    await eventually(lambda: calls.get(fname, 0) >= 1)  # the new leader's controller starts and reconciles
    lease = await client.get(LEASE, "test-op", "default")
    assert lease["spec"]["holderIdentity"] == fname and lease["spec"]["leaseTransitions"] >= 1
    follower.stop()
    await asyncio.wait_for(tb if follower is mb else ta, 10)
    await ca.close()
    await cb.close()


async def test_leader_election_renews_over_a_client_of_its_own(apiserver: ApiServerProcess) -> None:
    """A burst of writes queued behind the Manager's client (here its client-side rate limit: 1 request/s)
    does not delay the Lease renewal, which goes over a sibling client with its own connections and no
    limit: the leader stays leader through a queue far longer than its renew deadline."""
    c = Client.from_kubeconfig(apiserver.kubeconfig, qps=1, burst=1)
    le = LeaderElectionConfig("own-lease", "default", identity="a", lease_duration=2.0, renew_deadline=1.5,
                              retry_period=0.2, release_on_cancel=False)
    mgr = Manager(c, leader_election=le, http_port=None, handle_signals=False)
    assert mgr.elector is not None and mgr.elector.client is not c
    task = asyncio.create_task(mgr.run())
    try:
        await eventually(lambda: mgr.is_leader)
        writes = asyncio.gather(*(c.create(CONFIGMAP, {"metadata": {"name": f"q{i}", "namespace": "default"}})
                                  for i in range(6)))
        end = time.monotonic() + 4.0  # the queue of 6 writes at 1/s outlasts the 1.5 s renew deadline
        while time.monotonic() < end:
            assert mgr.is_leader, "the Lease was lost while the Manager's client was busy"
            await asyncio.sleep(0.05)
        await writes
        lease = await c.get(LEASE, "own-lease", "default")
        assert lease["spec"]["holderIdentity"] == "a" and not lease["spec"].get("leaseTransitions")
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 10)
        await c.close()


async def _create_widget_crd(client: Client) -> None:
    crd = {
        "metadata": {"name": "widgets.example.io"},
        "spec": {
            "group": "example.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    await client.create(CRD, crd)

    async def served() -> bool:
        try:
            await client.list(WIDGET, "default")
            return True
        except NotFoundError:
            return False

    await eventually(served)


async def _http_get(port: int, path: str, token: str = "") -> tuple[int, bytes]:
    return await scrape(f"https://127.0.0.1:{port}{path}", token)


async def test_manager_copy_operator_probes_metrics_and_sigterm(client: Client) -> None:
    await _create_widget_crd(client)
    mgr = Manager(client, metrics_tokens=["t" * 32])
    inf = mgr.informers.informer(WIDGET, "default")
    writes_before = client.metrics.count("patch", 200)

    async def reconcile(req: Request) -> Result:
        o = inf.store.get_by_name(req.name, req.namespace)
        if o is None:
            return Result()
        h = PatchHelper(client, WIDGET, o)
        h.obj.setdefault("status", {})["value"] = o["spec"]["value"]
        await h.patch()
        return Result()

    mgr.controller("copy", reconcile, workers=4)
    mgr.controllers[0].for_(inf)
    for i in range(20):
        await client.create(
            WIDGET, {"metadata": {"name": f"w{i}", "namespace": "default"}, "spec": {"value": i}}
        )
    run = asyncio.create_task(mgr.run())
    await asyncio.wait_for(mgr.started.wait(), 5)
    port = mgr.http_port
    assert port is not None

    def all_copied() -> bool:
        objs = inf.store.list()
        return len(objs) == 20 and all(
            (o.get("status") or {}).get("value") == o["spec"]["value"] for o in objs
        )

    await eventually(all_copied)
    assert client.metrics.count("patch", 200) - writes_before == 20  # one write per object, no extra reads
    assert client.metrics.count("get", 200) == 0
    assert (await _http_get(port, "/healthz"))[0] == 200
    assert (await _http_get(port, "/readyz"))[0] == 200
    assert (await _http_get(port, "/metrics"))[0] == 401  # HTTPS and a bearer token, like the API server's
    assert mgr.metrics_url == f"https://127.0.0.1:{port}/metrics"
    code, body = await _http_get(port, "/metrics", "t" * 32)
    assert code == 200
    assert b'kokpit_reconcile_total{controller="copy",result="success"}' in body
    assert b'kokpit_client_requests_total{code="200",verb="patch"}' in body
    assert b"kokpit_workqueue_depth" in body
    os.kill(os.getpid(), signal.SIGTERM)  # handled by the manager's loop signal handler
    await asyncio.wait_for(run, 10)
    assert mgr.http_port is None
