"""The HTTP plumbing every portal route shares: who is calling, CSRF, templates, errors, security headers.

Two ways in: a browser session (sealed cookie, :mod:`kokpit.portal._session`) — every unsafe method must then
carry the session's CSRF token — or ``Authorization: Bearer <token>`` from a script, which a browser never
sends on its own, so it needs no CSRF token.  Either way the token is the user's, and the API server decides
what it may do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from kokpit.client import ApiError
from kokpit.portal._auth import LoginRefused, UserClients, readable
from kokpit.portal._session import COOKIE, Session, SessionCodec, csrf_ok

__all__ = ["Caller", "Web", "security_headers"]

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@dataclass
class Caller:
    """The authenticated user of one request."""

    user: str
    groups: list[str]
    token: str
    csrf: str  # "" for bearer callers (no cookie, no CSRF)
    via: str  # "session" or "bearer"
    address: str


class Web:
    """Templates, sessions and the user clients; one per portal."""

    def __init__(self, codec: SessionCodec, users: UserClients, *, secure_cookies: bool) -> None:
        self.codec = codec
        self.users = users
        self.secure_cookies = secure_cookies
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("kokpit.portal", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            trim_blocks=True, lstrip_blocks=True)
        self.env.filters["age"] = _age
        # pages beyond the fleet, in menu order; extensions add theirs (Changes, Faults, Rollouts, Audit)
        self.nav: list[tuple[int, str, str]] = [(40, "/risk", "Risk")]
        self.env.globals["nav"] = [("/risk", "Risk")]
        self._bearer: dict[str, tuple[Caller, float]] = {}  # token -> (who, when): a script's calls in a row
        self.static_dir = str(resources.files("kokpit.portal") / "static")

    def add_nav(self, order: int, href: str, label: str) -> None:
        self.nav.append((order, href, label))
        self.env.globals["nav"] = [(h, label_) for _, h, label_ in sorted(self.nav)]

    # ------------------------------------------------------------------ who
    async def caller(self, request: Request) -> Caller | None:
        address = request.client.host if request.client else "?"
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            hit = self._bearer.get(token)
            if hit is not None and time.monotonic() - hit[1] < 30:
                return Caller(**{**hit[0].__dict__, "address": address})
            try:
                who = await self.users.whoami(token)
            except LoginRefused:
                return None
            c = Caller(user=who.user, groups=who.groups, token=token, csrf="", via="bearer", address=address)
            if len(self._bearer) > 1000:
                self._bearer.clear()
            self._bearer[token] = (c, time.monotonic())
            return c
        s = self.codec.open(request.cookies.get(COOKIE))
        if s is None:
            return None
        return Caller(user=s.user, groups=s.groups, token=s.token, csrf=s.csrf, via="session", address=address)

    def csrf_passes(self, request: Request, caller: Caller, form: Any = None) -> bool:
        """Safe methods and bearer callers pass; a session's unsafe request needs its CSRF token."""
        if request.method not in _UNSAFE or caller.via == "bearer":
            return True
        given = request.headers.get("x-csrf-token") or (form.get("csrf") if form is not None else None)
        return csrf_ok(Session(caller.user, caller.groups, caller.token, caller.csrf), given)

    def login_cookie(self, resp: Response, s: Session) -> None:
        resp.set_cookie(COOKIE, self.codec.seal(s), max_age=int(s.expires - time.time()), httponly=True,
                        secure=self.secure_cookies, samesite="strict", path="/")

    def logout_cookie(self, resp: Response) -> None:
        resp.delete_cookie(COOKIE, path="/", httponly=True, secure=self.secure_cookies, samesite="strict")

    # ------------------------------------------------------------------ answers
    def render(self, request: Request, name: str, ctx: dict[str, Any], *, status: int = 200,
               caller: Caller | None = None) -> Response:
        tmpl = self.env.get_template(name)
        full = {"request_path": request.url.path, "user": caller.user if caller else "",
                "csrf": caller.csrf if caller else "", "watch": "", "message": "", "error": "", **ctx}
        if request.headers.get("x-kokpit-partial") == "1" and "live" in tmpl.blocks:
            html = "".join(tmpl.blocks["live"](tmpl.new_context(full)))
        else:
            html = tmpl.render(full)
        return security_headers(HTMLResponse(html, status_code=status))

    def error(self, request: Request, status: int, message: str, caller: Caller | None = None) -> Response:
        if wants_json(request):
            return security_headers(JSONResponse(status_doc(status, message), status_code=status))
        return self.render(request, "error.html", {"title": f"{status}", "status": status, "error": message},
                           status=status, caller=caller)

    def api_error(self, request: Request, e: Exception, caller: Caller | None = None) -> Response:
        code = e.code if isinstance(e, ApiError) and 400 <= e.code < 600 else 502
        if isinstance(e, ApiError) and e.code == 401:
            resp = self.error(request, 401, readable(e), caller)
            self.logout_cookie(resp)
            return resp
        return self.error(request, code, readable(e), caller)

    def login_redirect(self, request: Request) -> Response:
        if wants_json(request):
            return security_headers(JSONResponse(status_doc(401, "log in: a session cookie or an "
                                                            "Authorization: Bearer token is required"),
                                                 status_code=401, headers={"WWW-Authenticate": "Bearer"}))
        return security_headers(RedirectResponse("/login", status_code=303))


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def status_doc(code: int, message: str, *, field: str = "") -> dict[str, Any]:
    """A Kubernetes-shaped Status, so scripts read portal errors like API server errors."""
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
               422: "Invalid", 502: "ServiceUnavailable"}
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                           "reason": reasons.get(code, "InternalError"), "message": message}
    if field:
        doc["details"] = {"causes": [{"field": field, "message": message}]}
    return doc


def _age(ts: Any) -> Markup | str:
    """'5m' from an RFC 3339 timestamp (for tables)."""
    import datetime as dt

    if not ts:
        return "-"
    try:
        then = dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return str(ts)
    s = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{max(s, 0)}s"
