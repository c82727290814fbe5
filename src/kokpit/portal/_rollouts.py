"""The Rollouts pages: list, and one rollout's step timeline, targets by state, analysis results and history,
with the actions people take on a canary wave — pause, resume, promote, abort, undo.

Rollouts are served by the rollout controller (issue 16); the portal reads them as plain objects from a watch
that starts once their CRD exists (an optional kind: the portal does not wait for it), and every action is
a patch of the Rollout's spec with the user's own token, exactly what ``kokpit rollout pause|...`` writes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kokpit.portal import _svg
from kokpit.portal._app import Portal, json_response
from kokpit.portal._kinds import ROLLOUT
from kokpit.portal._web import Caller, security_headers

__all__ = ["ROLLOUT", "register", "rollout_row"]

Obj = dict[str, Any]
_COLOURS = {"Updated": "#35a35a", "Updating": "#2f6fdf", "Pending": "#dde1ea", "Failed": "#c43d3d",
            "RollingBack": "#d08a1e", "RolledBack": "#9b4dca", "Modified": "#777777"}


def rollout_row(r: Obj) -> Obj:
    meta, spec, st = r.get("metadata") or {}, r.get("spec") or {}, r.get("status") or {}
    counts = {str(k): int(v) for k, v in (st.get("counts") or {}).items()}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "created": meta.get("creationTimestamp"),
            "change": st.get("change") or "", "targetKind": st.get("targetKind") or "", "to": st.get("toVersion") or "",
            "step": st.get("currentStep", 0), "steps": len((spec.get("strategy") or {}).get("steps") or []),
            "updated": st.get("updated") or "", "phase": st.get("phase") or "Pending", "counts": counts,
            "paused": bool(spec.get("paused")), "abort": bool(spec.get("abort")), "undo": bool(spec.get("undo")),
            "bar": _svg.progress([(k, counts.get(k, 0), c) for k, c in _COLOURS.items()], width=220, height=12)}


async def register(portal: Portal) -> None:
    web = portal.web
    portal.cache.add_kind(ROLLOUT, optional=True)
    web.add_nav(20, "/rollouts", "Rollouts")

    async def listing(request: Request, caller: Caller) -> Response:
        rows = sorted((rollout_row(r) for r in portal.cache.objects("Rollout")), key=lambda x: str(x["created"]),
                      reverse=True)
        if request.url.path.startswith("/api/"):
            return json_response({"rollouts": [{k: v for k, v in r.items() if k != "bar"} for r in rows]})
        return web.render(request, "rollouts.html", {"title": "Rollouts", "rows": rows, "watch": "Rollout/"},
                          caller=caller)

    async def detail(request: Request, caller: Caller) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        r = portal.cache.get("Rollout", name, ns)
        if r is None:
            return web.error(request, 404, f"no Rollout {ns}/{name}", caller)
        if request.url.path.startswith("/api/"):
            return json_response(r)
        row = rollout_row(r)
        row["bar"] = _svg.progress([(k, row["counts"].get(k, 0), c) for k, c in _COLOURS.items()], width=420,
                                   height=18)
        st = r.get("status") or {}
        by_state: dict[str, list[Obj]] = {}
        for t in st.get("targets") or []:
            by_state.setdefault(str(t.get("state") or "Pending"), []).append(t)
        return web.render(request, "rollout.html", {
            "title": f"Rollout {name}", "r": r, "row": row, "by_state": by_state,
            "steps": (r.get("spec") or {}).get("strategy", {}).get("steps") or [],
            "step_status": {int(s.get("index", -1)): s for s in st.get("steps") or []},
            "watch": f"Rollout/{ns}/{name}"}, caller=caller)

    def action(kind: str) -> Any:
        async def run(request: Request, caller: Caller) -> Response:
            ns, name = request.path_params["ns"], request.path_params["name"]
            request.state.audit.update(target=f"Rollout {ns}/{name}")
            r = portal.cache.get("Rollout", name, ns)
            if kind == "promote":
                patch: Obj = {"promotedStep": int(((r or {}).get("status") or {}).get("currentStep") or 0)}
            else:
                patch = {"pause": {"paused": True}, "resume": {"paused": False}, "abort": {"abort": True},
                         "undo": {"undo": True}}[kind]
            await web.users.client(caller.token).patch(ROLLOUT, name, {"spec": patch}, ns)
            request.state.audit["translation"] = [{"kind": "Rollout", "namespace": ns, "name": name,
                                                   "verb": "patch"}]
            if request.url.path.startswith("/api/"):
                return json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                      "message": f"rollout {ns}/{name}: {kind}"})
            return security_headers(RedirectResponse(f"/rollouts/{ns}/{name}", status_code=303))
        return run

    read = ("list", "rollouts")
    lst, det = portal.page(listing, read=read), portal.page(detail, read=read)
    portal.routes += [Route("/rollouts", lst), Route("/api/v1/rollouts", lst),
                      Route("/rollouts/{ns}/{name}", det), Route("/api/v1/rollouts/{ns}/{name}", det)]
    for kind in ("pause", "resume", "promote", "abort", "undo"):
        ep = portal.page(action(kind), read=None, audit=f"rollout.{kind}")
        portal.routes += [Route(f"/rollouts/{{ns}}/{{name}}/{kind}", ep, methods=["POST"]),
                          Route(f"/api/v1/rollouts/{{ns}}/{{name}}/{kind}", ep, methods=["POST"])]
