"""The rollout controller runs with exactly the RBAC `kokpit manifests` gives it (as `kokpit up` runs it: its
ServiceAccount's token, the embedded API server enforcing RBAC): it wins its Lease in kokpit's namespace,
reads Clusters and ClusterPackageVersions, asks for a Permit, releases a Cluster and writes the Rollout's
status and Events — a missing permission fails here, not in a user's cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.operators.rollout.conftest import CLUSTER, ROLLOUT, Proc, stop_all, until

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, Client, Kind
from kokpit.runtime.permits import PERMIT
from kokpit.up._identities import install_identities

pytestmark = pytest.mark.timeout(900)  # real processes on a loaded, shared machine
CPV = Kind("kokpit.io", "v1alpha1", "ClusterPackageVersion", "clusterpackageversions", namespaced=False)


async def test_the_controller_works_as_its_service_account(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager="test") as c:
        await install_crds(c)
        ids = await install_identities(c, Path(apiserver.kubeconfig), tmp_path / "ids")
        for name in ("v1", "v2"):
            await c.create(CPV, {"metadata": {"name": name}, "spec": {"kubernetesVersion": "v1.36.2", "components": [
                {"name": "kube-apiserver", "image": "kokpit:v1.36.2"}]}})
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": "default"}, "spec": {"packageVersion": "v1"}})
        ctl = Proc(["rollout-controller", "--kubeconfig", str(ids["rollout-controller"])],
                   tmp_path / "controller.log").start()
        center = Proc(["risk-center", "--kubeconfig", str(apiserver.kubeconfig), "--no-leader-elect"],
                      tmp_path / "center.log").start()
        try:
            await c.create(ROLLOUT, {"metadata": {"name": "r", "namespace": "default"}, "spec": {
                "target": {"clusters": {"names": ["c1"], "packageVersion": "v2"}},
                "strategy": {"steps": [{"canary": "100%"}]}}}, "default")

            async def released() -> bool:
                cl = await c.get(CLUSTER, "c1", "default")
                return cl["spec"]["packageVersion"] == "v2"

            try:
                await until(released, "the Cluster released by the controller", 120)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{ctl.tail()}") from None
            async def updating() -> bool:
                # the target's record and the Cluster are written before the status says so: wait for it
                st = (await c.get(ROLLOUT, "r", "default")).get("status") or {}
                return bool(st.get("targets")) and st["targets"][0]["state"] == "Updating" and bool(st.get("permits"))

            try:
                await until(updating, "the Rollout's status naming the target Updating under a permit", 60)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{ctl.tail()}") from None
            assert (await c.list(PERMIT, "default")).items[0]["spec"]["holder"] == "rollout/default/r"
            events = (await c.list(EVENT, "default", field_selector="involvedObject.name=r")).items
            assert any(e["reason"] == "Started" for e in events)
            assert "forbidden" not in ctl.tail(20000).lower()
        finally:
            stop_all([ctl, center])
