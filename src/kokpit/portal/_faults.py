"""The Faults and flows page: open NodeFaults, MaintenanceFlows by step, and the nodes a person must finish
(ManualRequired), with resolve and retry.

Faults and flows live in the business clusters (the event center's and the maintenance flows' kinds); the
portal reads them from the same per-cluster watches as Machines and Nodes, so the page lists no cluster.

**Resolve / retry** are exactly ``kokpit fault resolve|retry NODE``: a request on the node's open flow
(``spec.request``: a fresh id, the action, the user *as the API server named them* at login, the note, the
time), which the flow controller applies once and records in ``status.humanActions``.  Who may do it is the
meta API server's answer, not the page's: a SelfSubjectAccessReview with the user's own token for ``patch``
``maintenanceflows.kokpit.io`` in the Cluster's namespace (the aggregated ``edit`` role has it, ``view`` does
not), because a person's credentials are the meta cluster's and the business cluster is reached through the
kubeconfig the cluster operator keeps for it.  Every attempt — allowed, refused, failed — is an AuditRecord.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kokpit.portal import _svg
from kokpit.portal._app import Portal, json_response
from kokpit.portal._cache import BusinessCache, FleetCache, flow_open
from kokpit.portal._kinds import FLOW
from kokpit.portal._views import fault_row, flow_row, open_flow
from kokpit.portal._web import Caller, security_headers, status_doc

__all__ = ["faults_view", "register"]

Obj = dict[str, Any]
ROWS = 500  # rows per table (the counts cover everything)
_ACTIONS = {"resolve": "Resolve", "retry": "Retry"}
_SEVERITY = ("Critical", "Major", "Minor", "Warning", "Info")
STEPS = ("Isolate", "Migrate", "Drain", "Repair", "Verify", "Restore")


def _meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _clusters(cache: FleetCache, only: str) -> list[tuple[str, str, BusinessCache]]:
    out = []
    for key, bc in sorted(cache.business.items()):
        if only and key != only:
            continue
        ns, _, name = key.partition("/")
        out.append((ns, name, bc))
    return out


def _hours_ago(ts: str, now: dt.datetime) -> int | None:
    try:
        then = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((now - then).total_seconds() // 3600)


def faults_view(cache: FleetCache, *, cluster: str = "", now: dt.datetime | None = None) -> Obj:
    """Open faults, open flows by step, ManualRequired nodes, and faults opened per hour over the last day
    (from each fault's episodes: ``firstSeen`` of the current one and of those in ``history``)."""
    now = now or dt.datetime.now(dt.UTC)
    faults: list[Obj] = []
    flows: list[Obj] = []
    manual: list[Obj] = []
    by_severity: dict[str, int] = {}
    by_type: dict[str, int] = {}
    by_step: dict[str, int] = {}
    per_hour = [0] * 24
    n_faults = n_flows = 0
    for ns, name, bc in _clusters(cache, cluster):
        for f in bc.faults.store.list():
            st = f.get("status") or {}
            for first in [st.get("firstSeen"), *((h or {}).get("firstSeen") for h in st.get("history") or [])]:
                ago = _hours_ago(str(first or ""), now) if first else None
                if ago is not None and 0 <= ago < 24:
                    per_hour[23 - ago] += 1
            if st.get("state") != "Active":
                continue
            n_faults += 1
            sev = str(st.get("severity") or "Unknown")
            by_severity[sev] = by_severity.get(sev, 0) + 1
            t = str((f.get("spec") or {}).get("type") or "")
            by_type[t] = by_type.get(t, 0) + 1
            if len(faults) < ROWS:
                faults.append(fault_row(ns, name, f))
        for fl in bc.flows.store.list():
            if not flow_open(fl):
                continue
            n_flows += 1
            row = flow_row(ns, name, fl)
            step = "ManualRequired" if row["manual"] else (row["step"] or "Pending")
            by_step[step] = by_step.get(step, 0) + 1
            if row["manual"]:
                manual.append(row)
            elif len(flows) < ROWS:
                flows.append(row)
    rank = {s: i for i, s in enumerate(_SEVERITY)}
    faults.sort(key=lambda r: (rank.get(r["severity"], 9), r["cluster"], r["node"], r["type"]))
    order = {s: i for i, s in enumerate(STEPS)}
    flows.sort(key=lambda r: (order.get(r["step"], 9), r["cluster"], r["node"]))
    manual.sort(key=lambda r: (r["manualSince"], r["cluster"], r["node"]))
    return {"cluster": cluster, "faults": faults, "faultsTotal": n_faults, "flows": flows, "flowsTotal": n_flows,
            "manual": manual[:ROWS], "manualTotal": len(manual), "bySeverity": by_severity, "byType": by_type,
            "byStep": {s: by_step[s] for s in (*STEPS, "Pending", "ManualRequired") if s in by_step},
            "openedPerHour": per_hour,
            "clusters": sorted(cache.business)}


async def register(portal: Portal) -> None:
    web, cache = portal.web, portal.cache
    web.add_nav(15, "/faults", "Faults and flows")

    async def page(request: Request, caller: Caller) -> Response:
        only = str(request.query_params.get("cluster") or "")[:300]
        view = faults_view(cache, cluster=only)
        if request.url.path.startswith("/api/"):
            return json_response(view)
        pics = {"steps": _svg.bars("Open flows by step", list(view["byStep"].items())),
                "severity": _svg.bars("Open faults by severity", list(view["bySeverity"].items())),
                "hours": _svg.sparkline("Faults opened per hour, last 24 h", view["openedPerHour"])}
        return web.render(request, "faults.html", {"title": "Faults and flows", "v": view, "pics": pics,
                                                   "watch": "NodeFault@,MaintenanceFlow@"}, caller=caller)

    def refused(request: Request, caller: Caller, code: int, message: str, field: str) -> Response:
        request.state.audit.update(outcome="Refused", message=message)
        if request.url.path.startswith("/api/"):
            return json_response(status_doc(code, message, field=field), code)
        return web.error(request, code, message, caller)

    def act(action: str) -> Any:
        async def run(request: Request, caller: Caller) -> Response:
            ns, cl, node = (request.path_params[k] for k in ("ns", "cluster", "node"))
            request.state.audit.update(target=f"Node {ns}/{cl}/{node}")
            note = ""
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    data = orjson.loads(await request.body() or b"{}")
                except orjson.JSONDecodeError as e:
                    return refused(request, caller, 400, f"malformed JSON: {e}", "body")
                if not isinstance(data, dict) or not isinstance(data.get("note", ""), str):
                    return refused(request, caller, 422, "note must be a string", "note")
                note = data.get("note") or ""
            else:
                note = str((request.state.form or {}).get("note") or "")
            if len(note) > 4096:
                return refused(request, caller, 422, "note is longer than 4096 characters", "note")
            if not await web.users.allowed(caller.token, "patch", "maintenanceflows", namespace=ns):
                request.state.audit.update(outcome="Forbidden")
                return web.error(request, 403, f"the API server does not allow {caller.user} to patch "
                                               f"maintenanceflows in namespace {ns}", caller)
            bc = cache.cluster_cache(ns, cl)
            if bc is None:
                return refused(request, caller, 404, f"the portal does not read Cluster {ns}/{cl} (no such cluster, or "
                                              "its API server is not reachable yet)", "cluster")
            flow = open_flow(bc.flows.store.list(), node)
            if flow is None:
                return refused(request, caller, 404, f"node {node} has no open maintenance flow in Cluster {ns}/{cl}",
                                "node")
            name = str(_meta(flow)["name"])
            rid = uuid.uuid4().hex[:12]
            req = {"id": rid, "action": _ACTIONS[action], "user": caller.user, "note": note.strip(),
                   "requestedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            out = await bc.client.patch(FLOW, name, {"spec": {"request": req}})
            request.state.audit.update(translation=[{"kind": "MaintenanceFlow", "cluster": cl, "name": name,
                                                     "verb": "patch"}], given=orjson.dumps(req).decode())
            if request.url.path.startswith("/api/"):
                return json_response({"flow": name, "cluster": f"{ns}/{cl}", "node": node, "request": req,
                                      "status": out.get("status") or {}}, 202)
            back = "/faults" + (f"?cluster={ns}/{cl}" if request.query_params.get("back") == "cluster" else "")
            return security_headers(RedirectResponse(back, status_code=303))
        return run

    read = ("list", "nodefaults")
    ep = portal.page(page, read=read)
    portal.routes += [Route("/faults", ep), Route("/api/v1/faults", ep)]
    for action in _ACTIONS:
        a = portal.page(act(action), read=None, audit=f"fault.{action}")
        portal.routes += [Route(f"/faults/{{ns}}/{{cluster}}/{{node}}/{action}", a, methods=["POST"]),
                          Route(f"/api/v1/faults/{{ns}}/{{cluster}}/{{node}}/{action}", a, methods=["POST"])]
