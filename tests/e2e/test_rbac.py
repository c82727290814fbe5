"""RBAC end to end with the real kubectl: ServiceAccount tokens (TokenRequest, `kubectl create token`),
bindings made with `kubectl create rolebinding`, kube's 403 messages as kubectl prints them, `kubectl auth
can-i` (SelfSubjectAccessReview, SelfSubjectRulesReview, impersonation), `kubectl auth whoami`, the token a
Pod gets mounted, and revocation when what a token is bound to goes away."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.apiserver.testing import ApiServerProcess

from .conftest import Kubectl, wait_until

pytestmark = pytest.mark.e2e


def _as(kubectl: Kubectl, srv: ApiServerProcess, token: str, tmp_path: Path, name: str) -> Kubectl:
    """kubectl for the same server with another bearer token."""
    cfg = yaml.safe_load((srv.data_dir / "kubeconfig").read_text())
    cfg["users"][0]["user"] = {"token": token}
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    other = Kubectl(kubectl.binary, srv, tmp_path / f"home-{name}")
    other.env = {**other.env, "KUBECONFIG": str(path)}
    return other


def _fails(k: Kubectl, *args: str) -> str:
    proc = k.run(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr.strip()


def test_service_account_token_and_bindings(kubectl: Kubectl, shared_apiserver: ApiServerProcess, ns: str,
                                            tmp_path: Path) -> None:
    kubectl.out("create", "serviceaccount", "bot", "-n", ns)
    token = kubectl.out("create", "token", "bot", "-n", ns, "--duration=20m").strip()
    assert token.count(".") == 2
    bot = _as(kubectl, shared_apiserver, token, tmp_path, "bot")
    user = f"system:serviceaccount:{ns}:bot"
    assert json.loads(bot.out("auth", "whoami", "-o", "json"))["status"]["userInfo"]["username"] == user
    err = _fails(bot, "get", "pods", "-n", ns)
    assert err == (f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list resource "pods" '
                   f'in API group "" in the namespace "{ns}"')
    err = _fails(bot, "get", "--raw", "/metrics")
    assert f'forbidden: User "{user}" cannot get path "/metrics"' in err
    assert bot.run("auth", "can-i", "list", "pods", "-n", ns, check=False).stdout.strip() == "no"
    kubectl.out("create", "rolebinding", "bot-view", "--clusterrole=view", f"--serviceaccount={ns}:bot", "-n", ns)
    assert bot.out("get", "pods", "-n", ns).strip() in ("", "No resources found in " + ns + " namespace.")
    assert bot.run("auth", "can-i", "list", "pods", "-n", ns, check=False).stdout.strip() == "yes"
    assert bot.run("auth", "can-i", "create", "pods", "-n", ns, check=False).stdout.strip() == "no"
    assert bot.run("auth", "can-i", "list", "pods", "-n", "default", check=False).stdout.strip() == "no"
    err = _fails(bot, "get", "secrets", "-n", ns)  # view never shows Secrets
    assert 'cannot list resource "secrets"' in err
    listing = bot.out("auth", "can-i", "--list", "-n", ns)
    assert "pods" in listing and "selfsubjectaccessreviews.authorization.k8s.io" in listing
    # the admin asks on the bot's behalf (impersonation); the bot may not impersonate anyone
    assert kubectl.run("auth", "can-i", "list", "configmaps", "-n", ns, f"--as={user}",
                       check=False).stdout.strip() == "yes"
    assert kubectl.run("auth", "can-i", "delete", "configmaps", "-n", ns, f"--as={user}",
                       check=False).stdout.strip() == "no"
    err = _fails(bot, "get", "pods", "-n", ns, "--as=kokpit-admin")
    assert err == (f'Error from server (Forbidden): users "kokpit-admin" is forbidden: User "{user}" cannot '
                   'impersonate resource "users" in API group "" at the cluster scope')
    # removing the binding revokes at once
    kubectl.out("delete", "rolebinding", "bot-view", "-n", ns)
    assert 'cannot list resource "pods"' in _fails(bot, "get", "pods", "-n", ns)
    # so does deleting the ServiceAccount: the token no longer authenticates
    kubectl.out("delete", "serviceaccount", "bot", "-n", ns)
    assert "Unauthorized" in _fails(bot, "auth", "whoami")


def test_tables_and_escalation(kubectl: Kubectl, shared_apiserver: ApiServerProcess, ns: str,
                               tmp_path: Path) -> None:
    out = kubectl.out("get", "clusterroles", "view", "edit", "admin", "cluster-admin")
    assert out.splitlines()[0].split() == ["NAME", "CREATED", "AT"]
    kubectl.out("create", "serviceaccount", "lead", "-n", ns)
    kubectl.out("create", "role", "rbac-admin", "--verb=get,list,create,update,delete",
                "--resource=roles,rolebindings", "-n", ns)
    kubectl.out("create", "rolebinding", "lead-rbac", "--role=rbac-admin", f"--serviceaccount={ns}:lead", "-n", ns)
    wide = kubectl.out("get", "rolebinding", "lead-rbac", "-n", ns, "-o", "wide")
    assert "Role/rbac-admin" in wide and f"{ns}/lead" in wide
    lead = _as(kubectl, shared_apiserver, kubectl.out("create", "token", "lead", "-n", ns).strip(), tmp_path,
               "lead")
    err = _fails(lead, "create", "role", "pod-killer", "--verb=delete", "--resource=pods", "-n", ns)
    assert "is attempting to grant RBAC permissions not currently held" in err
    err = _fails(lead, "create", "rolebinding", "lead-edit", "--clusterrole=edit", f"--serviceaccount={ns}:lead",
                 "-n", ns)
    assert "is attempting to grant RBAC permissions not currently held" in err
    # what it holds it may hand on
    lead.out("create", "role", "role-reader", "--verb=get", "--resource=roles", "-n", ns)


def _raw(srv: ApiServerProcess, method: str, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    code, raw = srv.request(method, path, json.dumps(body).encode(), token=token)
    return code, json.loads(raw)


def test_pod_token_mount_and_reviews(kubectl: Kubectl, shared_apiserver: ApiServerProcess, ns: str) -> None:
    kubectl.out("create", "serviceaccount", "runner", "-n", ns)
    wait_until(lambda: kubectl.exists("serviceaccount", "default", "-n", ns), msg="default ServiceAccount")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
           "spec": {"serviceAccountName": "runner", "containers": [{"name": "c", "image": "kokpit"}]}}
    kubectl.apply_obj(pod)
    got = kubectl.json("get", "pod", "p", "-n", ns)
    vol = next(v for v in got["spec"]["volumes"] if v["name"].startswith("kube-api-access-"))
    sources = vol["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert got["spec"]["containers"][0]["volumeMounts"] == [
        {"name": vol["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    # a Pod naming a ServiceAccount that does not exist is refused, as by kube's admission
    bad = {**pod, "metadata": {"name": "q", "namespace": ns}, "spec": {**pod["spec"], "serviceAccountName": "nope"}}
    proc = kubectl.run("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert f'error looking up service account {ns}/nope: serviceaccount "nope" not found' in proc.stderr
    # a token bound to the Pod (what the kubelet asks for) dies with the Pod
    uid = got["metadata"]["uid"]
    code, tr = _raw(shared_apiserver, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/runner/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p",
                                                              "uid": uid}}})
    assert code == 201, tr
    token = tr["status"]["token"]
    code, review = _raw(shared_apiserver, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
    assert code == 201 and review["status"]["authenticated"] is True
    info = review["status"]["user"]
    assert info["username"] == f"system:serviceaccount:{ns}:runner"
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["p"]
    assert f"system:serviceaccounts:{ns}" in info["groups"]
    code, sar = _raw(shared_apiserver, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": info["username"], "groups": info["groups"],
                 "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": ns}}})
    assert code == 201 and sar["status"]["allowed"] is False
    assert shared_apiserver.request("GET", "/apis", token=token)[0] == 200
    kubectl.out("delete", "pod", "p", "-n", ns, "--grace-period=0", "--force")
    wait_until(lambda: shared_apiserver.request("GET", "/apis", token=token)[0] == 401, msg="token revoked")
    # bad input: too short a token, an unknown bound kind
    code, st = _raw(shared_apiserver, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/runner/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}})
    assert code == 422 and "may not specify a duration less than 10 minutes" in st["message"]
    code, st = _raw(shared_apiserver, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/runner/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"kind": "ConfigMap", "name": "x"}}})
    assert code == 422 and "spec.boundObjectRef.kind" in st["message"]


def test_legacy_token_secret(kubectl: Kubectl, shared_apiserver: ApiServerProcess, ns: str) -> None:
    kubectl.out("create", "serviceaccount", "old", "-n", ns)
    kubectl.apply_obj({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                       "metadata": {"name": "old-token", "namespace": ns,
                                    "annotations": {"kubernetes.io/service-account.name": "old"}}})
    data = wait_until(lambda: kubectl.json("get", "secret", "old-token", "-n", ns).get("data", {}).get("token"),
                      msg="token filled in")
    token = base64.b64decode(data).decode()
    code, raw = shared_apiserver.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(), token=token)
    assert code == 201 and json.loads(raw)["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:old"
    kubectl.out("delete", "secret", "old-token", "-n", ns)
    assert shared_apiserver.request("GET", "/apis", token=token)[0] == 401

