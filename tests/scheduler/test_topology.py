"""Pod topology spread constraints and zone-wide pod (anti-)affinity as pure functions over a cache."""

from __future__ import annotations

from typing import Any

from kokpit.scheduler._framework import PodView, Sampler, failure_message, schedule

from .test_framework import cache_of, node, pod

Obj = dict[str, Any]
ZONE = "topology.kubernetes.io/zone"


def _spread(max_skew: int = 1, key: str = ZONE, when: str = "DoNotSchedule", **extra: Any) -> Obj:
    return {"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}, **extra}


def _web(name: str, **spec: Any) -> Obj:
    return pod(name, labels={"app": "web"}, **spec)


def test_do_not_schedule_keeps_the_skew() -> None:
    c = cache_of(node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"))
    c.place("ns/w1", _web("w1"), "a1")
    c.place("ns/w2", _web("w2"), "a2")
    c.place("ns/other", pod("other", labels={"app": "db"}), "b1")  # does not match: not counted
    d = schedule(PodView.of("ns/p", _web("p", topologySpreadConstraints=[_spread()])), c, Sampler())
    assert d.node == "b1"  # zone a has 2, zone b 0: a third in a would make the skew 3
    c.place("ns/w3", _web("w3"), "b1")
    c.place("ns/w4", _web("w4"), "b1")
    d = schedule(PodView.of("ns/p", _web("p", topologySpreadConstraints=[_spread()])), c, Sampler())
    assert d.node in ("a1", "a2")
    # pods of another namespace never count
    c2 = cache_of(node("a1", zone="a"), node("b1", zone="b"))
    c2.place("ns/w1", _web("w1"), "a1")
    c2.place("other/w9", {**_web("w9"), "metadata": {"name": "w9", "namespace": "other", "labels": {"app": "web"}}},
             "b1")
    pinned = _web("p", topologySpreadConstraints=[_spread()], nodeSelector={ZONE: "a"})
    # nodeAffinityPolicy Honor (the default): zone b is not a domain for a pod that may only go to zone a
    assert schedule(PodView.of("ns/p", pinned), c2, Sampler()).node == "a1"
    ignore = _web("p", topologySpreadConstraints=[_spread(nodeAffinityPolicy="Ignore")], nodeSelector={ZONE: "a"})
    d = schedule(PodView.of("ns/p", ignore), c2, Sampler())
    assert d.node is None and failure_message(2, d.reasons) == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) didn't match "
        "pod topology spread constraints.")


def test_missing_label_min_domains_and_schedule_anyway() -> None:
    c = cache_of(node("a1", zone="a"), {**node("bare"), "metadata": {"name": "bare", "labels": {}}})
    c.place("ns/w1", _web("w1"), "a1")
    d = schedule(PodView.of("ns/p", _web("p", topologySpreadConstraints=[_spread(max_skew=1)])), c, Sampler())
    # one domain only (a, with 1 pod): skew 1+1-1 = 1 fits; the unlabelled node cannot host the pod
    assert d.node == "a1" and d.reasons[
        "node(s) didn't match pod topology spread constraints (missing required label)"] == 1
    d = schedule(PodView.of("ns/p", _web("p", topologySpreadConstraints=[_spread(minDomains=2)])), c, Sampler())
    assert d.node is None  # fewer domains than minDomains: the minimum counts as 0, so zone a is full
    c3 = cache_of(node("a1", zone="a"), node("b1", zone="b"))
    for i in range(3):
        c3.place(f"ns/w{i}", _web(f"w{i}"), "b1")
    soft = _web("p", topologySpreadConstraints=[_spread(when="ScheduleAnyway")])
    assert schedule(PodView.of("ns/p", soft), c3, Sampler()).node == "a1"  # scored, not filtered


def test_zone_affinity_and_anti_affinity_both_ways() -> None:
    c = cache_of(node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"))
    c.place("ns/db", pod("db", labels={"app": "db"}), "a1")
    near_db = pod("p", labels={"app": "api"}, affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "db"}}}]}})
    d = schedule(PodView.of("ns/p", near_db), c, Sampler())
    assert d.node in ("a1", "a2") and d.reasons["node(s) didn't match pod affinity rules"] == 1
    # the first pod of a group that selects itself may go anywhere
    first = pod("f", labels={"app": "cache"}, affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "cache"}}}]}})
    assert schedule(PodView.of("ns/f", first), c, Sampler()).node is not None
    away = pod("q", labels={"app": "db"}, affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "db"}}}]}})
    assert schedule(PodView.of("ns/q", away), c, Sampler()).node == "b1"
    c.place("ns/q", away, "b1")  # now q forbids any db pod in zone b, and db forbids... nothing
    d = schedule(PodView.of("ns/r", pod("r", labels={"app": "db"})), c, Sampler())
    assert d.node in ("a1", "a2") and d.reasons["node(s) didn't satisfy existing pods anti-affinity rules"] == 1
