"""The cluster operator: every business cluster's control plane run as Pods of the meta cluster.

It owns the Pods directly (API server first, one at a time in a release, rolled back on a failed post-check),
their Service and Secrets, and reads the API only through informer caches.  ``kokpit cluster-operator`` runs
:func:`run_operator`.

Where things live, per Cluster ``<ns>/<name>`` (all in the Cluster's own namespace, so ownerReferences are
valid and deleting the Cluster garbage-collects what it owns):

- Pods ``<name>-<component>-<i>`` (labels ``kokpit.io/cluster``, ``kokpit.io/component``,
  ``kokpit.io/package-version``; annotation ``kokpit.io/pod-spec-hash``), host network;
- Service ``<name>-apiserver`` (NodePort: ``https`` = the API server's port, ``driver`` = the simulator's);
- ConfigMaps ``kokpit-nodeport-<port>`` in ``kube-system`` (``--port-namespace``): one record per allocated
  NodePort, saying whose it is; created to allocate, deleted to release;
- Secret ``<name>-pki`` (ca.crt/ca.key/tls.crt/tls.key/tokens.json; mounted into the API server Pod) and
  Secret ``<name>-kubeconfig`` (key ``value``: the business cluster's admin kubeconfig);
- data: the API server's ``--data-dir`` is the host folder ``<data_root>/<ns>/<name>/apiserver`` (a hostPath
  volume; the local kubelet maps it under its data dir), so it outlives every Pod; with
  ``deletionPolicy: Retain`` it and the PKI Secret outlive the Cluster too.
"""

from __future__ import annotations

from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    HASH_ANNOTATION,
    KUBECONFIG_KEY,
    VERSION_LABEL,
    Names,
    PodHealth,
    Wiring,
    component_order,
    desired_pod,
    pod_health,
    pod_ready,
    validate_cpv,
)
from kokpit.operators.cluster._probes import HttpsProber, PodReadinessProber, Probe, Prober
from kokpit.operators.cluster._resources import PORT_LABEL, SERVICE
from kokpit.operators.cluster.operator import CLUSTER, CPV, FINALIZER, ClusterOperator, ClusterReconciler
from kokpit.operators.cluster.run import run_operator

__all__ = [
    "CLUSTER",
    "CLUSTER_LABEL",
    "COMPONENT_LABEL",
    "CPV",
    "FINALIZER",
    "HASH_ANNOTATION",
    "KUBECONFIG_KEY",
    "PORT_LABEL",
    "SERVICE",
    "VERSION_LABEL",
    "ClusterOperator",
    "ClusterReconciler",
    "HttpsProber",
    "Names",
    "OperatorOptions",
    "PodHealth",
    "PodReadinessProber",
    "Probe",
    "Prober",
    "Wiring",
    "component_order",
    "desired_pod",
    "pod_health",
    "pod_ready",
    "run_operator",
    "validate_cpv",
]
