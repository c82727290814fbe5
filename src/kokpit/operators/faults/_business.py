"""The business signal: pods on one node failing to start at a high rate while the rest of the cluster is fine.

A node can look healthy to every probe (Ready, Lease fresh, components running) and still fail every pod
it gets: a broken CNI, a full image disk, a runtime that creates no task.  The seed's event center counts
"pod creation success rate"; here the detector reads it per node from the Pods themselves (one slim pod
cache shared in the process): of the pods created on a node within ``window``, how many failed to start
(a container waiting with a start-failure reason, or the pod Failed before running) and how many started.
A node is signalled when it has at least ``min_failures`` failures, its failure ratio is at least
``node_ratio``, and the rest of the cluster's ratio stays below ``cluster_ratio`` — a cluster-wide problem
(a bad image, a registry down) is not one node's fault.  Everything is recomputed from the cache on each
scan, so a restart forgets nothing it needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import parse_time

__all__ = ["START_FAILURE_REASONS", "PodStartRule", "pod_start_failures"]

Obj = dict[str, Any]
START_FAILURE_REASONS = frozenset({
    "CreateContainerError", "CreateContainerConfigError", "RunContainerError", "ContainerCannotRun",
    "StartError", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
    "FailedCreatePodSandBox", "CreatePodSandboxError",
})
"""Waiting (or Failed-pod) reasons that mean "this pod could not start here"."""


@dataclass(frozen=True)
class PodStartRule:
    window: float = 300.0
    min_failures: int = 5
    node_ratio: float = 0.5
    cluster_ratio: float = 0.1


def _outcome(pod: Obj) -> str:
    st = pod.get("status") or {}
    if st.get("started") or st.get("phase") in ("Running", "Succeeded"):
        return "started"
    if any(r in START_FAILURE_REASONS for r in st.get("waiting") or []) or \
            (st.get("phase") == "Failed" and st.get("reason") in START_FAILURE_REASONS):
        return "failed"
    return "pending"


def pod_start_failures(pods: Iterable[Obj], now: dt.datetime, rule: PodStartRule) -> dict[str, str]:
    """node → why it is signalled, for every node that fails to start pods while the rest of the cluster
    does not (pure: slim pods in, a verdict out)."""
    fails: dict[str, int] = {}
    starts: dict[str, int] = {}
    for p in pods:
        node = str((p.get("spec") or {}).get("nodeName") or "")
        created = (p.get("metadata") or {}).get("creationTimestamp")
        if not node or not created:
            continue
        try:
            age = (now - parse_time(str(created))).total_seconds()
        except ValueError:
            continue
        if age > rule.window:
            continue
        out = _outcome(p)
        if out == "failed":
            fails[node] = fails.get(node, 0) + 1
        elif out == "started":
            starts[node] = starts.get(node, 0) + 1
    total_f, total_s = sum(fails.values()), sum(starts.values())
    verdict: dict[str, str] = {}
    for node, f in fails.items():
        s = starts.get(node, 0)
        if f < rule.min_failures or f / (f + s) < rule.node_ratio:
            continue
        rest_f, rest_s = total_f - f, total_s - s
        rest = rest_f / (rest_f + rest_s) if rest_f + rest_s else 0.0
        if rest >= rule.cluster_ratio:
            continue  # the whole cluster struggles: not this node's fault
        verdict[node] = (f"{f} of {f + s} pods created in the last {rule.window:g}s failed to start on this node; "
                         f"the rest of the cluster: {rest:.0%} failed")
    return verdict
