"""How the cluster operator asks a business API server whether it serves: ``/readyz`` and ``/version``.

The probe is the one thing the operator learns from outside the meta cluster's API, so it sits behind a
small protocol: :class:`HttpsProber` talks to the endpoint (verifying the cluster's own CA), tests answer
with a fake, and :class:`PodReadinessProber` stands in where nothing serves the endpoint (the simulated
kubelet of the scale benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from kokpit.client import LeanPool, TransportError

__all__ = ["HttpsProber", "PodReadinessProber", "Probe", "Prober"]


@dataclass(frozen=True)
class Probe:
    """What the business API server said: ready, and the gitVersion it reports."""

    ready: bool
    version: str | None = None
    message: str = ""
    serving: str = ""  # the replica that answered (X-Kokpit-Instance), when the server says


class Prober(Protocol):
    async def check(self, endpoint: str, ca_pem: bytes) -> Probe: ...


class HttpsProber:
    """``/readyz`` and ``/version`` over HTTPS, verifying the cluster's own CA (both paths are public)."""

    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        url = urlsplit(endpoint)
        if not url.hostname:
            return Probe(False, None, f"bad endpoint {endpoint!r}")
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
        pool = LeanPool(url.hostname, url.port or 443, ssl_context=ctx, token=None, size=1, timeout=self.timeout)
        try:
            code, body, headers = await pool.request_with_headers("GET", "/readyz")
            serving = headers.get("x-kokpit-instance", "")
            if code != 200:
                return Probe(False, None, f"/readyz answered {code}: {body[:200].decode(errors='replace')}",
                             serving)
            code, body = await pool.request("GET", "/version")
            version = None
            if code == 200:
                with contextlib.suppress(ValueError, AttributeError):
                    version = json.loads(body).get("gitVersion")
            return Probe(True, version, "", serving)
        except (TransportError, ssl.SSLError, OSError) as e:
            return Probe(False, None, f"{endpoint} unreachable: {e}")
        finally:
            await pool.close()


class PodReadinessProber:
    """The simulated-kubelet mode: Pods are marked Ready but no process serves the endpoint, so nothing is
    probed and the API server component counts as healthy exactly when its Pod is Ready (the reconcile
    still requires that).  It says so in the ControlPlaneReady message; never use it with a real kubelet."""

    MESSAGE = "endpoint not probed (simulated kubelet: trusting Pod readiness)"

    async def check(self, endpoint: str, ca_pem: bytes) -> Probe:
        return Probe(True, None, self.MESSAGE)
