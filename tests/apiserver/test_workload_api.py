"""Workload kinds served for the controller-manager (ReplicaSet, ControllerRevision, Job), their validation
as kube answers it (422 naming the field), and pods/eviction refusing what a PodDisruptionBudget forbids."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess


def _req(srv: ApiServerProcess, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    code, raw = srv.request(method, path, json.dumps(body).encode() if body is not None else None,
                            content_type=content_type)
    return code, json.loads(raw) if raw else None


def _ns(srv: ApiServerProcess, name: str) -> str:
    code, _ = _req(srv, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert code in (201, 409)
    return name


def _template(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def test_replicaset_job_and_controllerrevision_are_served(shared_apiserver: ApiServerProcess) -> None:
    ns = _ns(shared_apiserver, "wl-served")
    code, rs = _req(shared_apiserver, "POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", {
        "metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": _template({"a": "b"})}})
    assert code == 201, rs
    assert rs["spec"]["replicas"] == 1 and rs["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    code, job = _req(shared_apiserver, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "metadata": {"name": "j"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    assert code == 201, job
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == (1, 1, 6)
    code, cr = _req(shared_apiserver, "POST", f"/apis/apps/v1/namespaces/{ns}/controllerrevisions", {
        "metadata": {"name": "cr"}, "revision": 1, "data": {"spec": {}}})
    assert code == 201, cr


def test_new_pods_tolerate_not_ready_and_unreachable_for_300s(shared_apiserver: ApiServerProcess) -> None:
    ns = _ns(shared_apiserver, "wl-tolerations")
    code, pod = _req(shared_apiserver, "POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                             "tolerations": [{"key": "node.kubernetes.io/unreachable",
                                                              "operator": "Exists", "effect": "NoExecute",
                                                              "tolerationSeconds": 5}]}})
    assert code == 201, pod
    tol = {t["key"]: t.get("tolerationSeconds") for t in pod["spec"]["tolerations"]}
    assert tol == {"node.kubernetes.io/unreachable": 5, "node.kubernetes.io/not-ready": 300}


@pytest.mark.parametrize(("kind", "spec", "field"), [
    ("deployments", {"selector": {"matchLabels": {"app": "x"}}, "template": _template({"app": "y"})},
     "spec.template.metadata.labels"),
    ("deployments", {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]},
                     "template": _template({"app": "y"})}, "spec.template.metadata.labels"),
    ("deployments", {"template": _template({"app": "y"})}, "spec.selector"),
    ("replicasets", {"selector": {}, "template": _template({"app": "y"})}, "spec.selector"),
    ("daemonsets", {"selector": {"matchLabels": {"app": "x"}}, "template": _template({})},
     "spec.template.metadata.labels"),
])
def test_bad_workload_selectors_are_422(shared_apiserver: ApiServerProcess, kind: str, spec: dict[str, Any],
                                        field: str) -> None:
    ns = _ns(shared_apiserver, "wl-invalid")
    code, st = _req(shared_apiserver, "POST", f"/apis/apps/v1/namespaces/{ns}/{kind}",
                    {"metadata": {"name": "bad"}, "spec": spec})
    assert code == 422, st
    assert st["reason"] == "Invalid"
    assert field in [c["field"] for c in st["details"]["causes"]]


def test_job_with_restart_policy_always_is_422(shared_apiserver: ApiServerProcess) -> None:
    ns = _ns(shared_apiserver, "wl-invalid-job")
    code, st = _req(shared_apiserver, "POST", f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b"}]}}}})
    assert code == 422
    assert st["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"


def _running_pod(srv: ApiServerProcess, ns: str, name: str, labels: dict[str, str], ready: bool = True) -> None:
    code, _ = _req(srv, "POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}],
                 "terminationGracePeriodSeconds": 0}})
    assert code == 201
    code, out = _req(srv, "PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}},
        content_type="application/merge-patch+json")
    assert code == 200, out


def _pdb(srv: ApiServerProcess, ns: str, name: str, labels: dict[str, str], allowed: int,
         healthy: int = 1, desired: int = 1) -> None:
    code, pdb = _req(srv, "POST", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "metadata": {"name": name}, "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}})
    assert code == 201, pdb
    code, out = _req(srv, "PATCH", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}/status",
                     {"status": {"observedGeneration": pdb["metadata"]["generation"], "disruptionsAllowed": allowed,
                                 "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": healthy}},
                     content_type="application/merge-patch+json")
    assert code == 200, out


def _evict(srv: ApiServerProcess, ns: str, name: str) -> tuple[int, Any]:
    return _req(srv, "POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction",
                {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}})


def test_eviction_respects_the_disruption_budget(shared_apiserver: ApiServerProcess) -> None:
    srv = shared_apiserver
    ns = _ns(srv, "wl-evict")
    _running_pod(srv, ns, "guarded", {"app": "db"})
    _running_pod(srv, ns, "spare", {"app": "web"})
    _pdb(srv, ns, "db", {"app": "db"}, allowed=0)
    _pdb(srv, ns, "web", {"app": "web"}, allowed=1, healthy=2)

    code, st = _evict(srv, ns, "guarded")
    assert code == 429, st
    assert st["reason"] == "TooManyRequests"
    assert st["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert st["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert _req(srv, "GET", f"/api/v1/namespaces/{ns}/pods/guarded")[0] == 200  # nothing lost

    code, st = _evict(srv, ns, "spare")
    assert code == 201, st
    _, pdb = _req(srv, "GET", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/web")
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert "spare" in pdb["status"]["disruptedPods"]

    # a Pending pod is not protected (upstream: canIgnorePDB)
    code, _ = _req(srv, "POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "pending", "labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert code == 201
    assert _evict(srv, ns, "pending")[0] == 201


def test_two_budgets_on_one_pod_is_an_error(shared_apiserver: ApiServerProcess) -> None:
    srv = shared_apiserver
    ns = _ns(srv, "wl-evict-two")
    _running_pod(srv, ns, "p", {"app": "db", "tier": "a"})
    _pdb(srv, ns, "one", {"app": "db"}, allowed=1)
    _pdb(srv, ns, "two", {"tier": "a"}, allowed=1)
    code, st = _evict(srv, ns, "p")
    assert code == 500
    assert "more than one PodDisruptionBudget" in st["message"]


def test_budget_not_yet_observed_refuses(shared_apiserver: ApiServerProcess) -> None:
    srv = shared_apiserver
    ns = _ns(srv, "wl-evict-gen")
    _running_pod(srv, ns, "p", {"app": "db"})
    code, _ = _req(srv, "POST", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "metadata": {"name": "new"}, "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "db"}}}})
    assert code == 201
    code, st = _evict(srv, ns, "p")
    assert code == 429
    assert "still being processed" in st["details"]["causes"][0]["message"]


def test_concurrent_evictions_spend_the_budget_once(shared_apiserver: ApiServerProcess) -> None:
    import concurrent.futures

    srv = shared_apiserver
    ns = _ns(srv, "wl-evict-race")
    for i in range(4):
        _running_pod(srv, ns, f"p{i}", {"app": "race"})
    _pdb(srv, ns, "race", {"app": "race"}, allowed=2, healthy=4, desired=2)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda i: _evict(srv, ns, f"p{i}")[0], range(4)))
    assert codes == [201, 201, 429, 429]
    _, pdb = _req(srv, "GET", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/race")
    assert pdb["status"]["disruptionsAllowed"] == 0 and len(pdb["status"]["disruptedPods"]) == 2
