"""Where every process of a `kokpit up` fleet serves its Prometheus metrics, and whether it answers.

Every endpoint is HTTPS and takes the bearer tokens of its own cluster (``kokpit._lib.metricsserver``), as
the API servers' ``/metrics`` do: the meta cluster's processes (meta API server, local kubelet, cluster
operator) take the meta API server's tokens (``DATA_DIR/meta/tokens.json``), a business cluster's Pods
(API server, simulator, machine operator) that cluster's (its ``<cluster>-pki`` Secret).

`kokpit up` records the ports it gave its own children in ``DATA_DIR/metrics.json``; business Pods are
found as Kubernetes finds them, by a container port named ``metrics`` on the Pod's host address (the API
server's metrics are on its API port).  ``kokpit status`` lists them all and scrapes each once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kokpit._lib.http1 import TransportError as Http1Error
from kokpit._lib.metricsserver import scrape
from kokpit.client import POD, SECRET, ApiError, Client, TransportError
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, COMPONENT_LABEL

__all__ = ["ENDPOINTS_FILE", "MetricsEndpoint", "check", "endpoints", "record_endpoint", "render"]

ENDPOINTS_FILE = "metrics.json"


@dataclass
class MetricsEndpoint:
    cluster: str  # "meta" or namespace/name
    process: str
    url: str
    token: str = ""
    state: str = ""  # after check: "ok", "HTTP 401", "unreachable: ..."


def record_endpoint(data_dir: Path, process: str, url: str) -> None:
    """Remember where one of `kokpit up`'s own children serves metrics."""
    path = data_dir / ENDPOINTS_FILE
    try:
        cur = json.loads(path.read_text())
    except (OSError, ValueError):
        cur = {}
    cur[process] = url
    path.write_text(json.dumps(cur, indent=1, sort_keys=True) + "\n")


def _meta_token(data_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((data_dir / "meta" / "tokens.json").read_text()).get("readonly") or "")
    return ""


async def endpoints(meta: Client, data_dir: Path, meta_url: str) -> list[MetricsEndpoint]:
    """Every metrics endpoint of the fleet, with the token to read it."""
    token = _meta_token(data_dir)
    out = [MetricsEndpoint("meta", "apiserver", meta_url.rstrip("/") + "/metrics", token)]
    with contextlib.suppress(OSError, ValueError):
        for process, url in sorted(json.loads((data_dir / ENDPOINTS_FILE).read_text()).items()):
            out.append(MetricsEndpoint("meta", str(process), str(url), token))
    try:
        clusters = (await meta.list(CLUSTER)).items
        pods = (await meta.list(POD, label_selector=CLUSTER_LABEL)).items
    except (ApiError, TransportError, OSError):
        return out
    for c in sorted(clusters, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        ns, name = str(c["metadata"].get("namespace")), str(c["metadata"]["name"])
        tok = ""
        with contextlib.suppress(ApiError, TransportError, OSError, ValueError, KeyError):
            secret = await meta.get(SECRET, f"{name}-pki", ns)
            tok = str(json.loads(base64.b64decode(secret["data"]["tokens.json"])).get("readonly") or "")
        endpoint = str((c.get("status") or {}).get("endpoint") or "")
        if endpoint:
            out.append(MetricsEndpoint(f"{ns}/{name}", "kube-apiserver", endpoint.rstrip("/") + "/metrics", tok))
        for p in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
            labels: dict[str, Any] = p["metadata"].get("labels") or {}
            if p["metadata"].get("namespace") != ns or labels.get(CLUSTER_LABEL) != name:
                continue
            host = str((p.get("status") or {}).get("hostIP") or "")
            for ctr in (p.get("spec") or {}).get("containers") or []:
                for port in ctr.get("ports") or []:
                    if port.get("name") == "metrics" and host:
                        h = f"[{host}]" if ":" in host else host
                        out.append(MetricsEndpoint(f"{ns}/{name}", str(labels.get(COMPONENT_LABEL) or ctr["name"]),
                                                   f"https://{h}:{port['containerPort']}/metrics", tok))
    return out


async def check(eps: list[MetricsEndpoint], timeout: float = 3.0) -> None:
    """Scrape each endpoint once with its token; fills ``state``."""
    async def one(ep: MetricsEndpoint) -> None:
        try:
            code, body = await scrape(ep.url, ep.token, timeout=timeout)
        except (Http1Error, OSError, TimeoutError) as e:
            ep.state = f"unreachable ({type(e).__name__})"
            return
        ep.state = "ok" if code == 200 and body else f"HTTP {code}"

    await asyncio.gather(*(one(ep) for ep in eps))


def render(eps: list[MetricsEndpoint]) -> str:
    """The metrics section of ``kokpit status``."""
    lines = ["metrics (HTTPS, bearer token of the cluster; meta: DATA_DIR/meta/tokens.json, business: its "
             "<cluster>-pki Secret):"]
    for ep in eps:
        lines.append(f"  {ep.cluster:<20} {ep.process:<18} {ep.url:<40} {ep.state}")
    return "\n".join(lines)
