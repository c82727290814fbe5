"""The machine operator's meta-cluster identity (issue 14 item 6) against the real API server's RBAC: the
ServiceAccount, Role and RoleBinding the cluster operator provisions for a business cluster let its machine
operator ask, renew, record checks on, release and withdraw Permits in its Cluster's namespace — and nothing
else: no other namespace's Permits, no RiskPolicies, no Secrets, no Pods, no Nodes (403, kube's wording)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.operators.risk.conftest import policy

from kokpit.api.risk import PermitOutcome
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, NODE, POD, SECRET, ApiError, Client
from kokpit.operators.cluster._identity import ROLE, SERVICE_ACCOUNT, actor_identity
from kokpit.operators.cluster._plan import Names
from kokpit.operators.risk import CLUSTER
from kokpit.runtime.permits import PERMIT, RISK_POLICY, PermitClient
from kokpit.up._identities import _write_kubeconfig

Obj = dict[str, Any]


async def _as_actor(meta: Client, apiserver: ApiServerProcess, names: Names, tmp: Path,
                    component: str = "machine-operator") -> Client:
    owner = await meta.get(CLUSTER, names.cluster, names.namespace)
    for kind, obj in actor_identity(names, owner, (component,)):
        await meta.create(kind, obj, names.namespace)
    sa = names.actor(component)
    answer = await meta.create_subresource(SERVICE_ACCOUNT, sa, "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
        names.namespace)
    path = _write_kubeconfig(Path(apiserver.kubeconfig), tmp, sa,
                             f"system:serviceaccount:{names.namespace}:{sa}", answer["status"]["token"],
                             names.namespace)
    return Client.from_kubeconfig(path, field_manager=component, max_retries=0)


async def test_the_actor_identity_may_only_handle_permits_of_its_namespace(
        meta: Client, apiserver: ApiServerProcess, tmp_path: Path) -> None:
    await meta.create(NAMESPACE, {"metadata": {"name": "team-b"}})
    await meta.create(CLUSTER, {"metadata": {"name": "c9", "namespace": "team-b"}, "spec": {"packageVersion": "v1"}})
    await policy(meta, "anything", operations=["component-upgrade"], maxConcurrent=5)
    actor = await _as_actor(meta, apiserver, Names("default", "c1"), tmp_path)
    pc = PermitClient(actor, namespace="default", cluster="c1", holder="machine-operator/c1")
    try:
        # everything the permit client does works: ask, read, watch, renew, checks, release, withdraw
        view = await pc.ensure("component-upgrade", ["n1"], intent="kubelet=1.31.0")
        assert (await pc.get(view.name)).name == view.name
        await pc.renew(view.name)
        await pc.record_check(view.name, "pre", {"passed": True, "results": []})
        listed = await actor.list(PERMIT, "default", label_selector="kokpit.io/cluster=c1")
        assert [p["metadata"]["name"] for p in listed.items] == [view.name]
        await pc.release(view.name, PermitOutcome.ABORTED)
        await actor.delete(PERMIT, view.name, "default")
        # another namespace's permits: neither asked for, read nor touched
        other = PermitClient(actor, namespace="team-b", cluster="c9", holder="machine-operator/c1")
        with pytest.raises(ApiError) as e:
            await other.ensure("component-upgrade", ["n1"], intent="x")
        assert e.value.code == 403 and 'permits.kokpit.io is forbidden: User "system:serviceaccount:default:c1-machine-operator" ' \
               'cannot create resource "permits" in API group "kokpit.io" in the namespace "team-b"' in str(e.value)
        theirs = await PermitClient(meta, namespace="team-b", cluster="c9", holder="x").ensure(
            "component-upgrade", ["n1"], intent="y")
        for call in (lambda: actor.get(PERMIT, theirs.name, "team-b"),
                     lambda: actor.patch(PERMIT, theirs.name, {"spec": {"renewTime": None}}, "team-b"),
                     lambda: actor.patch(PERMIT, theirs.name, {"status": {"outcome": "Failed"}}, "team-b",
                                         subresource="status"),
                     lambda: actor.delete(PERMIT, theirs.name, "team-b"),
                     lambda: actor.list(PERMIT)):
            with pytest.raises(ApiError) as e:
                await call()
            assert e.value.code == 403, e.value
        # and nothing else: not the policies it is judged by, not the ledger, not Secrets, Pods or Nodes
        for call in (lambda: actor.list(RISK_POLICY),
                     lambda: actor.patch(RISK_POLICY, "anything", {"spec": {"paused": True}}),
                     lambda: actor.list(SECRET, "default"),
                     lambda: actor.get(SECRET, "c1-kubeconfig", "default"),
                     lambda: actor.list(POD, "default"),
                     lambda: actor.list(NODE),
                     lambda: actor.get(CLUSTER, "c1", "default")):
            with pytest.raises(ApiError) as e:
                await call()
            assert e.value.code == 403, e.value
        # the Role cannot be widened by its own subject
        with pytest.raises(ApiError) as e:
            await actor.patch(ROLE, "c1-machine-operator", {"rules": []}, "default")
        assert e.value.code == 403
    finally:
        await pc.close()
        await actor.close()


async def test_actors_of_clusters_sharing_a_namespace_write_only_their_own_permits(
        meta: Client, apiserver: ApiServerProcess, tmp_path: Path) -> None:
    """RBAC's boundary is the namespace; the ValidatingAdmissionPolicy kokpit-permit-actor (installed with the
    CRDs, evaluated by the API server) keeps c1's and c2's actors — both in namespace default — apart: each
    may create, renew, record checks on, release and delete only Permits whose spec.cluster is its own
    Cluster; a person (the admin) is not restricted."""
    await policy(meta, "anything", operations=["component-upgrade", "node-drain"], maxConcurrent=5)
    mo1 = await _as_actor(meta, apiserver, Names("default", "c1"), tmp_path / "c1")
    kcm2 = await _as_actor(meta, apiserver, Names("default", "c2"), tmp_path / "c2", "kube-controller-manager")
    own1 = PermitClient(mo1, namespace="default", cluster="c1", holder="machine-operator/c1")
    own2 = PermitClient(kcm2, namespace="default", cluster="c2", holder="controller-manager/c2")
    forged = PermitClient(mo1, namespace="default", cluster="c2", holder="machine-operator/c1")
    try:
        mine = await own1.ensure("component-upgrade", ["n1"], intent="kubelet=1.31.0")
        theirs = await own2.ensure("node-drain", ["n7"], intent="taints-1")
        # c1's actor asks in c2's name: refused by the policy, with kube's wording
        with pytest.raises(ApiError) as e:
            await forged.ensure("node-drain", ["n7"], intent="x")
        assert e.value.code == 403 and "ValidatingAdmissionPolicy 'kokpit-permit-actor' with binding " \
            "'kokpit-permit-actor' denied request: a risk actor may only write Permits of its own Cluster: " \
            "system:serviceaccount:default:c1-machine-operator may not write a Permit of Cluster c2" in str(e.value)
        # nor touches c2's permit: renew (spec), release (status), withdraw (delete)
        for call in (lambda: mo1.patch(PERMIT, theirs.name, {"spec": {"renewTime": None}}, "default"),
                     lambda: mo1.patch(PERMIT, theirs.name, {"status": {"outcome": "Failed"}}, "default",
                                       subresource="status"),
                     lambda: mo1.delete(PERMIT, theirs.name, "default")):
            with pytest.raises(ApiError) as e:
                await call()
            assert e.value.code == 403 and "kokpit-permit-actor" in str(e.value), e.value
        # and the other way round (the controller-manager identity of c2 against c1's permit)
        with pytest.raises(ApiError) as e:
            await kcm2.delete(PERMIT, mine.name, "default")
        assert e.value.code == 403 and "c2-kube-controller-manager may not write a Permit of Cluster c1" in str(e.value)
        # nothing was changed by the refusals; each actor still handles its own
        assert (await meta.get(PERMIT, theirs.name, "default"))["spec"]["cluster"] == "c2"
        await own2.renew(theirs.name)
        await own2.release(theirs.name, PermitOutcome.ABORTED)
        await kcm2.delete(PERMIT, theirs.name, "default")
        await own1.renew(mine.name)
        await own1.release(mine.name, PermitOutcome.ABORTED)
        # a person is not restricted by the policy
        admin = PermitClient(meta, namespace="default", cluster="c2", holder="person")
        await admin.ensure("node-drain", ["n8"], intent="by-hand")
    finally:
        for pc in (own1, own2, forged):
            await pc.close()
        await mo1.close()
        await kcm2.close()
