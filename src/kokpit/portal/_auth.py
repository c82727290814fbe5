"""Who the user is, and a client that calls the API server *as* them.

Login takes a bearer token (the ``token`` of any kubeconfig of the fleet, a ServiceAccount token, the
viewer's token).  The portal does not decide whether it is good: it asks the API server who the token
belongs to (``SelfSubjectReview``, what ``kubectl auth whoami`` does).  A 401 — wrong, expired or revoked —
refuses the login with one message that does not say which.

Every change a user makes goes to the API server with *their* token, so RBAC decides: a viewer sees the
pages and every change is refused by the server's 403, shown as its message.  Reads that pages need at
fleet scale come from the portal's own watch-fed cache (one watch per kind, not one list per user per
page); whether a user may see them at all is the API server's answer to a ``SelfSubjectAccessReview`` made
with the user's token, cached briefly per token.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import User

from kokpit.client import ApiError, Client, TransportError
from kokpit.portal._kinds import SELF_SUBJECT_REVIEW, SSAR

__all__ = ["LoginRefused", "UserClients", "Whoami", "readable"]

_IDLE_SECONDS = 600.0
_SSAR_SECONDS = 10.0


class LoginRefused(Exception):
    """The API server did not accept the credentials (the message never says which part was wrong)."""


@dataclass(frozen=True)
class Whoami:
    user: str
    groups: list[str]


def readable(e: Exception) -> str:
    """One line a person can act on, from an API error (the server's own message for 403/422)."""
    if isinstance(e, ApiError):
        if e.code == 401:
            return "your session is no longer accepted by the API server: log in again"
        return e.message
    if isinstance(e, TransportError | OSError):
        return f"the meta API server is not answering ({e})"
    return str(e)


class UserClients:
    """One :class:`Client` per logged-in token (keyed by its hash), closed after ten idle minutes."""

    def __init__(self, base: SingleConfig, *, field_manager: str = "kokpit-portal") -> None:
        self.base = base
        self.field_manager = field_manager
        self._clients: dict[str, tuple[Client, float]] = {}
        self._allowed: dict[tuple[str, str, str, str, str], tuple[bool, float]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def client(self, token: str) -> Client:
        key = self._key(token)
        now = time.monotonic()
        got = self._clients.get(key)
        if got is None:
            conf = self.base._replace(user=User(token=token))
            c = Client(conf, field_manager=self.field_manager, max_retries=1, timeout=15.0, lean_connections=4)
            self._clients[key] = (c, now)
            return c
        self._clients[key] = (got[0], now)
        return got[0]

    async def sweep(self) -> None:
        """Close clients idle for ten minutes (called periodically)."""
        now = time.monotonic()
        for key, (c, used) in list(self._clients.items()):
            if now - used > _IDLE_SECONDS:
                self._clients.pop(key, None)
                await c.close()
        self._allowed = {k: v for k, v in self._allowed.items() if now - v[1] < _SSAR_SECONDS}

    async def close(self) -> None:
        clients = [c for c, _ in self._clients.values()]
        self._clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def whoami(self, token: str) -> Whoami:
        """The API server's answer to "who is this token"; LoginRefused for any 401/403."""
        if not token or len(token) > 8192 or any(ch in token for ch in "\r\n "):
            raise LoginRefused("login refused: the API server did not accept these credentials")
        c = self.client(token)
        try:
            out = await c.create(SELF_SUBJECT_REVIEW, {"apiVersion": "authentication.k8s.io/v1",
                                                        "kind": "SelfSubjectReview"})
        except ApiError as e:
            self._clients.pop(self._key(token), None)
            await c.close()
            if e.code in (401, 403):
                raise LoginRefused("login refused: the API server did not accept these credentials") from None
            raise
        info = ((out.get("status") or {}).get("userInfo")) or {}
        return Whoami(user=str(info.get("username") or "?"), groups=[str(g) for g in info.get("groups") or []])

    async def allowed(self, token: str, verb: str, resource: str, group: str = "kokpit.io",
                      namespace: str = "") -> bool:
        """``kubectl auth can-i`` as the user (SelfSubjectAccessReview), cached for ten seconds."""
        key = (self._key(token), verb, resource, group, namespace)
        now = time.monotonic()
        hit = self._allowed.get(key)
        if hit is not None and now - hit[1] < _SSAR_SECONDS:
            return hit[0]
        attrs = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        out = await self.client(token).create(SSAR, {"apiVersion": "authorization.k8s.io/v1",
                                                     "kind": "SelfSubjectAccessReview",
                                                     "spec": {"resourceAttributes": attrs}})
        ok = bool((out.get("status") or {}).get("allowed"))
        self._allowed[key] = (ok, now)
        return ok
