"""RBAC decisions: kube's rule matching, the default policy and aggregation, bindings indexed by subject and
invalidated on change, escalation prevention — on an in-process server (the HTTP path: tests/e2e/test_rbac*)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.auth import User
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.rbac import Attributes, CompiledRule, covers
from kokpit.apiserver.rbac_admission import current_user
from kokpit.apiserver.rest import DeleteOptions, WriteOptions
from kokpit.apiserver.server import Built, ServerOptions, _shutdown, build

G = "rbac.authorization.k8s.io"
OPTS = WriteOptions(field_manager="test")
VIEWER = User("kokpit-viewer", ("kokpit:viewers", "system:authenticated"))
ALICE = User("alice", ("devs", "system:authenticated"))
SA = User("system:serviceaccount:team:bot", ("system:serviceaccounts", "system:serviceaccounts:team",
                                              "system:authenticated"))


def res(user: User, verb: str, resource: str, ns: str = "", name: str = "", group: str = "",
        sub: str = "") -> Attributes:
    return Attributes(user, verb, True, group, resource, sub, ns, name)


def url(user: User, verb: str, path: str) -> Attributes:
    return Attributes(user, verb, False, path=path)


# ------------------------------------------------------------------------------------------ rule matching

def test_rule_matching_like_kube() -> None:
    r = CompiledRule({"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods", "deployments/scale"]})
    assert r.allows(res(ALICE, "get", "pods"))
    assert r.allows(res(ALICE, "list", "deployments", group="apps", sub="scale"))
    assert not r.allows(res(ALICE, "get", "deployments", group="apps"))  # the subresource only
    assert not r.allows(res(ALICE, "get", "pods", sub="log"))  # pods does not include pods/log
    assert not r.allows(res(ALICE, "delete", "pods"))
    assert not r.allows(res(ALICE, "get", "pods", group="batch"))
    star = CompiledRule({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]})
    assert star.allows(res(ALICE, "update", "statefulsets", group="apps", sub="scale"))
    assert not star.allows(res(ALICE, "update", "statefulsets", group="apps"))
    named = CompiledRule({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]})
    assert named.allows(res(ALICE, "get", "secrets", "ns", "a"))
    assert not named.allows(res(ALICE, "get", "secrets", "ns", "b"))
    assert not named.allows(res(ALICE, "get", "secrets", "ns"))  # a list is not of one name
    urls = CompiledRule({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]})
    assert urls.allows(url(ALICE, "get", "/healthz"))
    assert urls.allows(url(ALICE, "get", "/apis/kokpit.io/v1alpha1"))
    assert not urls.allows(url(ALICE, "get", "/healthz/ping"))
    assert not urls.allows(url(ALICE, "post", "/healthz"))
    assert not CompiledRule({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}).allows(
        url(ALICE, "get", "/api"))


def test_covers_breaks_rules_into_single_permissions() -> None:
    owner = [CompiledRule({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]}),
             CompiledRule({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]}),
             CompiledRule({"verbs": ["get"], "nonResourceURLs": ["/metrics*"]})]
    assert covers(owner, [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}]) == []
    assert covers(owner, [{"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}]) == []
    assert covers(owner, [{"verbs": ["get"], "nonResourceURLs": ["/metrics/slis"]}]) == []
    missing = covers(owner, [{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}])
    assert missing == [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]
    # a wildcard is only covered by the same wildcard
    assert covers(owner, [{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]) != []
    assert covers(owner, [{"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}]) != []


# ------------------------------------------------------------------------------------------ in-process server

@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Built]:
    built = await build(ServerOptions(data_dir=tmp_path), None)
    try:
        yield built
    finally:
        await _shutdown(built)


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _create(b: Built, plural: str, obj: dict[str, Any], ns: str | None = None, group: str = G) -> Any:
    rt = b.registry.get(group, "v1", plural)
    assert rt is not None
    return (await b.rest.create(rt, ns, obj, OPTS))[0]


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, str]],
             ns: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": f"{G}/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": G, "kind": role_kind, "name": role}, "subjects": subjects}


async def test_default_policy_and_viewer(srv: Built) -> None:
    authz = srv.authorization.authorizer
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"):
        assert srv.store.get(f"/{G}/clusterroles/{name}") is not None, name
    view = lambda: srv.store.get(f"/{G}/clusterroles/view").obj.get("rules") or []  # noqa: E731
    await _until(lambda: len(view()) > 0)
    assert authz.allowed(res(VIEWER, "list", "configmaps", "default"))
    assert authz.allowed(res(VIEWER, "watch", "pods"))  # all namespaces: a ClusterRoleBinding
    assert authz.allowed(res(VIEWER, "get", "deployments", "x", "d", group="apps"))
    assert not authz.allowed(res(VIEWER, "create", "configmaps", "default"))
    assert not authz.allowed(res(VIEWER, "get", "secrets", "default", "s"))  # view never shows secrets
    assert not authz.allowed(res(VIEWER, "list", "nodes"))
    # everyone authenticated may discover and ask what it may do; nobody else may
    assert authz.allowed(url(ALICE, "get", "/apis/apps/v1"))
    assert authz.allowed(res(ALICE, "create", "selfsubjectaccessreviews", group="authorization.k8s.io"))
    assert not authz.allowed(url(ALICE, "get", "/metrics"))
    anon = User("system:anonymous", ("system:unauthenticated",))
    assert authz.allowed(url(anon, "get", "/readyz"))
    assert not authz.allowed(url(anon, "get", "/api"))


async def test_aggregation_follows_labels(srv: Built) -> None:
    await _create(srv, "clusterroles", {"apiVersion": f"{G}/v1", "kind": "ClusterRole", "metadata": {
        "name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["example.io"], "resources": ["widgets"]}]})
    w = res(VIEWER, "list", "widgets", "default", group="example.io")
    authz = srv.authorization.authorizer
    await _until(lambda: authz.allowed(w))
    # view aggregates into edit, edit into admin
    admin_rules = lambda: srv.store.get(f"/{G}/clusterroles/admin").obj.get("rules") or []  # noqa: E731
    await _until(lambda: any("widgets" in r.get("resources", []) for r in admin_rules()))
    rt = srv.registry.get(G, "v1", "clusterroles")
    assert rt is not None
    await srv.rest.delete(rt, None, "widgets-view", DeleteOptions())
    await _until(lambda: not authz.allowed(w))


async def test_bindings_by_subject_and_invalidation(srv: Built) -> None:
    authz = srv.authorization.authorizer
    for ns in ("team", "other"):
        await _create(srv, "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                      group="")
    await _create(srv, "roles", {"apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "cm", "namespace": "team"},
                                 "rules": [{"verbs": ["get", "update"], "apiGroups": [""], "resources": ["configmaps"],
                                            "resourceNames": ["settings"]}]}, "team")
    cm = res(SA, "update", "configmaps", "team", "settings")
    assert not authz.allowed(cm)
    await _create(srv, "rolebindings", _binding("RoleBinding", "bot-cm", "Role", "cm", [
        {"kind": "ServiceAccount", "name": "bot"}], "team"), "team")  # namespace defaults to the binding's
    assert authz.allowed(cm)  # no waiting: the store told the authorizer before the write returned
    assert not authz.allowed(res(SA, "update", "configmaps", "team", "other-name"))
    assert not authz.allowed(res(SA, "update", "configmaps", "other", "settings"))
    assert not authz.allowed(res(ALICE, "update", "configmaps", "team", "settings"))
    # a ClusterRole bound in one namespace grants only there; a group subject matches by group
    await _create(srv, "rolebindings", _binding("RoleBinding", "devs-edit", "ClusterRole", "edit", [
        {"kind": "Group", "name": "devs", "apiGroup": G}], "other"), "other")
    await _until(lambda: authz.allowed(res(ALICE, "create", "pods", "other")))
    assert not authz.allowed(res(ALICE, "create", "pods", "team"))
    allowed, reason = authz.authorize(res(ALICE, "create", "pods", "other"))
    assert allowed and reason == 'RBAC: allowed by RoleBinding "devs-edit/other" of ClusterRole "edit" to Group "devs"'
    rt = srv.registry.get(G, "v1", "rolebindings")
    assert rt is not None
    await srv.rest.delete(rt, "team", "bot-cm", DeleteOptions())
    assert not authz.allowed(cm)


async def test_escalation_prevention(srv: Built) -> None:
    await _create(srv, "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
                  group="")
    # alice may manage roles and bindings in team (not escalate or bind: `*` would include both), and read
    # configmaps there — nothing more
    crud = ["create", "get", "list", "watch", "update", "patch", "delete"]
    await _create(srv, "roles", {"apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "rbac", "namespace": "team"},
                                 "rules": [{"verbs": crud, "apiGroups": [G], "resources": ["roles", "rolebindings"]},
                                           {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]},
                  "team")
    await _create(srv, "rolebindings", _binding("RoleBinding", "alice-rbac", "Role", "rbac", [
        {"kind": "User", "name": "alice", "apiGroup": G}], "team"), "team")
    token = current_user.set(ALICE)
    try:
        ok = {"apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": "team"},
              "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["x"]}]}
        await _create(srv, "roles", ok, "team")
        too_much = {"apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "writer", "namespace": "team"},
                    "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["configmaps"]}]}
        with pytest.raises(APIError) as e:
            await _create(srv, "roles", too_much, "team")
        assert e.value.code == 403
        assert 'is attempting to grant RBAC permissions not currently held' in e.value.message
        assert 'Resources:["configmaps"], Verbs:["delete"]' in e.value.message
        with pytest.raises(APIError) as e:  # binding a role she does not hold: refused too
            await _create(srv, "rolebindings", _binding("RoleBinding", "self-admin", "ClusterRole", "admin", [
                {"kind": "User", "name": "alice", "apiGroup": G}], "team"), "team")
        assert e.value.code == 403
        await _create(srv, "rolebindings", _binding("RoleBinding", "bob-reader", "Role", "reader", [
            {"kind": "User", "name": "bob", "apiGroup": G}], "team"), "team")
    finally:
        current_user.reset(token)
