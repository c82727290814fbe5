"""The controlled change process in the portal: plan → approve (a second person) → execute → close.

Creating a request is done with the author's token (RBAC ``create changerequests``); the portal then writes
what only it may write — the author as the API server named them, the plan, how many approvals the change
policy asks for.  Approving is checked three ways: the approver is not the author, the API server says the
approver may ``approve`` changerequests in that namespace (a SelfSubjectAccessReview with their token), and
the request is still open.  The last approval executes the change with the approver's token (meta-cluster
changes) or hands it to the engine (batched Machine changes).  Pause, resume and abort are patches of the
request's spec with the user's own token.  Every attempt is an AuditRecord.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kokpit.api.change import APPROVE_VERB, ChangeOperation
from kokpit.client import CONFIGMAP, AlreadyExistsError, ApiError, Client, ConflictError, NotFoundError
from kokpit.portal import _svg
from kokpit.portal._app import Portal, json_response
from kokpit.portal._asrollout import (
    CHANGE_LABEL_PREFIX,
    as_rollout,
    label_targets,
    rollout_of,
    runs_as_rollout,
)
from kokpit.portal._engine import CHANGE, ChangeEngine, close, cond, now_iso, phase, set_cond
from kokpit.portal._kinds import CLUSTER, ROLLOUT
from kokpit.portal._plan import BadChange, approvals_required, plan, restart_patch, upgraded_from, validate
from kokpit.portal._rollouts import rollout_row
from kokpit.portal._web import Caller, security_headers, status_doc

__all__ = ["POLICY_CONFIGMAP", "ChangeService", "namespace_of", "parse_change", "register"]

Obj = dict[str, Any]
POLICY_CONFIGMAP = ("kokpit-system", "kokpit-change-policy")  # data: <operation>: <approvals needed>
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def parse_change(data: Any) -> Obj:
    """A ChangeRequest spec (plus namespace) from a form or JSON body; BadChange names a malformed field."""
    def text(key: str, limit: int = 253) -> str:
        v = data.get(key)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise BadChange(f"spec.{key}", f"{key} must be a string")
        if len(v) > limit:
            raise BadChange(f"spec.{key}", f"{key} is longer than {limit} characters")
        return v.strip()

    raw_targets = data.get("targets")
    if isinstance(raw_targets, list):
        if not all(isinstance(t, str) for t in raw_targets):
            raise BadChange("spec.targets", "targets must be a list of Machine (or Cluster) names")
        targets = [t.strip() for t in raw_targets if t.strip()]
    elif isinstance(raw_targets, str):
        targets = [t for t in re.split(r"[\s,]+", raw_targets) if t]
    elif raw_targets is None:
        targets = []
    else:
        raise BadChange("spec.targets", "targets must be a list of Machine (or Cluster) names")
    for t in targets:
        if not _NAME.match(t) or len(t) > 253:
            raise BadChange("spec.targets", f"{t[:80]!r} is not a Machine or Cluster name")
    nodes_raw = data.get("nodes")
    try:
        nodes = int(nodes_raw) if nodes_raw not in (None, "") else 0
    except (TypeError, ValueError):
        raise BadChange("spec.nodes", "nodes must be a whole number") from None
    if not 0 <= nodes <= 100000:
        raise BadChange("spec.nodes", "nodes must be between 0 and 100000")
    op = text("operation", 64)
    if op not in {o.value for o in ChangeOperation}:
        raise BadChange("spec.operation", f"operation must be one of {', '.join(o.value for o in ChangeOperation)}")
    spec: Obj = {"operation": op, "cluster": text("cluster", 63), "targets": targets,
                 "component": text("component", 63), "version": text("version"), "nodes": nodes,
                 "reason": text("reason", 1024)}
    if spec["cluster"] and not _NAME.match(spec["cluster"]):
        raise BadChange("spec.cluster", f"{spec['cluster']!r} is not a Cluster name")
    return {"namespace": namespace_of(data), "spec": {k: v for k, v in spec.items() if v or k == "operation"}}


def namespace_of(data: Any) -> str:
    """The request's namespace (ChangeRequests, like the Clusters and Rollouts they touch, are namespaced):
    the ``namespace`` field, else the one a form's ``cluster`` is written with (``NAMESPACE/NAME``), else
    ``default`` as kubectl's; a DNS label, and the two spellings must agree (BadChange names ``namespace``)."""
    raw = data.get("namespace")
    if raw is not None and not isinstance(raw, str):
        raise BadChange("namespace", "namespace must be a string")
    given = (raw or "").strip()
    written = str(data.get("cluster") or "").partition("/")[0].strip() if "/" in str(data.get("cluster") or "") \
        else ""
    if given and written and given != written:
        raise BadChange("namespace", f"namespace is {given[:63]!r} but the cluster is written "
                        f"{str(data.get('cluster'))[:130]!r}: make them agree, or write the cluster's name alone")
    ns = given or written or "default"
    if len(ns) > 63 or not _NAME.match(ns):
        raise BadChange("namespace", f"{ns[:80]!r} is not a namespace name (lowercase letters, digits and '-', "
                        "at most 63 characters, starting and ending with a letter or digit)")
    return ns


class ChangeService:
    """Create, approve, reject, pause, resume and abort — shared by the pages, /api/v1 and the adapter."""

    def __init__(self, portal: Portal, engine: ChangeEngine) -> None:
        self.portal = portal
        self.engine = engine

    @property
    def own(self) -> Client:
        return self.engine.client

    async def _policy(self) -> dict[str, str]:
        try:
            cm = await self.own.get(CONFIGMAP, POLICY_CONFIGMAP[1], POLICY_CONFIGMAP[0])
        except ApiError:
            return {}
        return {str(k): str(v) for k, v in (cm.get("data") or {}).items()}

    def check(self, namespace: str, spec: Obj) -> None:
        cache = self.portal.cache
        cluster = cache.get("Cluster", str(spec.get("cluster") or ""), namespace)
        bc = cache.cluster_cache(namespace, str(spec.get("cluster") or ""))
        machines = mpvs = None
        if bc is not None and bc.synced:
            machines = {str(m["metadata"]["name"]): m for m in bc.machines.store.list()}
            mpvs = {str(m["metadata"]["name"]): m for m in bc.mpvs.store.list()}
        cpvs = {str(c["metadata"]["name"]) for c in cache.objects("ClusterPackageVersion")}
        clusters = {str(c["metadata"]["name"]): c for c in cache.objects("Cluster")
                    if c["metadata"].get("namespace") == namespace} if spec.get("targets") else None
        release = cache.get("ClusterPackageVersion", str(((cluster or {}).get("spec") or {}).get("packageVersion")))
        components = {str(c.get("name")) for c in (release.get("spec") or {}).get("components") or []} \
            if release is not None else None
        validate(spec, cluster=cluster, cpvs=cpvs, machines=machines, mpvs=mpvs, clusters=clusters,
                 components=components)

    async def create(self, caller: Caller, namespace: str, spec: Obj, *, via: str = "portal") -> Obj:
        """Validate, create as the author, then record author, plan and approvals needed (portal identity);
        a change that needs no approval is executed at once as the author."""
        self.check(namespace, spec)
        name = f"{spec['operation']}-{spec.get('cluster') or 'fleet'}-{secrets.token_hex(3)}"[:63]
        body = {"apiVersion": "kokpit.io/v1alpha1", "kind": "ChangeRequest",
                "metadata": {"name": name, "namespace": namespace, "labels": {"kokpit.io/via": via}},
                "spec": spec}
        made = await self.portal.web.users.client(caller.token).create(CHANGE, body, namespace)
        bc = self.portal.cache.cluster_cache(namespace, str(spec.get("cluster") or ""))
        nodes = bc.counts().total if bc is not None and bc.synced else 0
        required = approvals_required(spec["operation"], await self._policy())
        st: Obj = {"author": caller.user, "approvalsRequired": required, "approvals": [], "objects": [],
                   "plan": plan(spec, namespace=namespace, policies=self.portal.cache.objects("RiskPolicy"),
                                nodes_in_cluster=nodes),
                   "history": [{"time": now_iso(), "user": caller.user, "action": "planned",
                                "message": spec.get("reason") or ""}]}
        set_cond(st, "Planned", "True", "Planned", st["plan"]["summary"])
        if required == 0:
            await self._execute(caller, namespace, name, spec, st, str(made["metadata"].get("creationTimestamp")))
        else:
            set_cond(st, "Approved", "False", "AwaitingApproval", f"{required} approval(s) by someone other than "
                     f"{caller.user}")
        st["phase"] = phase(st)
        out = await self.own.patch_status(CHANGE, name, {"status": st}, namespace)
        self.engine.kick()
        return out

    async def _execute(self, caller: Caller, namespace: str, name: str, spec: Obj, st: Obj, created: str) -> None:
        """Make the change (meta-cluster parts with ``caller``'s token) and mark the request Executing;
        ``created``: the request's creationTimestamp (when a restart was asked)."""
        c = self.portal.web.users.client(caller.token)
        op, cluster = spec["operation"], str(spec.get("cluster") or "")
        if runs_as_rollout(spec):
            await self._as_rollout(c, namespace, name, spec, st)
        elif op == ChangeOperation.CONTROL_PLANE_RELEASE:
            await c.patch(CLUSTER, cluster, {"spec": {"packageVersion": spec["version"]}}, namespace)
            st.setdefault("objects", []).append({"kind": "Cluster", "name": cluster, "namespace": namespace,
                                                 "verb": "patch"})
        elif op == ChangeOperation.CONTROL_PLANE_RESTART:
            patch = restart_patch(str(spec.get("component")), str(created))
            await c.patch(CLUSTER, cluster, patch, namespace)
            st.setdefault("objects", []).append({"kind": "Cluster", "name": cluster, "namespace": namespace,
                                                 "verb": "patch", "patch": orjson.dumps(patch).decode()})
        elif op == ChangeOperation.CLUSTER_CREATE:
            await c.create(CLUSTER, {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster",
                                     "metadata": {"name": cluster, "namespace": namespace},
                                     "spec": {"packageVersion": spec["version"],
                                              "simulation": {"nodes": int(spec.get("nodes") or 0)}}}, namespace)
            st.setdefault("objects", []).append({"kind": "Cluster", "name": cluster, "namespace": namespace,
                                                 "verb": "create"})
        set_cond(st, "Approved", "True", "Approved" if st.get("approvals") else "NoApprovalRequired")
        set_cond(st, "Executing", "True", "Executing", "changes made; watching the targets")
        st.setdefault("history", []).append({"time": now_iso(), "user": caller.user, "action": "executing",
                                             "message": (st.get("plan") or {}).get("summary", "")})

    async def _as_rollout(self, c: Client, namespace: str, name: str, spec: Obj, st: Obj) -> None:
        """Label the target Machines (the portal's access to their cluster), then create the Rollout with
        ``c`` — the approver's token, so their RBAC decides whether they may start a rollout."""
        replaces = ""
        if spec["operation"] == ChangeOperation.COMPONENT_UPGRADE:
            bc = self.portal.cache.cluster_cache(namespace, str(spec.get("cluster") or ""))
            if bc is None:
                raise BadChange("spec.cluster", f"the API server of Cluster {spec.get('cluster')} is not readable")
            machines = {str(m["metadata"]["name"]): m for m in bc.machines.store.list()}
            mpvs = {str(m["metadata"]["name"]): m for m in bc.mpvs.store.list()}
            olds = upgraded_from(spec, machines, mpvs)
            replaces = next(iter(olds)) if len(olds) == 1 else ""
            await label_targets(bc.client, name, list(spec.get("targets") or []))
            st.setdefault("history", []).append({
                "time": now_iso(), "user": "kokpit-portal", "action": "labelled",
                "message": f"{len(spec.get('targets') or [])} Machine(s) of {spec.get('cluster')}: "
                           f"{CHANGE_LABEL_PREFIX}{name}=true"})
        try:
            await c.create(ROLLOUT, as_rollout(namespace, name, spec, st, str(st.get("author") or ""),
                                               replaces=replaces), namespace)
        except AlreadyExistsError:
            pass  # made by an earlier attempt of this approval
        st.setdefault("objects", []).append({"kind": "Rollout", "name": name, "namespace": namespace,
                                             "verb": "create"})

    async def _fresh(self, namespace: str, name: str) -> Obj:
        return await self.own.get(CHANGE, name, namespace)

    async def approve(self, caller: Caller, namespace: str, name: str, comment: str = "") -> Obj:
        for _ in range(3):
            cr = await self._fresh(namespace, name)
            st: Obj = dict(cr.get("status") or {})
            if cond(cr, "Closed"):
                raise BadChange("status", f"change {name} is closed ({st.get('outcome')})")
            if cond(cr, "Executing"):
                raise BadChange("status", f"change {name} is already approved and executing")
            if not st.get("author"):
                raise BadChange("status.author", "this change was not created through the portal (no recorded "
                                "author), so no one can tell the author apart from the approver")
            if caller.user == st.get("author"):
                raise PermissionError(f"{caller.user} wrote change {name}: the author cannot approve their own "
                                      "change; ask someone else")
            if any(a.get("user") == caller.user for a in st.get("approvals") or []):
                raise BadChange("status.approvals", f"{caller.user} already approved change {name}")
            if not await self.portal.web.users.allowed(caller.token, APPROVE_VERB, "changerequests",
                                                       namespace=namespace):
                raise PermissionError(f"the API server does not allow {caller.user} to approve changerequests in "
                                      f"namespace {namespace}")
            st.setdefault("approvals", []).append({"time": now_iso(), "user": caller.user, "action": "approved",
                                                   "message": comment[:1024]})
            st.setdefault("history", []).append({"time": now_iso(), "user": caller.user, "action": "approved",
                                                 "message": comment[:1024]})
            if len(st["approvals"]) >= int(st.get("approvalsRequired") or 0):
                await self._execute(caller, namespace, name, cr.get("spec") or {}, st,
                                    str(cr["metadata"].get("creationTimestamp")))
            st["phase"] = phase(st)
            try:
                out = await self.own.patch_status(CHANGE, name, {"metadata": {"resourceVersion": cr["metadata"][
                    "resourceVersion"]}, "status": st}, namespace)
            except ConflictError:
                continue
            self.engine.kick()
            return out
        raise BadChange("status", f"change {name} kept changing while being approved; try again")

    async def reject(self, caller: Caller, namespace: str, name: str, comment: str = "") -> Obj:
        cr = await self._fresh(namespace, name)
        if cond(cr, "Closed") or cond(cr, "Executing"):
            raise BadChange("status", f"change {name} can no longer be rejected (it is executing or closed)")
        if caller.user != (cr.get("status") or {}).get("author") and not await self.portal.web.users.allowed(
                caller.token, APPROVE_VERB, "changerequests", namespace=namespace):
            raise PermissionError(f"the API server does not allow {caller.user} to approve (or reject) "
                                  f"changerequests in namespace {namespace}")
        st = dict(cr.get("status") or {})
        close(st, "Rejected", comment or f"rejected by {caller.user}", caller.user)
        return await self.own.patch_status(CHANGE, name, {"status": st}, namespace)

    async def set_flag(self, caller: Caller, namespace: str, name: str, flag: str, value: bool) -> Obj:
        """Pause, resume, abort or undo: a patch of the request's spec with the caller's own token (RBAC
        decides) — and of its Rollout's spec first, when it runs as one (``undo`` only exists there)."""
        user = self.portal.web.users.client(caller.token)
        cr = await self._fresh(namespace, name)
        ref = rollout_of(cr.get("status") or {})
        if ref is not None:
            patch = {"paused": {"paused": value}, "cancel": {"abort": value}, "undo": {"undo": value}}[flag]
            await user.patch(ROLLOUT, ref[1], {"spec": patch}, ref[0] or namespace)
        elif flag == "undo":
            raise BadChange("status", f"change {name} did not run as a Rollout: there is nothing to undo; plan "
                            "the change back instead")
        out = await user.patch(CHANGE, name, {"spec": {flag: value}}, namespace) if flag != "undo" else cr
        what = {"paused": "paused" if value else "resumed", "cancel": "aborted", "undo": "undo"}[flag]
        try:
            await self.own.patch_status(CHANGE, name, {"status": {"history": [
                *((out.get("status") or {}).get("history") or []),
                {"time": now_iso(), "user": caller.user, "action": what, "message": ""}]}}, namespace)
        except NotFoundError:
            pass
        self.engine.kick()
        return out


def change_row(cr: Obj) -> Obj:
    meta, spec, st = cr.get("metadata") or {}, cr.get("spec") or {}, cr.get("status") or {}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "created": meta.get("creationTimestamp"),
            "operation": spec.get("operation"), "author": st.get("author") or "",
            "cluster": spec.get("cluster") or ", ".join((spec.get("targets") or [])[:3]),
            "phase": st.get("phase") or phase(st), "progress": st.get("progress") or "", "done": st.get("done", 0),
            "total": st.get("total", 0), "outcome": st.get("outcome") or "", "paused": bool(spec.get("paused")),
            "approvals": [a.get("user") for a in st.get("approvals") or []],
            "approvalsRequired": st.get("approvalsRequired", 0), "summary": (st.get("plan") or {}).get("summary", "")}


async def register(portal: Portal) -> None:
    web = portal.web
    portal.cache.add_kind(CHANGE)
    engine = ChangeEngine(portal.cache, portal.auditor.client, lease=portal.lease)
    svc = ChangeService(portal, engine)
    portal.changes = svc
    portal.on_start.append(engine.start)
    portal.on_stop.append(engine.stop)
    web.add_nav(10, "/changes", "Changes")

    def bad(request: Request, caller: Caller, e: BadChange) -> Response:
        request.state.audit.update(outcome="Refused", message=str(e))
        if request.url.path.startswith("/api/"):
            return security_headers(json_response(status_doc(422, str(e), field=e.field), 422))
        return web.error(request, 422, f"{e.field}: {e}", caller)

    async def body(request: Request) -> Any:
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = orjson.loads(await request.body())
            except orjson.JSONDecodeError as e:
                raise BadChange("body", f"malformed JSON: {e}") from None
            if not isinstance(data, dict):
                raise BadChange("body", "the body must be a JSON object")
            return data
        return request.state.form or {}

    async def listing(request: Request, caller: Caller) -> Response:
        rows = sorted((change_row(c) for c in portal.cache.objects("ChangeRequest")),
                      key=lambda r: str(r["created"] or ""), reverse=True)
        if request.url.path.startswith("/api/"):
            return json_response({"changes": rows})
        for r in rows:
            r["bar"] = _svg.progress([("done", r["done"], "#35a35a"),
                                      ("left", max(0, r["total"] - r["done"]), "#dde1ea")], width=160, height=12)
        return web.render(request, "changes.html", {"title": "Changes", "rows": rows, "watch": "ChangeRequest/"},
                          caller=caller)

    async def new(request: Request, caller: Caller) -> Response:
        clusters = sorted(f"{c['metadata']['namespace']}/{c['metadata']['name']}" for c in portal.cache.objects("Cluster"))
        namespaces = sorted({c.partition("/")[0] for c in clusters})
        # the default: where the fleet's Clusters live when that is one namespace; else left to the cluster
        # field's NAMESPACE/ prefix (and kubectl's "default" without one)
        default_ns = request.query_params.get("namespace") or (namespaces[0] if len(namespaces) == 1 else "")
        return web.render(request, "change_new.html", {
            "title": "New change", "clusters": clusters, "operations": [o.value for o in ChangeOperation],
            "namespaces": namespaces, "namespace": default_ns,
            "releases": sorted(c["metadata"]["name"] for c in portal.cache.objects("ClusterPackageVersion")),
            "q": dict(request.query_params)}, caller=caller)

    async def create(request: Request, caller: Caller) -> Response:
        try:
            data = await body(request)
            if "/" in str(data.get("cluster") or ""):  # the form's NAMESPACE/NAME
                data = {**dict(data), "namespace": namespace_of(data),
                        "cluster": str(data["cluster"]).partition("/")[2]}
            parsed = parse_change(data)
            request.state.audit.update(target=f"{parsed['namespace']}/{parsed['spec'].get('cluster', '')}",
                                       given=orjson.dumps(parsed["spec"]).decode()[:4096])
            out = await svc.create(caller, parsed["namespace"], parsed["spec"],
                                   via="api" if request.url.path.startswith("/api/") else "portal")
        except BadChange as e:
            return bad(request, caller, e)
        name = out["metadata"]["name"]
        request.state.audit.update(translation=[{"kind": "ChangeRequest", "name": name,
                                                 "namespace": parsed["namespace"], "verb": "create"},
                                                *((out.get("status") or {}).get("objects") or [])])
        if request.url.path.startswith("/api/"):
            return json_response(out, 201)
        return security_headers(RedirectResponse(f"/changes/{parsed['namespace']}/{name}", status_code=303))

    async def detail(request: Request, caller: Caller) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        cr = portal.cache.get("ChangeRequest", name, ns)
        if cr is None:
            try:
                cr = await svc.own.get(CHANGE, name, ns)
            except NotFoundError:
                return web.error(request, 404, f"no ChangeRequest {ns}/{name}", caller)
        if request.url.path.startswith("/api/"):
            return json_response(cr)
        row = change_row(cr)
        bar = _svg.progress([("done", row["done"], "#35a35a"), ("left", max(0, row["total"] - row["done"]),
                                                                "#dde1ea")], width=420, height=18)
        ref = rollout_of(cr.get("status") or {})
        ro = portal.cache.get("Rollout", ref[1], ref[0] or ns) if ref is not None else None
        return web.render(request, "change.html", {"title": f"Change {name}", "cr": cr, "row": row, "bar": bar,
                                                   "rollout": ref, "rollout_row": rollout_row(ro) if ro else None,
                                                   "closed": cond(cr, "Closed"), "executing": cond(cr, "Executing"),
                                                   "watch": f"ChangeRequest/{ns}/{name},Rollout/{ns}/{name}"},
                          caller=caller)

    def action(kind: str) -> Any:
        async def run(request: Request, caller: Caller) -> Response:
            ns, name = request.path_params["ns"], request.path_params["name"]
            request.state.audit.update(target=f"ChangeRequest {ns}/{name}")
            try:
                data = await body(request)
                comment = str(data.get("comment") or "")[:1024]
                if kind == "approve":
                    out = await svc.approve(caller, ns, name, comment)
                    request.state.audit["translation"] = (out.get("status") or {}).get("objects") or []
                elif kind == "reject":
                    out = await svc.reject(caller, ns, name, comment)
                else:
                    flag, value = {"pause": ("paused", True), "resume": ("paused", False),
                                   "abort": ("cancel", True), "undo": ("undo", True)}[kind]
                    out = await svc.set_flag(caller, ns, name, flag, value)
            except BadChange as e:
                return bad(request, caller, e)
            except PermissionError as e:
                request.state.audit.update(outcome="Forbidden" if "does not allow" in str(e) else "Refused",
                                           message=str(e))
                return web.error(request, 403, str(e), caller)
            except NotFoundError:
                return web.error(request, 404, f"no ChangeRequest {ns}/{name}", caller)
            if request.url.path.startswith("/api/"):
                return json_response(out)
            return security_headers(RedirectResponse(f"/changes/{ns}/{name}", status_code=303))
        return run

    read = ("list", "changerequests")
    lst, crt, det = portal.page(listing, read=read), portal.page(create, read=None, audit="changerequest.create"), \
        portal.page(detail, read=read)
    portal.routes += [
        Route("/changes", lst, methods=["GET"]), Route("/changes", crt, methods=["POST"]),
        Route("/api/v1/changes", lst, methods=["GET"]), Route("/api/v1/changes", crt, methods=["POST"]),
        Route("/changes/new", portal.page(new, read=read)),
        Route("/changes/{ns}/{name}", det), Route("/api/v1/changes/{ns}/{name}", det),
    ]
    for kind in ("approve", "reject", "pause", "resume", "abort", "undo"):
        ep = portal.page(action(kind), read=None, audit=f"changerequest.{kind}")
        portal.routes += [Route(f"/changes/{{ns}}/{{name}}/{kind}", ep, methods=["POST"]),
                          Route(f"/api/v1/changes/{{ns}}/{{name}}/{kind}", ep, methods=["POST"])]
