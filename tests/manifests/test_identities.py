"""Each identity `kokpit up` installs (the manifests' RBAC table) may do what its component needs and is refused
everything else with kube's 403 — real requests against the embedded API server, which enforces RBAC."""

from __future__ import annotations

from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, POD, SECRET, ApiError, Client, Kind
from kokpit.operators.cluster import CLUSTER
from kokpit.up._identities import install_identities

DEPLOYMENT = Kind("apps", "v1", "Deployment", "deployments")
REPLICASET = Kind("apps", "v1", "ReplicaSet", "replicasets")
JOB = Kind("batch", "v1", "Job", "jobs")

# component -> (what it needs, what it must be refused): (kind, namespace) listed
CASES = {
    "meta-controller-manager": ([(DEPLOYMENT, None), (REPLICASET, "default"), (POD, None)],
                                [(SECRET, None), (NODE, None), (CLUSTER, None), (JOB, None)]),
    "cluster-operator": ([(CLUSTER, None), (POD, None), (SECRET, None), (NODE, None)],
                         [(DEPLOYMENT, None), (REPLICASET, None), (JOB, None)]),
    "local-kubelet": ([(POD, None)], [(SECRET, None), (DEPLOYMENT, None), (CLUSTER, None)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_identity_is_refused_what_it_does_not_need(apiserver: ApiServerProcess, tmp_path: Path,
                                                              name: str) -> None:
    from kokpit.api import install_crds

    async with Client.from_kubeconfig(apiserver.kubeconfig) as admin:
        await install_crds(admin)
        paths = await install_identities(admin, apiserver.kubeconfig, tmp_path / "ids")
    allowed, refused = CASES[name]
    async with Client.from_kubeconfig(paths[name], max_retries=0) as c:
        for kind, ns in allowed:
            await c.list(kind, ns)
        for kind, ns in refused:
            with pytest.raises(ApiError) as e:
                await c.list(kind, ns)
            assert e.value.code == 403, (name, kind.plural)
            assert f'User "system:serviceaccount:kokpit-system:kokpit-{name}" cannot list resource ' \
                   f'"{kind.plural}"' in str(e.value)
