"""Turn a Machine's package list into an ordered list of components, or a message that says what to fix.

Resolution is pure (it takes a lookup function over the informer cache), so every bad-spec case — a missing
MachinePackageVersion, two versions of one component, a dependency that nothing provides, a cycle — is a
unit test, and nothing on the node changes until the spec makes sense.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kokpit.api import MachinePackageVersion, MachineReason
from kokpit.nodes import ComponentSpec

__all__ = ["Resolution", "component_spec", "removal_order", "resolve", "topo_order"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resolution:
    """Components in install order (dependencies first) or an error reason and message."""

    components: list[ComponentSpec] = field(default_factory=list)
    depends_on: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def spec(self, component: str) -> ComponentSpec | None:
        for c in self.components:
            if c.name == component:
                return c
        return None


def component_spec(mpv: MachinePackageVersion) -> ComponentSpec:
    s = mpv.spec
    return ComponentSpec(
        name=s.component,
        version=s.version,
        package=s.package.to_wire(),
        install=s.install.to_wire(),
        config=s.config.to_wire(),
        health_check=s.health_check.to_wire(),
        source=mpv.metadata.name,
    )


def topo_order(deps: dict[str, tuple[str, ...]]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm with a name-sorted ready heap (deterministic); returns (order, nodes in cycles)."""
    indeg = {n: 0 for n in deps}
    users: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            if d in deps:
                indeg[n] += 1
                users[d].append(n)
    ready = [n for n, k in indeg.items() if k == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    return order, sorted(n for n, k in indeg.items() if k > 0)


def _cycle_path(deps: dict[str, tuple[str, ...]], in_cycle: list[str]) -> list[str]:
    """One concrete cycle (a → b → a) among the nodes Kahn could not order, for the message."""
    members = set(in_cycle)
    start = in_cycle[0]
    path = [start]
    seen = {start: 0}
    cur = start
    while True:
        nxt = sorted(d for d in deps[cur] if d in members)[0]
        if nxt in seen:
            return [*path[seen[nxt]:], nxt]
        seen[nxt] = len(path)
        path.append(nxt)
        cur = nxt


def resolve(packages: list[str], lookup: Callable[[str], Obj | None]) -> Resolution:
    """Resolve MachinePackageVersion names (``lookup`` reads the cache) into install order."""
    missing = [p for p in packages if lookup(p) is None]
    if missing:
        names = ", ".join(missing)
        return Resolution(reason=MachineReason.MISSING_PACKAGE_VERSION,
                          message=f"MachinePackageVersion {names} not found: create "
                                  f"{'it' if len(missing) == 1 else 'them'} or remove "
                                  f"{'it' if len(missing) == 1 else 'them'} from spec.packages")
    mpvs: list[MachinePackageVersion] = []
    for p in packages:
        raw = lookup(p)
        assert raw is not None
        try:
            mpvs.append(MachinePackageVersion.model_validate(raw))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            return Resolution(reason=MachineReason.INVALID_PACKAGE_VERSION,
                              message=f"MachinePackageVersion {p} is invalid at {where}: {first['msg']}; "
                                      "fix it or list another version")
    by_component: dict[str, list[MachinePackageVersion]] = {}
    for m in mpvs:
        by_component.setdefault(m.spec.component, []).append(m)
    dups = {c: ms for c, ms in by_component.items() if len(ms) > 1}
    if dups:
        parts = [f"component {c} comes from {len(ms)} packages ({', '.join(m.metadata.name for m in ms)})"
                 for c, ms in sorted(dups.items())]
        return Resolution(reason=MachineReason.DUPLICATE_COMPONENT,
                          message="; ".join(parts) + ": keep exactly one per component in spec.packages")
    deps = {c: tuple(sorted(set(ms[0].spec.depends_on))) for c, ms in by_component.items()}
    for c, ds in sorted(deps.items()):
        absent = [d for d in ds if d not in deps]
        if absent:
            src = by_component[c][0].metadata.name
            return Resolution(reason=MachineReason.MISSING_DEPENDENCY,
                              message=f"{c} ({src}) depends on {', '.join(absent)}, which no package in "
                                      f"spec.packages provides: add a MachinePackageVersion for "
                                      f"{', '.join(absent)} to spec.packages or drop it from "
                                      f"{src}'s spec.dependsOn")
    order, cyclic = topo_order(deps)
    if cyclic:
        cycle = _cycle_path(deps, cyclic)
        srcs = ", ".join(by_component[c][0].metadata.name for c in sorted(set(cycle)))
        return Resolution(reason=MachineReason.DEPENDENCY_CYCLE,
                          message=f"dependency cycle {' → '.join(cycle)} (packages {srcs}): remove one "
                                  "of these dependsOn entries")
    return Resolution(components=[component_spec(by_component[c][0]) for c in order], depends_on=deps)


def removal_order(removed: list[str], deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Components to uninstall, dependents before what they depend on (reverse dependency order)."""
    sub = {c: tuple(d for d in deps.get(c, ()) if d in removed) for c in removed}
    order, cyclic = topo_order(sub)
    return list(reversed(order)) + cyclic
