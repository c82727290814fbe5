"""The README's node fault self-recovery step (4b), run exactly as written against a real `kokpit up`: the
block is taken from README.md and run by bash in a folder whose `.kokpit/` is the fleet's data dir, as a
newcomer pastes it.  Then what it promises is checked through the API: the reboot flow isolated, repaired,
verified and gave the node back and resolved its NodeFault; the hardware fault opened a ticket a person
closed with `kokpit fault resolve` (recorded with the note); and the flows asked the risk center as their own
holder — issue 15/14: a flow in a `kokpit up` fleet produced granted Permits for node-isolate, node-drain and
node-reboot."""

from __future__ import annotations

import asyncio
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
from kokpit.client import Client, Kind

from ._fleet import stop_fleet
from .test_up_e2e import NODES, wait_business_fleet

ROOT = Path(__file__).resolve().parents[2]
assert NODES >= 8  # the step uses sim-00007 and sim-00008; wait_business_fleet counts NODES
PERMIT = Kind("kokpit.io", "v1alpha1", "Permit", "permits", namespaced=True)
FLOW = Kind("kokpit.io", "v1alpha1", "MaintenanceFlow", "maintenanceflows", namespaced=False)
NODEFAULT = Kind("kokpit.io", "v1alpha1", "NodeFault", "nodefaults", namespaced=False)
Obj = dict[str, Any]


def tour_step(text: str) -> str:
    """The README's step 4b: from its comment to the next step's, inside the tour's sh block."""
    m = re.search(r"^# 4b\..*?(?=^# 5\.)", text, flags=re.S | re.M)
    assert m, "README.md has no step 4b (node fault self-recovery) followed by a step 5"
    return m.group(0)


def test_the_step_is_there_and_uses_the_fault_commands() -> None:
    step = tour_step((ROOT / "README.md").read_text())
    for cmd in ("kokpit simulator fault --cluster cluster-1", "kokpit fault list", "kokpit fault show",
                "kokpit fault resolve", "kubectl wait maintenanceflows --field-selector"):
        assert cmd in step, cmd


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder whose .kokpit/ is the data dir of a `kokpit up` (1 cluster, NODES nodes) run from there."""
    data = tmp_path / ".kokpit"
    out = tmp_path / "up.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", "up", "--clusters", "1", "--nodes",
                                 str(NODES), "--data-dir", str(data), "--port", str(free_port())],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    try:
        yield tmp_path
    finally:
        stop_fleet(proc, data)


def run_bash(script: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(cwd / ".kokpit" / "kubeconfig")}
    return subprocess.run(["bash", "-c", "set -euo pipefail -x\n" + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


async def wait_for_kubeconfig(cwd: Path, deadline: float) -> Path:
    kc = cwd / ".kokpit" / "cluster-1.kubeconfig"
    while True:
        # the tour's own first line for it: `kokpit kubeconfig cluster-1 > .kokpit/cluster-1.kubeconfig`
        r = await asyncio.to_thread(run_bash, "kokpit kubeconfig cluster-1 > .kokpit/cluster-1.kubeconfig", cwd, 60)
        if r.returncode == 0 and kc.stat().st_size:
            return kc
        assert time.monotonic() < deadline, f"no cluster-1 kubeconfig: {r.stderr}\n{(cwd / 'up.out').read_text()}"
        await asyncio.sleep(2)


def cond(obj: Obj, t: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == t), {})


@pytest.mark.timeout(1200)
async def test_readme_fault_step_against_kokpit_up(fleet_dir: Path, kubectl_bin: str) -> None:
    deadline = time.monotonic() + 300
    kc = await wait_for_kubeconfig(fleet_dir, deadline)
    await wait_business_fleet(kubectl_bin, kc, deadline)

    step = tour_step((ROOT / "README.md").read_text())
    r = await asyncio.to_thread(run_bash, step, fleet_dir, 900)
    assert r.returncode == 0, f"the README step failed:\n{r.stderr[-6000:]}\n--- stdout\n{r.stdout[-3000:]}"
    out = r.stdout
    assert "sim-00007.kernel-deadlock" in out and "reboot" in out  # kokpit fault list / show
    assert "replaced the disk" in out  # the human action, printed by the last command

    async with Client.from_kubeconfig(kc) as c, Client.from_kubeconfig(fleet_dir / ".kokpit" / "kubeconfig") as meta:
        flows = {f["spec"]["nodeName"]: f for f in (await c.list(FLOW)).items}
        reboot, hw = flows["sim-00007"], flows["sim-00008"]
        assert cond(reboot, "Completed")["reason"] == "Completed" and cond(reboot, "Verified")["status"] == "True"
        assert [h["flow"] for h in reboot["status"]["history"]] == ["reboot"], reboot["status"]["history"]
        assert reboot["status"]["isolatedAt"] and reboot["status"]["drainedAt"]
        assert hw["status"]["ticket"]["closedAt"] and [(a["action"], a["note"]) for a in hw["status"]["humanActions"]] \
            == [("Resolve", "replaced the disk")]
        assert cond(hw, "Completed")["status"] == "True"
        for name in ("sim-00007.kernel-deadlock", "sim-00008.disk-failure"):
            assert (await c.get(NODEFAULT, name))["status"]["state"] == "Resolved", name
        for node in ("sim-00007", "sim-00008"):  # given back
            n = await c.get(Kind("", "v1", "Node", "nodes", namespaced=False), node)
            assert not n["spec"].get("unschedulable") and not [
                t for t in n["spec"].get("taints") or [] if t["key"] == "kokpit.io/maintenance"], n["spec"]

        # the flows asked the risk center as maintenance-flow/cluster-1 and were granted
        mine = [p for p in (await meta.list(PERMIT, "default")).items
                if p["spec"]["holder"] == "maintenance-flow/cluster-1"]
        granted = {p["spec"]["operation"] for p in mine if p["status"].get("grantedAt")}
        assert {"node-isolate", "node-drain", "node-reboot"} <= granted, [
            (p["spec"]["operation"], p["status"].get("state")) for p in mine]
        assert all(p["status"].get("outcome") in ("Succeeded", None) for p in mine if
                   "sim-00007" in p["spec"]["targets"])
