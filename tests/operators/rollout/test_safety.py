"""The safety run of bench/rollout.py, short: seeded runs where one canary node breaks (an install failure of
the new kubelet, or the kubelet stopped after its update); each time the rollout must abort before the next
batch, leave every Machine outside the canary batch untouched and roll back what it touched.  The 20-run
figure is in docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tests.operators.rollout.conftest import Fleet

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
BENCH = Path(__file__).resolve().parents[3] / "bench"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the bench imports its siblings (_common, fleet)
    spec = importlib.util.spec_from_file_location("bench_rollout", BENCH / "rollout.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_rollout"] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_a_broken_canary_stops_the_rollout_before_the_next_batch(fleet: Fleet) -> None:
    bench = _bench()

    def alive() -> None:
        p = fleet.procs["controller"].p
        assert p is not None and p.poll() is None, fleet.procs["controller"].tail()

    for seed in (0, 1, 2):
        why = await bench.safety_run(fleet.meta, fleet.sim, fleet.nodes, seed, alive)
        assert why == "", f"seed {seed}: {why}"
