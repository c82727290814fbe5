"""The risk center's decision rules, as pure functions over plain data (no server, no clock)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kokpit.api.risk import OperationType, PermitState
from kokpit.operators.risk import (
    Ask,
    ClusterInfo,
    GateReading,
    NodeInfo,
    PolicyView,
    ScheduleError,
    Usage,
    World,
    blackout_end,
    breaker_failures,
    budget_report,
    decide,
    parse_duration,
    resolve_limit,
)

ISO = OperationType.NODE_ISOLATE
RE = OperationType.NODE_REINSTALL
CPR = OperationType.CONTROL_PLANE_RELEASE
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC).timestamp()  # a Monday


def policy(name: str = "p", ops: tuple[str, ...] = ("node-isolate",), **spec: Any) -> PolicyView:
    scope = spec.pop("scope", {"allClusters": True})
    view = PolicyView.from_obj({"metadata": {"name": name},
                                "spec": {"operations": list(ops), "scope": scope, **spec}})
    assert not view.invalid, view.invalid
    return view


def cluster(key: str = "default/c1", n: int = 10, down: int = 0, labels: dict[str, str] | None = None,
            node_labels: dict[str, str] | None = None) -> ClusterInfo:
    nodes = {f"n{i}": NodeInfo(f"n{i}", node_labels if node_labels and i % 2 == 0 else {}, available=i >= down)
             for i in range(n)}
    return ClusterInfo(key, labels or {}, True, nodes)


def world(*policies: PolicyView, clusters: list[ClusterInfo] | None = None, usages: list[Usage] | None = None,
          now: float = NOW, **kw: Any) -> World:
    cs = clusters if clusters is not None else [cluster()]
    return World(list(policies), {c.key: c for c in cs}, list(usages or []), now, **kw)


def ask(targets: list[str], op: OperationType = ISO, cluster_key: str = "default/c1", uid: str = "a",
        partial: bool = False) -> Ask:
    return Ask(uid, op, cluster_key, tuple(targets), partial)


def test_no_policy_grants_and_records_usage() -> None:
    w = world()
    d = decide(ask(["n1", "n2"]), w)
    assert d.state is PermitState.GRANTED and d.granted == ("n1", "n2")
    assert w.usages[-1].targets == ("n1", "n2") and w.usages[-1].granted_at == NOW


def test_max_concurrent_integer_counts_distinct_nodes_in_flight() -> None:
    w = world(policy(maxConcurrent=3), usages=[Usage("u1", "node-isolate", "default/c1", ("n1", "n2"), NOW - 5)])
    assert decide(ask(["n3"], uid="x"), w).state is PermitState.GRANTED
    d = decide(ask(["n4"], uid="y"), w)
    assert d.state is PermitState.QUEUED
    assert [(r.policy, r.reason) for r in d.refusals] == [("p", "MaxConcurrent")]
    assert "3/3" in d.refusals[0].message
    # a node already in flight adds nothing
    assert decide(ask(["n1"], uid="z"), w).state is PermitState.GRANTED


def test_released_usage_frees_concurrency_but_not_window() -> None:
    p = policy(maxConcurrent=1, maxPerWindow={"count": 2, "window": "1h"})
    done = Usage("u1", "node-isolate", "default/c1", ("n1",), NOW - 600, released_at=NOW - 300,
                 outcome="Succeeded")
    w = world(p, usages=[done])
    assert decide(ask(["n2"], uid="a"), w).state is PermitState.GRANTED
    # the next pass sees n2's permit released
    w = world(p, usages=[done, Usage("a", "node-isolate", "default/c1", ("n2",), NOW, NOW, "Succeeded")])
    d = decide(ask(["n3"], uid="b"), w)
    assert d.state is PermitState.QUEUED and d.refusals[0].reason == "MaxPerWindow"
    assert d.retry_at == NOW - 600 + 3600  # when the oldest start leaves the window
    # the sliding window: an hour later both starts are out of it
    w = world(p, usages=w.usages, now=NOW + 3601)
    assert decide(ask(["n3"], uid="c"), w).state is PermitState.GRANTED


def test_percentages_round_down_but_allow_one() -> None:
    assert resolve_limit("10%", 50) == 5
    assert resolve_limit("10%", 9) == 1
    assert resolve_limit("0%", 100) == 0
    assert resolve_limit("100%", 7) == 7
    assert resolve_limit(4, 1) == 4
    w = world(policy(maxConcurrent="20%"), clusters=[cluster(n=10)])
    assert decide(ask(["n0", "n1"]), w).state is PermitState.GRANTED
    assert decide(ask(["n2"], uid="b"), w).state is PermitState.QUEUED


def test_max_unavailable_counts_unhealthy_and_cordoned_nodes() -> None:
    # 10 nodes, 2 already NotReady/cordoned, limit 3: one more may go, repairing a broken one adds nothing
    w = world(policy(maxUnavailable=3), clusters=[cluster(n=10, down=2)])
    assert decide(ask(["n5"], uid="a"), w).state is PermitState.GRANTED
    d = decide(ask(["n6"], uid="b"), w)
    assert d.state is PermitState.QUEUED and d.refusals[0].reason == "MaxUnavailable"
    assert "3/3" in d.refusals[0].message
    assert decide(ask(["n0"], uid="c"), w).state is PermitState.GRANTED  # n0 is already unavailable


def test_unobservable_nodes_deny_percentage_and_unavailable_limits() -> None:
    blind = ClusterInfo("default/c1", {}, True, None)
    d = decide(ask(["n1"]), world(policy(maxUnavailable="10%"), clusters=[blind]))
    assert d.state is PermitState.DENIED and d.refusals[0].reason == "ScopeUnknown"
    # an absolute concurrency limit does not need the nodes
    assert decide(ask(["n1"]), world(policy(maxConcurrent=2), clusters=[blind])).state is PermitState.GRANTED


def test_every_matching_policy_must_allow_and_each_refusal_is_named() -> None:
    a = policy("a", maxConcurrent=1)
    b = policy("b", ("node-isolate", "node-reinstall"), maxUnavailable=1)
    c = policy("c", ("node-reinstall",), maxConcurrent=0)  # does not cover node-isolate
    w = world(a, b, c, usages=[Usage("u", "node-isolate", "default/c1", ("n9",), NOW)])
    d = decide(ask(["n1"]), w)
    assert d.state is PermitState.QUEUED
    assert sorted((r.policy, r.reason) for r in d.refusals) == [("a", "MaxConcurrent"), ("b", "MaxUnavailable")]
    # b counts node-isolate usages against node-reinstall too; c refuses reinstall on its own
    d = decide(ask(["n2"], RE), w)
    assert sorted((r.policy, r.reason) for r in d.refusals) == [("b", "MaxUnavailable"), ("c", "MaxConcurrent")]


def test_hard_refusals_deny_and_combine() -> None:
    p1 = policy("paused", paused=True)
    p2 = policy("gated", gates=[{"name": "pods", "builtin": "podCreationSuccessRate", "threshold": 0.99}])
    w = world(p1, p2, gates={("gated", "pods", "default/c1"): GateReading(False, 0.5, "")})
    d = decide(ask(["n1"]), w)
    assert d.state is PermitState.DENIED
    assert sorted((r.policy, r.reason) for r in d.refusals) == [("gated", "GateFailing"), ("paused", "Paused")]
    assert "0.5" in next(r.message for r in d.refusals if r.policy == "gated")
    assert not w.usages  # nothing granted, nothing counted


def test_gates_missing_or_unreachable_fail_and_passing_grant() -> None:
    p = policy("g", gates=[{"name": "pods", "builtin": "podCreationSuccessRate", "threshold": 0.99}])
    d = decide(ask(["n1"]), world(p))
    assert d.state is PermitState.DENIED and "not been evaluated" in d.refusals[0].message
    down = GateReading(False, None, "source unreachable: connection refused")
    d = decide(ask(["n1"]), world(p, gates={("g", "pods", "default/c1"): down}))
    assert d.state is PermitState.DENIED and "unreachable" in d.refusals[0].message
    ok = GateReading(True, 1.0)
    assert decide(ask(["n1"]), world(p, gates={("g", "pods", "default/c1"): ok})).state is PermitState.GRANTED
    # the gate of another cluster does not count for this one
    other = cluster("default/c2")
    d = decide(ask(["n1"], cluster_key="default/c2"),
               world(p, clusters=[cluster(), other], gates={("g", "pods", "default/c1"): ok}))
    assert d.state is PermitState.DENIED


def test_blackouts_follow_schedule_duration_and_time_zone() -> None:
    # Monday 12:00 UTC = 13:00 in Berlin
    p = policy(blackouts=[{"name": "lunch", "schedule": "30 12 * * 1", "duration": "1h",
                           "timeZone": "Europe/Berlin"}])
    d = decide(ask(["n1"]), world(p))
    assert d.state is PermitState.DENIED and d.refusals[0].reason == "Blackout"
    assert d.retry_at == NOW + 1800  # 13:30 Berlin = 12:30 UTC
    assert decide(ask(["n1"]), world(p, now=NOW + 1801)).state is PermitState.GRANTED
    assert decide(ask(["n1"]), world(p, now=NOW - 1801)).state is PermitState.GRANTED  # before 12:30 Berlin
    utc = policy(blackouts=[{"name": "lunch", "schedule": "30 12 * * 1", "duration": "1h"}])
    assert decide(ask(["n1"]), world(utc)).state is PermitState.GRANTED  # 12:30 UTC has not come yet
    # a window that began on a previous day and still runs
    assert blackout_end("0 18 * * 5", "UTC", parse_duration("72h"), NOW) == NOW + 6 * 3600
    assert blackout_end("0 0 1 1 *", "UTC", 60, NOW) is None


def test_bad_schedule_values_make_the_policy_deny() -> None:
    v = PolicyView.from_obj({"metadata": {"name": "tz"}, "spec": {"operations": ["node-isolate"],
                             "scope": {"allClusters": True},
                             "blackouts": [{"name": "b", "schedule": "@daily", "duration": "1h",
                                            "timeZone": "Mars/Olympus"}]}})
    assert "Mars/Olympus" in v.invalid
    d = decide(ask(["n1"]), world(v))
    assert d.state is PermitState.DENIED and d.refusals[0].reason == "InvalidPolicy"
    with pytest.raises(ScheduleError):
        parse_duration("5 minutes")


def test_breaker_counts_failures_per_operation_and_scope_after_reset() -> None:
    p = policy(failureBreaker={"maxFailures": 2, "window": "30m"})
    fail = [Usage(f"f{i}", "node-isolate", "default/c1", ("n1",), NOW - 100 - i, NOW - 50 - i, "Failed")
            for i in range(3)]
    old = Usage("old", "node-isolate", "default/c1", ("n1",), NOW - 4000, NOW - 3900, "Failed")
    ok = Usage("ok", "node-isolate", "default/c1", ("n1",), NOW - 10, NOW - 5, "Succeeded")
    w = world(p, usages=[*fail, old, ok])
    got = breaker_failures(p, w, {})
    assert got == {("node-isolate", "default/c1"): (3, NOW - 50)}
    assert breaker_failures(p, w, {("node-isolate", "default/c1"): NOW - 52}) == \
        {("node-isolate", "default/c1"): (2, NOW - 50)}
    w.tripped = {("p", "node-isolate", "default/c1")}
    d = decide(ask(["n2"]), w)
    assert d.state is PermitState.DENIED and d.refusals[0].reason == "BreakerOpen"
    # the breaker of c1 does not stop c2
    w.clusters["default/c2"] = cluster("default/c2")
    assert decide(ask(["n2"], cluster_key="default/c2"), w).state is PermitState.GRANTED


def test_partial_grants_the_prefix_that_fits() -> None:
    w = world(policy(maxConcurrent=3))
    d = decide(ask(["n1", "n2", "n3", "n4", "n5"], partial=True), w)
    assert d.state is PermitState.GRANTED and d.granted == ("n1", "n2", "n3")
    d = decide(ask(["n6"], uid="b", partial=True), w)
    assert d.state is PermitState.QUEUED
    w2 = world(policy(maxConcurrent=3))
    assert decide(ask(["n1", "n2", "n3", "n4"]), w2).state is PermitState.QUEUED  # all or nothing
    assert not w2.usages
    # the refused request left nothing behind in the pass's budgets: three still fit
    assert decide(ask(["n5", "n6", "n7"], uid="c"), w2).state is PermitState.GRANTED
    assert decide(ask(["n8"], uid="d"), w2).state is PermitState.QUEUED


def test_scope_by_cluster_and_node_selectors() -> None:
    prod = cluster("default/prod", labels={"env": "prod"}, node_labels={"pool": "gpu"})
    dev = cluster("default/dev", labels={"env": "dev"})
    p = policy(maxConcurrent=1, scope={"clusterSelector": {"matchLabels": {"env": "prod"}},
                                       "nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In",
                                                                              "values": ["gpu"]}]}})
    w = world(p, clusters=[prod, dev])
    assert decide(ask(["n0"], cluster_key="default/prod", uid="a"), w).state is PermitState.GRANTED
    # n2 is a gpu node too: over the limit; n1 is not a gpu node: the policy does not apply
    assert decide(ask(["n2"], cluster_key="default/prod", uid="b"), w).state is PermitState.QUEUED
    assert decide(ask(["n1"], cluster_key="default/prod", uid="c"), w).state is PermitState.GRANTED
    assert decide(ask(["n0", "n2"], cluster_key="default/dev", uid="d"), w).state is PermitState.GRANTED


def test_per_cluster_versus_shared_scope_budget() -> None:
    c1, c2 = cluster("default/c1"), cluster("default/c2")
    per = world(policy(maxConcurrent=1), clusters=[c1, c2])
    assert decide(ask(["n1"], uid="a"), per).state is PermitState.GRANTED
    assert decide(ask(["n1"], cluster_key="default/c2", uid="b"), per).state is PermitState.GRANTED
    shared = world(policy(maxConcurrent=1, scope={"allClusters": True, "perCluster": False}), clusters=[c1, c2])
    assert decide(ask(["n1"], uid="a"), shared).state is PermitState.GRANTED
    assert decide(ask(["n1"], cluster_key="default/c2", uid="b"), shared).state is PermitState.QUEUED
    assert [r.scope for r in budget_report(shared.policies[0], shared)] == ["*"]
    rep = budget_report(per.policies[0], per)
    assert [(r.scope, r.in_flight, r.max_concurrent) for r in rep] == [("default/c1", 1, 1), ("default/c2", 1, 1)]


def test_cluster_operations_count_clusters() -> None:
    cs = [cluster(f"default/c{i}") for i in range(4)]
    cs[3].ready = False
    p = policy(ops=("control-plane-release",), maxConcurrent=1, maxUnavailable="50%",
               scope={"allClusters": True, "perCluster": False})
    w = world(p, clusters=cs)
    d = decide(ask(["kube-apiserver", "machine-operator"], CPR, "default/c0"), w)
    assert d.state is PermitState.GRANTED and d.granted == ("kube-apiserver", "machine-operator")
    d = decide(ask(["kube-apiserver"], CPR, "default/c1", uid="b"), w)
    assert d.state is PermitState.QUEUED and {r.reason for r in d.refusals} == {"MaxConcurrent"}
    # the same cluster again is the same unit
    assert decide(ask(["simulator"], CPR, "default/c0", uid="c"), w).state is PermitState.GRANTED


def test_unknown_cluster_is_denied() -> None:
    d = decide(ask(["n1"], cluster_key="default/nope"), world())
    assert d.state is PermitState.DENIED and d.refusals[0].reason == "ClusterNotFound"


def test_a_node_already_down_is_not_isolated_while_too_many_are_down() -> None:
    """maxUnavailable short-circuits like MachineHealthCheck's maxUnhealthy: with more nodes down than it
    allows, even isolating one of those down nodes is refused (a partition must not get them all isolated)."""
    w = world(policy(maxUnavailable=3), clusters=[cluster(n=10, down=4)])
    d = decide(ask(["n0"], uid="a"), w)
    assert d.state is PermitState.QUEUED and d.refusals[0].reason == "MaxUnavailable"
    assert "4/3" in d.refusals[0].message and "this one among them" in d.refusals[0].message
    w = world(policy(maxUnavailable=3), clusters=[cluster(n=10, down=3)])
    assert decide(ask(["n0"], uid="a"), w).state is PermitState.GRANTED  # 3 down, n0 among them: fits


def test_first_come_first_served_within_a_budget() -> None:
    """Asks are decided in the order they were made; once one waits for a budget, a later ask may not take
    what it waits for — a later small batch does not overtake an earlier large one — while asks that cost
    the budget nothing, or belong to another budget, still go."""
    w = world(policy(maxConcurrent=3), clusters=[cluster(), cluster("default/c2")],
              usages=[Usage("u1", "node-isolate", "default/c1", ("n1",), NOW - 5)])
    big = decide(Ask("big", ISO, "default/c1", ("n2", "n3", "n4"), name="default/big"), w)
    assert big.state is PermitState.QUEUED and big.refusals[0].reason == "MaxConcurrent"
    small = decide(Ask("small", ISO, "default/c1", ("n5",), name="default/small"), w)
    assert small.state is PermitState.QUEUED
    assert [(r.policy, r.reason) for r in small.refusals] == [("p", "QueuedBehind")]
    assert "default/big asked first" in small.refusals[0].message
    assert decide(Ask("again", ISO, "default/c1", ("n1",), name="default/again"), w).state is PermitState.GRANTED
    assert decide(Ask("other", ISO, "default/c2", ("n5",), name="default/other"), w).state is PermitState.GRANTED
    # the next pass, once n1 is released: the earlier large batch goes first
    w = world(policy(maxConcurrent=3), clusters=[cluster(), cluster("default/c2")])
    assert decide(Ask("big", ISO, "default/c1", ("n2", "n3", "n4"), name="default/big"), w).state \
        is PermitState.GRANTED
    assert decide(Ask("small", ISO, "default/c1", ("n5",), name="default/small"), w).refusals[0].reason \
        == "MaxConcurrent"


def test_ledger_lines_round_trip_and_old_ledgers_still_read() -> None:
    """The ledger keeps one compact line per grant (cheap for the API server to validate and store); a ledger
    written in the older object-per-grant form is still read."""
    from kokpit.operators.risk._ledger import decode, encode, entries, with_entries

    e = {"uid": "u-1", "namespace": "default", "name": "c1-node-drain-abc", "operation": "node-drain",
         "cluster": "c1", "targets": ["n1", "n2"], "grantedAt": "2026-12-07T01:00:00.123456Z"}
    done = {**e, "uid": "u-2", "releasedAt": "2026-12-07T01:05:00.000000Z", "outcome": "Failed"}
    assert decode(encode(e)) == e and decode(encode(done)) == done
    assert decode("garbage") is None
    written = with_entries({"metadata": {"name": "default", "managedFields": [{}]}}, [e, done])
    assert "managedFields" not in written["metadata"] and "entries" not in written["status"]
    assert entries(written) == [e, done]
    assert entries({"status": {"entries": [e], "grants": [encode(done)]}}) == [e, done]
    # a line is decoded once and remembered (every decision pass reads every grant again), yet each caller
    # gets a dict of its own: changing one never changes what the next pass reads
    first = decode(encode(e))
    assert first is not None
    first["releasedAt"] = "2026-12-07T02:00:00.000000Z"
    first["targets"].append("n9")
    assert decode(encode(e)) == e
