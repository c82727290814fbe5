"""The audit log: one immutable AuditRecord per action a person took through the portal, the JSON API or the
legacy adapter — allowed, refused or failed — with where it came from and what it became.

Records are API objects (they survive every restart and ``kubectl get auditrecords`` lists them), written
with the portal's own identity, which users' roles do not have: a user can neither forge nor erase one.
Writing one must never hide the action's own answer, so a failed write is logged, not raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kokpit.api import AuditRecord
from kokpit.client import ApiError, Client, TransportError
from kokpit.portal._kinds import kind_of
from kokpit.portal._web import Caller

if TYPE_CHECKING:
    from kokpit.portal._app import Portal

__all__ = ["AUDIT", "Auditor"]

log = logging.getLogger("kokpit.audit")
AUDIT = kind_of(AuditRecord)
Obj = dict[str, Any]


def _via(request: Request | None, caller: Caller, via: str) -> str:
    if via:
        return via
    if request is not None and request.url.path.startswith("/api/"):
        return "api"
    return "portal" if caller.via == "session" else "api"


class Auditor:
    """Writes AuditRecords with the portal's identity."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.written = 0

    async def record(self, caller: Caller, action: str, *, outcome: str, target: str = "", message: str = "",
                     request: Request | None = None, given: str = "", translation: Sequence[Obj] = (),
                     via: str = "") -> Obj | None:
        now = dt.datetime.now(dt.UTC)
        body: Obj = {
            "apiVersion": "kokpit.io/v1alpha1", "kind": "AuditRecord",
            "metadata": {"name": f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}",
                         "labels": {"kokpit.io/audit-action": action.replace(".", "-")[:63]}},
            "spec": {"time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "user": caller.user[:512],
                     "groups": caller.groups[:50], "source": caller.address[:256],
                     "via": _via(request, caller, via), "action": action[:256], "target": target[:1024],
                     "request": given[:4096], "translation": [dict(t) for t in translation][:200],
                     "outcome": outcome, "message": message[:4096]}}
        log.info("audit: %s %s %s -> %s %s", caller.user, action, target, outcome, message)
        try:
            out = await self.client.create(AUDIT, body)
            self.written += 1
            return out
        except (ApiError, TransportError, OSError) as e:
            log.error("audit record not written (%s): %s", e, body["spec"])
            return None


def audit_view(records: list[Obj], *, user: str = "", action: str = "", limit: int = 500) -> list[Obj]:
    rows = [r.get("spec") or {} for r in records]
    if user:
        rows = [r for r in rows if user.lower() in str(r.get("user", "")).lower()]
    if action:
        rows = [r for r in rows if action.lower() in str(r.get("action", "")).lower()]
    rows.sort(key=lambda r: str(r.get("time", "")), reverse=True)
    return rows[:limit]


async def register(portal: Portal) -> None:
    """The Audit page and /api/v1/audit (who did what, when, from where, with which outcome)."""
    from kokpit.portal._app import json_response

    portal.cache.add_kind(AUDIT)
    portal.web.add_nav(90, "/audit", "Audit")

    async def audit(request: Request, caller: Caller) -> Response:
        q = request.query_params
        rows = audit_view(portal.cache.objects("AuditRecord"), user=str(q.get("user") or "")[:200],
                          action=str(q.get("action") or "")[:200])
        if request.url.path.startswith("/api/"):
            return json_response({"records": rows})
        return portal.web.render(request, "audit.html", {"title": "Audit", "rows": rows,
                                                         "q": {"user": q.get("user") or "",
                                                               "action": q.get("action") or ""},
                                                         "watch": "AuditRecord/"}, caller=caller)

    ep = portal.page(audit, read=("list", "auditrecords"))
    portal.routes += [Route("/audit", ep), Route("/api/v1/audit", ep)]
