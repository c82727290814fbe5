"""An analysis step's own health checks, end to end (the rollout controller and the risk center as real
processes, see conftest): a canary that installed fine but whose Machine stops being Ready fails the
analysis — nothing else did — and the rollout rolls back exactly what it touched; a failureLimit tolerates it.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.operators.rollout.conftest import NS, ROLLOUT, Fleet, cond

from kokpit.client import EVENT
from kokpit.operators.machine import MACHINE

pytestmark = pytest.mark.timeout(600)  # real processes on a loaded, shared machine
Obj = dict[str, Any]
OLD, NEW = "kubelet-1.30", "kubelet-1.31"
UNMET_GATE = {"spec": {"readinessGates": [{"conditionType": "NetworkReady"}]}}  # nobody reports NetworkReady


def _targets(r: Obj) -> dict[str, Obj]:
    return {t["name"]: t for t in (r.get("status") or {}).get("targets") or []}


def _analysing(r: Obj) -> bool:
    return cond(r, "Progressing").get("reason") == "Analyzing"


async def test_an_unready_canary_fails_the_analysis_and_is_rolled_back(fleet: Fleet) -> None:
    fleet.cli("rollout", "create", "an", "-n", NS, "--cluster", "c1", "--replace", f"{OLD}={NEW}",
              "--steps", "1,analysis:5m,100%")
    r = await fleet.wait_rollout("an", _analysing, "analysing the canary")
    canary = next(n for n, t in _targets(r).items() if t["state"] == "Updated")
    node = canary.split("/", 1)[1]
    # the new kubelet runs and reports fine: only the Machine's health (an unmet readiness gate: Ready=False)
    # says something is wrong
    await fleet.meta.patch(MACHINE, node, UNMET_GATE)
    r = await fleet.wait_rollout("an", lambda r: (r.get("status") or {}).get("phase") == "RolledBack",
                                 "the analysis failed and the canary rolled back", 180)
    aborted = cond(r, "Aborted")
    assert aborted["status"] == "True" and aborted["reason"] == "AnalysisFailed", aborted
    assert "1 failed or unhealthy target(s) (failureLimit 0)" in aborted["message"] and canary in aborted["message"]
    steps = {s["index"]: s for s in r["status"]["steps"]}
    assert steps[1]["outcome"] == "Failed"
    t = _targets(r)
    assert t[canary]["state"] == "RolledBack"
    assert all(x["state"] == "Pending" for n, x in t.items() if n != canary)  # the next batch never started
    assert all(p == ["containerd-1.7", OLD] for p in (await fleet.packages()).values())
    events = (await fleet.meta.list(EVENT, NS, field_selector="involvedObject.name=an")).items
    health = [e["message"] for e in events if e.get("reason") == "HealthCheckFailed" and e.get("type") == "Warning"]
    assert health and "Ready=False ReadinessGatesNotMet" in health[0], [e["message"] for e in events]


async def test_a_failure_limit_tolerates_an_unhealthy_target(fleet: Fleet) -> None:
    body = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "tol", "namespace": NS},
            "spec": {"target": {"machines": {"clusterNames": ["c1"], "packages": [
                {"component": "kubelet", "from": OLD, "to": NEW}]}},
                "strategy": {"steps": [{"canary": 1}, {"analysis": {"duration": "4s", "failureLimit": 1}},
                                       {"canary": "100%"}]}}}
    first = sorted(fleet.nodes)[0]  # the canary: the rollout takes Machines by name
    await fleet.meta.patch(MACHINE, first, UNMET_GATE)
    await fleet.meta.create(ROLLOUT, body, NS)
    r = await fleet.wait_rollout("tol", _analysing, "analysing the canary")
    r = await fleet.wait_rollout("tol", lambda r: "health check failed" in
                                 (_targets(r)[f"c1/{first}"].get("message") or ""), "the canary shown unhealthy")
    assert _targets(r)[f"c1/{first}"]["state"] == "Updated"
    r = await fleet.wait_rollout("tol", lambda r: (r.get("status") or {}).get("phase") == "Completed",
                                 "completed within the failure limit", 180)
    assert set((await fleet.kubelets()).values()) == {"1.31.0"}
