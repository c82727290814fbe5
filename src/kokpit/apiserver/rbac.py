"""Kubernetes RBAC for the embedded API server: every request is authorized the way kube-apiserver's
`--authorization-mode=RBAC` does it, so a component given too few permissions fails here, not in a user's
cluster.

The rules are kube's (`k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`): a request is allowed when a
ClusterRoleBinding, or a RoleBinding in the request's namespace, binds a role to one of the caller's subjects
(User name, Group, ServiceAccount) and one of the role's PolicyRules matches the verb, API group, resource
(`pods`, `pods/log`, `*/scale`, `*`), resource name and, for non-resource requests, the URL (exact or `/x/*`).
Members of `system:masters` are allowed everything before RBAC is asked (kube's privileged-group authorizer).

Decisions must be cheap, because every request asks: bindings are indexed by subject, each role's rules are
compiled once into frozensets, the rules that apply to one user (cluster-wide, and per namespace) are cached,
and whole decisions are cached too.  Everything is dropped when any RBAC object changes — the server's own
store tells it synchronously, before the write is answered, so a revoked permission is never honoured after
the revoking request returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kokpit.apiserver.auth import ADMIN_GROUP, User
from kokpit.apiserver.storage.store import Event, Store

__all__ = [
    "RBAC_GROUP",
    "Attributes",
    "CompiledRule",
    "RBACAuthorizer",
    "StoreWorker",
    "compile_rule",
    "covers",
    "service_account_username",
]

RBAC_GROUP = "rbac.authorization.k8s.io"
BUCKETS = {f"/{RBAC_GROUP}/{r}/": r for r in ("roles", "clusterroles", "rolebindings", "clusterrolebindings")}
_SA_PREFIX = "system:serviceaccount:"
_DECISION_CACHE_MAX = 100_000

Obj = dict[str, Any]


def service_account_username(namespace: str, name: str) -> str:
    """kube's serviceaccount.MakeUsername."""
    return f"{_SA_PREFIX}{namespace}:{name}"


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request asks (kube's authorizer.Attributes)."""

    user: User
    verb: str
    resource_request: bool
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


class CompiledRule:
    """One PolicyRule as sets: `None` stands for `*` (everything)."""

    __slots__ = ("groups", "names", "raw", "resources", "source", "star_subs", "url_prefixes", "urls", "verbs")

    def __init__(self, rule: Obj, source: str = "") -> None:
        self.raw = rule
        def s(key: str) -> frozenset[str]:
            v = rule.get(key) or []
            return frozenset(str(x) for x in v) if isinstance(v, list) else frozenset()

        verbs, groups, resources = s("verbs"), s("apiGroups"), s("resources")
        self.verbs = None if "*" in verbs else verbs
        self.groups = None if "*" in groups else groups
        self.resources = None if "*" in resources else resources
        self.star_subs = frozenset(r[2:] for r in resources if r.startswith("*/"))
        self.names = s("resourceNames")
        urls = s("nonResourceURLs")
        self.urls: frozenset[str] | None = None if "*" in urls else frozenset(u for u in urls if not u.endswith("*"))
        self.url_prefixes = tuple(u[:-1] for u in urls if u.endswith("*") and u != "*")
        self.source = source

    def allows(self, a: Attributes) -> bool:
        if self.verbs is not None and a.verb not in self.verbs:
            return False
        if not a.resource_request:
            if self.urls is None:
                return True
            return a.path in self.urls or any(a.path.startswith(p) for p in self.url_prefixes)
        if self.groups is not None and a.group not in self.groups:
            return False
        if self.resources is not None:
            full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
            if full not in self.resources and not (a.subresource and a.subresource in self.star_subs):
                return False
        return not self.names or a.name in self.names


def compile_rule(rule: Obj, source: str = "") -> CompiledRule:
    return CompiledRule(rule, source)


def _atoms(rule: Obj) -> Iterator[tuple[bool, str, str, str, str]]:
    """A PolicyRule broken into single permissions (resource?, verb, group, resource, name-or-url)."""
    verbs = [str(v) for v in rule.get("verbs") or []]
    urls = [str(u) for u in rule.get("nonResourceURLs") or []]
    for v in verbs:
        for u in urls:
            yield False, v, "", "", u
        for g in rule.get("apiGroups") or []:
            for r in rule.get("resources") or []:
                for n in rule.get("resourceNames") or [""]:
                    yield True, v, str(g), str(r), str(n)


def _covered(owner: Iterable[CompiledRule], atom: tuple[bool, str, str, str, str]) -> bool:
    is_res, verb, group, resource, name = atom
    for o in owner:
        if o.verbs is not None and verb not in o.verbs:
            continue
        if not is_res:
            if o.urls is None or name in o.urls or any(name.startswith(p) for p in o.url_prefixes):
                return True
            continue
        if o.groups is not None and group not in o.groups:
            continue
        if o.resources is not None and resource not in o.resources:
            sub = resource.partition("/")[2]
            if not (sub and sub != "*" and sub in o.star_subs):
                continue
        if o.names and (not name or name not in o.names):
            continue
        return True
    return False


def covers(owner: list[CompiledRule], rules: Iterable[Obj]) -> list[Obj]:
    """kube's validation.Covers: the rules (as single permissions) that `owner` does not grant; empty when
    every permission in `rules` is held.  A wildcard in `rules` is covered only by the same wildcard."""
    missing: list[Obj] = []
    for rule in rules:
        for atom in _atoms(rule):
            if not _covered(owner, atom):
                is_res, verb, group, resource, name = atom
                if is_res:
                    m: Obj = {"verbs": [verb], "apiGroups": [group], "resources": [resource]}
                    if name:
                        m["resourceNames"] = [name]
                else:
                    m = {"verbs": [verb], "nonResourceURLs": [name]}
                missing.append(m)
    return missing


def _subject_keys(user: User) -> list[tuple[str, str]]:
    keys = [("User", user.name)]
    keys.extend(("Group", g) for g in user.groups)
    if user.name.startswith(_SA_PREFIX):
        ns, _, name = user.name[len(_SA_PREFIX):].partition(":")
        if ns and name:
            keys.append(("ServiceAccount", f"{ns}:{name}"))
    return keys


def _subjects(binding: Obj, namespace: str) -> Iterator[tuple[str, str]]:
    for s in binding.get("subjects") or []:
        if not isinstance(s, dict):
            continue
        kind, name = str(s.get("kind") or ""), str(s.get("name") or "")
        if kind == "ServiceAccount":
            yield kind, f"{s.get('namespace') or namespace}:{name}"
        elif kind in ("User", "Group"):
            yield kind, name


def _describe_subject(kind: str, key: str) -> str:
    if kind == "ServiceAccount":
        ns, _, name = key.partition(":")
        return f'ServiceAccount "{name}/{ns}"'
    return f'{kind} "{key}"'


class StoreWorker:
    """A store listener and the one background task that acts on what it heard, started and stopped together:
    the in-server controllers of RBAC (ServiceAccounts and root CA, ClusterRole aggregation) all work this way.

    `listen()` first (nothing written while a controller reads its initial state is missed, since listeners
    are called synchronously), then `spawn()` the loop; `stop()` undoes both."""

    def __init__(self, store: Store, on_event: Callable[[Event], None]) -> None:
        self.store = store
        self.on_event = on_event
        self._task: asyncio.Task[None] | None = None

    def listen(self) -> None:
        self.store.listeners.append(self.on_event)

    def spawn(self, loop: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._task = asyncio.create_task(loop(), name=name)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(self.on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class RBACAuthorizer:
    """Decides requests from the Roles and bindings in the store; see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._generation = 0
        self._index: dict[str, dict[tuple[str, str], list[tuple[str, Obj]]]] | None = None
        self._role_rules: dict[str, list[Obj]] = {}
        self._user_rules: dict[tuple[str, tuple[str, ...], str], list[CompiledRule]] = {}
        self._decisions: dict[tuple[Any, ...], tuple[bool, str]] = {}
        self.hits = 0
        store.listeners.append(self._on_event)

    def close(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.key.startswith("/rbac.authorization.k8s.io/"):
            self.invalidate()

    def invalidate(self) -> None:
        self._generation += 1
        self._index = None
        self._role_rules.clear()
        self._user_rules.clear()
        self._decisions.clear()

    # ------------------------------------------------------------------ index
    def _build_index(self) -> dict[str, dict[tuple[str, str], list[tuple[str, Obj]]]]:
        """namespace ('' for ClusterRoleBindings) -> subject -> [(binding description, roleRef)]."""
        index: dict[str, dict[tuple[str, str], list[tuple[str, Obj]]]] = {}
        for bucket, cluster in (("/rbac.authorization.k8s.io/clusterrolebindings/", True),
                                ("/rbac.authorization.k8s.io/rolebindings/", False)):
            _rv, items = self.store.range(bucket)
            for key, e in items:
                obj = e.obj
                ref = obj.get("roleRef") or {}
                if not isinstance(ref, dict):
                    continue
                ns = "" if cluster else key.partition("/")[0]
                name = (obj.get("metadata") or {}).get("name", "")
                what = f'ClusterRoleBinding "{name}"' if cluster else f'RoleBinding "{name}/{ns}"'
                per = index.setdefault(ns, {})
                for subj in _subjects(obj, ns):
                    per.setdefault(subj, []).append((f"{what} of {ref.get('kind')} \"{ref.get('name')}\" to "
                                                     f"{_describe_subject(*subj)}", ref))
        return index

    def _rules_of(self, ref: Obj, namespace: str) -> list[Obj]:
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        if kind == "ClusterRole":
            key = f"/rbac.authorization.k8s.io/clusterroles/{name}"
        elif kind == "Role" and namespace:
            key = f"/rbac.authorization.k8s.io/roles/{namespace}/{name}"
        else:
            return []
        cached = self._role_rules.get(key)
        if cached is None:
            e = self.store.get(key)
            rules = (e.obj.get("rules") if e is not None else None) or []
            cached = [r for r in rules if isinstance(r, dict)]
            self._role_rules[key] = cached
        return cached

    def rules_for(self, user: User, namespace: str) -> list[CompiledRule]:
        """The rules that apply to `user` in `namespace` ('' = only cluster-wide bindings)."""
        ck = (user.name, user.groups, namespace)
        got = self._user_rules.get(ck)
        if got is not None:
            return got
        if self._index is None:
            self._index = self._build_index()
        out: list[CompiledRule] = []
        if namespace:
            out.extend(self.rules_for(user, ""))
        per = self._index.get(namespace) or {}
        for subj in _subject_keys(user):
            for desc, ref in per.get(subj, ()):
                out.extend(CompiledRule(r, desc) for r in self._rules_of(ref, namespace))
        self._user_rules[ck] = out
        return out

    def raw_rules_for(self, user: User, namespace: str) -> list[Obj]:
        return [r.raw for r in self.rules_for(user, namespace)]

    # ------------------------------------------------------------------ decisions
    def authorize(self, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason) — the reason names the binding that allowed it, as kube's RBAC does."""
        user = a.user
        if ADMIN_GROUP in user.groups:
            return True, ""
        ck = (user.name, user.groups, a.verb, a.resource_request, a.group, a.resource, a.subresource,
              a.namespace, a.name, a.path)
        got = self._decisions.get(ck)
        if got is not None:
            self.hits += 1
            return got
        decision = (False, "")
        for rule in self.rules_for(user, a.namespace if a.resource_request else ""):
            if rule.allows(a):
                decision = (True, f"RBAC: allowed by {rule.source}")
                break
        if len(self._decisions) >= _DECISION_CACHE_MAX:
            self._decisions.clear()
        self._decisions[ck] = decision
        return decision

    def allowed(self, a: Attributes) -> bool:
        return self.authorize(a)[0]
