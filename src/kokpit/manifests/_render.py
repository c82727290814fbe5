"""`kokpit manifests`: everything a real meta cluster needs to run kokpit, as a kustomize base.

Rendered from the same code as `kokpit crds` (the CRDs) and `_rbac.COMPONENTS` (who may do what), so the
checked-in `deploy/` cannot silently drift from the code: tests render again and compare.  Each component
gets a ServiceAccount, a ClusterRole and binding with exactly its rules, a Role and binding in kokpit's
namespace for leader election, a Deployment (leader election on, probes on the Manager's /healthz and
/readyz, resource requests, non-root, read-only root filesystem, no privilege escalation, all capabilities
dropped, a RuntimeDefault seccomp profile), a PodDisruptionBudget and a metrics Service.  kokpit's kinds
join kube's `view`/`edit`/`admin` roles through aggregated ClusterRoles.  ValidatingAdmissionPolicies hold
what RBAC cannot express (a risk actor writes only its own Cluster's Permits).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from kokpit import __version__
from kokpit.manifests._portal import portal_objects
from kokpit.manifests._rbac import AGGREGATED, COMPONENTS, KOKPIT, Component, component

__all__ = ["DEFAULT_IMAGE", "DEFAULT_NAMESPACE", "METRICS_READER", "ManifestError", "component_rbac",
           "metrics_reader_role", "render", "render_files"]

DEFAULT_NAMESPACE = "kokpit-system"
DEFAULT_IMAGE = f"ghcr.io/kokpit-dev/kokpit:v{__version__}"
RBAC = "rbac.authorization.k8s.io"
METRICS_PORT = 8080
METRICS_READER = "kokpit:metrics-reader"  # bind it to the scraper (Prometheus) to let it read /metrics
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

Obj = dict[str, Any]


class ManifestError(ValueError):
    """Bad input to `kokpit manifests` (the message says what to fix)."""


def _labels(c: Component | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": "kokpit", "app.kubernetes.io/part-of": "kokpit"}
    if c is not None:
        out["app.kubernetes.io/component"] = c.name
    return out


def _rules(rules: tuple[Obj, ...]) -> list[Obj]:
    return [{k: v for k, v in r.items() if k != "why"} for r in rules]


def component_rbac(c: Component, namespace: str) -> list[Obj]:
    """ServiceAccount, ClusterRole + binding, leader-election Role + binding of one component (a kubelet: its
    node's User instead of a ServiceAccount)."""
    sa = c.service_account
    subject: list[Obj] = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
    out: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace,
                                                                    "labels": _labels(c)}},
    ]
    if c.node:
        subject, out = [{"kind": "User", "apiGroup": RBAC, "name": c.node_user}], []
    out += [
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
         "metadata": {"name": f"kokpit:{c.name}", "labels": _labels(c)}, "rules": _rules(c.cluster_rules)},
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"kokpit:{c.name}", "labels": _labels(c)},
         "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": f"kokpit:{c.name}"}, "subjects": subject},
    ]
    for ns, rules in ((namespace, c.namespace_rules), *c.other_namespace_rules):
        if not rules:
            continue
        out += [
            {"apiVersion": f"{RBAC}/v1", "kind": "Role",
             "metadata": {"name": f"kokpit:{c.name}", "namespace": ns, "labels": _labels(c)},
             "rules": _rules(rules)},
            {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding",
             "metadata": {"name": f"kokpit:{c.name}", "namespace": ns, "labels": _labels(c)},
             "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": f"kokpit:{c.name}"}, "subjects": subject},
        ]
    return out


def metrics_reader_role() -> Obj:
    """Who may scrape kokpit's components: `get` on /metrics (kube's system:monitoring has it too); each
    component asks the API server (SubjectAccessReview) whether a scraper holds it."""
    return {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
            "metadata": {"name": METRICS_READER, "labels": _labels()},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}


def _aggregated() -> list[Obj]:
    return [{"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
             "metadata": {"name": f"kokpit:aggregate-to-{name}", "labels": {
                 **_labels(), f"rbac.authorization.k8s.io/aggregate-to-{to}": "true",
                 **({"rbac.authorization.k8s.io/aggregate-to-admin": "true"} if to == "edit" else {})}},
             "rules": [{"apiGroups": [KOKPIT], "resources": ["*"], "verbs": list(verbs)}]}
            for name, to, verbs in AGGREGATED]


def _deployment(c: Component, namespace: str, image: str) -> list[Obj]:
    labels = _labels(c)
    name = c.service_account
    # the Manager serves /metrics (bearer token, decided by the API server: TokenReview + SubjectAccessReview)
    # and the probes (open) over HTTPS on one port
    probe = {"httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"}, "periodSeconds": 10,
             "failureThreshold": 3}
    container = {
        # the endpoint binds to the Pod's IP: on 127.0.0.1 (the command's default) neither the kubelet's
        # probes nor the metrics Service could reach it on a real cluster
        "name": c.name, "image": image, "imagePullPolicy": "IfNotPresent",
        "args": [*c.args, "--metrics-host=$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {**probe, "initialDelaySeconds": 15},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics", "scheme": "HTTPS"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace,
                                                                     "labels": labels},
         "spec": {"replicas": c.replicas, "selector": {"matchLabels": labels},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": name, "terminationGracePeriodSeconds": 30,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                          "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {
            "name": name, "namespace": namespace, "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-metrics", "namespace": namespace,
                                                             "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "metrics", "port": METRICS_PORT,
                                                  "targetPort": "metrics", "protocol": "TCP"}]}},
    ]


def render(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE) -> dict[str, list[Obj]]:
    """File name -> objects of the kustomize base (kustomization.yaml excluded)."""
    from kokpit.api import crds
    from kokpit.api.risk import permit_actor_policy

    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        raise ManifestError(f"invalid namespace {namespace!r}: a namespace name must be a DNS-1123 label (at most "
                            "63 lowercase letters, digits and '-', starting and ending with a letter or digit)")
    if not image or any(ch.isspace() for ch in image):
        raise ManifestError(f"invalid image {image!r}: give an image reference such as registry/kokpit:v1")
    files: dict[str, list[Obj]] = {
        "namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {**_labels(), "pod-security.kubernetes.io/enforce": "restricted"}}}],
        "crds.yaml": crds(),
        "rbac-aggregated.yaml": _aggregated(),
        "metrics-reader.yaml": [metrics_reader_role()],
        # risk actors of Clusters sharing a namespace write only their own Cluster's Permits (RBAC cannot)
        "admission-policies.yaml": permit_actor_policy(),
    }
    for c in COMPONENTS:
        if not c.deployed:
            continue
        files[f"{c.name}-rbac.yaml"] = component_rbac(c, namespace)
        files[f"{c.name}.yaml"] = _deployment(c, namespace, image)
    portal = component("portal")  # not a Manager: its own Deployment shape (manifests/_portal.py)
    files["portal-rbac.yaml"] = component_rbac(portal, namespace)
    files["portal.yaml"] = portal_objects(namespace, image, _labels(portal), portal.service_account,
                                          METRICS_PORT)
    return files


def render_files(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """The kustomize base as file name -> text, kustomization.yaml included."""
    files = render(namespace, image)
    out = {name: "# Generated by `kokpit manifests`; do not edit (tests fail on drift).\n"
           + yaml.safe_dump_all(objs, sort_keys=False) for name, objs in files.items()}
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": list(files)}
    out["kustomization.yaml"] = ("# Generated by `kokpit manifests`; do not edit (tests fail on drift).\n"
                                 + yaml.safe_dump(kustomization, sort_keys=False))
    return out
