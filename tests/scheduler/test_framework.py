"""The scheduler's filters, scores and messages as pure functions over a hand-built cache."""

from __future__ import annotations

from typing import Any

from kokpit.scheduler._cache import SchedulerCache
from kokpit.scheduler._framework import PodView, Sampler, failure_message, feasible_to_find, schedule

Obj = dict[str, Any]


def node(name: str, cpu: str = "4", mem: str = "8Gi", pods: str = "110", zone: str = "a", **spec: Any) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": zone}},
            "spec": spec, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods}}}


def pod(name: str, cpu: str = "", owner: str = "", labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    c: Obj = {"name": "c", "image": "x"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    meta: Obj = {"name": name, "namespace": "ns", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "uid": owner, "controller": True}]
    return {"metadata": meta, "spec": {"containers": [c], **spec}}


def cache_of(*nodes: Obj) -> SchedulerCache:
    c = SchedulerCache()
    for n in nodes:
        c.upsert_node(n)
    return c


def test_reasons_and_message_match_kube_scheduler() -> None:
    c = cache_of(node("cordoned", unschedulable=True),
                 node("tainted", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                 node("small", cpu="1"))
    d = schedule(PodView.of("ns/p", pod("p", cpu="2")), c, Sampler())
    assert d.node is None
    assert failure_message(3, d.reasons) == ("0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated "
                                             "taint {dedicated: db}, 1 node(s) were unschedulable.")


def test_tolerations_node_affinity_and_pods_capacity() -> None:
    c = cache_of(node("tainted", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                 node("full", pods="1"), node("other", zone="b"))
    c.place("ns/x", pod("x"), "full")
    tol = pod("p", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
              nodeSelector={"kubernetes.io/hostname": "tainted"})
    assert schedule(PodView.of("ns/p", tol), c, Sampler()).node == "tainted"
    pinned = pod("q", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["full"]}]}]}}})
    d = schedule(PodView.of("ns/q", pinned), c, Sampler())
    assert d.node is None and d.reasons["Too many pods"] == 1 and d.evaluated == 1  # only the pinned node looked at


def test_anti_affinity_by_hostname_and_spreading() -> None:
    c = cache_of(node("n1"), node("n2"), node("n3", zone="b"))
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    placed = []
    for i in range(3):
        p = pod(f"db{i}", labels={"app": "db"}, affinity=anti)
        d = schedule(PodView.of(f"ns/db{i}", p), c, Sampler())
        assert d.node is not None
        c.place(f"ns/db{i}", p, d.node, assumed=True)
        placed.append(d.node)
    assert sorted(placed) == ["n1", "n2", "n3"]
    d = schedule(PodView.of("ns/db3", pod("db3", labels={"app": "db"}, affinity=anti)), c, Sampler())
    assert d.node is None and d.reasons == {"node(s) didn't match pod anti-affinity rules": 3}
    # a controller's pods spread over zones first: the lone zone-b node takes the second replica
    c2 = cache_of(node("a1"), node("a2"), node("b1", zone="b"))
    c2.place("ns/w0", pod("w0", owner="rs"), "a1")
    d = schedule(PodView.of("ns/w1", pod("w1", owner="rs")), c2, Sampler())
    assert d.node == "b1"


def test_least_allocated_and_incremental_accounting() -> None:
    c = cache_of(node("busy"), node("idle"))
    c.place("ns/big", pod("big", cpu="3"), "busy")
    assert schedule(PodView.of("ns/p", pod("p", cpu="100m")), c, Sampler()).node == "idle"
    assert c.nodes["busy"].req_cpu == 3.0
    c.observe_pod("ns/big", None)  # deleted: the room is free again
    assert c.nodes["busy"].req_cpu == 0.0 and not c.nodes["busy"].pods


def test_feasible_nodes_to_find_is_adaptive() -> None:
    assert feasible_to_find(50) == 50
    assert feasible_to_find(1000) == 420  # 50% - 1000/125 = 42%
    assert feasible_to_find(10_000) == 500  # at least 5%
