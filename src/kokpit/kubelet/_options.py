"""The local kubelet's knobs and the small helpers over API objects its modules share."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit._lib.clock import format_time

__all__ = ["KubeletOptions", "Obj", "meta", "now_text", "pod_key"]

Obj = dict[str, Any]


@dataclass
class KubeletOptions:
    """Knobs; the defaults are kubelet's (backoff 10 s → 5 min, 40 s leases renewed every 10 s).

    ``fake_runtime``: start no processes, report every Pod Running and Ready (or Succeeded for
    run-to-completion Pods) — a kubelet with a fake container runtime, for measuring the cluster operator
    at scale (``kokpit kubelet --fake-runtime``).  Not to be confused with :mod:`kokpit.simulator`, which
    simulates whole fleet hosts (their Nodes, heartbeats, installs and faults) for the machine operator."""

    data_dir: Path
    node_name: str = "local"
    fake_runtime: bool = False
    bind_pending: bool = True
    # kubelet's --address and --node-ip in one: the log endpoint listens here, and the Node's InternalIP, the
    # Pods' hostIP/podIP and the default probe host are this address (never a wildcard)
    address: str = "127.0.0.1"
    log_port: int = 0
    # who may read logs: client certificates signed by this CA (PEM; None: the CA of the kubelet's kubeconfig,
    # the cluster CA that signs the API server's kubelet client certificate, as kubeadm sets --client-ca-file)
    client_ca_pem: bytes | None = None
    lease_duration: int = 40
    lease_renew_interval: float = 10.0
    node_status_interval: float = 60.0
    sync_interval: float = 0.5
    backoff_base: float = 10.0
    backoff_cap: float = 300.0
    backoff_reset: float = 600.0
    orphan_grace: float = 10.0
    python: str = field(default_factory=lambda: sys.executable)
    fake_runtime_workers: int = 16
    bind_workers: int = 4
    metrics_port: int | None = None  # /metrics (HTTPS, bearer token: kokpit._lib.metricsserver); None: off
    metrics_host: str = "127.0.0.1"
    metrics_tokens: list[str] = field(default_factory=list)


def now_text() -> str:
    return format_time(dt.datetime.now(dt.UTC))


def meta(obj: Obj) -> Obj:
    m: Obj = obj.get("metadata") or {}
    return m


def pod_key(pod: Obj) -> str:
    m = meta(pod)
    return f"{m.get('namespace')}/{m.get('name')}"
