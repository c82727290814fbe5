"""Admission and controllers around ServiceAccounts and RBAC objects, as kube-apiserver and
kube-controller-manager provide them.

- **ServiceAccount admission** (kube's `ServiceAccount` plugin): a new Pod runs as `default` unless it names
  a ServiceAccount, a named one must exist, and unless `automountServiceAccountToken` is false (on the Pod or
  the ServiceAccount) it gets the projected `kube-api-access-<x>` volume — a bound token, `ca.crt` from the
  `kube-root-ca.crt` ConfigMap, the namespace — mounted at `/var/run/secrets/kubernetes.io/serviceaccount`
  in every container.  The kubelet materialises it.
- **Escalation prevention** (kube's RBAC REST strategy): a Role or ClusterRole may only be written by a user
  who holds every permission in it (or may `escalate` roles), and a binding only by a user who holds the
  referenced role's permissions (or may `bind` it).  Writes made by the server itself are not checked.
- **Controllers**: every namespace gets its `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap
  (kube's serviceaccount and root-ca-cert-publisher controllers); Secrets of type
  `kubernetes.io/service-account-token` get a long-lived token (kube's legacy token controller).
Each controller is level-triggered (store events enqueue keys, a full scan at start), so a restart finishes
whatever was left.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import random
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.auth import User
from kokpit.apiserver.rbac import RBAC_GROUP, Attributes, RBACAuthorizer, StoreWorker, covers
from kokpit.apiserver.rbac_node import node_identity, node_restriction
from kokpit.apiserver.rbac_tokens import TokenIssuer
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import Rest, WriteOptions
from kokpit.apiserver.storage.store import DELETED, Event

__all__ = ["SA_MOUNT_PATH", "Admission", "ServiceAccountControllers", "current_user"]

log = logging.getLogger(__name__)

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA = "kube-root-ca.crt"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
_SA_ANNOTATION = "kubernetes.io/service-account.name"
_SYSTEM = WriteOptions(field_manager="kokpit-apiserver", field_validation="Ignore")
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"
_NODE_RESTRICTED = frozenset({"Node", "Pod", "Lease"})

# the authenticated caller of the request being served; unset for the server's own writes
current_user: contextvars.ContextVar[User | None] = contextvars.ContextVar("kokpit_user", default=None)

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


class Admission:
    """Rest's admission hook: called with every object about to be validated (old is None on create)."""

    def __init__(self, store_get: Any, authorizer: RBACAuthorizer, node_restriction: bool = False) -> None:
        self.get = store_get
        self.authorizer = authorizer
        self.node_restriction = node_restriction  # kube's NodeRestriction plugin (rbac_node.py)

    def __call__(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if self.node_restriction and rt.kind in _NODE_RESTRICTED and rt.group in ("", "coordination.k8s.io"):
            user = current_user.get()
            node = node_identity(user) if user is not None else None
            if node is not None:
                node_restriction(node, rt.kind, obj, old)
        if rt.group == "" and rt.kind == "Pod" and old is None:
            self._pod(obj)
        elif rt.group == RBAC_GROUP:
            user = current_user.get()
            if user is not None:
                self._no_escalation(rt, obj, user)

    # ------------------------------------------------------------------ ServiceAccount admission
    def _pod(self, pod: Obj) -> None:
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        ns = str(_meta(pod).get("namespace") or "")
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if not isinstance(name, str):
            return
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        sa = self.get(f"/core/serviceaccounts/{ns}/{name}")
        if sa is None and name != "default":  # `default` is being made by the controller right now
            raise errors.APIError(403, "Forbidden", f'pods "{_meta(pod).get("name", "")}" is forbidden: error '
                                  f'looking up service account {ns}/{name}: serviceaccount "{name}" not found',
                                  name=_meta(pod).get("name"), kind="pods")
        automount = spec.get("automountServiceAccountToken")
        if automount is None and sa is not None:
            automount = sa.obj.get("automountServiceAccountToken")
        if automount is False:
            return
        containers = [c for key in ("initContainers", "containers") for c in spec.get(key) or []
                      if isinstance(c, dict)]
        if any(m.get("mountPath") == SA_MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []
               if isinstance(m, dict)):
            return  # the Pod mounts its own credentials there
        # kube's utilrand.String(5) (math/rand: a volume name is no secret); secrets.choice five times was
        # ~3% of a Pod create's CPU
        vname = "kube-api-access-" + "".join(random.choices(_ALNUM, k=5))
        volumes = spec.setdefault("volumes", [])
        if not isinstance(volumes, list):
            return
        volumes.append({"name": vname, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
        for c in containers:
            mounts = c.setdefault("volumeMounts", [])
            if isinstance(mounts, list):
                mounts.append({"name": vname, "readOnly": True, "mountPath": SA_MOUNT_PATH})

    # ------------------------------------------------------------------ escalation
    def _no_escalation(self, rt: ResourceType, obj: Obj, user: User) -> None:
        ns = str(_meta(obj).get("namespace") or "") if rt.namespaced else ""
        name = str(_meta(obj).get("name") or "")
        if rt.kind in ("Role", "ClusterRole"):
            if self.authorizer.allowed(Attributes(user, "escalate", True, RBAC_GROUP, rt.plural, "", ns, name)):
                return
            rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
            if rt.kind == "ClusterRole" and obj.get("aggregationRule"):
                rules = []  # the aggregation controller fills them from roles the user could already write
            missing = covers(self.authorizer.rules_for(user, ns), rules)
            if missing:
                raise errors.APIError(403, "Forbidden", f'{rt.plural}.{RBAC_GROUP} "{name}" is forbidden: user '
                                      f'"{user.name}" (groups={_go_list(user.groups)}) is attempting to grant RBAC '
                                      f"permissions not currently held:\n{_describe(missing)}",
                                      name=name, group=RBAC_GROUP, kind=rt.plural)
            return
        ref = obj.get("roleRef") or {}
        if not isinstance(ref, dict):
            return
        kind, role = ref.get("kind"), str(ref.get("name") or "")
        plural = "clusterroles" if kind == "ClusterRole" else "roles"
        if self.authorizer.allowed(Attributes(user, "bind", True, RBAC_GROUP, plural, "", ns, role)):
            return
        key = (f"/{RBAC_GROUP}/clusterroles/{role}" if kind == "ClusterRole"
               else f"/{RBAC_GROUP}/roles/{ns}/{role}")
        target = self.get(key)
        rules = (target.obj.get("rules") or []) if target is not None else []
        missing = covers(self.authorizer.rules_for(user, ns), rules)
        if target is None or missing:
            why = (f'{plural}.{RBAC_GROUP} "{role}" not found' if target is None else
                   f'user "{user.name}" (groups={_go_list(user.groups)}) is attempting to grant RBAC '
                   f"permissions not currently held:\n{_describe(missing)}")
            raise errors.APIError(403, "Forbidden", f'{rt.plural}.{RBAC_GROUP} "{name}" is forbidden: {why}',
                                  name=name, group=RBAC_GROUP, kind=rt.plural)


def _go_list(items: tuple[str, ...]) -> str:
    return "[" + " ".join(f'"{g}"' for g in items) + "]"


def _describe(rules: list[Obj]) -> str:
    lines = []
    for r in rules[:20]:
        if "nonResourceURLs" in r:
            lines.append(f"{{NonResourceURLs:{r['nonResourceURLs']}, Verbs:{r['verbs']}}}")
        else:
            names = f", ResourceNames:{r['resourceNames']}" if r.get("resourceNames") else ""
            lines.append(f"{{APIGroups:{r['apiGroups']}, Resources:{r['resources']}{names}, Verbs:{r['verbs']}}}")
    more = f"\n... and {len(rules) - 20} more" if len(rules) > 20 else ""
    return "\n".join(lines).replace("'", '"') + more


class ServiceAccountControllers:
    """`default` ServiceAccounts, `kube-root-ca.crt` ConfigMaps and legacy token Secrets, per namespace."""

    def __init__(self, rest: Rest, registry: Registry, issuer: TokenIssuer) -> None:
        self.rest = rest
        self.registry = registry
        self.issuer = issuer
        self.ca_pem: bytes | None = None
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._bg = StoreWorker(rest.store, self._on_event)

    def _enqueue(self, kind: str, key: str) -> None:
        if (kind, key) not in self._queued:
            self._queued.add((kind, key))
            self._queue.put_nowait((kind, key))

    def _on_event(self, ev: Event) -> None:
        k = ev.key
        if k.startswith("/core/namespaces/"):
            if ev.type != DELETED:
                self._enqueue("namespace", k.rsplit("/", 1)[1])
        elif k.startswith("/core/serviceaccounts/") and k.endswith("/default") and ev.type == DELETED:
            self._enqueue("namespace", k.split("/")[3])
        elif k.startswith("/core/configmaps/") and k.endswith(f"/{ROOT_CA}"):
            self._enqueue("namespace", k.split("/")[3])
        elif k.startswith("/core/secrets/") and ev.type != DELETED and ev.entry.obj.get("type") == SA_TOKEN_TYPE:
            self._enqueue("secret", k)

    def set_root_ca(self, ca_pem: bytes | None) -> None:
        """The CA clients should trust (known once TLS is set up); publishes it to every namespace."""
        self.ca_pem = ca_pem
        _rv, items = self.rest.store.range("/core/namespaces/")
        for k, _e in items:
            self._enqueue("namespace", k)

    async def start(self) -> None:
        store = self.rest.store
        self._bg.listen()
        for bucket, kind in (("/core/namespaces/", "namespace"), ("/core/secrets/", "secret")):
            _rv, items = store.range(bucket)
            for k, e in items:
                if kind == "namespace" or e.obj.get("type") == SA_TOKEN_TYPE:
                    self._enqueue(kind, k if kind == "namespace" else bucket + k)
        self._bg.spawn(self._worker, "kokpit-serviceaccounts")

    async def stop(self) -> None:
        await self._bg.stop()

    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            self._queued.discard(item)
            try:
                if item[0] == "namespace":
                    await self._namespace(item[1])
                else:
                    await self._secret(item[1])
            except errors.APIError as e:
                if e.code not in (404, 409, 403):  # gone, raced, or the namespace is terminating
                    log.warning("service account controller on %s: %s", item, e)
            except Exception:
                log.exception("service account controller failed on %s", item)

    def _rt(self, plural: str) -> ResourceType:
        rt = self.registry.get("", "v1", plural)
        assert rt is not None
        return rt

    async def _namespace(self, ns: str) -> None:
        e = self.rest.store.get(f"/core/namespaces/{ns}")
        if e is None or _meta(e.obj).get("deletionTimestamp"):
            return
        store = self.rest.store
        if store.get(f"/core/serviceaccounts/{ns}/default") is None:
            await self.rest.create(self._rt("serviceaccounts"), ns, {
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}},
                _SYSTEM)
        if self.ca_pem is None:
            return
        want = {"ca.crt": self.ca_pem.decode()}
        cm = store.get(f"/core/configmaps/{ns}/{ROOT_CA}")
        rt = self._rt("configmaps")
        if cm is None:
            await self.rest.create(rt, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": ROOT_CA, "namespace": ns,
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify "
                                "the kube-apiserver when using internal endpoints such as the internal service "
                                "IP or kubernetes.default.svc. No other usage is guaranteed across "
                                "distributions of Kubernetes clusters."}}, "data": want}, _SYSTEM)
        elif cm.obj.get("data") != want:
            obj = cm.copy()
            obj["data"] = want
            await self.rest.update(rt, ns, ROOT_CA, obj, _SYSTEM)

    async def _secret(self, key: str) -> None:
        e = self.rest.store.get(key)
        if e is None or e.obj.get("type") != SA_TOKEN_TYPE:
            return
        meta = _meta(e.obj)
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        data = e.obj.get("data") or {}
        if data.get("token"):
            return
        sa_name = (meta.get("annotations") or {}).get(_SA_ANNOTATION)
        sa = self.rest.store.get(f"/core/serviceaccounts/{ns}/{sa_name}") if sa_name else None
        if sa is None:
            return  # kube leaves it empty until the ServiceAccount exists
        obj = e.copy()
        token = self.issuer.issue_legacy(ns, sa.obj, name)
        new = {"token": token, "namespace": ns}
        if self.ca_pem is not None:
            new["ca.crt"] = self.ca_pem.decode()
        obj["data"] = {**data, **{k: base64.b64encode(v.encode()).decode() for k, v in new.items()}}
        annotations = _meta(obj).setdefault("annotations", {})
        annotations["kubernetes.io/service-account.uid"] = _meta(sa.obj).get("uid")
        await self.rest.update(self._rt("secrets"), ns, name, obj, _SYSTEM)
