"""An actor asks "my open permits covering X" on every reconcile of every object it acts on.  The shared
permit watch keeps this holder's permits by target, so the answer reads only the permits that cover X — a
scan of every permit of the cluster made the machine operator's 10,000-Machine swap through the risk center
quadratic (py-spy: 60% of its CPU in ``open_permits``, ~12 Machines/s).  Unit test: permits are fed as the
watch would deliver them."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.runtime import permits as permits_mod
from kokpit.runtime.permits import PermitClient, PermitView

Obj = dict[str, Any]


def _permit(name: str, holder: str, targets: list[str], state: str = "Granted") -> Obj:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"holder": holder, "operation": "component-upgrade", "targets": targets},
            "status": {"state": state}}


def test_open_permits_read_only_what_covers_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    pc = PermitClient(None, namespace="default", cluster="c1", holder="machine-operator")  # type: ignore[arg-type]
    for i in range(2_000):
        pc._deliver(_permit(f"p{i}", "machine-operator", [f"node-{i}"]))
        pc._deliver(_permit(f"q{i}", "someone-else", [f"node-{i}"]))
    pc._deliver(_permit("p-done", "machine-operator", ["node-7"], state="Released"))
    pc._deliver(_permit("p-two", "machine-operator", ["node-7", "node-8"]))

    made = 0

    class Counting(PermitView):
        def __init__(self, obj: Obj) -> None:
            nonlocal made
            made += 1
            super().__init__(obj)

    monkeypatch.setattr(permits_mod, "PermitView", Counting)
    assert [v.name for v in pc.open_permits("node-7")] == ["p7", "p-two"]
    assert made <= 3  # the three permits of this holder naming node-7, not the 4,002 of the cluster
    assert [v.name for v in pc.open_permits("node-8")] == ["p8", "p-two"]
    assert pc.open_permits("node-unknown") == []
    # every open permit of the holder, in the order first seen
    assert len(pc.open_permits()) == 2_001

    # a deleted permit is forgotten, index and all; a released one no longer counts as open
    pc._forget(_permit("p-two", "machine-operator", ["node-7", "node-8"]))
    assert [v.name for v in pc.open_permits("node-7")] == ["p7"]
    pc._deliver(_permit("p8", "machine-operator", ["node-8"], state="Released"))
    assert pc.open_permits("node-8") == []
    for i in range(2_000):
        pc._forget(_permit(f"p{i}", "machine-operator", [f"node-{i}"]))
    pc._forget(_permit("p-done", "machine-operator", ["node-7"]))
    assert pc._mine == {} and pc._mine_all == {}


def test_a_relist_forgets_permits_deleted_while_the_watch_was_broken() -> None:
    """After a broken watch the list is the whole truth: a permit deleted meanwhile (its DELETED event never
    arrived) must not stay open in the holder's view."""
    pc = PermitClient(None, namespace="default", cluster="c1", holder="machine-operator")  # type: ignore[arg-type]
    pc._relisted([_permit("p1", "machine-operator", ["node-1"]), _permit("p2", "machine-operator", ["node-2"])])
    assert [v.name for v in pc.open_permits()] == ["p1", "p2"]
    pc._relisted([_permit("p2", "machine-operator", ["node-2"])])
    assert pc.open_permits("node-1") == [] and [v.name for v in pc.open_permits()] == ["p2"]
    assert pc.cached("p1") is None and "node-1" not in pc._mine
