"""The chaos harness (bench/chaos.py), short and seeded: kill -9 kokpit processes during a Cluster release
and a kubelet wave of a real `kokpit up` fleet; no acknowledged write lost, no action done twice, the fleet
converged after every change.  The long run's figures are in docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH / "chaos.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_chaos"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


def test_duplicate_installs_are_found(chaos: ModuleType) -> None:
    log = [{"event": "install-started", "component": "kubelet", "version": "1"},
           {"event": "installed", "component": "kubelet", "version": "1", "at": "t1"},
           {"event": "installed", "component": "kubelet", "version": "2", "at": "t2"},
           {"event": "uninstalled", "component": "kubelet", "version": "2", "at": "t3"},
           {"event": "installed", "component": "kubelet", "version": "2", "at": "t4"},
           {"event": "installed", "component": "kubelet", "version": "2", "at": "t5"}]
    assert chaos.duplicates(log) == ["kubelet 2 installed again at t5"]


def test_process_names(chaos: ModuleType) -> None:
    assert chaos.kind_of("pod/cluster-1-kube-apiserver-0") == "business kube-apiserver"
    assert chaos.kind_of("pod/cluster-12-machine-operator-3") == "business machine-operator"
    assert chaos.kind_of("apiserver") == "meta apiserver"
    assert chaos.kind_of("cluster-operator") == "cluster-operator"


@pytest.mark.timeout(600)
async def test_short_seeded_chaos(chaos: ModuleType, tmp_path: Path) -> None:
    opts = chaos.ChaosOptions(seed=7, rounds=2, clusters=1, nodes=3, kills_per_round=2, window=4.0,
                              install_seconds=0.3, data_dir=tmp_path / "fleet")
    lines: list[str] = []
    res = await chaos.run_chaos(opts, log=lines.append)
    report = "\n".join(lines + res.lines())
    assert [(r.change, r.target) for r in res.rounds] == [("release", "chaos-b"),
                                                          ("kubelet wave", "kubelet-v1.37.0")], report
    assert all(r.converged for r in res.rounds), report
    assert sum(res.kills.values()) == 4, report
    assert res.figures["markers acknowledged"] > 0 and res.figures["installs completed"] > 0, report
    assert res.figures["acknowledged writes lost"] == 0, report
    assert res.figures["actions done twice"] == 0, report
    assert res.ok, report
