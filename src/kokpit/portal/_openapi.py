"""The OpenAPI 3.1 document of the portal's JSON API (``GET /api/openapi.json``), so scripts can drive the
change process and the adapter without reading the pages.  Every route under ``/api/v1`` is listed here;
``tests/portal/test_openapi.py`` fails when one is missing."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kokpit.api.change import ChangeOperation
from kokpit.portal._adapter import VERBS
from kokpit.portal._app import Portal, json_response
from kokpit.portal._web import Caller

__all__ = ["document", "register"]

Obj = dict[str, Any]
_STATUS = {"$ref": "#/components/schemas/Status"}
_ERRORS = {code: {"description": why, "content": {"application/json": {"schema": _STATUS}}}
           for code, why in (("401", "no session cookie and no valid bearer token"),
                             ("403", "the API server refused (RBAC), the author tried to approve, or the CSRF "
                                     "token of a cookie session is missing"),
                             ("422", "invalid input: details.causes[0].field names what to fix"))}
_NS = {"name": "ns", "in": "path", "required": True, "schema": {"type": "string"}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, *, body: Obj | None = None, params: list[Obj] | None = None, ok: str = "200") -> Obj:
    out: Obj = {"summary": summary, "responses": {ok: {"description": "OK", "content": {
        "application/json": {"schema": {"type": "object"}}}}, **_ERRORS}}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


def document() -> Obj:
    change_input = {"type": "object", "required": ["operation"], "properties": {
        "namespace": {"type": "string", "default": "default", "maxLength": 63,
                      "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      "description": "Where the ChangeRequest (and its Rollout) lives: the Cluster's namespace; "
                                     "a cluster written NAMESPACE/NAME gives it too (the two must agree)"},
        "operation": {"type": "string", "enum": [o.value for o in ChangeOperation]},
        "cluster": {"type": "string"}, "targets": {"type": "array", "items": {"type": "string"}},
        "component": {"type": "string"}, "version": {"type": "string"},
        "nodes": {"type": "integer", "minimum": 0}, "reason": {"type": "string"}}}
    comment = {"type": "object", "properties": {"comment": {"type": "string"}}}
    legacy_fields = {"type": "object", "properties": {
        "cluster": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "string"}},
        "component": {"type": "string"}, "version": {"type": "string"}}}
    paths: Obj = {
        "/api/v1/fleet": {"get": _op("Every Cluster with release, health, node counts, changes in flight "
                                     "(filter q, health=ready|notready, sort, desc, page)", params=[
            {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("q", "health", "sort", "desc", "page")])},
        "/api/v1/clusters/{ns}/{name}": {"get": _op("One Cluster: conditions, control plane, Machines, Events",
                                                    params=[_NS, _NAME])},
        "/api/v1/clusters/{ns}/{name}/machines/{machine}": {"get": _op(
            "One Machine: components, gates with reporters, failures, Events",
            params=[_NS, _NAME, {"name": "machine", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/api/v1/risk": {"get": _op("RiskPolicies with budgets in use vs limits, gates, breakers; permits by state")},
        "/api/v1/risk/pause": {"post": _op("Emergency stop (RiskPolicy kokpit-emergency-stop), as the caller")},
        "/api/v1/risk/resume": {"post": _op("Lift the emergency stop")},
        "/api/v1/risk/reset/{policy}": {"post": _op("Close a policy's tripped breakers", params=[
            {"name": "policy", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/api/v1/audit": {"get": _op("Audit records, newest first (filter user, action)", params=[
            {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("user", "action")])},
        "/api/v1/changes": {"get": _op("Change requests, newest first"),
                            "post": _op("Plan a change (created as the caller; the portal records author, plan "
                                        "and approvals needed)", body=change_input, ok="201")},
        "/api/v1/changes/{ns}/{name}": {"get": _op("One ChangeRequest", params=[_NS, _NAME])},
        "/api/v1/legacy": {"post": _op("A legacy command line, translated into a ChangeRequest", body={
            "type": "object", "required": ["command"], "properties": {"command": {"type": "string"}}}, ok="201")},
    }
    for action, what in (("approve", "Approve (not the author; RBAC verb approve on changerequests)"),
                         ("reject", "Reject"), ("pause", "Hold: no new batch"), ("resume", "Go on"),
                         ("abort", "Abort: nothing more starts; closes Aborted (its Rollout aborts and rolls back)"),
                         ("undo", "Roll every target of the change's Rollout back to its previous version")):
        paths[f"/api/v1/changes/{{ns}}/{{name}}/{action}"] = {"post": _op(what, body=comment, params=[_NS, _NAME])}
    paths["/api/v1/faults"] = {"get": _op("Open NodeFaults, MaintenanceFlows by step, ManualRequired nodes (filter "
                                          "cluster=NAMESPACE/NAME)", params=[
        {"name": "cluster", "in": "query", "schema": {"type": "string"}}])}
    node_params = [_NS, {"name": "cluster", "in": "path", "required": True, "schema": {"type": "string"}},
                   {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}]
    note = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 4096}}}
    for action, what in (("resolve", "A person repaired the node: the flow verifies it and gives it back"),
                         ("retry", "Start automatic repair of the node again from its flow's first repair")):
        paths[f"/api/v1/faults/{{ns}}/{{cluster}}/{{node}}/{action}"] = {"post": _op(
            f"{what} (kokpit fault {action}; needs patch on maintenanceflows in the Cluster's namespace)",
            body=note, params=node_params, ok="202")}
    paths["/api/v1/rollouts"] = {"get": _op("Rollouts (once the Rollout kind is served)")}
    paths["/api/v1/rollouts/{ns}/{name}"] = {"get": _op("One Rollout", params=[_NS, _NAME])}
    for action in ("pause", "resume", "promote", "abort", "undo"):
        paths[f"/api/v1/rollouts/{{ns}}/{{name}}/{action}"] = {"post": _op(f"{action.capitalize()} a rollout (a "
                                                                           "patch of its spec, as the caller)",
                                                                           params=[_NS, _NAME])}
    for verb in VERBS:
        paths[f"/api/v1/legacy/{verb}"] = {"post": _op(f"Legacy {verb.replace('-', ' ')}, translated into a "
                                                       "ChangeRequest", body=legacy_fields, ok="201")}
    return {"openapi": "3.1.0",
            "info": {"title": "kokpit portal API", "version": "v1",
                     "description": "Everything the portal's pages do. Authenticate with Authorization: Bearer "
                                    "<token> (any token of the fleet; the portal acts as you), or a session "
                                    "cookie plus X-CSRF-Token on changes."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                           "schemas": {"Status": {"type": "object", "properties": {
                               "kind": {"const": "Status"}, "code": {"type": "integer"}, "reason": {"type": "string"},
                               "message": {"type": "string"}, "details": {"type": "object"}}}}},
            "security": [{"bearer": []}], "paths": paths}


async def register(portal: Portal) -> None:
    doc = document()

    async def openapi(request: Request, caller: Caller) -> Response:
        return json_response(doc)

    portal.routes.append(Route("/api/openapi.json", portal.page(openapi, read=None)))
