"""The official `kubernetes` Python client (sync, v37) against the embedded server, unmodified.

It is the most widely used Python client and the reference for what kube-apiserver answers: typed models
deserialize our JSON, `Watch().stream` follows our bookmarks and 410s, and its leader election relies on
409 Conflict for stale Lease updates. Each test loads the kubeconfig into a fresh `Configuration`, so the
library's global defaults are never touched.
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from kokpit.apiserver.rbac_admission import ROOT_CA
from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def api_client_for(srv: ApiServerProcess) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(srv.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        try:
            yield api
        finally:
            # ApiClient.close() keeps urllib3's keep-alive sockets, and exceptions caught inside the library
            # (LeaseLock.get returns its 404) keep responses in reference cycles: drop both, so the server
            # does not wait for those connections when it stops
            gc.collect()
            api.rest_client.pool_manager.clear()


@pytest.fixture(scope="module")
def shared_client(shared_apiserver: ApiServerProcess) -> Iterator[client.ApiClient]:
    with api_client_for(shared_apiserver) as api:
        yield api


@pytest.fixture
def ns(shared_client: client.ApiClient) -> str:
    """A namespace of its own for each test on the shared server."""
    name = f"oc-{uuid.uuid4().hex[:8]}"
    v1 = client.CoreV1Api(shared_client)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 15  # settled: the namespace's root CA ConfigMap exists (as in kube)
    while not v1.list_namespaced_config_map(name, field_selector=f"metadata.name={ROOT_CA}").items:
        assert time.monotonic() < deadline, f"no {ROOT_CA} in {name}"
        time.sleep(0.05)
    return name


@dataclass
class Failure:
    status: int = 0
    reason: str = ""  # the HTTP reason phrase, or "Reason: message" for watch ERROR events
    body: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def api_error(status: int) -> Iterator[Failure]:
    """Like pytest.raises(ApiException), but keeps only status and body: a kept traceback would keep
    urllib3's response, and with it a connection the server then waits for when it shuts down."""
    out = Failure()
    try:
        yield out
    except ApiException as e:
        out.status, out.reason = int(e.status), str(e.reason)
        out.body = json.loads(e.body) if e.body else {}
    else:
        pytest.fail(f"expected ApiException {status}")
    assert out.status == status, out


def cm(name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def collect(stream: Iterator[dict[str, Any]], n: int, *, types: set[str] | None = None) -> list[dict[str, Any]]:
    """The first `n` events (of `types`, when given), then close the connection."""
    out: list[dict[str, Any]] = []
    with contextlib.closing(stream):  # type: ignore[type-var]
        for ev in stream:
            if types is None or ev["type"] in types:
                out.append(ev)
            if len(out) >= n:
                break
    return out


# ------------------------------------------------------------------------------------------ CRUD
def test_configmap_crud(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    created = v1.create_namespaced_config_map(ns, cm("crud", {"a": "1"}, {"app": "x"}))
    assert isinstance(created, client.V1ConfigMap)
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.namespace == ns
    assert created.metadata.creation_timestamp is not None

    got = v1.read_namespaced_config_map("crud", ns)
    assert got.data == {"a": "1"} and got.metadata.labels == {"app": "x"}

    got.data["b"] = "2"
    replaced = v1.replace_namespaced_config_map("crud", ns, got)
    assert replaced.data == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    patched = v1.patch_namespaced_config_map("crud", ns, {"data": {"c": "3"}})  # strategic merge by default
    assert patched.data == {"a": "1", "b": "2", "c": "3"}

    listed = v1.list_namespaced_config_map(ns, label_selector="app=x")
    assert [i.metadata.name for i in listed.items] == ["crud"]
    assert listed.metadata.resource_version

    status = v1.delete_namespaced_config_map("crud", ns)
    assert status["kind"] == "Status" and status["status"] == "Success"  # v37 types it as a plain object
    assert status["details"]["name"] == "crud" and status["details"]["uid"] == created.metadata.uid
    with api_error(404) as err:
        v1.read_namespaced_config_map("crud", ns)
    assert err.body["reason"] == "NotFound"


def test_create_existing_is_already_exists(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    v1.create_namespaced_config_map(ns, cm("dup", {"v": "first"}))
    with api_error(409) as err:
        v1.create_namespaced_config_map(ns, cm("dup", {"v": "second"}))
    assert err.body["reason"] == "AlreadyExists"
    assert err.body["message"] == 'configmaps "dup" already exists'
    assert v1.read_namespaced_config_map("dup", ns).data == {"v": "first"}


def test_stale_update_is_conflict(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    first = v1.create_namespaced_config_map(ns, cm("stale", {"v": "0"}))
    fresh = v1.read_namespaced_config_map("stale", ns)
    fresh.data = {"v": "1"}
    v1.replace_namespaced_config_map("stale", ns, fresh)
    first.data = {"v": "lost"}
    with api_error(409) as err:
        v1.replace_namespaced_config_map("stale", ns, first)  # carries the old resourceVersion
    assert err.body["reason"] == "Conflict"
    assert "the object has been modified" in err.body["message"]
    assert v1.read_namespaced_config_map("stale", ns).data == {"v": "1"}


# ------------------------------------------------------------------------------------------ lists
def test_paginated_list_is_a_consistent_snapshot(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    names = [f"page-{i:03d}" for i in range(60)]
    for n in names:
        v1.create_namespaced_config_map(ns, cm(n, {"i": n}))
    first = v1.list_namespaced_config_map(ns, limit=7)
    assert len(first.items) == 7 and first.metadata._continue  # the namespace's root CA ConfigMap first
    snapshot_rv = first.metadata.resource_version
    # written after the first page: none of this may show up in later pages
    for i in range(5):
        v1.create_namespaced_config_map(ns, cm(f"late-{i}"))
    v1.delete_namespaced_config_map(names[-1], ns)
    seen = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    pages = 1
    while token:
        page = v1.list_namespaced_config_map(ns, limit=7, _continue=token)
        assert page.metadata.resource_version == snapshot_rv
        assert len(page.items) <= 7
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        pages += 1
    assert seen == [ROOT_CA, *names]  # each exactly once, in key order, the deleted one still there, no late ones
    assert pages == 9
    now = v1.list_namespaced_config_map(ns)
    assert len(now.items) == 1 + 60 - 1 + 5
    assert int(now.metadata.resource_version) > int(snapshot_rv)


def test_expired_continue_token_is_410(apiserver: ApiServerProcess) -> None:
    with api_client_for(apiserver) as api:
        v1 = client.CoreV1Api(api)
        for i in range(4):
            v1.create_namespaced_config_map("default", cm(f"c{i}"))
        page = v1.list_namespaced_config_map("default", limit=2)
        token = page.metadata._continue
        assert token
        for i in range(3):
            v1.patch_namespaced_config_map(f"c{i}", "default", {"data": {"x": str(i)}})
        apiserver.compact()
        with api_error(410) as err:
            v1.list_namespaced_config_map("default", limit=2, _continue=token)
        assert err.body["reason"] == "Expired" and err.body["kind"] == "Status" and err.body["code"] == 410
        # a fresh list works
        assert len(v1.list_namespaced_config_map("default").items) >= 4


# ------------------------------------------------------------------------------------------ watches
def test_watch_resume_loses_and_repeats_nothing(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    rv0 = v1.list_namespaced_config_map(ns).metadata.resource_version
    for i in range(5):
        v1.create_namespaced_config_map(ns, cm(f"w{i}"))
    w = watch.Watch()
    first = collect(w.stream(v1.list_namespaced_config_map, ns, resource_version=rv0,
                             allow_watch_bookmarks=True, timeout_seconds=10), 3, types={"ADDED"})
    assert [e["object"].metadata.name for e in first] == ["w0", "w1", "w2"]
    resume_rv = first[-1]["object"].metadata.resource_version
    assert w.resource_version == resume_rv
    # changes while nobody watches
    v1.patch_namespaced_config_map("w0", ns, {"data": {"k": "v"}})
    v1.delete_namespaced_config_map("w1", ns)
    second = collect(watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=resume_rv,
                                          allow_watch_bookmarks=True, timeout_seconds=10), 4,
                     types={"ADDED", "MODIFIED", "DELETED"})
    assert [(e["type"], e["object"].metadata.name) for e in second] == [
        ("ADDED", "w3"), ("ADDED", "w4"), ("MODIFIED", "w0"), ("DELETED", "w1")]
    rvs = [int(e["object"].metadata.resource_version) for e in first + second]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)


def test_watch_bookmarks_carry_resource_version(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    v1.create_namespaced_config_map(ns, cm("bm"))
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    w = watch.Watch()
    t0 = time.monotonic()
    events = collect(w.stream(v1.list_namespaced_config_map, ns, resource_version=rv,
                              allow_watch_bookmarks=True, timeout_seconds=10), 1)
    assert time.monotonic() - t0 < 5  # the fixture starts the server with --bookmark-interval 1
    assert events[0]["type"] == "BOOKMARK"
    meta = events[0]["raw_object"]["metadata"]
    assert int(meta["resourceVersion"]) >= int(rv)
    assert events[0]["raw_object"]["kind"] == "ConfigMap"
    assert w.resource_version == meta["resourceVersion"]  # the client resumes from bookmarks


def test_watch_from_compacted_rv_then_relist(apiserver: ApiServerProcess) -> None:
    with api_client_for(apiserver) as api:
        v1 = client.CoreV1Api(api)
        old_rv = v1.list_namespaced_config_map("default").metadata.resource_version
        for i in range(5):
            v1.create_namespaced_config_map("default", cm(f"e{i}"))
        compacted = apiserver.compact()
        assert compacted > int(old_rv)
        with api_error(410) as err:
            collect(watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=old_rv,
                                         timeout_seconds=5), 1)
        assert err.reason.startswith("Expired: too old resource version")
        # the raw stream carries the kube-shaped ERROR event
        code, raw = apiserver.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true&"
                                      f"resourceVersion={old_rv}")
        assert code == 200
        err = json.loads(raw.splitlines()[0])
        assert err["type"] == "ERROR"
        assert err["object"]["code"] == 410 and err["object"]["reason"] == "Expired"
        assert err["object"]["kind"] == "Status" and "too old resource version" in err["object"]["message"]
        # relist, then watch from the new RV
        listing = v1.list_namespaced_config_map("default")
        assert sorted(i.metadata.name for i in listing.items if i.metadata.name != ROOT_CA) == [
            f"e{i}" for i in range(5)]
        new_rv = listing.metadata.resource_version
        v1.create_namespaced_config_map("default", cm("after"))
        events = collect(watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=new_rv,
                                              timeout_seconds=10), 1, types={"ADDED"})
        assert events[0]["object"].metadata.name == "after"


def test_watch_label_selector_enter_and_leave(shared_client: client.ApiClient, ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version

    def writes() -> None:
        v1.create_namespaced_config_map(ns, cm("sel", {"v": "0"}, {"tier": "web"}))
        v1.create_namespaced_config_map(ns, cm("other", {"v": "0"}, {"tier": "db"}))
        v1.patch_namespaced_config_map("sel", ns, {"data": {"v": "1"}})
        v1.patch_namespaced_config_map("sel", ns, {"metadata": {"labels": {"tier": "db"}}})
        v1.patch_namespaced_config_map("sel", ns, {"data": {"v": "2"}})  # not matching: invisible
        v1.patch_namespaced_config_map("sel", ns, {"metadata": {"labels": {"tier": "web"}}})
        v1.delete_namespaced_config_map("sel", ns)

    t = threading.Thread(target=writes)
    t.start()
    try:
        events = collect(watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=rv,
                                              label_selector="tier=web", timeout_seconds=15), 5)
    finally:
        t.join(10)
    assert not t.is_alive()
    assert [(e["type"], e["object"].metadata.name, e["object"].data["v"]) for e in events] == [
        ("ADDED", "sel", "0"), ("MODIFIED", "sel", "1"), ("DELETED", "sel", "1"), ("ADDED", "sel", "2"),
        ("DELETED", "sel", "2")]


def test_send_initial_events_raw_http(shared_apiserver: ApiServerProcess, shared_client: client.ApiClient,
                                      ns: str) -> None:
    v1 = client.CoreV1Api(shared_client)
    names = {f"init-{i}" for i in range(12)}
    for n in sorted(names):
        v1.create_namespaced_config_map(ns, cm(n))
    rv_before = int(v1.list_namespaced_config_map(ns).metadata.resource_version)
    url = (f"{shared_apiserver.url}/api/v1/namespaces/{ns}/configmaps?watch=true&sendInitialEvents=true"
           f"&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10")
    events: list[dict[str, Any]] = []
    with httpx.Client(verify=shared_apiserver.ssl_context(), timeout=10,
                      headers={"Authorization": f"Bearer {shared_apiserver.admin_token}"}) as http, \
            http.stream("GET", url) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        for line in resp.iter_lines():
            if not line.strip():
                continue
            ev = json.loads(line)
            events.append(ev)
            if ev["type"] == "BOOKMARK":
                break
    *added, end = events
    assert {e["type"] for e in added} == {"ADDED"}
    assert sorted(e["object"]["metadata"]["name"] for e in added) == sorted(names | {ROOT_CA})
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(end["object"]["metadata"]["resourceVersion"]) >= rv_before


def test_send_initial_events_requires_not_older_than(shared_apiserver: ApiServerProcess, ns: str) -> None:
    code, raw = shared_apiserver.request(
        "GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true")
    assert code == 422
    body = json.loads(raw)
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and "resourceVersionMatch" in body["message"]


# ------------------------------------------------------------------------------------------ leader election
def test_leader_election_with_lease_lock(shared_client: client.ApiClient, ns: str) -> None:
    coord = client.CoordinationV1Api(shared_client)
    started = threading.Event()
    stopped = threading.Event()
    release = threading.Event()

    def make_lock(identity: str) -> LeaseLock:
        lock = LeaseLock("the-leader", ns, identity)
        lock.api_instance = coord  # LeaseLock builds one from global defaults: use our configuration
        return lock

    def on_started() -> None:
        started.set()
        release.wait(20)
        # raising makes LeaderElection stop renewing, call on_stopped and return from run()
        raise RuntimeError("test is done leading")

    cfg = electionconfig.Config(make_lock("candidate-a"), lease_duration=15, renew_deadline=10, retry_period=1,
                                onstarted_leading=on_started, onstopped_leading=stopped.set)
    elector = leaderelection.LeaderElection(cfg)
    t = threading.Thread(target=elector.run, daemon=True)
    t.start()
    try:
        assert started.wait(15), "candidate-a never became leader"
        lease = coord.read_namespaced_lease("the-leader", ns)
        assert lease.spec.holder_identity == "candidate-a"
        assert lease.spec.lease_duration_seconds == 15
        assert lease.spec.acquire_time is not None and lease.spec.renew_time is not None
        # a second candidate sees a live lease held by someone else and does not take it
        other = leaderelection.LeaderElection(electionconfig.Config(
            make_lock("candidate-b"), lease_duration=15, renew_deadline=10, retry_period=1,
            onstarted_leading=lambda: None, onstopped_leading=None))
        assert other.try_acquire_or_renew() is False
        assert coord.read_namespaced_lease("the-leader", ns).spec.holder_identity == "candidate-a"
        # the leader keeps renewing through PUTs (optimistic concurrency on the Lease's resourceVersion)
        rv = int(lease.metadata.resource_version)
        deadline = time.monotonic() + 10
        while int(coord.read_namespaced_lease("the-leader", ns).metadata.resource_version) == rv:
            assert time.monotonic() < deadline, "the leader never renewed its lease"
            time.sleep(0.1)
        renewed = coord.read_namespaced_lease("the-leader", ns)
        assert renewed.spec.holder_identity == "candidate-a"
        assert renewed.spec.renew_time >= lease.spec.renew_time
    finally:
        release.set()
        t.join(15)
    assert not t.is_alive(), "the elector thread did not end"
    assert stopped.is_set()


def test_stale_lease_replace_is_conflict(shared_client: client.ApiClient, ns: str) -> None:
    coord = client.CoordinationV1Api(shared_client)
    lease = coord.create_namespaced_lease(ns, client.V1Lease(
        metadata=client.V1ObjectMeta(name="l"), spec=client.V1LeaseSpec(holder_identity="a",
                                                                        lease_duration_seconds=10)))
    lease.spec.holder_identity = "b"
    coord.replace_namespaced_lease("l", ns, lease)
    lease.spec.holder_identity = "c"
    with api_error(409) as err:
        coord.replace_namespaced_lease("l", ns, lease)
    assert err.body["reason"] == "Conflict"
    assert coord.read_namespaced_lease("l", ns).spec.holder_identity == "b"
