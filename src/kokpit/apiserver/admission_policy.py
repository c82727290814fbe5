"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), as kube-apiserver evaluates it.

The embedded server serves ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding objects and applies
them in its admission chain after the mutating steps — CEL over ``request``, ``object``, ``oldObject`` and
``variables``, with the CEL library of its CRD validation rules, in kube's order:
``matchConstraints.resourceRules`` (group, resource or ``resource/subresource``, operation),
``matchConditions`` (all true, or the policy does not apply), ``variables``, then ``validations`` (the first
that is not true refuses the request with its ``reason`` — Forbidden 403, Invalid 422 — and its
``messageExpression``/``message``, in kube's wording).  An expression that fails to evaluate refuses the
request unless ``failurePolicy: Ignore``.  Only bindings whose ``validationActions`` include ``Deny`` act
(Warn and Audit are accepted and do nothing here).  Not evaluated: ``paramKind``/``paramRef`` (a policy
that needs params refuses what it matches, failing closed), the binding's ``matchResources``, and
``excludeResourceRules``.  Writes the server makes itself (no user) are not checked; in kube they do not
pass through admission either.

kokpit ships one (:func:`kokpit.api.risk.permit_actor_policy`, installed with its CRDs and rendered by
``kokpit manifests``): a risk actor writes only its own Cluster's Permits, which RBAC cannot express.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import cel

from kokpit.apiserver import errors
from kokpit.apiserver.rbac_admission import current_user
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import Rest
from kokpit.apiserver.storage.store import Event

__all__ = ["AdmissionPolicies", "CompiledPolicy"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_CODES = {"Forbidden": 403, "Invalid": 422, "Unauthorized": 401, "RequestEntityTooLarge": 413}


_REQUEST_FIELD = re.compile(r"\brequest\s*\.\s*([A-Za-z_]\w*)")
_USER_FIELD = re.compile(r"\brequest\s*\.\s*userInfo\s*\.\s*([A-Za-z_]\w*)")


class _Program:
    """A compiled expression and the top-level names it reads: converting Python values into CEL values is
    most of an evaluation's cost (a Permit with its managedFields: milliseconds), so each expression is handed
    only what it reads — a matchCondition on the user never converts the object."""

    def __init__(self, source: str) -> None:
        self.program = cel.compile(source)
        try:
            self.names: frozenset[str] | None = frozenset(self.program.variables())
        except Exception:  # older bindings: hand it everything
            self.names = None

    def execute(self, act: Obj) -> Any:
        return self.program.execute(act if self.names is None else {k: v for k, v in act.items() if k in self.names})


def _fields(pattern: re.Pattern[str], word: str, sources: list[str]) -> set[str] | None:
    """The fields of ``word`` the expressions read (``request.x``), or None when one reads it whole."""
    out: set[str] = set()
    for src in sources:
        found = pattern.findall(src)
        if len(re.findall(rf"\b{word}\b", src)) != len(found):
            return None
        out.update(found)
    return out


def _paths(word: str, sources: list[str]) -> list[tuple[str, ...]] | None:
    """The field paths of ``word`` the expressions read (``object.spec.cluster`` → ``("spec", "cluster")``),
    or None when one reads it whole (or through syntax this does not follow, e.g. ``object.?x``, ``object[k]``)."""
    out: list[tuple[str, ...]] = []
    path = re.compile(rf"\b{word}((?:\s*\.\s*[A-Za-z_]\w*\b)+)(?!\s*\()")
    null = re.compile(rf"\b{word}\s*[!=]=\s*null\b|\bnull\s*[!=]=\s*{word}\b")  # a pruned object is null alike
    for src in sources:
        src = null.sub("null", src)
        found = path.findall(src)
        if len(re.findall(rf"\b{word}\b", src)) != len(found):
            return None
        out += [tuple(x.strip() for x in f.split(".") if x.strip()) for f in found]
    return out


def _pruned(obj: Any, paths: list[tuple[str, ...]] | None) -> Any:
    """``obj`` with only the subtrees at ``paths`` (each kept whole), so CEL converts no more than it reads."""
    if paths is None or not isinstance(obj, dict):
        return obj
    out: Obj = {}
    for p in sorted(paths, key=len):
        src, dst = obj, out
        for i, key in enumerate(p):
            if not isinstance(src, dict) or key not in src:
                break
            if i == len(p) - 1:
                dst[key] = src[key]
            elif not isinstance(dst.get(key, {}), dict) or (key in dst and dst[key] is src[key]):
                break  # a shorter path already kept this subtree whole
            else:
                dst = dst.setdefault(key, {})
            src = src[key]
    return out


@dataclass(frozen=True)
class _Validation:
    program: _Program | None
    message: str
    message_expression: _Program | None
    reason: str


class CompiledPolicy:
    """One ValidatingAdmissionPolicy and the name of the binding that applies it (``validationActions:
    [Deny]``, no params), compiled once."""

    def __init__(self, policy: Obj, binding: str) -> None:
        spec = policy.get("spec") or {}
        self.name = str(policy["metadata"]["name"])
        self.binding = binding
        self.ignore_errors = spec.get("failurePolicy") == "Ignore"
        self.problem = "params (paramKind) are not supported by this server" if spec.get("paramKind") else ""
        self.rules = [(set(r.get("apiGroups") or []), set(r.get("resources") or []), set(r.get("operations") or []))
                      for r in (spec.get("matchConstraints") or {}).get("resourceRules") or []]
        self.conditions = [_Program(c["expression"]) for c in spec.get("matchConditions") or []]
        self.variables = [(str(v["name"]), _Program(v["expression"])) for v in spec.get("variables") or []]
        self.validations = [
            _Validation(_Program(v["expression"]), str(v.get("message") or f"failed expression: {v['expression']}"),
                        _Program(v["messageExpression"]) if v.get("messageExpression") else None,
                        str(v.get("reason") or "Invalid"))
            for v in spec.get("validations") or []]
        # the request fields the expressions read: converting the whole request costs ~60 µs a field
        sources = [str(x.get(k) or "") for key in ("matchConditions", "variables", "validations")
                   for x in spec.get(key) or [] for k in ("expression", "messageExpression")]
        self.request_fields = _fields(_REQUEST_FIELD, "request", sources)
        self.user_fields = _fields(_USER_FIELD, r"request\s*\.\s*userInfo", sources)
        self.object_paths = _paths("object", sources)
        self.old_paths = _paths("oldObject", sources)

    @classmethod
    def broken(cls, policy: Obj, binding: str, problem: str) -> CompiledPolicy:
        """A policy whose expressions do not compile: it refuses what it matches (failing closed)."""
        spec = policy.get("spec") or {}
        out = cls({"metadata": policy["metadata"], "spec": {"matchConstraints": spec.get("matchConstraints")}},
                  binding)
        out.problem = problem
        return out

    def matches(self, rt: ResourceType, operation: str) -> bool:
        return any(({"*", rt.group} & groups) and ({"*", rt.plural} & resources
                                                   or any(r.startswith(f"{rt.plural}/") for r in resources))
                   and ({"*", operation} & ops) for groups, resources, ops in self.rules)

    def check(self, rt: ResourceType, operation: str, obj: Obj | None, old: Obj | None, username: str,
              groups: tuple[str, ...]) -> None:
        """Raise the refusal kube would answer when the policy denies this request."""
        meta = (obj if obj is not None else old or {}).get("metadata") or {}
        name = str(meta.get("name") or "")
        user = {"username": username, "groups": list(groups)}
        request: Obj = {"operation": operation, "name": name, "namespace": str(meta.get("namespace") or ""),
                        "resource": {"group": rt.group, "resource": rt.plural},
                        "userInfo": user if self.user_fields is None else
                        {k: v for k, v in user.items() if k in self.user_fields}}
        if self.request_fields is not None:
            request = {k: v for k, v in request.items() if k in self.request_fields}
        act: Obj = {"request": request, "object": _pruned(obj, self.object_paths),
                    "oldObject": _pruned(old, self.old_paths)}
        try:
            if self.problem:
                raise ValueError(self.problem)
            if not all(c.execute(act) is True for c in self.conditions):
                return
            act["variables"] = values = {}
            for vname, program in self.variables:
                values[vname] = program.execute(act)
            failed = next((v for v in self.validations if v.program is not None
                           and v.program.execute(act) is not True), None)
        except Exception as e:
            if self.ignore_errors:
                return
            failed = _Validation(None, f"expression evaluation error: {e}", None, "Forbidden")
        if failed is None:
            return
        message = failed.message
        if failed.message_expression is not None:
            try:
                text = failed.message_expression.execute(act)
                message = text if isinstance(text, str) and text.strip() else message
            except Exception:  # kube falls back to message
                pass
        code = _CODES.get(failed.reason, 422)
        verdict = "is forbidden" if code == 403 else "is invalid"
        qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        raise errors.APIError(code, failed.reason, f'{qualified} "{name}" {verdict}: ValidatingAdmissionPolicy '
                              f"'{self.name}' with binding '{self.binding}' denied request: {message}",
                              name=name, group=rt.group, kind=rt.plural)


class AdmissionPolicies:
    """The policies and bindings in the store, compiled again only after one of them changed (a store
    listener marks them stale), so a write that no policy matches costs a few set lookups."""

    def __init__(self, rest: Rest, policy_rt: ResourceType, binding_rt: ResourceType) -> None:
        self.rest = rest
        self.policy_rt, self.binding_rt = policy_rt, binding_rt
        self._prefixes = (policy_rt.store_prefix, binding_rt.store_prefix)
        self._stale = True
        self.policies: list[CompiledPolicy] = []
        # (group, resource, operation) → the policies whose rules match it, built on first use after each
        # recompile: every write asked every policy's rules (sets built per rule) before
        self._matching: dict[tuple[str, str, str], list[CompiledPolicy]] = {}

    def on_event(self, ev: Event) -> None:
        if ev.key.startswith(self._prefixes):
            self._stale = True

    def _compiled(self) -> list[CompiledPolicy]:
        if self._stale:
            self._stale = False
            policies = {str(e.obj["metadata"]["name"]): e.obj
                        for _k, e in self.rest.list_entries(self.policy_rt, None)[1]}
            out = []
            for _k, e in self.rest.list_entries(self.binding_rt, None)[1]:
                spec = e.obj.get("spec") or {}
                policy = policies.get(str(spec.get("policyName") or ""))
                if policy is None or "Deny" not in (spec.get("validationActions") or []):
                    continue
                try:
                    out.append(CompiledPolicy(policy, str(e.obj["metadata"]["name"])))
                except Exception as err:  # does not compile: fail closed on what it matches
                    log.warning("ValidatingAdmissionPolicy %s does not compile: %s", policy["metadata"]["name"], err)
                    out.append(CompiledPolicy.broken(policy, str(e.obj["metadata"]["name"]), str(err)))
            self.policies = out
            self._matching = {}
        return self.policies

    def matching(self, rt: ResourceType, operation: str) -> list[CompiledPolicy]:
        """The compiled policies whose match constraints cover ``operation`` on ``rt``."""
        policies = self._compiled()  # recompiles (and forgets the matches) after a policy or binding changed
        key = (rt.group, rt.plural, operation)
        found = self._matching.get(key)
        if found is None:
            found = self._matching[key] = [p for p in policies if p.matches(rt, operation)]
        return found

    def _run(self, rt: ResourceType, operation: str, obj: Obj | None, old: Obj | None) -> None:
        user = current_user.get()
        if user is None:
            return
        for p in self.matching(rt, operation):
            p.check(rt, operation, obj, old, user.name, user.groups)

    def admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        """Rest's admission hook on create (``old`` None) and update."""
        self._run(rt, "CREATE" if old is None else "UPDATE", obj, old)

    def delete(self, rt: ResourceType, obj: Obj) -> None:
        """Rest's admission hook on delete (``obj`` is the object being deleted)."""
        self._run(rt, "DELETE", None, obj)
