"""How a person's tool reaches a business cluster's node driver: its URL and caller credentials, read from
the meta cluster, so ``kokpit simulator fault --cluster NAME`` needs nothing but the fleet's kubeconfig.

The driver authenticates callers by mutual TLS (``kokpit.nodes.mtls``); the cluster operator keeps the
driver's CA and a caller certificate in the Cluster's PKI Secret, next to the API server's.  Reading that
Secret takes the meta cluster's admin credentials, the same ones that can change the Cluster itself.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kokpit._lib import pki
from kokpit.client import POD, SECRET, ApiError, Client, NotFoundError, TransportError
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, COMPONENT_LABEL, SERVICE, Names
from kokpit.operators.cluster import pod_ready as _pod_ready

__all__ = ["AccessError", "DriverAccess", "driver_access"]

_SIMULATOR = "simulator"


class AccessError(Exception):
    """What is missing, in one line a person can act on."""


@dataclass(frozen=True)
class DriverAccess:
    url: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _secret_value(secret: dict[str, Any], key: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    return base64.b64decode(str(raw)) if raw else b""


async def driver_access(meta: Client, cluster: str, namespace: str = "default") -> DriverAccess:
    """The node driver URL of Cluster ``namespace/cluster`` and the credentials to call it."""
    names = Names(namespace, cluster)
    try:
        try:
            await meta.get(CLUSTER, cluster, namespace)
        except NotFoundError:
            raise AccessError(f"no Cluster {namespace}/{cluster}; list them with: kokpit status") from None
        try:
            svc = await meta.get(SERVICE, names.service, namespace)
        except NotFoundError:
            raise AccessError(f"Cluster {namespace}/{cluster} has no Service {names.service} yet (still being "
                              "provisioned); try again in a few seconds") from None
        port = next((p.get("nodePort") for p in (svc.get("spec") or {}).get("ports") or []
                     if p.get("name") == "driver"), None)
        if not port:
            raise AccessError(f"Cluster {namespace}/{cluster} has no node driver (no simulated nodes)")
        pods = (await meta.list(POD, namespace,
                                label_selector=f"{CLUSTER_LABEL}={cluster},{COMPONENT_LABEL}={_SIMULATOR}")).items
        hosts = [str((p.get("status") or {}).get("hostIP") or "")
                 for p in sorted(pods, key=lambda p: not _pod_ready(p))]
        host = next((h for h in hosts if h), "")
        if not host:
            raise AccessError(f"Cluster {namespace}/{cluster}'s simulator is not running yet; try again shortly")
        try:
            secret = await meta.get(SECRET, names.pki_secret, namespace)
        except NotFoundError:
            raise AccessError(f"Cluster {namespace}/{cluster} has no PKI Secret {names.pki_secret} yet") from None
    except (ApiError, TransportError, OSError) as e:
        if isinstance(e, ApiError) and e.code == 403:
            raise AccessError("reading the node driver's credentials needs the meta cluster's admin "
                              f"kubeconfig ({e})") from None
        raise AccessError(f"cannot reach the meta API server ({e}); is kokpit up running?") from None
    ca, cert, key = (_secret_value(secret, k)
                     for k in (pki.DRIVER_CA_CERT, pki.DRIVER_CLIENT_CERT, pki.DRIVER_CLIENT_KEY))
    if not (ca and cert and key):
        raise AccessError(f"Secret {namespace}/{names.pki_secret} holds no node driver credentials yet (the "
                          "cluster operator adds them); try again shortly")
    url_host = f"[{host}]" if ":" in host else host
    return DriverAccess(f"https://{url_host}:{port}", ca, cert, key)
