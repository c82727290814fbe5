"""Each identity `kokpit up` installs (the manifests' RBAC table) may do what its component needs and is refused
everything else with kube's 403 — real requests against the embedded API server, which enforces RBAC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import LEASE, NODE, POD, SECRET, ApiError, Client, Kind
from kokpit.manifests import component
from kokpit.operators.cluster import CLUSTER
from kokpit.up._identities import install_identities, node_tokens

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, dict[str, str]]]:
    """The meta API server as `kokpit up` starts it: its kubelets' tokens in --token-auth-file."""
    d = tmp_path_factory.mktemp("identities")
    nodes = node_tokens(d / "node-tokens.csv")
    srv = ApiServerProcess(d / "apiserver", extra_args=["--token-auth-file", str(d / "node-tokens.csv")]).start()
    try:
        yield srv, nodes
    finally:
        srv.stop()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_identity_is_refused_what_it_does_not_need(server: tuple[ApiServerProcess, dict[str, str]],
                                                              tmp_path: Path, name: str) -> None:
    from kokpit.api import install_crds

    apiserver, nodes = server
    async with Client.from_kubeconfig(apiserver.kubeconfig) as admin:
        await install_crds(admin)
        paths = await install_identities(admin, apiserver.kubeconfig, tmp_path / "ids", nodes=nodes)
    allowed, refused = CASES[name]
    user = component(name).node_user or f"system:serviceaccount:kokpit-system:kokpit-{name}"
    async with Client.from_kubeconfig(paths[name], max_retries=0) as c:
        for kind, ns in allowed:
            await c.list(kind, ns)
        for kind, ns in refused:
            with pytest.raises(ApiError) as e:
                await c.list(kind, ns)
            assert e.value.code == 403, (name, kind.plural)
            assert f'User "{user}" cannot list resource "{kind.plural}"' in str(e.value)


async def test_the_local_kubelet_is_a_node(server: tuple[ApiServerProcess, dict[str, str]], tmp_path: Path) -> None:
    """The local kubelet is system:node:local (Node authorizer + NodeRestriction), not a ServiceAccount: it may
    register and renew only its own Node and Lease, and RBAC adds nothing but binding pending Pods."""
    apiserver, nodes = server
    async with Client.from_kubeconfig(apiserver.kubeconfig) as admin:
        paths = await install_identities(admin, apiserver.kubeconfig, tmp_path / "ids", nodes=nodes)
        assert not any(sa["metadata"]["name"] == "kokpit-local-kubelet" for sa in (await admin.list(
            Kind("", "v1", "ServiceAccount", "serviceaccounts"), "kokpit-system")).items)
    async with Client.from_kubeconfig(paths["local-kubelet"], max_retries=0) as c:
        review = await c.create(Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                                     namespaced=False), {"apiVersion": "authentication.k8s.io/v1",
                                                         "kind": "SelfSubjectReview"})
        info = review["status"]["userInfo"]
        assert info["username"] == "system:node:local" and "system:nodes" in info["groups"]
        await c.create(NODE, {"metadata": {"name": "local"}})
        with pytest.raises(ApiError) as e:
            await c.create(NODE, {"metadata": {"name": "other"}})
        assert e.value.code == 403 and 'node "local" is not allowed to modify node "other"' in str(e.value)
        await c.create(LEASE, {"metadata": {"name": "local"}, "spec": {"holderIdentity": "local"}}, "kube-node-lease")
        with pytest.raises(ApiError) as e:
            await c.get(LEASE, "other", "kube-node-lease")
        assert e.value.code == 403
