"""The migration contract end to end (issue 15 item 4.3-4.4): a stand-in MigrateController — its own process,
the official kubernetes client — watches the ``kokpit.io/to-be-migrated`` label and moves what it can before
the deadline; at the deadline the flow evicts the rest through the Eviction API, where a
PodDisruptionBudget that allows no disruption answers 429 and the flow waits (and says so) until the budget
allows it, and deletes a bare pod nobody migrated, recording each pod's fate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.operators.maintenance.conftest import Fleet, cond, eventually, fast_policy, report_fault
from tests.operators.maintenance.test_flows_e2e import make_pod, running

from kokpit.client import EVENT, POD, Kind, NotFoundError

Obj = dict[str, Any]
PDB = Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")


def start_migrate_controller(fleet: Fleet, target: str, log: Path) -> subprocess.Popen[bytes]:
    """The stand-in MigrateController as its own process (official kubernetes client)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("migrate_controller.py")),
                                 str(fleet.apiserver.kubeconfig), target], stdout=out, stderr=subprocess.STDOUT)


async def pdb_allows(c: Any, name: str, allowed: int) -> None:
    """The PDB's status as the disruption controller writes it (one healthy pod, ``allowed`` disruptions)."""
    pdb = await c.get(PDB, name, "default")
    await c.patch(PDB, name, {"status": {"observedGeneration": pdb["metadata"]["generation"], "expectedPods": 1,
                                         "currentHealthy": 1, "desiredHealthy": 1 - allowed,
                                         "disruptionsAllowed": allowed}}, "default", subresource="status")


async def test_migrate_controller_moves_pods_pdb_is_honoured_bare_pod_deleted(
        fleet_factory: Callable[..., Awaitable[Fleet]], tmp_path: Path) -> None:
    fleet = await fleet_factory(nodes=3, policy=fast_policy(migrationDeadline="30s"))
    c = fleet.c
    node, other = fleet.nodes[0], fleet.nodes[1]
    mc = start_migrate_controller(fleet, other, tmp_path / "mc.log")
    try:
        await eventually(lambda: _says(tmp_path / "mc.log", "watching"), 60, "the MigrateController watching")
        await make_pod(c, "mig-1", node, owned=True)
        guarded = await make_pod(c, "pdb-1", node, owned=True)
        await c.patch(POD, "pdb-1", {"metadata": {"annotations": {"example.com/no-migrate": "yes"}}}, "default")
        bare = await make_pod(c, "bare-2", node, owned=False)
        await c.patch(POD, "bare-2", {"metadata": {"annotations": {"example.com/no-migrate": "yes"}}}, "default")
        await c.create(PDB, {"metadata": {"name": "pdb-1", "namespace": "default"},
                             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "pdb-1"}}}})
        await pdb_allows(c, "pdb-1", 0)
        await eventually(lambda: running(c, "mig-1", "pdb-1", "bare-2"), 30, "the pods running")
        await report_fault(c, node, "kernel-deadlock", "reboot")

        # the MigrateController moves mig-1 to another node before the deadline
        moved = await eventually(lambda: _get(c, "mig-1-m"), 40, "mig-1's replacement")
        assert moved["spec"]["nodeName"] == other
        await eventually(lambda: _gone(c, "mig-1"), 20, "mig-1 gone from the node")

        # at the deadline: bare-2 is deleted; pdb-1's eviction is refused by its budget and the flow says so
        async def blocked() -> Obj | None:
            f = await fleet.flow_of(node)
            m = cond(f, "Migrated")
            return f if m.get("reason") == "DisruptionBudget" else None

        flow = await eventually(blocked, 60, "the flow waiting for the disruption budget")
        assert "pdb-1" in cond(flow, "Migrated")["message"]
        await eventually(lambda: _gone(c, "bare-2", bare["metadata"]["uid"]), 20, "the bare pod deleted")
        assert await _get(c, "pdb-1") is not None  # still there: the budget holds
        await asyncio.sleep(2)
        assert await _get(c, "pdb-1") is not None

        await pdb_allows(c, "pdb-1", 1)  # the budget allows one disruption now
        done = await eventually(lambda: fleet.completed(node), 60, "the flow completed")
        await eventually(lambda: _gone(c, "pdb-1", guarded["metadata"]["uid"]), 20, "pdb-1 evicted")
        fates = {p["name"]: p["action"] for p in done["status"]["pods"]}
        assert fates == {"mig-1": "Migrated", "pdb-1": "Evicted", "bare-2": "Deleted"}, done["status"]["pods"]
        events = (await c.list(EVENT, "default", field_selector=f"involvedObject.name={done['metadata']['name']}")
                  ).items
        deleted = [e for e in events if e["reason"] == "BarePodDeleted"]
        assert deleted and deleted[0]["type"] == "Warning" and "default/bare-2" in deleted[0]["message"]
    except BaseException:
        print(fleet.operator_log())
        print((tmp_path / "mc.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        mc.kill()
        mc.wait(10)


async def _says(log: Path, text: str) -> bool:
    return text in await asyncio.to_thread(log.read_text, errors="replace")


async def _get(c: Any, name: str) -> Obj | None:
    try:
        out: Obj = await c.get(POD, name, "default")
        return out
    except NotFoundError:
        return None


async def _gone(c: Any, name: str, uid: str | None = None) -> bool:
    p = await _get(c, name)
    return p is None or bool(p["metadata"].get("deletionTimestamp")) or (uid is not None and p["metadata"]["uid"] != uid)
