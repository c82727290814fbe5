"""The README tour's rollout step, run exactly as written against a real `kokpit up`: its shell lines are cut
out of README.md and run by bash in a folder where `.kokpit/` is the fleet's data dir and `.venv` the
project's environment, as a newcomer pastes them next to `./dev up`.  A canary kubelet over one business
cluster's nodes, paused for promotion; the canary broken; the rollout aborts and rolls back by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.testing import free_port

from ._fleet import stop_fleet
from .test_up_e2e import ready

ROOT = Path(__file__).resolve().parents[2]
NODES = 6
Obj = dict[str, Any]


def tour_step(text: str, number: str) -> str:
    """The README tour's environment line and step ``number`` (its comment header to the next step)."""
    tour = re.search(r"## A five-minute tour\n.*?```sh\n(.*?)```", text, flags=re.S)
    assert tour is not None, "the README has no tour"
    lines = tour.group(1).splitlines()
    env = [ln for ln in lines if ln.startswith("export PATH=")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"# {number}. "))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"# [0-9]+[a-z]?\. ", lines[i])), len(lines))
    return "\n".join([*env[:1], *lines[start:end]]) + "\n"


def test_tour_step_is_cut_out_whole() -> None:
    step = tour_step((ROOT / "README.md").read_text(), "8")
    assert step.startswith("export PATH=") and "kokpit rollout create" in step and "# 9." not in step
    assert step.rstrip().endswith("--type recover")


class _Up:
    """`kokpit up` with `.kokpit` as its data dir in ``home`` (the README's layout)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / ".kokpit"
        self.out = home / "up.out"
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kokpit.cli.main", "up", "--clusters", "2", "--nodes", str(NODES),
                 "--port", str(free_port())], cwd=home, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def kubectl(self, *args: str, kubeconfig: str = ".kokpit/kubeconfig") -> Obj:
        out = subprocess.run([str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", kubeconfig, *args,
                              "-o", "json"], cwd=self.home, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(out.stderr)
        data: Obj = json.loads(out.stdout)
        return data


@pytest.fixture
def up(tmp_path: Path) -> Iterator[_Up]:
    home = tmp_path / "checkout"
    home.mkdir()
    (home / ".venv").symlink_to(Path(sys.executable).parent.parent)  # $PWD/.venv/bin: kokpit, kubectl
    u = _Up(home)
    try:
        yield u
    finally:
        stop_fleet(u.proc, u.data_dir)


def _wait(fn: Any, what: str, up: _Up, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert up.proc.poll() is None, up.output()[-5000:]
        try:
            last = fn()
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError, FileNotFoundError) as e:
            last = e
        else:
            if last:
                return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{up.output()[-5000:]}")


@pytest.mark.timeout(900)
def test_readme_rollout_step_runs_as_written(up: _Up) -> None:
    def fleet_ready() -> bool:
        clusters = up.kubectl("get", "clusters", "-n", "default")["items"]
        if len(clusters) != 2 or not all(ready(c) for c in clusters):
            return False
        kc = subprocess.run([sys.executable, "-m", "kokpit.cli.main", "kubeconfig", "cluster-2"], cwd=up.home,
                            capture_output=True, timeout=30, check=True).stdout
        (up.data_dir / "cluster-2.kubeconfig").write_bytes(kc)
        machines = up.kubectl("get", "machines", kubeconfig=".kokpit/cluster-2.kubeconfig")["items"]
        return len(machines) == NODES and all(ready(m) for m in machines)

    _wait(fleet_ready, "both clusters Ready and cluster-2's Machines Ready", up, 400)
    script = tour_step((ROOT / "README.md").read_text(), "8")
    run = subprocess.run(["bash", "-eux", "-o", "pipefail", "-c", script], cwd=up.home, capture_output=True,
                         text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"})
    log = f"--- stdout ---\n{run.stdout[-6000:]}\n--- stderr ---\n{run.stderr[-6000:]}"
    assert run.returncode == 0, log
    # what the README's comments promise
    assert re.search(rf"kubelet-137\s+Machines\s+kubelet-v1\.37\.0\s+1\s+1/{NODES}\s+Paused", run.stdout), log
    assert "State:     RolledBack" in run.stdout and "FailureLimitExceeded" in run.stdout, log
    r = up.kubectl("get", "rollout", "kubelet-137")
    canary = next(t for t in r["status"]["targets"] if t.get("touchedAt"))
    assert canary["state"] == "RolledBack" and sum(1 for t in r["status"]["targets"] if t.get("touchedAt")) == 1
    m = up.kubectl("get", "machine", canary["node"], kubeconfig=".kokpit/cluster-2.kubeconfig")
    assert "kubelet-v1.36.2" in m["spec"]["packages"] and "kubelet-v1.37.0" not in m["spec"]["packages"]
    events = {e["reason"] for e in up.kubectl("get", "events", "--field-selector",
                                              "involvedObject.name=kubelet-137")["items"]}
    assert {"TargetFailed", "FailureLimitExceeded", "RolledBack"} <= events, events
