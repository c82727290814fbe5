"""A change over many Machines runs as a Rollout, end to end: the portal (in this process), the rollout
controller and the risk center as real processes, the machine operator and a simulator holding the Machines
(the rollout tests' fleet: the meta API server doubles as business cluster c1).

alice plans a kubelet upgrade of every node, bob approves it; the portal labels the targets and creates the
Rollout with bob's token; the rollout controller upgrades the nodes batch by batch through risk-center
permits; the change's progress and outcome are the Rollout's; bob's undo from the portal rolls every node
back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.operators.rollout.conftest import NS, ROLLOUT, Fleet, cond, make_fleet, until
from tests.portal.conftest import person

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.portal._kinds import CLUSTER

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
Obj = dict[str, Any]


@pytest.fixture
async def rfleet(apiserver: ApiServerProcess, tmp_path: Path) -> AsyncIterator[Fleet]:
    async for f in make_fleet(apiserver, tmp_path, nodes=3, prefix="pr-"):
        yield f


async def test_upgrade_change_runs_as_a_rollout_and_undo(rfleet: Fleet, tmp_path: Path) -> None:
    meta = rfleet.meta
    await meta.patch_status(CLUSTER, "c1", {"status": {"endpoint": rfleet.apiserver.url}}, NS)
    await meta.create(NAMESPACE, {"metadata": {"name": "fleet"}})  # where the test's people live
    alice, bob = await person(meta, "alice"), await person(meta, "bob")
    srv = PortalServer(PortalOptions(kubeconfig=rfleet.apiserver.kubeconfig, port=0, data_dir=tmp_path / "portal",
                                     extensions=default_extensions(), business_interval=0.2))
    url = await srv.start()
    try:
        def client(token: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=url, verify=False, timeout=30.0,
                                     headers={"Authorization": f"Bearer {token}"})
        async with client(alice) as a, client(bob) as b:
            async def planned() -> Obj | None:
                r = await a.post("/api/v1/legacy", json={
                    "command": f"upgrade component kubelet to 1.31.0 on nodes {','.join(rfleet.nodes)} in cluster c1"})
                return r.json() if r.status_code == 201 else None
            out = await until(planned, "the adapter to plan the upgrade (the portal reads c1)", 60)
            name = out["translation"]["changeRequest"]["name"]
            assert out["translation"]["changeRequest"]["spec"]["version"] == "kubelet-1.31"
            base = f"/api/v1/changes/{NS}/{name}"
            r = await b.post(base + "/approve", json={"comment": "go"})
            assert r.status_code == 200, r.text

            r_obj = await until(lambda: _get(meta, name), "the change's Rollout", 30)
            assert r_obj["metadata"]["labels"]["kokpit.io/change-request"] == name
            assert r_obj["spec"]["target"]["machines"]["packages"] == [
                {"component": "kubelet", "from": "kubelet-1.30", "to": "kubelet-1.31"}]
            final = await rfleet.wait_rollout(name, lambda r: cond(r, "Completed").get("status") == "True",
                                              "completed by the rollout controller", 240)
            assert {t["state"] for t in final["status"]["targets"]} == {"Updated"}
            assert set((await rfleet.kubelets()).values()) == {"1.31.0"}

            async def closed() -> Obj | None:
                cr = (await a.get(base)).json()
                return cr if (cr.get("status") or {}).get("outcome") else None
            cr = await until(closed, "the change to close with the Rollout's outcome", 60)
            assert cr["status"]["outcome"] == "Succeeded" and cr["status"]["progress"] == "3/3 done"

            assert (await b.post(base + "/undo")).status_code == 200
            await rfleet.wait_rollout(name, lambda r: cond(r, "RolledBack").get("status") == "True",
                                      "rolled back after undo", 240)
            await until(lambda: _all_at(rfleet, "1.30.0"), "every node back on kubelet 1.30", 120)
    finally:
        await srv.stop()


async def _get(meta: Any, name: str) -> Obj | None:
    from kokpit.client import NotFoundError

    try:
        return dict(await meta.get(ROLLOUT, name, NS))
    except NotFoundError:
        return None


async def _all_at(fleet: Fleet, version: str) -> bool:
    return set((await fleet.kubelets()).values()) == {version}
