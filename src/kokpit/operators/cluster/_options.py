"""The cluster operator's tunables (one place: the CLI, ``kokpit up``, tests and benchmarks set them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kokpit import __version__

__all__ = ["OperatorOptions"]


@dataclass
class OperatorOptions:
    """Tunables; the defaults suit a real meta cluster, tests shorten the timeouts."""

    workers: int = 64  # a reconcile mostly waits on API round trips: 16 capped 3,000 Clusters at ~90/s
    data_root: str = "/var/lib/kokpit/clusters"  # host folder of every business cluster's data
    port_range: tuple[int, int] = (30000, 32767)  # NodePorts of the API servers and node drivers
    # where the NodePort allocations are recorded (one ConfigMap per port, like Kubernetes' IPAddress objects)
    port_namespace: str = "kube-system"
    unhealthy_timeout: float = 30.0  # a Pod not ready this long is replaced
    release_timeout: float = 60.0  # a release step not healthy this long is rolled back
    poll: float = 1.0  # re-check while something is in flight
    resync: float = 15.0  # health re-check of a settled cluster
    retry_base: float = 2.0  # backoff between replacements of a Pod that keeps failing
    retry_cap: float = 120.0
    max_failures: int = 3  # replacements in a row before the Cluster is Degraded
    extra_sans: tuple[str, ...] = ()  # more names/IPs for the business API servers' certificates
    probe_timeout: float = 3.0
    # the simulated-kubelet mode (scale benchmarks): no process serves a business endpoint, so the API server
    # component's health is its Pod's readiness alone (PodReadinessProber) instead of /readyz through it
    trust_pod_readiness: bool = False
    # the kokpit image of the Pods that remove a deleted cluster's data folder on its nodes
    tools_image: str = f"kokpit:{__version__}"
    # ask the risk center before a release replaces a running component (issue 14): (namespace, cluster) ->
    # that Cluster's kokpit.runtime.permit_gate.PermitGate; None: do not ask
    risk: Callable[[str, str], Any] | None = None
