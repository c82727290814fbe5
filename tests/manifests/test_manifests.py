"""`kokpit manifests` and the checked-in kustomize base in deploy/: no drift from the code, every object valid
against the Kubernetes 1.37 schemas, least privilege as declared, kustomize builds it, bad input gets a
message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kokpit.api import crds
from kokpit.manifests import COMPONENTS, DEFAULT_IMAGE, ManifestError, render, render_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _objects() -> list[dict[str, Any]]:
    return [o for objs in render().values() for o in objs]


def test_deploy_dir_matches_the_code() -> None:
    """deploy/ is `kokpit manifests -o deploy`; regenerate it when this fails."""
    want = render_files()
    have = {p.name: p.read_text() for p in DEPLOY.glob("*.yaml")}
    assert sorted(have) == sorted(want), "run: kokpit manifests -o deploy"
    for name, text in want.items():
        assert have[name] == text, f"deploy/{name} drifted from the code; run: kokpit manifests -o deploy"


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_every_object_validates_against_kubernetes_1_37(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_crds_are_the_ones_kokpit_crds_prints() -> None:
    assert render()["crds.yaml"] == crds()


PORTAL = "kokpit-portal"  # not a Manager: HTTPS on its own port, Secrets for TLS and sessions (and /metrics)


def test_deployments_are_hardened_and_highly_available() -> None:
    everything = [o for o in _objects() if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in everything} == {f"kokpit-{c.name}" for c in COMPONENTS if c.deployed} | {
        PORTAL}
    for d in everything:
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert "--leader-elect" in c["args"] and d["spec"]["replicas"] >= 2
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["image"] == DEFAULT_IMAGE and spec["serviceAccountName"] == d["metadata"]["name"]
    deployments = [d for d in everything if d["metadata"]["name"] != PORTAL]
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert "--leader-elect" in c["args"] and d["spec"]["replicas"] >= 2
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # the probes and the metrics Service reach the Pod's IP, not 127.0.0.1 (the command's default bind)
        assert "--metrics-port=8080" in c["args"] and "--metrics-host=$(POD_IP)" in c["args"]
        assert c["env"] == [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["image"] == DEFAULT_IMAGE and spec["serviceAccountName"] == d["metadata"]["name"]
    pdbs = {o["metadata"]["name"] for o in _objects() if o["kind"] == "PodDisruptionBudget"}
    services = {o["metadata"]["name"] for o in _objects() if o["kind"] == "Service"}
    assert pdbs == {d["metadata"]["name"] for d in everything}
    assert services == {d["metadata"]["name"] + "-metrics" for d in everything} | {PORTAL}


def test_portal_deployment_runs_replicas_that_share_sessions() -> None:
    """Two replicas behind a Service without session affinity: the session key and the TLS certificate come
    from Secrets every replica mounts (never a key made per Pod), the change engine is leader-elected, and the
    server binds the Pod's own address over HTTPS."""
    objs = render()["portal.yaml"]
    d = next(o for o in objs if o["kind"] == "Deployment")
    svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "kokpit-portal")
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert d["spec"]["replicas"] >= 2 and "sessionAffinity" not in svc["spec"]
    assert c["args"][0] == "portal" and "--leader-elect" in c["args"] and "--host=$(POD_IP)" in c["args"]
    assert c["env"] == [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    secrets = {v["secret"]["secretName"] for v in d["spec"]["template"]["spec"]["volumes"] if v.get("secret")}
    assert secrets == {"kokpit-portal-session", "kokpit-portal-tls"}
    assert "--session-key-file=/etc/kokpit/portal-session/session.key" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert svc["spec"]["ports"][0]["targetPort"] == "https"
    # metrics as every Deployment serves them (port "metrics", a <name>-metrics Service), on the Pod's address
    # so that Service reaches them; the API server decides who may scrape (the portal may ask it)
    metrics_svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "kokpit-portal-metrics")
    assert metrics_svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics",
                                             "protocol": "TCP"}]
    assert metrics_svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert "--metrics-port=8080" in c["args"] and "--metrics-host=$(POD_IP)" in c["args"]
    assert not any(a.startswith("--metrics-token-file") for a in c["args"])  # delegated to the API server
    role = next(o for o in render()["portal-rbac.yaml"] if o["kind"] == "ClusterRole")
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in role["rules"]
    lease_role = next(o for o in render()["portal-rbac.yaml"] if o["kind"] == "Role")
    assert any("leases" in r["resources"] for r in lease_role["rules"])


def test_least_privilege() -> None:
    """No wildcards, Secrets only for the component that makes PKI (and, read by name, the risk center that
    observes business clusters through their kubeconfigs), nothing cluster-scoped beyond the table."""
    roles = [o for o in _objects() if o["kind"] in ("ClusterRole", "Role")]
    reader = next(r for r in roles if r["metadata"]["name"] == "kokpit:metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]  # what a scraper is bound to
    roles.remove(reader)
    for r in roles:
        if r["metadata"]["name"].startswith("kokpit:aggregate-to-"):
            assert r["rules"] == [{"apiGroups": ["kokpit.io"], "resources": ["*"], "verbs": r["rules"][0]["verbs"]}]
            continue
        for rule in r["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], r
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), r
    secret_readers = {r["metadata"]["name"]: rule["verbs"] for r in roles for rule in r["rules"]
                      if "secrets" in rule["resources"]}
    # the cluster operator makes the PKI; the rollout controller, the risk center and the portal only read a
    # business cluster's kubeconfig Secret by name (no list, no write)
    assert set(secret_readers) == {"kokpit:cluster-operator", "kokpit:rollout-controller", "kokpit:risk-center",
                                   "kokpit:portal"}
    assert secret_readers["kokpit:rollout-controller"] == ["get"] and secret_readers["kokpit:risk-center"] == ["get"]
    assert secret_readers["kokpit:portal"] == ["get"]
    # /metrics is authorized by the API server: each Deployment's identity may ask it, and nothing more
    for d in (o for o in _objects() if o["kind"] == "Deployment" and o["metadata"]["name"] != PORTAL):
        role = next(r for r in roles if r["kind"] == "ClusterRole" and r["metadata"]["name"] == "kokpit:"
                    + d["metadata"]["name"].removeprefix("kokpit-"))
        reviews = [rule for rule in role["rules"] if rule["apiGroups"][0].startswith("authori")
                   or rule["apiGroups"][0].startswith("authenti")]
        assert reviews == [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                           {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                            "verbs": ["create"]}], role
        assert not any(v.get("secret") for v in d["spec"]["template"]["spec"].get("volumes") or []), d
    leases = [r for r in roles if any("leases" in rule["resources"] for rule in r["rules"])]
    assert all(r["kind"] == "Role" for r in leases)  # leader election stays in kokpit's namespace


def test_the_permit_actor_policy_ships_with_its_binding() -> None:
    """What RBAC cannot express (a risk actor writes only its own Cluster's Permits) ships as a
    ValidatingAdmissionPolicy bound with Deny: the very objects `install_crds` gives the embedded server."""
    from kokpit.api import admission_policies

    objs = [o for o in _objects() if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert objs == admission_policies()
    policy, binding = objs
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["permits", "permits/status"]


def test_kustomize_builds_the_base(kubectl_bin: str, tmp_path: Path) -> None:
    out = subprocess.run([kubectl_bin, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds.count("CustomResourceDefinition") == len(crds()) and "Deployment" in kinds


def test_other_namespace_and_image() -> None:
    objs = [o for objs in render("fleet", "registry.example/kokpit:v9").values() for o in objs]
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] in ("Deployment", "ServiceAccount",
                                                                          "Service")} == {"fleet"}
    # Roles: leader election in kokpit's namespace, port records where Kubernetes keeps its own
    assert {o["metadata"]["namespace"] for o in objs if o["kind"] == "Role"} == {"fleet", "kube-system"}
    subjects = [s for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]]
    assert {s["namespace"] for s in subjects} == {"fleet"}
    assert {o["spec"]["template"]["spec"]["containers"][0]["image"] for o in objs if o["kind"] == "Deployment"} == {
        "registry.example/kokpit:v9"}


@pytest.mark.parametrize("ns", ["Bad_NS", "", "-x", "a" * 64, "kokpit.system"])
def test_invalid_namespace_is_refused(ns: str) -> None:
    with pytest.raises(ManifestError, match="invalid namespace"):
        render(ns)


@pytest.mark.parametrize(("args", "message"), [
    (["--namespace", "Bad_NS"], "error: invalid namespace 'Bad_NS': a namespace name must be a DNS-1123 label"),
    (["--bogus"], "No such option: --bogus"),
    (["--image", "has space"], "error: invalid image 'has space'"),
])
def test_cli_bad_input(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kokpit.cli.main", "manifests", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_cli_writes_the_base(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kokpit.cli.main", "manifests", "-o", str(tmp_path / "base")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_text() for p in (tmp_path / "base").iterdir()} == render_files()


def test_containerfile_runs_kokpit_as_the_manifests_user() -> None:
    """The image is built from the wheel and runs `kokpit` as the non-root user the Deployments ask for."""
    text = (DEPLOY.parent / "Containerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "pip wheel" in text and "--no-index --find-links /wheels kokpit" in text
    assert 'ENTRYPOINT ["kokpit"]' in lines
    uid = next(ln.split()[1].split(":")[0] for ln in lines if ln.startswith("USER "))
    deployments = [o for o in _objects() if o["kind"] == "Deployment"]
    assert {str(d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) for d in deployments} == {uid}
