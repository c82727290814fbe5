"""The Node authorizer and NodeRestriction (issue 18): a kubelet authenticated as `system:node:<name>` in
`system:nodes` (here through `--token-auth-file`) may read only what the Pods bound to its node use, write only
its own Node, Lease and Pods, and ask tokens only for its Pods — every refusal a real 403 over HTTPS with kube's
message.  Without these rules (`--authorization-mode RBAC`) a node identity has no permissions at all, so each
allowed request below fails there, and with an RBAC grant instead every refused one would pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess

N1, N2 = "n1-token-0123456789abcdef", "n2-token-0123456789abcdef"
NS = "work"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    d = tmp_path_factory.mktemp("nodeauthz")
    tokens = d / "node-tokens.csv"
    tokens.write_text(f'{N1},system:node:n1,uid-n1,"system:nodes"\n{N2},system:node:n2,uid-n2,"system:nodes"\n')
    s = ApiServerProcess(d / "apiserver", extra_args=["--token-auth-file", str(tokens)]).start()
    try:
        _seed(s)
        yield s
    finally:
        s.stop()


def call(s: ApiServerProcess, method: str, path: str, body: Obj | None = None, token: str | None = None,
         content_type: str = "application/json") -> tuple[int, Obj]:
    code, raw = s.request(method, path, json.dumps(body).encode() if body is not None else None, token=token,
                          content_type=content_type)
    return code, json.loads(raw) if raw else {}


def ok(s: ApiServerProcess, method: str, path: str, body: Obj | None = None, token: str | None = None) -> Obj:
    code, got = call(s, method, path, body, token)
    assert code < 300, (method, path, code, got)
    return got


def denied(s: ApiServerProcess, method: str, path: str, body: Obj | None = None, token: str = N1,
           content_type: str = "application/json") -> str:
    code, got = call(s, method, path, body, token, content_type)
    assert code == 403, (method, path, code, got)
    assert got["kind"] == "Status" and got["reason"] == "Forbidden"
    return str(got["message"])


def _pod(name: str, node: str, secret: str, cm: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": "busybox", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "k"}}}]}],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}


def _seed(s: ApiServerProcess) -> None:
    ok(s, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for kind, name in (("secrets", "s1"), ("secrets", "s2"), ("configmaps", "c1"), ("configmaps", "c2")):
        body: Obj = {"apiVersion": "v1", "kind": "Secret" if kind == "secrets" else "ConfigMap",
                     "metadata": {"name": name}}
        body["data"] = {"k": "dg==" if kind == "secrets" else "v"}
        ok(s, "POST", f"/api/v1/namespaces/{NS}/{kind}", body)
    ok(s, "POST", f"/api/v1/namespaces/{NS}/pods", _pod("p1", "n1", "s1", "c1"))
    ok(s, "POST", f"/api/v1/namespaces/{NS}/pods", _pod("p2", "n2", "s2", "c2"))
    for node in ("n1", "n2"):
        ok(s, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})


def test_a_node_reads_only_what_its_pods_use(srv: ApiServerProcess) -> None:
    base = f"/api/v1/namespaces/{NS}"
    assert ok(srv, "GET", f"{base}/secrets/s1", token=N1)["metadata"]["name"] == "s1"
    assert ok(srv, "GET", f"{base}/configmaps/c1", token=N1)["data"] == {"k": "v"}
    msg = denied(srv, "GET", f"{base}/secrets/s2")
    assert msg == (f'secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" '
                   f"in the namespace \"{NS}\": no relationship found between node 'n1' and this object")
    denied(srv, "GET", f"{base}/configmaps/c2")
    assert "can only read resources of this type" in denied(srv, "DELETE", f"{base}/secrets/s1")
    denied(srv, "GET", f"{base}/secrets")  # no listing of Secrets at all
    # Pods: get by the graph; list/watch only with its own spec.nodeName field selector
    ok(srv, "GET", f"{base}/pods/p1", token=N1)
    denied(srv, "GET", f"{base}/pods/p2")
    got = ok(srv, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", token=N1)
    assert [p["metadata"]["name"] for p in got["items"]] == ["p1"]
    assert "spec.nodeName field selector" in denied(srv, "GET", "/api/v1/pods")
    denied(srv, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2")
    # kubectl auth can-i answers the same through SubjectAccessReview
    review = ok(srv, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": "system:node:n1", "groups": ["system:nodes", "system:authenticated"],
            "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": NS, "name": "s2"}}})
    assert review["status"]["allowed"] is False
    # `kubectl auth can-i --list` as a node: the static node rules, marked incomplete (the graph is not listable)
    rules = ok(srv, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": NS}},
        token=N1)["status"]
    assert rules["incomplete"] is True
    assert {"verbs": ["update", "patch"], "apiGroups": [""], "resources": ["nodes/status"]} in rules["resourceRules"]


def test_the_graph_follows_pods(srv: ApiServerProcess) -> None:
    base = f"/api/v1/namespaces/{NS}"
    ok(srv, "POST", f"{base}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}})
    denied(srv, "GET", f"{base}/secrets/later")
    ok(srv, "POST", f"{base}/pods", _pod("p3", "n1", "later", "c1"))
    ok(srv, "GET", f"{base}/secrets/later", token=N1)
    ok(srv, "DELETE", f"{base}/pods/p3?gracePeriodSeconds=0")
    denied(srv, "GET", f"{base}/secrets/later")  # the access left with the Pod, before the delete was answered


def test_a_node_writes_only_its_own_node_and_lease(srv: ApiServerProcess) -> None:
    merge = "application/merge-patch+json"
    code, _ = srv.request("PATCH", "/api/v1/nodes/n1/status", json.dumps(
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}).encode(), token=N1, content_type=merge)
    assert code == 200
    msg = denied(srv, "PATCH", "/api/v1/nodes/n2/status", {"status": {"capacity": {"cpu": "1"}}},
                 content_type=merge)
    assert msg == 'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    assert "not allowed to modify taints" in denied(srv, "PATCH", "/api/v1/nodes/n1", {"spec": {"taints": [
        {"key": "k", "effect": "NoSchedule"}]}}, content_type=merge)
    assert "node-restriction.kubernetes.io/pool" in denied(srv, "PATCH", "/api/v1/nodes/n1", {"metadata": {
        "labels": {"node-restriction.kubernetes.io/pool": "gold"}}}, content_type=merge)
    denied(srv, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"}})
    denied(srv, "DELETE", "/api/v1/nodes/n2")
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "n1"}}
    ok(srv, "POST", leases, {**lease, "metadata": {"name": "n1"}}, token=N1)
    assert "same name as the requesting node" in denied(srv, "POST", leases, {**lease, "metadata": {"name": "n2"}})
    denied(srv, "GET", f"{leases}/n2")
    assert "kube-node-lease" in denied(srv, "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1")


def test_a_node_acts_only_on_pods_bound_to_it(srv: ApiServerProcess) -> None:
    base = f"/api/v1/namespaces/{NS}"
    merge = "application/merge-patch+json"
    code, _ = srv.request("PATCH", f"{base}/pods/p1/status", json.dumps({"status": {"phase": "Running"}}).encode(),
                          token=N1, content_type=merge)
    assert code == 200
    assert "can only update pod status for pods with spec.nodeName set to itself" in denied(
        srv, "PATCH", f"{base}/pods/p2/status", {"status": {"phase": "Failed"}}, content_type=merge)
    assert denied(srv, "DELETE", f"{base}/pods/p2") == (
        'pods "p2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself')
    assert "can only evict pods" in denied(srv, "POST", f"{base}/pods/p2/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p2", "namespace": NS}})
    assert "can only create mirror pods" in denied(srv, "POST", f"{base}/pods", _pod("p9", "n1", "s1", "c1"))
    denied(srv, "PATCH", f"{base}/pods/p1", {"metadata": {"labels": {"x": "y"}}}, content_type=merge)
    # ServiceAccount tokens only for its own Pods
    tr: Obj = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": ok(srv, "GET", f"{base}/pods/p1")["metadata"]["uid"]}}}
    assert ok(srv, "POST", f"{base}/serviceaccounts/default/token", tr, token=N1)["status"]["token"]
    assert "not bound to a pod" in denied(srv, "POST", f"{base}/serviceaccounts/default/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    tr["spec"]["boundObjectRef"].update(name="p2", uid=ok(srv, "GET", f"{base}/pods/p2")["metadata"]["uid"])
    assert "scheduled on a different node" in denied(srv, "POST", f"{base}/serviceaccounts/default/token", tr)
    # the other node is held to the same rules
    ok(srv, "DELETE", f"{base}/pods/p2?gracePeriodSeconds=0", token=N2)


def test_rbac_only_mode_gives_nodes_nothing(tmp_path: Path) -> None:
    tokens = tmp_path / "t.csv"
    tokens.write_text(f'{N1},system:node:n1,uid-n1,"system:nodes"\n')
    s = ApiServerProcess(tmp_path / "a", extra_args=["--token-auth-file", str(tokens), "--authorization-mode",
                                                     "RBAC"]).start()
    try:
        ok(s, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        denied(s, "GET", "/api/v1/nodes/n1")
    finally:
        s.stop()
