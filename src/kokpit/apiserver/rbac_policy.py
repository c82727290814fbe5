"""The default RBAC policy every kube-apiserver ships, its reconciliation at start, and ClusterRole
aggregation.

kubectl, client libraries and people expect the bootstrap roles to exist: `cluster-admin` (bound to
`system:masters`), the user-facing `admin`/`edit`/`view` built by aggregation from the
`system:aggregate-to-*` roles (and from any ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-*`,
which is how kokpit's own kinds join them), discovery and health for everyone (`system:discovery`,
`system:basic-user`, `system:public-info-viewer`), `/metrics` for `system:monitoring`.  The rules are a
faithful subset of kube's bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy) for the kinds
this server serves.  As in kube, at every start missing defaults are created and defaults annotated
`rbac.authorization.kubernetes.io/autoupdate: "true"` get any rules or subjects they lack added back.

The embedded server's read-only token (group `kokpit:viewers`) is bound to `view`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kokpit._lib.podutil import selector_matches
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.rbac import StoreWorker
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.rest import Rest, WriteOptions
from kokpit.apiserver.storage.store import Event

__all__ = ["Aggregator", "bootstrap_objects", "ensure_bootstrap_policy"]

log = logging.getLogger(__name__)

G = "rbac.authorization.k8s.io"
_AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
_SYSTEM = WriteOptions(field_manager="kokpit-apiserver", field_validation="Ignore")
CLUSTERROLES = f"/{G}/clusterroles/"

Obj = dict[str, Any]

_RW = ["create", "delete", "deletecollection", "patch", "update"]
_RO = ["get", "list", "watch"]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> Obj:
    return {"verbs": verbs, "apiGroups": groups, "resources": resources}


def _urls(urls: list[str], verbs: list[str] | None = None) -> Obj:
    return {"verbs": verbs or ["get"], "nonResourceURLs": urls}


def _role(name: str, rules: list[Obj], *, labels: dict[str, str] | None = None,
          aggregate: str | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
                 "annotations": {_AUTOUPDATE: "true"}}
    obj: Obj = {"apiVersion": f"{G}/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules}
    if aggregate:
        obj["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{aggregate}": "true"}}]}
        obj["rules"] = []
    return obj


def _binding(name: str, role: str, subjects: list[tuple[str, str]]) -> Obj:
    return {"apiVersion": f"{G}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                         "annotations": {_AUTOUPDATE: "true"}},
            "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": G, "kind": k, "name": n} for k, n in subjects]}


def _agg_label(to: str) -> dict[str, str]:
    return {f"rbac.authorization.k8s.io/aggregate-to-{to}": "true"}


def bootstrap_objects() -> list[Obj]:
    """The default ClusterRoles, then the default ClusterRoleBindings (fresh dicts)."""
    view = [
        _rule(_RO, [""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status",
                          "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                          "services", "services/status"]),
        _rule(_RO, [""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                          "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]),
        _rule(_RO, [""], ["namespaces"]),
        _rule(_RO, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(_RO, ["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                              "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                              "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"]),
        _rule(_RO, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        _rule(_RO, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        _rule(_RO, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(_RO, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
    ]
    edit = [
        _rule(["impersonate"], [""], ["serviceaccounts"]),
        _rule(_RW, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(_RW, [""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                          "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                          "services/proxy"]),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(_RW, ["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                              "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"]),
        _rule(_RW, ["autoscaling"], ["horizontalpodautoscalers"]),
        _rule(_RW, ["batch"], ["cronjobs", "jobs"]),
        _rule(_RW, ["policy"], ["poddisruptionbudgets"]),
        _rule(_RW, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
        _rule(["get", "list", "watch", *_RW], ["coordination.k8s.io"], ["leases"]),
        _rule(["get", "list", "watch"], [""], ["secrets"]),
    ]
    admin = [
        _rule(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"], [G],
              ["rolebindings", "roles"]),
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    ]
    health = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    roles = [
        _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _role("admin", [], aggregate="admin"),
        _role("edit", [], aggregate="edit", labels=_agg_label("admin")),
        _role("view", [], aggregate="view", labels=_agg_label("edit")),
        _role("system:aggregate-to-admin", admin, labels=_agg_label("admin")),
        _role("system:aggregate-to-edit", edit, labels=_agg_label("edit")),
        _role("system:aggregate-to-view", view, labels=_agg_label("view")),
        _role("system:discovery", [_urls(["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*",
                                          *health])]),
        _role("system:basic-user", [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])]),
        _role("system:public-info-viewer", [_urls(health)]),
        _role("system:monitoring", [_urls(["/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz",
                                           "/livez/*", "/readyz/*", "/healthz/*"])]),
        _role("system:auth-delegator", [
            _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"])]),
    ]
    bindings = [
        _binding("cluster-admin", "cluster-admin", [("Group", "system:masters")]),
        _binding("system:discovery", "system:discovery", [("Group", "system:authenticated")]),
        _binding("system:basic-user", "system:basic-user", [("Group", "system:authenticated")]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [("Group", "system:authenticated"), ("Group", "system:unauthenticated")]),
        _binding("system:monitoring", "system:monitoring", [("Group", "system:monitoring")]),
        # the embedded server's read-only kubeconfig: reads like `view`, and may scrape /metrics (kokpit status)
        _binding("kokpit:viewers", "view", [("Group", "kokpit:viewers")]),
        _binding("kokpit:viewers-monitoring", "system:monitoring", [("Group", "kokpit:viewers")]),
    ]
    return roles + bindings


def _union(have: list[Any], want: list[Any]) -> list[Any]:
    return have + [x for x in want if x not in have]


async def ensure_bootstrap_policy(rest: Rest, registry: Registry) -> None:
    """Create missing defaults; add lost rules/subjects back to defaults that allow auto-update."""
    for want in bootstrap_objects():
        plural = "clusterroles" if want["kind"] == "ClusterRole" else "clusterrolebindings"
        rt = registry.get(G, "v1", plural)
        assert rt is not None
        name = want["metadata"]["name"]
        cur = rest.store.get(rt.key(None, name))
        try:
            if cur is None:
                await rest.create(rt, None, want, _SYSTEM)
                continue
            have = cur.copy()
            if (have.get("metadata") or {}).get("annotations", {}).get(_AUTOUPDATE) != "true":
                continue
            if want["kind"] == "ClusterRole":
                if "aggregationRule" in want:
                    have["aggregationRule"] = want["aggregationRule"]
                else:
                    have["rules"] = _union(have.get("rules") or [], want["rules"])
            else:
                have["subjects"] = _union(have.get("subjects") or [], want["subjects"])
            labels = have.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(want["metadata"]["labels"])
            await rest.update(rt, None, name, have, _SYSTEM)
        except APIError as e:  # a racing replica or a hand-edited object: log, keep serving
            log.warning("RBAC bootstrap of %s %s: %s", want["kind"], name, e)


# ------------------------------------------------------------------------------------------ aggregation

class Aggregator:
    """kube's clusterrole-aggregation controller: an aggregated ClusterRole's rules are the union of the
    rules of every ClusterRole its selectors match, recomputed whenever any ClusterRole changes."""

    def __init__(self, rest: Rest, registry: Registry) -> None:
        self.rest = rest
        self.registry = registry
        self._wake = asyncio.Event()
        self._bg = StoreWorker(rest.store, self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.key.startswith(CLUSTERROLES):
            self._wake.set()

    async def start(self) -> None:
        self._bg.listen()
        await self.sync()
        self._bg.spawn(self._loop, "kokpit-rbac-aggregation")

    async def stop(self) -> None:
        await self._bg.stop()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("ClusterRole aggregation failed; retrying on the next change")

    async def sync(self) -> None:
        rt = self.registry.get(G, "v1", "clusterroles")
        assert rt is not None
        _rv, items = self.rest.store.range(CLUSTERROLES)
        roles = sorted(((k, e.obj) for k, e in items), key=lambda kv: kv[0])
        for name, role in roles:
            agg = role.get("aggregationRule")
            if not isinstance(agg, dict):
                continue
            sels = agg.get("clusterRoleSelectors") or []
            rules: list[Obj] = []
            for other, o in roles:
                if other == name:
                    continue
                labels = (o.get("metadata") or {}).get("labels") or {}
                if any(isinstance(s, dict) and selector_matches(s, labels) for s in sels):
                    for r in o.get("rules") or []:
                        if r not in rules:
                            rules.append(r)
            if rules == (role.get("rules") or []):
                continue
            new = self.rest.store.get(rt.key(None, name))
            if new is None:
                continue
            obj = new.copy()
            obj["rules"] = rules
            try:
                await self.rest.update(rt, None, name, obj, _SYSTEM)
            except APIError as e:
                log.warning("aggregating ClusterRole %s: %s", name, e)
                self._wake.set()
