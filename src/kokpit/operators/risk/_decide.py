"""The risk center's decisions as pure functions of (policies, ledger, observed clusters and nodes, gates, now).

Nothing here does I/O, keeps state between calls or reads a clock, so every rule is unit-tested with plain
data and the controller is only plumbing.  The rules:

- every policy that covers the operation, the Cluster and (with a node selector) at least one target must
  allow it; a refusal names each policy that refused and why;
- hard refusals (pause, blackout, failing or unreachable gate, open breaker, a scope that cannot be
  observed, an invalid policy) make the permit **Denied**; running out of budget makes it **Queued**; both
  are decided again whenever something changes;
- budgets count *units*: nodes for node operations, clusters for cluster operations; ``maxConcurrent`` counts
  distinct units in flight, ``maxPerWindow`` units started in the sliding window (released ones included),
  ``maxUnavailable`` in-flight units plus nodes already NotReady or cordoned (clusters not Ready), the
  target itself included: while more are down than it allows, nothing more is done to any of them;
- a percentage is of the scope's units, rounded down but at least 1 when the percentage is above 0%;
- targets are granted greedily in order: all of them, or (``partial``) the longest prefix that fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.risk import (
    LabelSelector,
    OperationType,
    PermitOutcome,
    PermitState,
    RiskReason,
    TargetKind,
)
from kokpit.operators.risk._schedule import ScheduleError, blackout_end, parse_duration, zone

__all__ = [
    "Ask",
    "BudgetReport",
    "ClusterInfo",
    "Decision",
    "GateReading",
    "NodeInfo",
    "PolicyView",
    "Refusal",
    "Usage",
    "World",
    "breaker_failures",
    "budget_report",
    "decide",
    "matches",
    "resolve_limit",
]

Obj = dict[str, Any]
R = RiskReason
ALL = "*"


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    available: bool = True  # Ready and not cordoned


@dataclass
class ClusterInfo:
    key: str  # namespace/name
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    nodes: dict[str, NodeInfo] | None = None  # None: not observed (business API unreachable)


@dataclass(frozen=True)
class Usage:
    """One ledger entry: targets of one granted permit (released ones still count in windows/breakers)."""

    uid: str
    operation: str
    cluster: str
    targets: tuple[str, ...]
    granted_at: float
    released_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Ask:
    uid: str
    operation: OperationType
    cluster: str
    targets: tuple[str, ...]
    partial: bool = False
    name: str = ""  # namespace/name, for the reason of the asks queued behind this one


@dataclass(frozen=True)
class GateReading:
    passing: bool
    value: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Refusal:
    policy: str
    reason: str
    message: str
    retry_at: float | None = None
    hard: bool = False  # Denied rather than Queued


@dataclass
class Decision:
    state: PermitState
    granted: tuple[str, ...] = ()
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def retry_at(self) -> float | None:
        times = [r.retry_at for r in self.refusals if r.retry_at is not None]
        return max(times) if times else None


# ------------------------------------------------------------------------------------------------ selectors
def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (None and an empty selector match everything)."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        has = req.key in labels
        if req.operator == "In" and not (has and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and has and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not has:
            return False
        if req.operator == "DoesNotExist" and has:
            return False
    return True


def resolve_limit(limit: int | str | None, total: int) -> int | None:
    """An absolute limit from an integer or a percentage of ``total`` (floor, at least 1 above 0%)."""
    if limit is None:
        return None
    if isinstance(limit, int):
        return limit
    pct = int(limit.rstrip("%"))
    if pct == 0:
        return 0
    return max(1, math.floor(total * pct / 100))


# ------------------------------------------------------------------------------------------------ policies
@dataclass
class BlackoutView:
    name: str
    schedule: str
    duration: float
    time_zone: str


@dataclass
class GateView:
    name: str
    spec: Any  # kokpit.api.risk.MetricGate


@dataclass
class PolicyView:
    """A RiskPolicy ready for decisions (durations parsed, time zones checked)."""

    name: str
    operations: frozenset[str]
    all_clusters: bool = True
    cluster_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None
    per_cluster: bool = True
    max_concurrent: int | str | None = None
    max_unavailable: int | str | None = None
    per_window: tuple[int, float] | None = None
    blackouts: list[BlackoutView] = field(default_factory=list)
    gates: list[GateView] = field(default_factory=list)
    breaker: tuple[int, float] | None = None
    paused: bool = False
    invalid: str = ""  # why the policy cannot be used (it then denies what it covers)

    @classmethod
    def from_obj(cls, obj: Obj) -> PolicyView:
        from kokpit.api.risk import RiskPolicy

        name = str((obj.get("metadata") or {}).get("name"))
        try:
            spec = RiskPolicy.model_validate(obj).spec
        except Exception as e:  # stored before a schema change, or written past admission
            return cls(name, frozenset(str(o) for o in (obj.get("spec") or {}).get("operations") or ()),
                       invalid=f"spec does not parse: {e}".splitlines()[0])
        view = cls(name, frozenset(o.value for o in spec.operations), all_clusters=spec.scope.all_clusters,
                   cluster_selector=spec.scope.cluster_selector, node_selector=spec.scope.node_selector,
                   per_cluster=spec.scope.per_cluster, max_concurrent=spec.max_concurrent,
                   max_unavailable=spec.max_unavailable, paused=spec.paused,
                   gates=[GateView(g.name, g) for g in spec.gates])
        try:
            if spec.max_per_window is not None:
                view.per_window = (spec.max_per_window.count, parse_duration(spec.max_per_window.window))
            if spec.failure_breaker is not None:
                view.breaker = (spec.failure_breaker.max_failures, parse_duration(spec.failure_breaker.window))
            for b in spec.blackouts:
                zone(b.time_zone)
                bv = BlackoutView(b.name, b.schedule, parse_duration(b.duration), b.time_zone)
                blackout_end(bv.schedule, bv.time_zone, bv.duration, 0.0)  # parses the schedule once
                view.blackouts.append(bv)
            for g in spec.gates:
                parse_duration(g.window)
        except ScheduleError as e:
            view.invalid = str(e)
        return view

    @property
    def needs_history(self) -> float:
        """How long released ledger entries matter to this policy (windows and breaker), in seconds."""
        return max(self.per_window[1] if self.per_window else 0.0, self.breaker[1] if self.breaker else 0.0)

    def covers_cluster(self, c: ClusterInfo) -> bool:
        return self.all_clusters or (self.cluster_selector is not None and matches(self.cluster_selector,
                                                                                   c.labels))

    def group(self, cluster: str) -> str:
        return cluster if self.per_cluster else ALL

    def node_in_scope(self, c: ClusterInfo | None, node: str) -> bool:
        """Whether a node is in the policy's node scope; unknown nodes count as in scope (the safe side)."""
        if self.node_selector is None or c is None or c.nodes is None:
            return True
        info = c.nodes.get(node)
        return True if info is None else matches(self.node_selector, info.labels)


# ------------------------------------------------------------------------------------------------ world
@dataclass
class World:
    """Everything a decision reads; ``usages`` grows as a decision pass grants."""

    policies: list[PolicyView]
    clusters: dict[str, ClusterInfo]
    usages: list[Usage]
    now: float
    gates: Mapping[tuple[str, str, str], GateReading] = field(default_factory=dict)
    tripped: set[tuple[str, str, str]] = field(default_factory=set)  # (policy, operation, group)
    budgets: dict[tuple[str, str, TargetKind], Any] = field(default_factory=dict)  # built once per pass

    def budget(self, p: PolicyView, group: str, kind: TargetKind) -> _Budget:
        """The budget of ``p`` in ``group``, built from the usages once and then kept up to date by every
        grant of this pass (so deciding N requests costs N, not N × usages)."""
        key = (p.name, group, kind)
        b = self.budgets.get(key)
        if b is None:
            b = self.budgets[key] = _Budget(p, self, group, kind)
        return b


def _op_kind(op: str) -> TargetKind:
    try:
        return OperationType(op).target_kind
    except ValueError:
        return TargetKind.NODE


class _Budget:
    """One policy's budget in one group (a cluster, or the whole scope), for one operation kind."""

    def __init__(self, p: PolicyView, w: World, group: str, kind: TargetKind) -> None:
        self.p, self.kind, self.group = p, kind, group
        self.unknown = ""
        clusters = [c for c in w.clusters.values() if p.covers_cluster(c) and (group == ALL or c.key == group)]
        self.cluster_keys = {c.key for c in clusters}
        if group != ALL:
            self.cluster_keys.add(group)
        self.inflight: set[Any] = set()
        self.waiting = ""  # the first ask this budget queued in this pass: later ones may not overtake it
        self.journal: list[tuple[Any, bool, bool]] = []
        self.window_count = 0
        self.window_oldest: float | None = None
        self.unavailable: set[Any] = set()
        total = 0
        if kind is TargetKind.CLUSTER:
            total = len(clusters)
            self.unavailable = {c.key for c in clusters if not c.ready}
        else:
            for c in clusters:
                if c.nodes is None:
                    self.unknown = f"the nodes of cluster {c.key} cannot be observed"
                    continue
                for n in c.nodes.values():
                    if p.node_in_scope(c, n.name):
                        total += 1
                        if not n.available:
                            self.unavailable.add((c.key, n.name))
        self.total = total
        window = p.per_window[1] if p.per_window else None
        for u in w.usages:
            if u.operation not in p.operations or u.cluster not in self.cluster_keys or _op_kind(u.operation) \
                    is not kind:
                continue
            units = self._units(w, u.cluster, u.targets)
            if u.released_at is None:
                self.inflight |= units
            if window is not None and u.granted_at > w.now - window:
                self.window_count += len(units)
                self.window_oldest = u.granted_at if self.window_oldest is None else min(self.window_oldest,
                                                                                         u.granted_at)
        self.unavailable |= self.inflight
        self.max_concurrent = resolve_limit(p.max_concurrent, total)
        self.max_unavailable = resolve_limit(p.max_unavailable, total)
        self.max_window = p.per_window[0] if p.per_window else None

    def _units(self, w: World, cluster: str, targets: Iterable[str]) -> set[Any]:
        if self.kind is TargetKind.CLUSTER:
            return {cluster}
        c = w.clusters.get(cluster)
        return {(cluster, t) for t in targets if self.p.node_in_scope(c, t)}

    def needs_observation(self) -> bool:
        pct = any(isinstance(x, str) for x in (self.p.max_concurrent, self.p.max_unavailable))
        return bool(self.unknown) and (pct or self.p.max_unavailable is not None)

    def refuse(self, unit: Any, now: float) -> Refusal | None:
        """Whether adding ``unit`` would break a limit (None: it fits)."""
        name = self.p.name
        where = "" if self.group == ALL else f" in {self.group}"
        if self.max_concurrent is not None and unit not in self.inflight \
                and len(self.inflight) + 1 > self.max_concurrent:
            return Refusal(name, R.MAX_CONCURRENT, f"{len(self.inflight)}/{self.max_concurrent} "
                           f"{self.kind.value.lower()}s already in flight{where} (maxConcurrent "
                           f"{self.p.max_concurrent})")
        if self.max_window is not None and self.window_count + 1 > self.max_window:
            assert self.p.per_window is not None
            retry = (self.window_oldest or now) + self.p.per_window[1]
            return Refusal(name, R.MAX_PER_WINDOW, f"{self.window_count}/{self.max_window} started{where} in the "
                           f"last {self.p.per_window[1]:.0f}s (maxPerWindow)", retry_at=retry)
        # the short-circuit of MachineHealthCheck's maxUnhealthy / Medik8s' minHealthy / kube's unhealthy zone:
        # a unit that is itself already down is refused too while too many are down (a partition that makes
        # many nodes look NotReady must not get them all isolated)
        if self.max_unavailable is not None and len(self.unavailable | {unit}) > self.max_unavailable:
            already = " (this one among them)" if unit in self.unavailable else ""
            return Refusal(name, R.MAX_UNAVAILABLE, f"{len(self.unavailable)}/{self.max_unavailable} "
                           f"{self.kind.value.lower()}s unavailable or in flight{where}{already} (maxUnavailable "
                           f"{self.p.max_unavailable})")
        if self.waiting and self._costs(unit):
            # first come, first served: an ask decided earlier in this pass (asked earlier) waits for this
            # budget; a later one may not take what it waits for (a small later batch never starves a large one)
            return Refusal(name, R.QUEUED_BEHIND, f"{self.waiting} asked first and waits for this budget{where}")
        return None

    def could_fit(self, units: int) -> bool:
        """Whether ``units`` new units fit this budget at all (when nothing else is in flight)."""
        return all(limit is None or units <= limit
                   for limit in (self.max_concurrent, self.max_window, self.max_unavailable))

    def _costs(self, unit: Any) -> bool:
        """Whether granting ``unit`` would use up any of this budget's limits."""
        return (self.max_concurrent is not None and unit not in self.inflight) or self.max_window is not None \
            or (self.max_unavailable is not None and unit not in self.unavailable)

    def add(self, unit: Any) -> None:
        new_inflight, new_unavailable = unit not in self.inflight, unit not in self.unavailable
        self.inflight.add(unit)
        self.unavailable.add(unit)
        self.window_count += 1
        self.journal.append((unit, new_inflight, new_unavailable))

    def rollback(self, mark: int) -> None:
        """Undo the adds after ``mark`` (a request that was not granted after all)."""
        while len(self.journal) > mark:
            unit, new_inflight, new_unavailable = self.journal.pop()
            if new_inflight:
                self.inflight.discard(unit)
            if new_unavailable:
                self.unavailable.discard(unit)
            self.window_count -= 1


def _gate_text(g: GateView, r: GateReading | None) -> str:
    if r is None:
        return f"gate {g.name} has not been evaluated yet"
    value = "no value" if r.value is None else f"{r.value:.4g}"
    return f"gate {g.name}: {value} (needs {g.spec.comparison.value} {g.spec.threshold:g})" + \
        (f": {r.message}" if r.message else "")


def _hard(p: PolicyView, w: World, ask: Ask, budget: _Budget) -> list[Refusal]:
    out: list[Refusal] = []
    name = p.name
    if p.invalid:
        return [Refusal(name, R.INVALID_POLICY, f"policy cannot be evaluated: {p.invalid}", hard=True)]
    if p.paused:
        out.append(Refusal(name, R.PAUSED, "risky operations are paused (kokpit risk resume)", hard=True))
    for b in p.blackouts:
        end = blackout_end(b.schedule, b.time_zone, b.duration, w.now)
        if end is not None:
            out.append(Refusal(name, R.BLACKOUT, f"blackout {b.name} ({b.schedule} {b.time_zone}) is on",
                               retry_at=end, hard=True))
    for g in p.gates:
        r = w.gates.get((name, g.name, ask.cluster))
        if r is None or not r.passing:
            out.append(Refusal(name, R.GATE_FAILING, _gate_text(g, r), hard=True))
    if (name, ask.operation.value, p.group(ask.cluster)) in w.tripped:
        out.append(Refusal(name, R.BREAKER_OPEN, f"the failure breaker of {ask.operation.value} in "
                           f"{p.group(ask.cluster)} is open (kokpit risk reset)", hard=True))
    if budget.needs_observation():
        out.append(Refusal(name, R.SCOPE_UNKNOWN, budget.unknown, hard=True))
    return out


def decide(ask: Ask, w: World) -> Decision:
    """Decide one request; on a grant, appends its usage to ``w.usages`` so the next decision counts it."""
    cluster = w.clusters.get(ask.cluster)
    kind = ask.operation.target_kind
    if cluster is None:
        return Decision(PermitState.DENIED, refusals=[Refusal(
            "", "ClusterNotFound", f"Cluster {ask.cluster} does not exist", hard=True)])
    applying: list[_Budget] = []
    hard: list[Refusal] = []
    for p in w.policies:
        if ask.operation.value not in p.operations or not p.covers_cluster(cluster):
            continue
        if kind is TargetKind.NODE and not any(p.node_in_scope(cluster, t) for t in ask.targets):
            continue
        b = w.budget(p, p.group(ask.cluster), kind)
        applying.append(b)
        hard += _hard(p, w, ask, b)
    if hard:
        return Decision(PermitState.DENIED, refusals=hard)
    granted: list[str] = []
    refusals: list[Refusal] = []
    marks = [len(b.journal) for b in applying]
    if kind is TargetKind.CLUSTER:  # every target is a component of the one cluster: one unit
        refusals = [r for b in applying if (r := b.refuse(ask.cluster, w.now)) is not None]
        if not refusals:
            granted = list(ask.targets)
            for b in applying:
                b.add(ask.cluster)
    for t in ask.targets if kind is TargetKind.NODE else ():
        unit = (ask.cluster, t)
        relevant = [b for b in applying if b.p.node_in_scope(cluster, t)]
        found = [r for b in relevant if (r := b.refuse(unit, w.now)) is not None]
        if found:
            refusals += found
            break
        for b in relevant:
            b.add(unit)
        granted.append(t)
    if len(granted) < len(ask.targets) and not (ask.partial and granted):
        for b, mark in zip(applying, marks, strict=True):
            b.rollback(mark)
        refusing = {r.policy for r in refusals}
        for b in applying:
            units = 1 if kind is TargetKind.CLUSTER else sum(1 for t in ask.targets if b.p.node_in_scope(cluster, t))
            if b.p.name in refusing and not b.waiting and b.could_fit(units):
                b.waiting = ask.name or ask.uid  # (a batch larger than the limit itself would block for ever)
        return Decision(PermitState.QUEUED, refusals=refusals)
    w.usages.append(Usage(ask.uid, ask.operation.value, ask.cluster, tuple(granted), w.now))
    return Decision(PermitState.GRANTED, tuple(granted), refusals)


# ------------------------------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class BudgetReport:
    scope: str
    in_flight: int
    max_concurrent: int | None
    unavailable: int | None
    max_unavailable: int | None
    window_count: int | None
    max_per_window: int | None


def budget_report(p: PolicyView, w: World) -> list[BudgetReport]:
    """Each budget of ``p`` as it stands (one per covered cluster, or one for the scope), for status and
    metrics.  A policy covering both node and cluster operations reports the node budget."""
    kinds = {_op_kind(o) for o in p.operations}
    kind = TargetKind.NODE if TargetKind.NODE in kinds else TargetKind.CLUSTER
    groups = sorted(c.key for c in w.clusters.values() if p.covers_cluster(c)) if p.per_cluster else [ALL]
    out = []
    for g in groups:
        b = _Budget(p, w, g, kind)
        out.append(BudgetReport(g, len(b.inflight), b.max_concurrent,
                                len(b.unavailable) if p.max_unavailable is not None else None,
                                b.max_unavailable, b.window_count if p.per_window else None, b.max_window))
    return out


def breaker_failures(p: PolicyView, w: World, reset_at: Mapping[tuple[str, str], float],
                     default_reset: float | None = None) -> dict[tuple[str, str], tuple[int, float]]:
    """Failed operations per (operation, group) inside the breaker window and after the last reset
    (``reset_at`` per key, else ``default_reset``): ``{(op, group): (count, latest failure time)}``."""
    if p.breaker is None:
        return {}
    window = p.breaker[1]
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for u in w.usages:
        if u.outcome != PermitOutcome.FAILED or u.released_at is None or u.operation not in p.operations:
            continue
        c = w.clusters.get(u.cluster)
        if c is None or not p.covers_cluster(c) or u.released_at <= w.now - window:
            continue
        key = (u.operation, p.group(u.cluster))
        if u.released_at <= reset_at.get(key, float("-inf") if default_reset is None else default_reset):
            continue
        n, last = out.get(key, (0, 0.0))
        out[key] = (n + 1, max(last, u.released_at))
    return out
