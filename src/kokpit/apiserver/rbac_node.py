"""The Node authorizer and the NodeRestriction admission rules: what a kubelet may do, as kube-apiserver's
`--authorization-mode=Node,RBAC` and `--enable-admission-plugins=NodeRestriction` decide it.

A kubelet authenticates as `system:node:<node>` in the group `system:nodes` (kube's kubelet client
certificate; here a line of `--token-auth-file`).  Such a caller is not given a role: the Node authorizer
(`plugin/pkg/auth/authorizer/node`) answers first, RBAC only after it has no opinion —

- Secrets, ConfigMaps and ServiceAccount tokens are readable only when a Pod bound to that node uses them
  (volumes, projected sources, env, envFrom, imagePullSecrets, its ServiceAccount): the node's *graph*,
  kept here as an index fed synchronously by the store, so a Pod deleted or moved takes its access with it
  before the write that did it is answered;
- Pods: `get` only of Pods bound to the node, `list`/`watch` only with the field selector
  `spec.nodeName=<node>` (kube 1.32's AuthorizeNodeWithSelectors);
- Leases only in `kube-node-lease`, and only the node's own by name;
- the rest is kube's static node rules (bootstrappolicy.NodeRules) for the kinds this server serves: Nodes
  and their status, Pod status, eviction and (mirror) Pod creation, Events, TokenReviews and
  SubjectAccessReviews.

NodeRestriction then holds the writes those rules allow to the node's own objects: its Node (no other, no
taint changes, no `node-restriction.kubernetes.io/` labels), its Lease, Pods bound to it (status, deletion,
eviction; creation only of mirror Pods; binding only to itself — the last is kokpit's, since the embedded
meta cluster has no scheduler and its kubelet binds), and tokens only for Pods bound to it.  Refusals are
kube's 403 messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.auth import User
from kokpit.apiserver.rbac import Attributes, CompiledRule
from kokpit.apiserver.storage.store import DELETED, Event, Store

__all__ = ["NODES_GROUP", "NODE_LEASE_NAMESPACE", "NodeAuthorizer", "node_identity", "node_restriction"]

NODES_GROUP = "system:nodes"
NODE_LEASE_NAMESPACE = "kube-node-lease"
_NODE_PREFIX = "system:node:"
_PODS = "/core/pods/"
_MIRROR = "kubernetes.io/config.mirror"
_RESTRICTED_LABEL = "node-restriction.kubernetes.io/"

Obj = dict[str, Any]


def node_identity(user: User) -> str | None:
    """The node a kubelet's user stands for (kube's NodeIdentifier): `system:node:<name>` in `system:nodes`;
    "" for a malformed one (refused), None for anyone else."""
    if NODES_GROUP not in user.groups or not user.name.startswith(_NODE_PREFIX):
        return None
    return user.name[len(_NODE_PREFIX):]


def _r(groups: tuple[str, ...], resources: tuple[str, ...], verbs: tuple[str, ...]) -> CompiledRule:
    return CompiledRule({"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)},
                        "Node authorizer")


# kube's bootstrappolicy.NodeRules, for the kinds this server serves (secrets, configmaps, pods' get/list/watch,
# leases and serviceaccounts/token are decided from the graph above, not here)
NODE_RULES = (
    _r(("authentication.k8s.io",), ("tokenreviews",), ("create",)),
    _r(("authorization.k8s.io",), ("subjectaccessreviews", "localsubjectaccessreviews"), ("create",)),
    _r(("",), ("services",), ("get", "list", "watch")),
    _r(("",), ("nodes",), ("create", "get", "list", "watch", "update", "patch")),
    _r(("",), ("nodes/status",), ("update", "patch")),
    _r(("", "events.k8s.io"), ("events",), ("create", "update", "patch")),
    _r(("",), ("pods",), ("create", "delete")),
    _r(("",), ("pods/status",), ("update", "patch")),
    _r(("",), ("pods/eviction",), ("create",)),
)


def _pod_refs(pod: Obj) -> Iterator[tuple[str, str]]:
    """(kind, name) of every Secret, ConfigMap and ServiceAccount a Pod uses (kube's graph_populator)."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return
    yield "serviceaccounts", str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    for s in spec.get("imagePullSecrets") or []:
        if isinstance(s, dict) and s.get("name"):
            yield "secrets", str(s["name"])
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        if isinstance(v.get("secret"), dict) and v["secret"].get("secretName"):
            yield "secrets", str(v["secret"]["secretName"])
        if isinstance(v.get("configMap"), dict) and v["configMap"].get("name"):
            yield "configmaps", str(v["configMap"]["name"])
        for src in (v.get("projected") or {}).get("sources") or [] if isinstance(v.get("projected"), dict) else []:
            if not isinstance(src, dict):
                continue
            for key, kind in (("secret", "secrets"), ("configMap", "configmaps")):
                if isinstance(src.get(key), dict) and src[key].get("name"):
                    yield kind, str(src[key]["name"])
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}) if isinstance(e, dict) else {}
                for k, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                    if isinstance(ref.get(k), dict) and ref[k].get("name"):
                        yield kind, str(ref[k]["name"])
            for e in c.get("envFrom") or []:
                if not isinstance(e, dict):
                    continue
                for k, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                    if isinstance(e.get(k), dict) and e[k].get("name"):
                        yield kind, str(e[k]["name"])


def _node_of(pod: Obj) -> str:
    spec = pod.get("spec")
    return str(spec.get("nodeName") or "") if isinstance(spec, dict) else ""


class NodeAuthorizer:
    """The graph (node → the objects its Pods use) and the decisions made from it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # (node, kind, namespace, name) -> how many of the node's Pods use it; kind "pods" for the Pods
        self._edges: dict[tuple[str, str, str, str], int] = {}
        self._pods: dict[str, list[tuple[str, str, str, str]]] = {}  # pod key -> its edges
        self._active = False

    def _activate(self) -> None:
        """Build the graph at the first request of a node and keep it current from then on: a server no kubelet
        ever talks to (a business cluster of simulated nodes) pays nothing per Pod write (~10 µs otherwise)."""
        if self._active:
            return
        _rv, items = self.store.range(_PODS)
        for key, e in items:
            self._add(_PODS + key, e.obj)
        self.store.listeners.append(self._on_event)  # synchronous: nothing written between is missed
        self._active = True

    def close(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)

    def _add(self, key: str, pod: Obj) -> None:
        node = _node_of(pod)
        if not node:
            return
        ns, _, name = key[len(_PODS):].partition("/")
        edges = [(node, "pods", ns, name), *{(node, kind, ns, n) for kind, n in _pod_refs(pod)}]
        for edge in edges:
            self._edges[edge] = self._edges.get(edge, 0) + 1
        self._pods[key] = edges

    def _drop(self, key: str) -> None:
        for edge in self._pods.pop(key, ()):
            left = self._edges.get(edge, 0) - 1
            if left > 0:
                self._edges[edge] = left
            else:
                self._edges.pop(edge, None)

    def _on_event(self, ev: Event) -> None:
        if not ev.key.startswith(_PODS):
            return
        self._drop(ev.key)
        if ev.type != DELETED:
            self._add(ev.key, ev.entry.obj)

    def related(self, node: str, kind: str, namespace: str, name: str) -> bool:
        self._activate()
        return (node, kind, namespace, name) in self._edges

    def authorize(self, a: Attributes, node: str, field_selector: str = "") -> tuple[bool, str]:
        """(allowed, reason): the Node authorizer's answer; not allowed means "no opinion" (RBAC decides next)
        and the reason is what kube appends to the 403 message."""
        if not node:
            return False, "unknown node"
        if a.resource_request and a.group == "" and a.resource in ("secrets", "configmaps") and not a.subresource:
            if a.verb not in ("get", "list", "watch"):
                return False, "can only read resources of this type"
            return self._related(a, node, a.resource)
        if a.resource_request and a.group == "" and a.resource == "serviceaccounts" and a.subresource == "token":
            if a.verb != "create":
                return False, "can only create tokens for individual service accounts"
            return self._related(a, node, "serviceaccounts")
        if a.resource_request and a.group == "coordination.k8s.io" and a.resource == "leases":
            if a.verb not in ("get", "create", "update", "patch", "delete"):
                return False, "can only get, create, update, patch, or delete a node lease"
            if a.namespace != NODE_LEASE_NAMESPACE:
                return False, f"can only access leases in the {NODE_LEASE_NAMESPACE} system namespace"
            if a.verb != "create" and a.name != node:
                return False, "can only access node lease with the same name as the requesting node"
            return True, ""
        if a.resource_request and a.group == "" and a.resource == "pods" and not a.subresource:
            if a.verb == "get":
                return self._related(a, node, "pods")
            if a.verb in ("list", "watch"):
                if f"spec.nodeName={node}" in field_selector.replace("==", "=").split(","):
                    return True, ""
                return False, "can only list/watch pods with spec.nodeName field selector"
        if any(rule.allows(a) for rule in NODE_RULES):
            return True, ""
        return False, ""

    def _related(self, a: Attributes, node: str, kind: str) -> tuple[bool, str]:
        if not a.name:
            return False, "No Object name found"
        if self.related(node, kind, a.namespace, a.name):
            return True, ""
        return False, f"no relationship found between node '{node}' and this object"

    # ------------------------------------------------------------------ NodeRestriction
    def pod_bound_here(self, node: str, namespace: str, name: str) -> bool | None:
        """Whether the stored Pod is bound to `node` (None: there is no such Pod)."""
        e = self.store.get(f"{_PODS}{namespace}/{name}")
        return None if e is None else _node_of(e.obj) == node


def _forbidden(resource: str, name: str, why: str, group: str = "") -> errors.APIError:
    qualified = f"{resource}.{group}" if group else resource
    what = f'{qualified} "{name}"' if name else qualified
    return errors.APIError(403, "Forbidden", f"{what} is forbidden: {why}", name=name or None, group=group,
                           kind=resource)


def node_restriction(node: str, kind: str, obj: Obj, old: Obj | None) -> None:
    """NodeRestriction on a write a node's kubelet makes (old None: a create); raises kube's 403."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name = str(meta.get("name") or "")
    if kind == "Node":
        if name != node:
            raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify node "{name}"')
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        assert isinstance(labels, dict)
        old_labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        bad = sorted(k for k in labels if str(k).startswith(_RESTRICTED_LABEL)
                     and (old is None or labels.get(k) != old_labels.get(k)))
        bad += sorted(k for k in old_labels if str(k).startswith(_RESTRICTED_LABEL) and k not in labels)
        if bad:
            raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify labels: {", ".join(bad)}')
        if old is not None and ((obj.get("spec") or {}).get("taints") or []) != \
                ((old.get("spec") or {}).get("taints") or []):
            raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify taints')
    elif kind == "Pod":
        if old is None:
            annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
            if _MIRROR not in (annotations or {}):
                raise _forbidden("pods", name, f'pod does not have "{_MIRROR}" annotation, node "{node}" can only '
                                 "create mirror pods")
            if _node_of(obj) != node:
                raise _forbidden("pods", name, f'node "{node}" can only create pods with spec.nodeName set to '
                                 "itself")
        elif not _node_of(old):
            if _node_of(obj) != node:  # a binding (kokpit's embedded meta cluster: its kubelet binds)
                raise _forbidden("pods", name, f'node "{node}" can only bind pods to itself')
        elif _node_of(old) != node or _node_of(obj) != node:
            raise _forbidden("pods", name, f'node "{node}" can only update pod status for pods with spec.nodeName '
                             "set to itself")
    elif kind == "Lease" and old is None and name != node:
        raise _forbidden("leases", name, "can only access node lease with the same name as the requesting node",
                         "coordination.k8s.io")


def token_restriction(node: str, authorizer: NodeAuthorizer, namespace: str, sa: str, body: Any) -> None:
    """NodeRestriction on a TokenRequest from a node: it must be bound to a Pod that runs there."""
    spec = (body.get("spec") if isinstance(body, dict) else None) or {}
    ref = spec.get("boundObjectRef") if isinstance(spec, dict) else None
    if not isinstance(ref, dict) or ref.get("kind") != "Pod":
        raise _forbidden("serviceaccounts", sa, "node requested token not bound to a pod")
    if not ref.get("uid"):
        raise _forbidden("serviceaccounts", sa, "node requested token with a pod binding without a uid")
    e = authorizer.store.get(f"{_PODS}{namespace}/{ref.get('name')}")
    if e is None or (e.obj.get("metadata") or {}).get("uid") != ref.get("uid"):
        raise _forbidden("serviceaccounts", sa, "node requested token bound to a pod that does not exist")
    if _node_of(e.obj) != node:
        raise _forbidden("serviceaccounts", sa, "node requested token bound to a pod scheduled on a different node")
