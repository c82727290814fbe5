"""The portal's part of the kustomize base: a Deployment of two replicas behind a Service, no sticky sessions.

Replicas share nothing in memory that a request needs: a session is sealed into its cookie with the key of
the ``kokpit-portal-session`` Secret (mounted by every replica, so any replica opens any session and checks its
CSRF token), and the change engine runs only in the replica holding the ``kokpit-portal`` Lease
(``--leader-elect``).  Serving is HTTPS with the ``kokpit-portal-tls`` Secret (``kubectl create secret tls``, or
cert-manager); both Secrets are made at install (docs/install.md) — without them the Pods wait, they never
make a key of their own that the other replica would not share.  The server binds the Pod's own address
(the downward API's ``status.podIP``), never a wildcard; probes hit ``/healthz`` over HTTPS.  Prometheus
metrics are served as every kokpit Deployment serves them: HTTPS on port ``metrics`` (8080) behind the
``kokpit-portal-metrics`` Service, each scrape's bearer token judged by the API server (TokenReview, then a
SubjectAccessReview for ``get /metrics``: bind ``kokpit:metrics-reader``) — bound to the Pod's address too, so
the Service reaches it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PORTAL_PORT", "SESSION_SECRET", "TLS_SECRET", "portal_objects"]

Obj = dict[str, Any]
PORTAL_PORT = 8443
TLS_SECRET = "kokpit-portal-tls"
SESSION_SECRET = "kokpit-portal-session"


def portal_objects(namespace: str, image: str, labels: dict[str, str], service_account: str,
                   metrics_port: int) -> list[Obj]:
    probe = {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 10,
             "failureThreshold": 3}
    container = {
        "name": "portal", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["portal", "--host=$(POD_IP)", f"--port={PORTAL_PORT}", "--data-dir=/var/run/kokpit-portal",
                 "--tls-cert-file=/etc/kokpit/portal-tls/tls.crt", "--tls-key-file=/etc/kokpit/portal-tls/tls.key",
                 "--session-key-file=/etc/kokpit/portal-session/session.key", "--leader-elect",
                 f"--lease-namespace={namespace}", f"--metrics-port={metrics_port}", "--metrics-host=$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "https", "containerPort": PORTAL_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}],
        "livenessProbe": {**probe, "initialDelaySeconds": 30},
        "readinessProbe": {**probe, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/var/run/kokpit-portal"},
                         {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "tls", "mountPath": "/etc/kokpit/portal-tls", "readOnly": True},
                         {"name": "session", "mountPath": "/etc/kokpit/portal-session", "readOnly": True}],
    }
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": service_account, "terminationGracePeriodSeconds": 30,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                          "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [container],
                      "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                                  {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o440}},
                                  {"name": "session", "secret": {"secretName": SESSION_SECRET,
                                                                 "defaultMode": 0o440}}]}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": "https",
                                                  "protocol": "TCP"}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": f"{service_account}-metrics", "namespace": namespace, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "metrics", "port": metrics_port, "targetPort": "metrics",
                                                  "protocol": "TCP"}]}},
    ]
