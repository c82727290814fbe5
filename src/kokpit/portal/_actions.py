"""Changes people make from the Risk page: the emergency stop, lifting it, resetting a tripped breaker.

Each is sent to the API server with the caller's own token, so a viewer's attempt is refused there (403) and
that refusal is what the page shows.  The emergency stop is the same object ``kokpit risk pause`` creates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kokpit.api.risk import OperationType
from kokpit.client import AlreadyExistsError, NotFoundError
from kokpit.portal._app import Portal
from kokpit.portal._kinds import RISK_POLICY
from kokpit.portal._web import Caller, security_headers, wants_json

__all__ = ["PAUSE_POLICY", "RESET_ANNOTATION", "register"]

PAUSE_POLICY = "kokpit-emergency-stop"  # the name `kokpit risk pause` uses
RESET_ANNOTATION = "kokpit.io/breakers-reset-at"  # what `kokpit risk reset` writes


def _done(request: Request, what: str, back: str) -> Response:
    if wants_json(request):
        from starlette.responses import JSONResponse

        return security_headers(JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                              "message": what}))
    return security_headers(RedirectResponse(back, status_code=303))


async def register(portal: Portal) -> None:
    users = portal.web.users

    async def pause(request: Request, caller: Caller) -> Response:
        c = users.client(caller.token)
        ops = [o.value for o in OperationType]
        body: dict[str, Any] = {
            "apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
            "metadata": {"name": PAUSE_POLICY, "annotations": {"kokpit.io/reason": f"portal: {caller.user}"}},
            "spec": {"operations": ops, "scope": {"allClusters": True}, "paused": True}}
        request.state.audit.update(target=f"RiskPolicy/{PAUSE_POLICY}", translation=[
            {"kind": "RiskPolicy", "name": PAUSE_POLICY, "verb": "create"}])
        try:
            await c.create(RISK_POLICY, body)
        except AlreadyExistsError:
            await c.patch(RISK_POLICY, PAUSE_POLICY, {"spec": {"paused": True, "operations": ops}})
        return _done(request, "paused: every risky operation is denied", "/risk")

    async def resume(request: Request, caller: Caller) -> Response:
        try:
            await users.client(caller.token).delete(RISK_POLICY, PAUSE_POLICY)
        except NotFoundError:
            pass
        return _done(request, "resumed", "/risk")

    async def reset(request: Request, caller: Caller) -> Response:
        name = request.path_params["policy"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            await users.client(caller.token).patch(RISK_POLICY, name,
                                                   {"metadata": {"annotations": {RESET_ANNOTATION: now}}})
        except NotFoundError:
            return portal.web.error(request, 404, f"no RiskPolicy {name!r}", caller)
        return _done(request, f"breakers of {name} reset at {now}", "/risk")

    for path, fn, action in (("/risk/pause", pause, "risk.pause"), ("/risk/resume", resume, "risk.resume"),
                             ("/risk/reset/{policy}", reset, "risk.reset")):
        ep = portal.page(fn, read=None, audit=action)
        portal.routes += [Route(path, ep, methods=["POST"]), Route("/api/v1" + path, ep, methods=["POST"])]
