"""Fixtures for the portal's tests: a real meta API server with the CRDs, a real business API server whose
kubeconfig Secret the meta cluster holds (as the cluster operator leaves it), a few Clusters and Machines, and
the portal itself in this process."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, NODE, SECRET, Client, Kind
from kokpit.manifests import render
from kokpit.operators.faults.catalog import install_defaults
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.portal._kinds import CLUSTER, CPV, MACHINE

Obj = dict[str, Any]
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False)
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServerProcess, ApiServerProcess]]:
    root = tmp_path_factory.mktemp("portal")
    meta = ApiServerProcess(root / "meta", extra_args=["--bookmark-interval", "1"]).start()
    business = ApiServerProcess(root / "business", extra_args=["--bookmark-interval", "1"]).start()
    try:
        yield meta, business
    finally:
        business.stop()
        meta.stop()


def cpv(name: str, k8s: str) -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "ClusterPackageVersion", "metadata": {"name": name},
            "spec": {"kubernetesVersion": k8s, "components": [{"name": "kube-apiserver", "image": "kokpit"}]}}


def cluster(name: str, release: str, ns: str = "fleet") -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "metadata": {"name": name, "namespace": ns},
            "spec": {"packageVersion": release}}


def machine(name: str, message: str = "") -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "labels": {"rack": "r1"}},
            "spec": {"nodeName": name, "packages": ["kubelet-v1.37.0"],
                     "readinessGates": [{"conditionType": "LogCollectionReady"}]}}


def node(name: str, ready: bool = True, cordoned: bool = False) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0"}}}


@dataclass
class Fleet:
    meta: ApiServerProcess
    business: ApiServerProcess
    admin: Client
    biz: Client


@pytest.fixture
async def fleet(servers: tuple[ApiServerProcess, ApiServerProcess]) -> AsyncIterator[Fleet]:
    """The meta cluster with two releases and Clusters c1 (business API server attached, 3 nodes) and c2."""
    meta, business = servers
    admin = Client.from_kubeconfig(meta.kubeconfig, field_manager="test")
    biz = Client.from_kubeconfig(business.kubeconfig, field_manager="test")
    await install_crds(admin)
    await install_crds(biz)
    await install_defaults(biz)  # the fault catalog (a NodeFault of a type not in it is refused with a 422)
    for role in render("kokpit-system")["rbac-aggregated.yaml"]:  # kokpit's kinds in view/edit/admin
        await admin.apply(CLUSTER_ROLE, role, field_manager="test", force=True)
    for body, kind, ns in ((cpv("v1", "v1.37.0"), CPV, None), (cpv("v2", "v1.37.1"), CPV, None),
                           ({"metadata": {"name": "fleet"}}, NAMESPACE, None)):
        try:
            await admin.create(kind, body, ns)
        except Exception:
            pass
    for name in ("c1", "c2"):
        try:
            await admin.create(CLUSTER, cluster(name, "v1"), "fleet")
        except Exception:
            pass
    await admin.patch_status(CLUSTER, "c1", {"status": {"endpoint": business.url, "packageVersion": "v1",
                                                        "conditions": [{"type": "Ready", "status": "True",
                                                                        "reason": "Ready", "message": XSS,
                                                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                                                        "components": [{"name": "kube-apiserver", "version": "v1",
                                                                        "replicas": 1, "readyReplicas": 1,
                                                                        "healthy": True, "message": "c1-kube-apiserver-0 serving"}]}},
                             "fleet")
    kc = business.kubeconfig.read_bytes()
    try:
        await admin.create(SECRET, {"metadata": {"name": "c1-kubeconfig", "namespace": "fleet"},
                                    "data": {"value": base64.b64encode(kc).decode()}}, "fleet")
    except Exception:
        pass
    for i, (ready, cordoned) in enumerate(((True, False), (True, False), (False, True))):
        name = f"n{i}"
        try:
            await biz.create(NODE, node(name, ready, cordoned))
            await biz.create(MACHINE, machine(name))
        except Exception:
            pass
    await biz.patch_status(MACHINE, "n0", {"status": {"phase": "Ready", "components": [
        {"name": "kubelet", "version": "v1.37.0", "installState": "Installed", "runState": "Running",
         "message": XSS}], "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"},
                                          {"type": "LogCollectionReady", "status": "True", "reason": "Ready",
                                           "source": "daemonset-readiness", "message": XSS}]}})
    try:
        yield Fleet(meta, business, admin, biz)
    finally:
        await admin.close()
        await biz.close()


@dataclass
class Running:
    url: str
    server: PortalServer
    fleet: Fleet

    def http(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=False, timeout=20.0, follow_redirects=False, **kw)


@pytest.fixture
async def portal(fleet: Fleet, tmp_path: Path) -> AsyncIterator[Running]:
    opts = PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp_path / "portal",
                         extensions=default_extensions(), business_interval=0.2)
    srv = PortalServer(opts)
    url = await srv.start()
    try:
        yield Running(url, srv, fleet)
    finally:
        await srv.stop()


async def login(http: httpx.AsyncClient, token: str) -> str:
    """Log in through the form; returns the session's CSRF token (read from a page, as a browser would)."""
    page = await http.get("/login")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = await http.post("/login", data={"csrf": csrf, "token": token})
    assert r.status_code == 303, r.text
    fleet = await http.get("/fleet")
    return fleet.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


SA = Kind("", "v1", "ServiceAccount", "serviceaccounts")
CLUSTER_ROLE_BINDING = Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                            namespaced=False)


async def person(admin: Client, name: str) -> str:
    """A ServiceAccount ``fleet/<name>`` who may read kokpit's kinds, plan and approve changes, release
    Clusters and start or steer Rollouts (a release manager); returns its token."""
    await admin.apply(CLUSTER_ROLE, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                     "metadata": {"name": "test-release-manager"},
                                     "rules": [{"apiGroups": ["kokpit.io"], "resources": ["*"],
                                                "verbs": ["get", "list", "watch"]},
                                               {"apiGroups": ["kokpit.io"], "resources": ["changerequests"],
                                                "verbs": ["create", "patch", "approve"]},
                                               {"apiGroups": ["kokpit.io"], "resources": ["clusters"],
                                                "verbs": ["patch", "create"]},
                                               {"apiGroups": ["kokpit.io"], "resources": ["rollouts"],
                                                "verbs": ["create", "patch"]},
                                               {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]},
                      field_manager="test", force=True)
    await admin.apply(SA, {"apiVersion": "v1", "kind": "ServiceAccount",
                           "metadata": {"name": name, "namespace": "fleet"}}, field_manager="test", force=True)
    await admin.apply(CLUSTER_ROLE_BINDING, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"test-release-manager-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "test-release-manager"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "fleet"}]}, field_manager="test", force=True)
    answer = await admin.create_subresource(SA, name, "token", {"apiVersion": "authentication.k8s.io/v1",
                                                                "kind": "TokenRequest", "spec": {}}, "fleet")
    return str(answer["status"]["token"])
