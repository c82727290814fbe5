"""The portal's routes: login, the pages (HTML and the same data as JSON under /api/v1), live updates.

Each page handler is: who is calling → may they read this (the API server's SelfSubjectAccessReview answer,
not a hidden button) → the view from the cache → HTML, or JSON for /api/v1.  Changes go to the API server
with the caller's own token (see :mod:`kokpit.portal._actions`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kokpit.client import ApiError, TransportError
from kokpit.portal import _svg
from kokpit.portal._audit import Auditor
from kokpit.portal._auth import LoginRefused, readable
from kokpit.portal._cache import FleetCache
from kokpit.portal._kinds import EVENT as _EVENT
from kokpit.portal._session import Session
from kokpit.portal._views import FleetQuery, cluster_view, fleet_view, machine_view, risk_view
from kokpit.portal._web import Caller, Web, security_headers, wants_json

__all__ = ["Portal", "build_app", "json_response"]

log = logging.getLogger("kokpit.portal")
Handler = Callable[[Request, Caller], Awaitable[Response]]
LOGIN_CSRF = "kokpit_login_csrf"


class Portal:
    """The running portal: the cache, the web helpers and extra routes other modules add."""

    def __init__(self, cache: FleetCache, web: Web, auditor: Auditor) -> None:
        self.cache = cache
        self.web = web
        self.auditor = auditor
        self.routes: list[Any] = []
        self.openapi_paths: dict[str, Any] = {}
        self.on_start: list[Callable[[], None]] = []  # called once the caches are synced
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.changes: Any = None  # the ChangeService, once registered (the adapter uses it)
        self.lease: Any = None  # LeaderElectionConfig for the change engine (replicas > 1), or None

    def page(self, fn: Handler, *, read: tuple[str, str] | None = ("list", "clusters"),
             audit: str = "") -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: authenticate, check CSRF on changes, check the caller may read what the page shows.

        With ``audit`` (an action name) every attempt is recorded — allowed, refused or failed; the handler
        may put ``target``, ``translation`` and ``message`` into ``request.state.audit``."""

        async def endpoint(request: Request) -> Response:
            started, cpu = time.perf_counter(), time.thread_time()
            resp = await inner(request)
            # the handler's own time (the benchmark's "server time"; browsers show it in their devtools), and
            # the CPU this thread spent meanwhile (what the time would be on an idle machine)
            resp.headers["Server-Timing"] = (f"app;dur={(time.perf_counter() - started) * 1000:.2f}, "
                                             f"cpu;dur={(time.thread_time() - cpu) * 1000:.2f}")
            return resp

        async def inner(request: Request) -> Response:
            caller = await self.web.caller(request)
            if caller is None:
                return self.web.login_redirect(request)
            request.state.audit = {}
            form = None
            if request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
                try:
                    form = await request.form()
                except Exception:
                    return self.web.error(request, 400, "malformed form data", caller)
            if not self.web.csrf_passes(request, caller, form):
                if audit:
                    await self.auditor.record(caller, audit, outcome="Refused", request=request,
                                              target=request.url.path, message="CSRF token missing or wrong")
                return self.web.error(request, 403, "CSRF token missing or wrong: reload the page and try again",
                                      caller)
            try:
                if read is not None and not await self.web.users.allowed(caller.token, read[0], read[1]):
                    return self.web.error(request, 403, f"the API server does not allow {caller.user} to "
                                                        f"{read[0]} {read[1]}", caller)
                request.state.form = form
                resp = await fn(request, caller)
            except (ApiError, TransportError) as e:
                if audit:
                    forbidden = isinstance(e, ApiError) and e.code == 403
                    await self._audit(request, caller, audit, "Forbidden" if forbidden else "Failed", readable(e))
                return self.web.api_error(request, e, caller)
            if audit:
                outcome = "Succeeded" if resp.status_code < 400 else ("Forbidden" if resp.status_code == 403
                                                                       else "Refused")
                await self._audit(request, caller, audit, outcome, "")
            return resp

        return endpoint

    async def _audit(self, request: Request, caller: Caller, action: str, outcome: str, message: str) -> None:
        a = request.state.audit
        await self.auditor.record(caller, a.get("action") or action, outcome=a.get("outcome") or outcome, request=request,
                                  target=a.get("target") or request.url.path,
                                  message=a.get("message") or message, given=a.get("given") or "",
                                  translation=a.get("translation") or (), via=a.get("via") or "")


def json_response(data: Any, status: int = 200) -> Response:
    return security_headers(Response(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                                     media_type="application/json"))


def build_app(portal: Portal) -> Starlette:
    web, cache = portal.web, portal.cache

    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(16)
        resp = web.render(request, "login.html", {"title": "Log in", "login_csrf": token,
                                                   "error": ""})
        resp.set_cookie(LOGIN_CSRF, token, httponly=True, secure=web.secure_cookies, samesite="strict", path="/login")
        return resp

    async def login(request: Request) -> Response:
        try:
            form = await request.form()
        except Exception:
            return web.error(request, 400, "malformed form data")
        given, want = str(form.get("csrf") or ""), request.cookies.get(LOGIN_CSRF) or ""
        if not want or not secrets.compare_digest(given.encode(), want.encode()):
            return web.error(request, 403, "CSRF token missing or wrong: reload the login page")
        token = str(form.get("token") or "").strip()
        try:
            who = await web.users.whoami(token)
        except LoginRefused as e:
            log.info("login refused from %s", request.client.host if request.client else "?")
            resp = web.render(request, "login.html", {"title": "Log in", "login_csrf": want, "error": str(e)},
                              status=401)
            return resp
        except (ApiError, TransportError) as e:
            return web.error(request, 502, readable(e))
        resp = RedirectResponse("/fleet", status_code=303)
        web.login_cookie(resp, Session(user=who.user, groups=who.groups, token=token))
        resp.delete_cookie(LOGIN_CSRF, path="/login")
        await portal.auditor.record(Caller(who.user, who.groups, token, "", "session",
                                           request.client.host if request.client else "?"),
                                    "login", outcome="Succeeded", target="portal")
        return security_headers(resp)

    async def logout(request: Request, caller: Caller) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        web.logout_cookie(resp)
        return security_headers(resp)

    async def root(request: Request) -> Response:
        return RedirectResponse("/fleet", status_code=303)

    async def healthz(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    # ------------------------------------------------------------------ pages
    async def fleet(request: Request, caller: Caller) -> Response:
        view = fleet_view(cache, FleetQuery.parse(request.query_params))
        if wants_json(request):
            return json_response(view)
        pics = {"versions": _svg.bars("Clusters by release", list(view["versions"].items())),
                "kubelets": _svg.bars("Nodes by kubelet version", list(view["kubeletVersions"].items()))}
        return web.render(request, "fleet.html", {"title": "Fleet", "v": view, "pics": pics,
                                                  "watch": "Cluster/,Node@,Permit/,NodeFault@,MaintenanceFlow@,Rollout/"}, caller=caller)

    async def cluster(request: Request, caller: Caller) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        try:
            page = max(1, int(request.query_params.get("page") or 1))
        except ValueError:
            return web.error(request, 400, "page must be a number", caller)
        view = cluster_view(cache, ns, name, q=str(request.query_params.get("q") or "")[:200], page=page)
        if view is None:
            return web.error(request, 404, f"no Cluster {ns}/{name}", caller)
        view["events"] = await _events(request, caller, ns, name)
        if wants_json(request):
            return json_response(view)
        return web.render(request, "cluster.html", {"title": f"Cluster {name}", "v": view,
                                                    "watch": f"Cluster/{ns}/{name},Machine@{name}/,Node@{name}/"},
                          caller=caller)

    async def machine(request: Request, caller: Caller) -> Response:
        ns, c, m = request.path_params["ns"], request.path_params["name"], request.path_params["machine"]
        view = machine_view(cache, ns, c, m)
        if view is None:
            return web.error(request, 404, f"no Machine {m} in Cluster {ns}/{c} (or its API server is not read yet)",
                             caller)
        bc = cache.cluster_cache(ns, c)
        view["events"] = []
        if bc is not None:
            with contextlib.suppress(ApiError, TransportError):
                evs = (await bc.client.list(_EVENT, None, field_selector=f"involvedObject.name={m}", limit=100)).items
                node = view["row"]["node"]
                if node and node != m:
                    evs += (await bc.client.list(_EVENT, None, field_selector=f"involvedObject.name={node}",
                                                 limit=100)).items
                view["events"] = _event_rows(evs)
        if wants_json(request):
            return json_response(view)
        return web.render(request, "machine.html", {"title": f"Machine {m}", "v": view,
                                                    "watch": f"Machine@{c}/{m},Node@{c}/{view['row']['node']},NodeFault@{c}/,MaintenanceFlow@{c}/"},
                          caller=caller)

    async def risk(request: Request, caller: Caller) -> Response:
        view = risk_view(cache)
        if wants_json(request):
            return json_response(view)
        return web.render(request, "risk.html", {"title": "Risk", "v": view, "watch": "RiskPolicy/,Permit/"},
                          caller=caller)

    # ------------------------------------------------------------------ live updates
    async def events(request: Request, caller: Caller) -> Response:
        prefixes = [p for p in str(request.query_params.get("watch") or "").split(",") if p][:20]

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            with cache.hub.subscribe() as sub:
                while not cache.hub.closed:
                    if await request.is_disconnected():
                        return
                    topics = await sub.next(15.0)
                    hits = sorted(t for t in topics if any(t.startswith(p) for p in prefixes)) if prefixes else \
                        sorted(topics)
                    if hits:
                        yield b"event: change\ndata: " + orjson.dumps(hits[:50]) + b"\n\n"
                    elif not topics:
                        yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(request: Request, caller: Caller, ns: str, name: str) -> list[dict[str, Any]]:
        """Recent Events of the Cluster and its control plane (its namespace in the meta cluster), read as the
        caller: one list with a field selector, not a watch per page."""
        try:
            evs = (await web.users.client(caller.token).list(_EVENT, ns, limit=500)).items
        except ApiError as e:
            if e.code == 403:
                return [{"time": "", "type": "", "reason": "Forbidden", "object": "", "message": e.message}]
            raise
        mine = [e for e in evs if str((e.get("involvedObject") or {}).get("name") or "").startswith(name)]
        return _event_rows(mine)[:50]

    routes = [
        Route("/", root), Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", portal.page(logout, read=None), methods=["POST"]),
        Route("/fleet", portal.page(fleet)), Route("/api/v1/fleet", portal.page(fleet)),
        Route("/clusters/{ns}/{name}", portal.page(cluster)),
        Route("/api/v1/clusters/{ns}/{name}", portal.page(cluster)),
        Route("/clusters/{ns}/{name}/machines/{machine}", portal.page(machine)),
        Route("/api/v1/clusters/{ns}/{name}/machines/{machine}", portal.page(machine)),
        Route("/risk", portal.page(risk, read=("list", "riskpolicies"))),
        Route("/api/v1/risk", portal.page(risk, read=("list", "riskpolicies"))),
        Route("/events", portal.page(events, read=None)),
        *portal.routes,
        Mount("/static", app=StaticFiles(directory=web.static_dir), name="static"),
    ]
    return Starlette(routes=routes)


def _event_rows(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def when(e: dict[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
                   or "")

    out = []
    for e in sorted(evs, key=when, reverse=True):
        obj = e.get("involvedObject") or {}
        out.append({"time": when(e), "type": e.get("type") or "", "reason": e.get("reason") or "",
                    "object": f"{str(obj.get('kind') or '').lower()}/{obj.get('name') or ''}",
                    "message": str(e.get("message") or ""), "count": e.get("count") or 1})
    return out

