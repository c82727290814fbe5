"""The adapter: legacy imperative commands turned into declarative changes (the seed's migration adapter).

Old runbooks and tools say "reboot node X", "upgrade kubelet to 1.37.1 on these nodes", "release cluster C to
V".  Each command is resolved against the fleet as the portal sees it (which cluster holds node X, which
MachinePackageVersion is kubelet 1.37.1 there, which ClusterPackageVersion "v1.37.1" means) and becomes a
ChangeRequest — planned, approved where the change policy asks for it, executed through the risk center like
every other change.  The answer and the audit record show the translation.  A command that is ambiguous (a
node name in two clusters, a version two packages carry) or invalid is refused with what to fix; nothing is
guessed.

Two forms: ``POST /api/v1/legacy`` with ``{"command": "reboot node n1 in cluster c1"}`` (one line, as a
runbook has it) and ``POST /api/v1/legacy/<verb>`` with the fields as JSON (what ``kokpit legacy`` sends).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kokpit.api.change import ChangeOperation
from kokpit.portal._app import Portal, json_response
from kokpit.portal._plan import BadChange
from kokpit.portal._web import Caller, status_doc

__all__ = ["VERBS", "parse_command", "register", "translate"]

Obj = dict[str, Any]
VERBS = ("reinstall-node", "reboot-node", "restart-component", "upgrade-component", "restart-control-plane",
         "release-cluster", "create-cluster")
_LIST = re.compile(r"[\s,]+")
GRAMMAR = ("reinstall node N[,N...] [in cluster C] | reboot node N[,N...] [in cluster C] | "
           "restart component COMP on nodes N[,N...] [in cluster C] | "
           "upgrade component COMP to VERSION on nodes N[,N...] [in cluster C] | "
           "restart control-plane component COMP of cluster C | release cluster C[,C...] to VERSION | "
           "create cluster C version VERSION [nodes COUNT]  (any cluster may be written NAMESPACE/NAME)")


def _names(words: list[str]) -> list[str]:
    return [n for n in _LIST.split(" ".join(words)) if n]


def parse_command(line: str) -> Obj:
    """One legacy command line → the verb and its fields (BadChange says what to fix)."""
    try:
        w = shlex.split(line.strip())
    except ValueError as e:
        raise BadChange("command", f"cannot read the command: {e}") from None
    low = [x.lower() for x in w]

    def after(word: str) -> str | None:
        return w[low.index(word) + 1] if word in low and low.index(word) + 1 < len(w) else None

    def cluster() -> str:
        if "cluster" in low:
            return after("cluster") or ""
        return ""

    if low[:2] in (["reinstall", "node"], ["reinstall", "nodes"], ["reboot", "node"], ["reboot", "nodes"]):
        end = low.index("in") if "in" in low else len(w)
        return {"verb": f"{low[0]}-node", "nodes": _names(w[2:end]), "cluster": cluster()}
    if low[:2] == ["upgrade", "component"] and "to" in low and "on" in low:
        i_to, i_on = low.index("to"), low.index("on")
        start = i_on + 2 if i_on + 1 < len(low) and low[i_on + 1] in ("nodes", "node") else i_on + 1
        end = low.index("in") if "in" in low[start:] and low.index("in") > start else len(w)
        return {"verb": "upgrade-component", "component": " ".join(w[2:i_to]), "version": " ".join(w[i_to + 1:i_on]),
                "nodes": _names(w[start:end]), "cluster": cluster()}
    if low[:2] == ["restart", "component"] and "on" in low:
        i_on = low.index("on")
        start = i_on + 2 if i_on + 1 < len(low) and low[i_on + 1] in ("nodes", "node") else i_on + 1
        end = low.index("in") if "in" in low[start:] and low.index("in") > start else len(w)
        return {"verb": "restart-component", "component": " ".join(w[2:i_on]), "nodes": _names(w[start:end]),
                "cluster": cluster()}
    if low[:3] == ["restart", "control-plane", "component"] or low[:2] == ["restart", "control-plane"]:
        comp = w[3] if low[2:3] == ["component"] and len(w) > 3 else (w[2] if len(w) > 2 else "")
        return {"verb": "restart-control-plane", "component": comp, "cluster": cluster()}
    if low[:2] == ["release", "cluster"] and "to" in low:
        return {"verb": "release-cluster", "cluster": w[2] if len(w) > 2 else "", "version": after("to") or ""}
    if low[:2] == ["create", "cluster"]:
        nodes = after("nodes")
        return {"verb": "create-cluster", "cluster": w[2] if len(w) > 2 else "", "version": after("version") or "",
                "nodes": nodes or "0"}
    raise BadChange("command", f"unknown command {line.strip()[:200]!r}; the adapter understands: {GRAMMAR}")


def _split(cluster: str) -> tuple[str, str]:
    ns, _, name = cluster.rpartition("/")
    return ns, name


def translate(portal: Portal, fields: Obj) -> tuple[str, Obj]:
    """Fields of a legacy command → (namespace, ChangeRequest spec), resolving names against the fleet."""
    verb = str(fields.get("verb") or "")
    if verb not in VERBS:
        raise BadChange("verb", f"unknown command {verb!r}; one of {', '.join(VERBS)}")
    cache = portal.cache
    clusters = [(str(c["metadata"]["namespace"]), str(c["metadata"]["name"])) for c in cache.objects("Cluster")]
    ns, name = _split(str(fields.get("cluster") or ""))
    nodes = fields.get("nodes") or []
    if isinstance(nodes, str):
        nodes = _names([nodes])
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise BadChange("nodes", "nodes must be a list of node names")

    def one_cluster(written: str | None = None) -> tuple[str, str]:
        want_ns, want = _split(written) if written is not None else (ns, name)
        matches = [c for c in clusters if c[1] == want and (not want_ns or c[0] == want_ns)]
        if not want:
            raise BadChange("cluster", "say which cluster (cluster C or NAMESPACE/NAME)")
        if not matches:
            raise BadChange("cluster", f"no Cluster {written or fields.get('cluster')!r}; clusters: "
                            + ", ".join(f"{a}/{b}" for a, b in sorted(clusters)[:20]))
        if len(matches) > 1:
            raise BadChange("cluster", f"Cluster {want!r} exists in namespaces "
                            + ", ".join(sorted(m[0] for m in matches)) + ": write NAMESPACE/NAME")
        return matches[0]

    def cluster_of_nodes() -> tuple[str, str]:
        if name:
            return one_cluster()
        if not nodes:
            raise BadChange("nodes", "name at least one node")
        holders = set()
        for cns, cname in clusters:
            bc = cache.cluster_cache(cns, cname)
            if bc is not None and any(bc.machines.store.get_by_name(n) is not None for n in nodes):
                holders.add((cns, cname))
        if not holders:
            raise BadChange("nodes", f"no cluster the portal reads has a Machine {', '.join(nodes[:5])}")
        if len(holders) > 1:
            raise BadChange("cluster", f"{', '.join(nodes[:5])}: found in clusters "
                            + ", ".join(f"{a}/{b}" for a, b in sorted(holders)) + "; say which (in cluster C)")
        return holders.pop()

    if verb in ("reinstall-node", "reboot-node"):
        cns, cname = cluster_of_nodes()
        op = ChangeOperation.NODE_REINSTALL if verb == "reinstall-node" else ChangeOperation.NODE_REBOOT
        return cns, {"operation": op.value, "cluster": cname, "targets": nodes}
    if verb == "restart-component":
        cns, cname = cluster_of_nodes()
        comp = str(fields.get("component") or "")
        if not comp:
            raise BadChange("component", "say which component to restart (kubelet, containerd, ...)")
        return cns, {"operation": ChangeOperation.COMPONENT_RESTART.value, "cluster": cname, "targets": nodes,
                     "component": comp}
    if verb == "upgrade-component":
        cns, cname = cluster_of_nodes()
        comp, version = str(fields.get("component") or ""), str(fields.get("version") or "")
        if not comp or not version:
            raise BadChange("component" if not comp else "version", "say which component and which version")
        bc = cache.cluster_cache(cns, cname)
        mpvs = bc.mpvs.store.list() if bc is not None else []
        if version in {m["metadata"]["name"] for m in mpvs}:
            mpv = version
        else:
            want = version.removeprefix("v")
            hits = sorted(m["metadata"]["name"] for m in mpvs if (m.get("spec") or {}).get("component") == comp
                          and str((m.get("spec") or {}).get("version") or "").removeprefix("v") == want)
            if not hits:
                have = sorted(f"{(m.get('spec') or {}).get('version')} ({m['metadata']['name']})" for m in mpvs
                              if (m.get("spec") or {}).get("component") == comp)
                raise BadChange("version", f"Cluster {cname} has no {comp} {version}; it has: "
                                + (", ".join(have) or "none"))
            if len(hits) > 1:
                raise BadChange("version", f"{comp} {version} is carried by {', '.join(hits)}: name the "
                                "MachinePackageVersion")
            mpv = hits[0]
        return cns, {"operation": ChangeOperation.COMPONENT_UPGRADE.value, "cluster": cname, "targets": nodes,
                     "component": comp, "version": mpv}
    if verb == "restart-control-plane":
        cns, cname = one_cluster()
        return cns, {"operation": ChangeOperation.CONTROL_PLANE_RESTART.value, "cluster": cname,
                     "component": str(fields.get("component") or "")}
    if verb == "release-cluster":
        many = _names([str(fields.get("cluster") or "")])
        version = _release(portal, str(fields.get("version") or ""))
        if len(many) > 1:  # a wave over several Clusters: one namespace, run as a Rollout
            picked = [one_cluster(one) for one in many]
            if len({p[0] for p in picked}) > 1:
                raise BadChange("cluster", "a release of several Clusters covers one namespace; write one "
                                "command per namespace")
            return picked[0][0], {"operation": ChangeOperation.CONTROL_PLANE_RELEASE.value,
                                  "targets": [p[1] for p in picked], "version": version}
        cns, cname = one_cluster()
        return cns, {"operation": ChangeOperation.CONTROL_PLANE_RELEASE.value, "cluster": cname,
                     "version": version}
    # create-cluster
    if not name:
        raise BadChange("cluster", "name the new cluster")
    try:
        count = int(fields.get("nodes") or 0) if not isinstance(fields.get("nodes"), list) else -1
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise BadChange("nodes", "nodes must be a whole number")
    return ns or "default", {"operation": ChangeOperation.CLUSTER_CREATE.value, "cluster": name,
                             "version": _release(portal, str(fields.get("version") or "")), "nodes": count}


def _release(portal: Portal, version: str) -> str:
    """A ClusterPackageVersion by name, or by the Kubernetes version it carries (when exactly one does)."""
    cpvs = portal.cache.objects("ClusterPackageVersion")
    names = {str(c["metadata"]["name"]) for c in cpvs}
    if not version:
        raise BadChange("version", "say which release (a ClusterPackageVersion or a Kubernetes version)")
    if version in names:
        return version
    hits = sorted(str(c["metadata"]["name"]) for c in cpvs if (c.get("spec") or {}).get("kubernetesVersion") in
                  (version, "v" + version.removeprefix("v")))
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise BadChange("version", f"Kubernetes {version} is carried by releases {', '.join(hits)}: name one")
    raise BadChange("version", f"no release {version!r}; releases: {', '.join(sorted(names)) or 'none'}")


async def register(portal: Portal) -> None:
    async def run(request: Request, caller: Caller) -> Response:
        try:
            data = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError as e:
            return _refused(request, status_doc(400, f"malformed JSON: {e}", field="body"), 400)
        if not isinstance(data, dict):
            return _refused(request, status_doc(400, "the body must be a JSON object", field="body"), 400)
        verb = request.path_params.get("verb")
        given = str(data.get("command") or "") if verb is None else orjson.dumps({"verb": verb, **data}).decode()
        request.state.audit.update(given=given[:4096], via="adapter")
        try:
            fields = parse_command(given) if verb is None else {**data, "verb": verb}
            request.state.audit.update(target=str(fields.get("cluster") or ""),
                                       action=f"legacy.{fields.get('verb')}")
            namespace, spec = translate(portal, fields)
            out = await portal.changes.create(caller, namespace, spec, via="adapter")
        except BadChange as e:
            request.state.audit.update(outcome="Refused", message=str(e))
            return _refused(request, status_doc(422, str(e), field=e.field), 422)
        st = out.get("status") or {}
        translation = [{"kind": "ChangeRequest", "namespace": namespace, "name": out["metadata"]["name"],
                        "verb": "create"}, *(st.get("objects") or [])]
        request.state.audit.update(translation=translation, target=f"{namespace}/{spec.get('cluster', '')}")
        return json_response({"command": given, "translation": {"changeRequest": {
            "namespace": namespace, "name": out["metadata"]["name"], "spec": spec}, "objects": translation},
            "phase": st.get("phase"), "approvalsRequired": st.get("approvalsRequired"),
            "plan": st.get("plan"), "message": f"{(st.get('plan') or {}).get('summary', '')}: "
                                               f"{st.get('phase')}"}, 201)

    ep = portal.page(run, read=None, audit="legacy.command")
    portal.routes += [Route("/api/v1/legacy", ep, methods=["POST"]),
                      Route("/api/v1/legacy/{verb}", ep, methods=["POST"])]


def _refused(request: Request, doc: Obj, code: int) -> Response:
    request.state.audit.update(outcome="Refused", message=str(doc.get("message") or ""))
    return json_response(doc, code)
