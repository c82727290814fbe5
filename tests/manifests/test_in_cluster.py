"""The install path on an embedded meta cluster (issue 18, item 3): `kubectl apply -k deploy/`, then the cluster
operator runs *from those manifests* — the Pod of its Deployment's template, run by the local kubelet as a
process, with its ServiceAccount's mounted token and nothing else — and takes a business Cluster through its
lifecycle: created and Ready, released to another ClusterPackageVersion, deleted with its data.

What stands in for a real cluster: the embedded API server, the local kubelet (processes, host network, no
container runtime) and kokpit's controller-manager as the meta cluster's Deployment and ReplicaSet controllers
(each as its own ServiceAccount, as `kokpit up` runs them).  The Deployment's Pod is made by those controllers
from the template, nothing by hand.  Because every Pod shares the host's network here, the test applies a
kustomize overlay over deploy/ that gives each Deployment one replica and a free metrics port — what an overlay
of a real install would change too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit._lib.metricsserver import scrape
from kokpit.apiserver.testing import ApiServerProcess, free_port
from kokpit.client import POD, ApiError, Client, Kind, TransportError
from kokpit.manifests import METRICS_READER, component, component_rbac
from kokpit.operators.cluster import CLUSTER, CPV
from kokpit.runtime.permits import PERMIT
from kokpit.up._defaults import DEFAULT_CPV, cluster_body, cpvs
from kokpit.up._identities import _write_kubeconfig, node_tokens
from kokpit.up._up import NODE_TOKENS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NS = "kokpit-system"
LEASE = Kind("coordination.k8s.io", "v1", "Lease", "leases")
SA = Kind("", "v1", "ServiceAccount", "serviceaccounts")
READY_WITHIN = 300.0

pytestmark = pytest.mark.e2e


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def _identity(meta: Client, admin: Path, out: Path, name: str) -> Path:
    """The local kubelet and the controller-manager are no part of the manifests (a real cluster has its own):
    their RBAC from the same table, as `kokpit up` installs it."""
    rbac = "rbac.authorization.k8s.io"
    kinds = {"ServiceAccount": SA,
             "ClusterRole": Kind(rbac, "v1", "ClusterRole", "clusterroles", namespaced=False),
             "ClusterRoleBinding": Kind(rbac, "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
             "Role": Kind(rbac, "v1", "Role", "roles"), "RoleBinding": Kind(rbac, "v1", "RoleBinding", "rolebindings")}
    c = component(name)
    for obj in component_rbac(c, NS):
        await meta.apply(kinds[obj["kind"]], obj, field_manager="test")
    if c.node:  # the local kubelet is system:node:local, authenticated by the server's --token-auth-file
        return _write_kubeconfig(admin, out, c.name, c.node_user, node_tokens(out.parent / NODE_TOKENS)[c.node], NS)
    answer = await meta.create_subresource(SA, c.service_account, "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200}}, NS)
    return _write_kubeconfig(admin, out, c.name, f"system:serviceaccount:{NS}:{c.service_account}",
                             answer["status"]["token"], NS)


async def _scraper_token(meta: Client, name: str, cluster_role: str | None) -> str:
    """A ServiceAccount's token, bound to `cluster_role` (Prometheus' identity in a real install)."""
    await meta.create(SA, {"metadata": {"name": name}}, "default")
    if cluster_role:
        await meta.create(Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                               namespaced=False), {
            "metadata": {"name": name}, "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role}})
    answer = await meta.create_subresource(SA, name, "token", {"apiVersion": "authentication.k8s.io/v1",
                                                                "kind": "TokenRequest", "spec": {}}, "default")
    return str(answer["status"]["token"])


METRICS_PORTS: dict[str, int] = {}  # Deployment -> the metrics port the overlay gave it


def _overlay(out: Path) -> Path:
    """A kustomize overlay over deploy/: every Deployment one replica and its own free metrics port."""
    out.mkdir()
    patches = []
    for f in sorted(DEPLOY.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if not d or d.get("kind") != "Deployment":
                continue
            port = METRICS_PORTS[d["metadata"]["name"]] = free_port()
            c = d["spec"]["template"]["spec"]["containers"][0]
            args = [f"--metrics-port={port}" if a.startswith("--metrics-port") else a for a in c["args"]]
            patch = {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"]},
                     "spec": {"replicas": 1, "template": {"spec": {"containers": [
                         {"name": c["name"], "args": args,
                          "ports": [{**p, "containerPort": port} for p in c.get("ports") or []
                                    if p["name"] == "metrics"]}]}}}}
            (out / f"{d['metadata']['name']}.yaml").write_text(yaml.safe_dump(patch))
            patches.append({"path": f"{d['metadata']['name']}.yaml"})
    (out / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, out)], "patches": patches}))
    return out


def _kubectl(kubectl_bin: str, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_bin, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=120)


def _start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "kokpit.cli.main", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServerProcess]:
    """The meta API server as `kokpit up` starts it: the local kubelet's token in --token-auth-file."""
    node_tokens(tmp_path / NODE_TOKENS)
    srv = ApiServerProcess(tmp_path / "apiserver", extra_args=["--bookmark-interval", "1", "--token-auth-file",
                                                               str(tmp_path / NODE_TOKENS)]).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.timeout(900)
async def test_operator_from_the_manifests_manages_a_cluster(apiserver: ApiServerProcess, kubectl_bin: str,
                                                            tmp_path: Path) -> None:
    admin = apiserver.kubeconfig
    applied = _kubectl(kubectl_bin, admin, "apply", "--server-side", "-k", str(_overlay(tmp_path / "overlay")))
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/kokpit-cluster-operator serverside-applied" in applied.stdout
    assert "poddisruptionbudget.policy/kokpit-cluster-operator serverside-applied" in applied.stdout
    log = tmp_path / "kubelet.log"
    async with Client.from_kubeconfig(admin, max_retries=2) as meta:
        kubelet = _start(log, "kubelet", "--kubeconfig", str(await _identity(meta, admin, tmp_path / "ids",
                                                                             "local-kubelet")),
                         "--data-dir", str(tmp_path / "kubelet"), "--backoff-base", "1", "--backoff-cap", "10",
                         "--stop-pods-on-exit")
        kcm_log = tmp_path / "controller-manager.log"
        kcm = _start(kcm_log, "controller-manager", "--kubeconfig",
                     str(await _identity(meta, admin, tmp_path / "ids", "meta-controller-manager")),
                     "--controllers", "deployment,replicaset,disruption", "--metrics-port", str(free_port()))
        try:
            # the Deployment's ReplicaSet makes the operator's Pod from the template; the kubelet runs it
            deadline = time.monotonic() + READY_WITHIN
            pods: list[dict[str, Any]] = []
            while not pods:
                assert kcm.poll() is None, kcm_log.read_text()[-3000:]
                assert time.monotonic() < deadline, kcm_log.read_text()[-3000:]
                pods = (await meta.list(POD, NS, label_selector="app.kubernetes.io/component=cluster-operator")).items
                await asyncio.sleep(0.5)
            pod = pods[0]
            name = pod["metadata"]["name"]
            assert pod["spec"]["serviceAccountName"] == "kokpit-cluster-operator"
            assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
            for cpv in cpvs():
                await meta.create(CPV, cpv)
            await meta.create(CLUSTER, cluster_body("c1", 2))
            deadline = time.monotonic() + READY_WITHIN
            cluster: dict[str, Any] = {}
            while not _ready(cluster):
                assert kubelet.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, (f"Cluster not Ready: {cluster.get('status')}\n"
                                                     f"{log.read_text()[-3000:]}")
                with contextlib.suppress(ApiError, TransportError):
                    cluster = await meta.get(CLUSTER, "c1", "default")
                await asyncio.sleep(0.5)
            # it reconciled as the leader, through its own ServiceAccount and Role (the Lease in kokpit-system)
            op = await meta.get(POD, name, NS)
            while not _ready(op):  # its readiness probe (HTTPS /readyz) runs every 5 s
                assert time.monotonic() < deadline, op.get("status")
                await asyncio.sleep(0.5)
                op = await meta.get(POD, name, NS)
            # /metrics is served to whom the API server allows: no token Secret was made for it
            url = f"https://127.0.0.1:{METRICS_PORTS['kokpit-cluster-operator']}/metrics"
            code, body = await scrape(url, await _scraper_token(meta, "prometheus", METRICS_READER))
            assert code == 200 and b"kokpit_" in body, (code, body[:300])
            assert (await scrape(url, await _scraper_token(meta, "stranger", None)))[0] == 403
            pid = str(op["status"]["containerStatuses"][0]["containerID"]).removeprefix("kokpit://")
            lease = await meta.get(LEASE, "kokpit-cluster-operator", NS)
            assert f"_{pid}_" in lease["spec"]["holderIdentity"], lease["spec"]
            # the rest of the lifecycle: a release to the other ClusterPackageVersion, then deletion
            other = next(c["metadata"]["name"] for c in cpvs() if c["metadata"]["name"] != DEFAULT_CPV)
            await meta.patch(CLUSTER, "c1", {"spec": {"packageVersion": other}}, "default", patch_type="merge")
            while not (cluster.get("status", {}).get("packageVersion") == other and _ready(cluster)):
                assert time.monotonic() < deadline + READY_WITHIN, f"release not done: {cluster.get('status')}"
                with contextlib.suppress(ApiError, TransportError):
                    cluster = await meta.get(CLUSTER, "c1", "default")
                await asyncio.sleep(0.5)
            await meta.delete(CLUSTER, "c1", "default")
            gone_by = time.monotonic() + READY_WITHIN
            while (await meta.list(CLUSTER, "default")).items:
                assert time.monotonic() < gone_by, "the Cluster was not removed"
                await asyncio.sleep(0.5)
            logs = _kubectl(kubectl_bin, admin, "logs", "-n", NS, name)
            assert logs.returncode == 0 and "Forbidden" not in logs.stdout, logs.stdout[-3000:]
            dep = await meta.get(Kind("apps", "v1", "Deployment", "deployments"), "kokpit-cluster-operator", NS)
            assert dep["status"].get("availableReplicas") == 1, dep["status"]
            assert "Forbidden" not in kcm_log.read_text(), kcm_log.read_text()[-3000:]
            # the release asked the risk center (its Deployment from the same manifests): the control-plane-release
            # permits were granted and released Succeeded
            permits = (await meta.list(PERMIT, "default")).items
            releases = [p for p in permits if p["spec"]["operation"] == "control-plane-release"]
            assert releases and {p["status"].get("outcome") for p in releases} == {"Succeeded"}, permits
        finally:
            _stop(kcm)
            _stop(kubelet)
