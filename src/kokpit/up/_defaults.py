"""The objects `kokpit up` ships so a newcomer has something to play with: two control-plane releases,
a node stack with two kubelet versions, and one Machine per simulated node.

Kept as plain data in one place so the README's tour, the tests and `kokpit up` agree on every name.
"""

from __future__ import annotations

from typing import Any, Final

from kokpit.simulator import node_names

__all__ = [
    "CLUSTER_NAMESPACE",
    "CPV_NAMES",
    "DEFAULT_CPV",
    "LOG_GATE",
    "MACHINE_PACKAGES",
    "NODE_PREFIX",
    "WORKLOAD_NAMESPACE",
    "cluster_body",
    "cluster_names",
    "cpvs",
    "machine_bodies",
    "mpvs",
    "workload_bodies",
]

Obj = dict[str, Any]

CLUSTER_NAMESPACE: Final = "default"
CPV_NAMES: Final = ("v1.36.2", "v1.37.0")
DEFAULT_CPV: Final = CPV_NAMES[0]  # clusters start on the older release, so an upgrade can be tried at once
NODE_PREFIX: Final = "sim-"
MACHINE_PACKAGES: Final = ["containerd-1.7", "kubelet-v1.36.2", "kernel-patch-2026-11", "sysctl-default"]
WORKLOAD_NAMESPACE: Final = "demo"
LOG_GATE: Final = "LogCollectionReady"  # the seed's example: schedule a node only once logs are collected there


def cluster_names(count: int) -> list[str]:
    return [f"cluster-{i}" for i in range(1, count + 1)]


def cpvs() -> list[Obj]:
    """Two releases of a business control plane: API server, scheduler, controller-manager, node simulator
    and machine operator, all ``kokpit`` images (the local kubelet runs them as processes)."""
    out: list[Obj] = []
    for name in CPV_NAMES:
        image = f"kokpit:{name}"
        out.append({
            "apiVersion": "kokpit.io/v1alpha1", "kind": "ClusterPackageVersion", "metadata": {"name": name},
            "spec": {"kubernetesVersion": name, "components": [
                {"name": "kube-apiserver", "image": image, "args": ["apiserver"]},
                {"name": "kube-scheduler", "image": image, "args": ["scheduler"]},
                {"name": "kube-controller-manager", "image": image, "args": ["controller-manager"]},
                {"name": "simulator", "image": image, "args": ["simulator", "--lease-period", "10s"]},
                {"name": "machine-operator", "image": image,
                 "args": ["machine-operator", "--fast-poll", "0.5", "--slow-poll", "10"]},
            ]},
        })
    return out


def cluster_body(name: str, nodes: int) -> Obj:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": CLUSTER_NAMESPACE},
            "spec": {"packageVersion": DEFAULT_CPV, "simulation": {"nodes": nodes}}}


def mpvs() -> list[Obj]:
    """A node stack: container runtime, two kubelet versions, a kernel patch and a sysctl profile."""
    def kubelet(version: str) -> Obj:
        return {"metadata": {"name": f"kubelet-{version}"}, "spec": {
            "component": "kubelet", "version": version, "dependsOn": ["containerd"],
            "package": {"type": "deb", "name": "kubelet", "version": f"{version.lstrip('v')}-1.1"},
            "install": {"method": "package", "packageManager": "apt"},
            "config": {"files": [{"path": "/etc/default/kubelet",
                                  "content": "KUBELET_EXTRA_ARGS=--max-pods=110\n"}]},
            "healthCheck": {"type": "systemd", "unit": "kubelet.service"}}}

    items: list[Obj] = [
        {"metadata": {"name": "containerd-1.7"}, "spec": {
            "component": "containerd", "version": "1.7.22",
            "package": {"type": "deb", "name": "containerd.io", "version": "1.7.22-1"},
            "install": {"method": "package", "packageManager": "apt"},
            "config": {"files": [{"path": "/etc/containerd/config.toml", "content": "version = 2\n"}]},
            "healthCheck": {"type": "systemd", "unit": "containerd.service"}}},
        kubelet("v1.36.2"),
        kubelet("v1.37.0"),
        {"metadata": {"name": "kernel-patch-2026-11"}, "spec": {
            "component": "kernel-patch", "version": "2026-11",
            "package": {"type": "binary", "name": "livepatch-2026-11", "version": "2026-11"},
            "install": {"method": "script", "script": "kpatch load /var/lib/kpatch/livepatch-2026-11.ko",
                        "versionProbe": "kpatch list | grep -q livepatch-2026-11 && echo 2026-11"}}},
        {"metadata": {"name": "sysctl-default"}, "spec": {
            "component": "sysctl", "version": "v1", "package": {"type": "none"}, "install": {"method": "config"},
            "config": {"sysctl": {"net.ipv4.ip_forward": "1", "vm.max_map_count": "262144"}}}},
    ]
    for m in items:
        m.update({"apiVersion": "kokpit.io/v1alpha1", "kind": "MachinePackageVersion"})
    return items


def machine_bodies(nodes: int) -> list[Obj]:
    """One Machine per simulated node (the simulator names them ``sim-00001``...)."""
    return [{"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": n},
             "spec": {"nodeName": n, "packages": list(MACHINE_PACKAGES),
                      "readinessGates": [{"conditionType": LOG_GATE}]}}
            for n in node_names(NODE_PREFIX, nodes)]


def _template(app: str, image: str, cpu: str, memory: str) -> Obj:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{
        "name": app, "image": image, "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}


def workload_bodies() -> list[Obj]:
    """A small realistic workload per business cluster, so drains, faults and rollouts visibly move pods:
    two Deployments (one behind a PodDisruptionBudget), a StatefulSet, and the log-collection DaemonSet in
    kube-system whose readiness gates every node's scheduling (``kokpit.io/readiness-condition``)."""
    ns = WORKLOAD_NAMESPACE
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "log-collector", "namespace": "kube-system",
                      "annotations": {"kokpit.io/readiness-condition": LOG_GATE}},
         "spec": {"selector": {"matchLabels": {"app": "log-collector"}},
                  "template": _template("log-collector", "fluent/fluent-bit:3.1", "50m", "64Mi")}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
         "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                  "template": _template("web", "nginx:1.27", "100m", "128Mi")}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": ns},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                  "template": _template("api", "ghcr.io/example/api:2.4", "250m", "256Mi")}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "api", "namespace": ns},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
         "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": _template("db", "postgres:17", "500m", "1Gi")}},
    ]
