"""``/metrics`` authorized by the API server the component already talks to, as controller-runtime's
``filters.WithAuthenticationAndAuthorization`` and kube-rbac-proxy do it.

A scraper presents a bearer token; the component asks the API server who that is (TokenReview) and whether
that user may ``get`` the non-resource URL ``/metrics`` (SubjectAccessReview).  So a cluster grants scraping
with RBAC — bind the ``kokpit:metrics-reader`` ClusterRole (or kube's ``system:monitoring``) to Prometheus'
ServiceAccount — and no token Secret has to be made at install.  The component's own identity needs
``create`` on ``tokenreviews`` and ``subjectaccessreviews`` (what kube's ``system:auth-delegator`` grants).

The same review guards other endpoints a component serves to API users: given ``resource`` attributes, the
SubjectAccessReview asks about them instead (the local kubelet's log endpoint asks ``get`` on
``nodes/proxy`` of its Node, as kubelet's ``--authorization-mode=Webhook`` does for ``/containerLogs``).

Answers are cached per token (allowed for two minutes, refused for ten seconds, as kube-rbac-proxy's defaults
are in that order), so a scrape every 15 seconds costs two API calls every two minutes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.client import Client, Kind

__all__ = ["METRICS_PATH", "SUBJECT_ACCESS_REVIEW", "TOKEN_REVIEW", "DelegatedMetricsAuth"]

METRICS_PATH = "/metrics"
TOKEN_REVIEW = Kind("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False)
SUBJECT_ACCESS_REVIEW = Kind("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
                             namespaced=False)
_MAX_CACHED = 1024


class DelegatedMetricsAuth:
    """``await auth(token)`` → 200 (may scrape), 401 (not a token of this cluster) or 403 (not allowed)."""

    def __init__(self, client: Client, *, clock: Clock | None = None, allowed_ttl: float = 120.0,
                 denied_ttl: float = 10.0, resource: dict[str, str] | None = None) -> None:
        self.client = client
        self.resource = resource  # SubjectAccessReview resourceAttributes; None: get on the URL /metrics
        self.clock: Clock = clock or RealClock()
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self._cache: dict[bytes, tuple[int, float]] = {}  # sha256(token) -> (answer, valid until)

    async def __call__(self, token: str) -> int:
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        now = self.clock.now().timestamp()
        got = self._cache.get(key)
        if got is not None and got[1] > now:
            return got[0]
        answer = await self._review(token)
        if len(self._cache) >= _MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (answer, now + (self.allowed_ttl if answer == 200 else self.denied_ttl))
        return answer

    async def _review(self, token: str) -> int:
        review = await self.client.create(TOKEN_REVIEW, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status: dict[str, Any] = review.get("status") or {}
        if not status.get("authenticated"):
            return 401
        user: dict[str, Any] = status.get("user") or {}
        spec: dict[str, Any] = {"user": user.get("username") or "", "groups": user.get("groups") or [],
                                **({"resourceAttributes": dict(self.resource)} if self.resource else
                                   {"nonResourceAttributes": {"path": METRICS_PATH, "verb": "get"}})}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        access = await self.client.create(SUBJECT_ACCESS_REVIEW, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
        return 200 if (access.get("status") or {}).get("allowed") else 403
