"""/metrics authorized by the API server (issue 18): a Manager given no static token asks its API server
(TokenReview, then SubjectAccessReview for `get` on /metrics) with its *own* identity, which needs only what
kube's system:auth-delegator grants — so an install needs no hand-made token Secret, and scraping is granted
with RBAC (`kokpit:metrics-reader`) like every other permission."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from kokpit._lib.metricsserver import scrape
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import Client, Kind
from kokpit.manifests import metrics_reader_role
from kokpit.runtime import Manager

SA = Kind("", "v1", "ServiceAccount", "serviceaccounts")
CRB = Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False)
CR = Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False)
NS = "default"


async def _sa_token(admin: Client, name: str, cluster_role: str | None) -> str:
    await admin.create(SA, {"metadata": {"name": name}}, NS)
    if cluster_role:
        await admin.create(CRB, {"metadata": {"name": f"{name}-{cluster_role.replace(':', '-')}"},
                                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                             "name": cluster_role},
                                 "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]})
    answer = await admin.create_subresource(SA, name, "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}, NS)
    return str(answer["status"]["token"])


def _kubeconfig(apiserver: ApiServerProcess, token: str, path: Path) -> Path:
    cfg: dict[str, Any] = yaml.safe_load(apiserver.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(cfg))
    return path


async def test_metrics_are_authorized_by_the_api_server(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    admin = Client.from_kubeconfig(apiserver.kubeconfig)
    try:
        await admin.create(CR, metrics_reader_role())
        component = await _sa_token(admin, "component", "system:auth-delegator")
        scraper = await _sa_token(admin, "prometheus", "kokpit:metrics-reader")
        stranger = await _sa_token(admin, "stranger", None)
    finally:
        await admin.close()
    client = Client.from_kubeconfig(_kubeconfig(apiserver, component, tmp_path / "component.kubeconfig"))
    mgr = Manager(client, metrics_tokens=[], handle_signals=False)
    task = asyncio.create_task(mgr.run())
    try:
        await asyncio.wait_for(mgr.started.wait(), 30)
        code, body = await scrape(mgr.metrics_url, scraper)
        assert code == 200 and b"kokpit_client_requests" in body
        assert (await scrape(mgr.metrics_url, apiserver.admin_token))[0] == 200  # system:masters
        code, body = await scrape(mgr.metrics_url, stranger)  # a valid token, but no /metrics in its roles
        assert code == 403 and b"kokpit_client" not in body
        # kokpit's read-only user is bound to system:monitoring, as `kokpit status` scrapes with it
        assert (await scrape(mgr.metrics_url, apiserver.readonly_token))[0] == 200
        assert (await scrape(mgr.metrics_url, "not-a-token-of-this-cluster-at-all"))[0] == 401
        assert (await scrape(mgr.metrics_url.replace("/metrics", "/healthz"), ""))[0] == 200  # probes stay open
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
