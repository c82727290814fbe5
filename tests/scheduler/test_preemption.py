"""Preemption as pure functions over a hand-built cache: victims, reprieves, PDBs, node choice, messages."""

from __future__ import annotations

from collections import Counter

from kokpit.runtime import Request
from kokpit.scheduler._framework import PodView, Sampler, failure_message, schedule
from kokpit.scheduler._preemption import (
    Budget,
    find_candidate,
    postfilter_message,
    victims_on,
    without_candidates,
)
from kokpit.scheduler.scheduler import _SchedulingController

from .test_framework import cache_of, node, pod


def _p(name: str, cpu: str, priority: int, labels: dict[str, str] | None = None, **spec: object) -> dict:
    p = pod(name, cpu=cpu, labels=labels, priority=priority, **spec)
    p["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{len(name):02d}Z"
    return p


def test_fewest_victims_are_chosen_and_the_rest_reprieved() -> None:
    c = cache_of(node("n1", cpu="4"))
    for name, cpu, prio in (("low-a", "1", 1), ("low-b", "1", 1), ("mid", "1", 5), ("top", "1", 100)):
        c.place(f"ns/{name}", _p(name, cpu, prio), "n1")
    high = PodView.of("ns/high", _p("high", "2", 10))
    cand = victims_on(high, c.nodes["n1"], [])
    assert cand is not None
    # two cpus are needed; the more important of the lower pods (mid, priority 5) is kept, both low ones go
    assert sorted(v.key for v in cand.victims) == ["ns/low-a", "ns/low-b"] and cand.pdb_violations == 0
    assert victims_on(PodView.of("ns/x", _p("x", "2", 1)), c.nodes["n1"], []) is None  # nothing lower than 1


def test_pdb_protected_pods_are_reprieved_first_and_nodes_ranked() -> None:
    c = cache_of(node("n1", cpu="2"), node("n2", cpu="2"))
    c.place("ns/db-0", _p("db-0", "2", 0, {"app": "db"}), "n1")  # guarded by a budget with no room
    c.place("ns/web-0", _p("web-0", "1", 0, {"app": "web"}), "n2")
    c.place("ns/web-1", _p("web-1", "1", 0, {"app": "web"}), "n2")
    budgets = [Budget("ns", {"matchLabels": {"app": "db"}}, 0, frozenset())]
    high = PodView.of("ns/high", _p("high", "2", 10))
    pre = find_candidate(high, c, budgets)
    # n1 costs one PDB violation, n2 two unprotected pods: fewer violations win over fewer victims
    assert pre.candidate is not None and pre.candidate.node == "n2" and len(pre.candidate.victims) == 2
    assert victims_on(high, c.nodes["n1"], budgets).pdb_violations == 1  # type: ignore[union-attr]


def test_nominated_room_is_kept_for_the_preemptor() -> None:
    c = cache_of(node("n1", cpu="2"))
    high = _p("high", "2", 10)
    c.nominate("ns/high", high, "n1")
    other = schedule(PodView.of("ns/other", _p("other", "1", 0)), c, Sampler())
    assert other.node is None and other.reasons["Insufficient cpu"] == 1  # the room is booked
    high["status"] = {"nominatedNodeName": "n1"}
    assert schedule(PodView.of("ns/high", high), c, Sampler()).node == "n1"  # its own booking does not count
    c.nominate("ns/high", None, "")
    assert schedule(PodView.of("ns/other", _p("other", "1", 0)), c, Sampler()).node == "n1"


def test_messages_say_why_preemption_did_not_help() -> None:
    c = cache_of(node("n1", cpu="1"), node("cordoned", unschedulable=True))
    c.place("ns/a", _p("a", "1", 0), "n1")
    view = PodView.of("ns/p", _p("p", "1", 0))
    d = schedule(view, c, Sampler())
    msg = failure_message(2, d.reasons) + " " + postfilter_message(2, without_candidates(d.reasons))
    assert msg == ("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable. preemption: 0/2 "
                   "nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not "
                   "helpful for scheduling.")
    assert postfilter_message(2, None) == "preemption: not eligible due to preemptionPolicy=Never."
    assert without_candidates(Counter({"Too many pods": 3})).reasons["No preemption victims found for incoming pod"] == 3


async def test_active_queue_hands_out_the_highest_priority_first() -> None:
    prio = {"low": 0, "high": 1000, "mid": 10, "high2": 1000}
    c = _SchedulingController("t", None, lambda r: prio[r.name], workers=1)
    for name in ("low", "high", "mid", "high2"):
        c.queue.add(Request("ns", name))
    got = []
    for _ in range(4):
        r = await c.queue.get()
        got.append(r.name)
        c.queue.done(r)
    assert got == ["high", "high2", "mid", "low"]  # by priority, first come first among equals
