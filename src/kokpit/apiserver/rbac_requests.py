"""Where RBAC meets the HTTP layer: the kinds it serves, impersonation, the authorization check every request
goes through, and the review APIs (`kubectl auth can-i`, `kubectl auth whoami`, TokenReview).

The app calls `Authorization.check` once per request, right after authentication (kube's filter order:
authentication → impersonation → authorization), and hands creates of the review kinds and of
`serviceaccounts/<name>/token` to `Authorization.create`.  Everything else lives in `rbac`,
`rbac_policy`, `rbac_tokens` and `rbac_admission`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.auth import ADMIN_GROUP, User, forbidden_error
from kokpit.apiserver.rbac import RBAC_GROUP, Attributes, RBACAuthorizer
from kokpit.apiserver.rbac_admission import current_user
from kokpit.apiserver.rbac_node import NODE_RULES, NodeAuthorizer, node_identity, token_restriction
from kokpit.apiserver.rbac_tokens import TokenIssuer, token_request
from kokpit.apiserver.resources import PrinterColumn, ResourceType

__all__ = ["ANONYMOUS", "REVIEW_GROUPS", "Authorization", "rbac_resource_types"]

ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
REVIEW_GROUPS = ("authorization.k8s.io", "authentication.k8s.io")
_IMPERSONATE = ("impersonate-user", "impersonate-group", "impersonate-uid")

Obj = dict[str, Any]


def _schema(definition: str) -> Obj:
    return {"$ref": f"#/$defs/{definition}"}


def _created_at(o: Obj) -> Any:
    return (o.get("metadata") or {}).get("creationTimestamp")


def _binding_cells(o: Obj) -> list[Any]:
    ref = o.get("roleRef") or {}
    subs = [s for s in o.get("subjects") or [] if isinstance(s, dict)]

    def names(kind: str) -> str:
        return ", ".join((f"{s.get('namespace', '')}/{s.get('name')}" if kind == "ServiceAccount"
                          else str(s.get("name"))) for s in subs if s.get("kind") == kind)

    return [(o.get("metadata") or {}).get("name"), f"{ref.get('kind')}/{ref.get('name')}", _created_at(o),
            names("User"), names("Group"), names("ServiceAccount")]


_ROLE_COLUMNS = (PrinterColumn("Name", "string", format="name"), PrinterColumn("Created At", "date"))
_BINDING_COLUMNS = (PrinterColumn("Name", "string", format="name"), PrinterColumn("Role", "string"),
                    PrinterColumn("Age", "date"), PrinterColumn("Users", "string", priority=1),
                    PrinterColumn("Groups", "string", priority=1),
                    PrinterColumn("ServiceAccounts", "string", priority=1))


def rbac_resource_types() -> list[ResourceType]:
    """The RBAC kinds and the review kinds (answered, never stored)."""
    r = "io.k8s.api.rbac.v1."

    def role_cells(o: Obj) -> list[Any]:
        return [(o.get("metadata") or {}).get("name"), _created_at(o)]

    out = [
        ResourceType(RBAC_GROUP, "v1", "Role", "roles", "role", True, schema=_schema(r + "Role"),
                     printer_columns=_ROLE_COLUMNS, table_cells=role_cells),
        ResourceType(RBAC_GROUP, "v1", "ClusterRole", "clusterroles", "clusterrole", False,
                     schema=_schema(r + "ClusterRole"), printer_columns=_ROLE_COLUMNS, table_cells=role_cells),
        ResourceType(RBAC_GROUP, "v1", "RoleBinding", "rolebindings", "rolebinding", True,
                     schema=_schema(r + "RoleBinding"), printer_columns=_BINDING_COLUMNS,
                     table_cells=_binding_cells),
        ResourceType(RBAC_GROUP, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", False,
                     schema=_schema(r + "ClusterRoleBinding"), printer_columns=_BINDING_COLUMNS,
                     table_cells=_binding_cells),
    ]
    for group, kind, namespaced in (("authorization.k8s.io", "SubjectAccessReview", False),
                                    ("authorization.k8s.io", "LocalSubjectAccessReview", True),
                                    ("authorization.k8s.io", "SelfSubjectRulesReview", False),
                                    ("authentication.k8s.io", "TokenReview", False),
                                    ("authentication.k8s.io", "SelfSubjectReview", False)):
        pkg = "authorization" if group.startswith("authorization") else "authentication"
        out.append(ResourceType(group, "v1", kind, kind.lower() + "s", kind.lower(), namespaced, verbs=("create",),
                                schema=_schema(f"io.k8s.api.{pkg}.v1.{kind}")))
    return out


def _user_info(u: User) -> Obj:
    out: Obj = {"username": u.name, "groups": list(u.groups)}
    if u.uid:
        out["uid"] = u.uid
    if u.extra:
        out["extra"] = {k: list(v) for k, v in u.extra}
    return out


def _with_authenticated(name: str, groups: Iterable[str]) -> tuple[str, ...]:
    gs = list(groups)
    if name.startswith("system:serviceaccount:"):
        ns = name.split(":")[2]
        gs += [g for g in ("system:serviceaccounts", f"system:serviceaccounts:{ns}") if g not in gs]
    if name != "system:anonymous" and "system:authenticated" not in gs:
        gs.append("system:authenticated")
    return tuple(gs)


class Authorization:
    """The RBAC authorizer as the HTTP layer uses it."""

    def __init__(self, authorizer: RBACAuthorizer, issuer: TokenIssuer,
                 authenticate: Callable[[str], User | None] | None = None,
                 node: NodeAuthorizer | None = None) -> None:
        self.authorizer = authorizer
        self.issuer = issuer
        # every token the server accepts (static and ServiceAccount), for TokenReview
        self.authenticate = authenticate or issuer.authenticate
        self.enabled = True  # off only for the benchmark's same-run comparison
        self.node = node  # --authorization-mode=Node,RBAC: kubelets are decided by the Node authorizer first

    def decide(self, a: Attributes, field_selector: str = "") -> tuple[bool, str]:
        """kube's union authorizer over Node then RBAC: (allowed, reason); a refusal's reason is the Node
        authorizer's, which kube appends to the 403 message."""
        node = node_identity(a.user) if self.node is not None else None
        if node is None or self.node is None:
            return self.authorizer.authorize(a)
        ok, why = self.node.authorize(a, node, field_selector)
        if ok:
            return True, "allowed by the Node authorizer"
        allowed, reason = self.authorizer.authorize(a)
        return (True, reason) if allowed else (False, why)

    # ------------------------------------------------------------------ the per-request check
    def check(self, user: User | None, method: str, resource_request: bool, verb: str, group: str,
              resource: str, subresource: str, namespace: str | None, name: str, path: str,
              headers: dict[str, str], raw_headers: list[tuple[bytes, bytes]], field_selector: str = "") -> User:
        """Impersonate if asked, then authorize; returns the user the request runs as, or raises 403."""
        user = user or ANONYMOUS
        if any(h in headers for h in _IMPERSONATE) or any(h.startswith("impersonate-extra-") for h in headers):
            user = self._impersonate(user, headers, raw_headers)
        current_user.set(user)
        if not self.enabled:
            return user
        if not resource_request:
            verb = method.lower()
        a = Attributes(user, verb, resource_request, group, resource, subresource, namespace or "", name, path)
        allowed, reason = self.decide(a, field_selector)
        if not allowed:
            raise forbidden_error(user, verb, resource, group, namespace or "", name,
                                  subresource=subresource or None, path=None if resource_request else path,
                                  reason=reason)
        if self.node is not None and group == "" and resource == "pods" and name and (
                (verb == "delete" and not subresource) or (verb == "create" and subresource == "eviction")):
            node = node_identity(user)
            if node is not None and self.node.pod_bound_here(node, namespace or "", name) is False:
                what = "delete" if verb == "delete" else "evict"
                raise errors.APIError(403, "Forbidden", f'pods "{name}" is forbidden: node "{node}" can only '
                                      f"{what} pods with spec.nodeName set to itself", name=name, kind="pods")
        return user

    def _impersonate(self, user: User, headers: dict[str, str], raw: list[tuple[bytes, bytes]]) -> User:
        """kube's WithImpersonation: each impersonated value needs the `impersonate` verb on it."""
        groups = [v.decode("latin-1").strip() for k, v in raw if k.lower() == b"impersonate-group"]
        extra: dict[str, list[str]] = {}
        for k, v in raw:
            key = k.decode("latin-1").lower()
            if key.startswith("impersonate-extra-"):
                extra.setdefault(key[len("impersonate-extra-"):], []).append(v.decode("latin-1").strip())
        name = headers.get("impersonate-user", "").strip()
        uid = headers.get("impersonate-uid", "").strip()
        if not name:
            raise errors.bad_request(f"requested {_requested(groups, extra, uid)} without impersonating a user")
        checks: list[tuple[str, str, str, str]] = []  # (group, resource, namespace, name)
        if name.startswith("system:serviceaccount:") and name.count(":") == 3:
            _s, _a, ns, sa = name.split(":")
            checks.append(("", "serviceaccounts", ns, sa))
        else:
            checks.append(("", "users", "", name))
        checks += [("", "groups", "", g) for g in groups]
        if uid:
            checks.append(("authentication.k8s.io", "uids", "", uid))
        checks += [("authentication.k8s.io", f"userextras/{k}", "", v) for k, vs in extra.items() for v in vs]
        for group, resource, ns, value in checks:
            res, _, sub = resource.partition("/")
            if not self.decide(Attributes(user, "impersonate", True, group, res, sub, ns, value))[0]:
                raise forbidden_error(user, "impersonate", res, group, ns, value, subresource=sub or None)
        return User(name, _with_authenticated(name, groups), uid,
                    tuple((k, tuple(v)) for k, v in extra.items()))

    # ------------------------------------------------------------------ creates answered here
    def handles(self, rt: ResourceType, subresource: str) -> bool:
        return rt.group in REVIEW_GROUPS or (rt.group == "" and rt.kind == "ServiceAccount"
                                             and subresource == "token")

    def create(self, rt: ResourceType, namespace: str | None, name: str, body: Any, user: User | None) -> Obj:
        user = user or ANONYMOUS
        if rt.kind == "ServiceAccount":
            node = node_identity(user) if self.node is not None else None
            if node is not None and self.node is not None:
                token_restriction(node, self.node, namespace or "", name, body)
            return token_request(self.issuer, namespace or "", name, body)
        def bad(what: str) -> errors.APIError:  # kube's decoder: a wrong shape is a 400, not a 422
            return errors.bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                                      f"{what}")

        if not isinstance(body, dict):
            raise bad("the body must be an object")
        if body.get("metadata") is not None and not isinstance(body.get("metadata"), dict):
            raise bad("metadata must be an object")
        spec = body.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise bad("spec must be an object")
        for key in ("resourceAttributes", "nonResourceAttributes", "extra"):
            if spec.get(key) is not None and not isinstance(spec.get(key), dict):
                raise bad(f"spec.{key} must be an object")
        out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version,
                    "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None}, "spec": spec}
        if rt.kind == "SelfSubjectReview":
            out.pop("spec")
            out["status"] = {"userInfo": _user_info(user)}
        elif rt.kind == "TokenReview":
            out["status"] = self._token_review(spec)
        elif rt.kind == "SelfSubjectRulesReview":
            out["status"] = self._rules_review(user, str(spec.get("namespace") or ""))
        else:
            subject = user
            if rt.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
                if not spec.get("user") and not spec.get("groups"):
                    raise errors.invalid(rt.kind, "", [errors.Cause(
                        "spec.user", "Invalid value: \"\": at least one of user or group must be specified",
                        "FieldValueInvalid")], rt.group)
                subject = User(str(spec.get("user") or ""), tuple(spec.get("groups") or ()),
                               str(spec.get("uid") or ""),
                               tuple((k, tuple(v)) for k, v in (spec.get("extra") or {}).items()))
            out["status"] = self._access_review(rt, namespace, spec, subject)
        return out

    def _access_review(self, rt: ResourceType, namespace: str | None, spec: Obj, subject: User) -> Obj:
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        ra = ra if isinstance(ra, dict) else None
        nra = nra if isinstance(nra, dict) else None
        if (ra is None) == (nra is None):
            raise errors.invalid(rt.kind, "", [errors.Cause(
                "spec.resourceAttributes", "Invalid value: exactly one of nonResourceAttributes or "
                "resourceAttributes must be specified", "FieldValueInvalid")], rt.group)
        if ra is not None:
            if rt.kind == "LocalSubjectAccessReview" and (ra.get("namespace") or "") != namespace:
                raise errors.invalid(rt.kind, "", [errors.Cause(
                    "spec.resourceAttributes.namespace", "Invalid value: must match metadata.namespace",
                    "FieldValueInvalid")], rt.group)
            a = Attributes(subject, str(ra.get("verb") or ""), True, str(ra.get("group") or ""),
                           str(ra.get("resource") or ""), str(ra.get("subresource") or ""),
                           str(ra.get("namespace") or ""), str(ra.get("name") or ""))
        else:
            assert nra is not None
            a = Attributes(subject, str(nra.get("verb") or ""), False, path=str(nra.get("path") or ""))
        allowed, reason = self.decide(a, str((ra or {}).get("fieldSelector", {}).get("rawSelector") or "")
                                      if isinstance((ra or {}).get("fieldSelector"), dict) else "")
        if allowed and not reason:
            reason = "allowed by the system:masters group"
        return {"allowed": allowed, "reason": reason} if reason else {"allowed": allowed}

    def _rules_review(self, user: User, namespace: str) -> Obj:
        res: list[Obj] = []
        non: list[Obj] = []
        if ADMIN_GROUP in user.groups:
            res.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
            non.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
        rules = self.authorizer.raw_rules_for(user, namespace)
        node = node_identity(user) if self.node is not None else None
        if node is not None:  # kube's Node authorizer lists its static rules; the graph's are not listable
            rules = [r.raw for r in NODE_RULES] + rules
        for r in rules:
            if r.get("nonResourceURLs"):
                non.append({"verbs": r.get("verbs") or [], "nonResourceURLs": r["nonResourceURLs"]})
            else:
                entry = {k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
                res.append(entry)
        return {"resourceRules": res, "nonResourceRules": non, "incomplete": node is not None}

    def _token_review(self, spec: Obj) -> Obj:
        token = str(spec.get("token") or "")
        user = self.authenticate(token) if token else None
        if user is None:
            return {"authenticated": False, "error": "invalid bearer token", "user": {}}
        return {"authenticated": True, "user": _user_info(user), "audiences": list(self.issuer.audiences)}


def _requested(groups: list[str], extra: dict[str, list[str]], uid: str) -> str:
    parts = [f"groups={groups}"] if groups else []
    parts += [f"extra={extra}"] if extra else []
    parts += [f"uid={uid}"] if uid else []
    return ", ".join(parts) or "impersonation"

