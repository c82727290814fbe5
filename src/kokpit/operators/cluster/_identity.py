"""The least-privilege meta-cluster identities of a business cluster's risk actors (issue 14 item 6).

The machine operator (upgrades, its own cordons) and the controller-manager (taint-based eviction, a
``node-drain``) run as Pods in the Cluster's namespace of the meta cluster and ask the risk center for Permits
there.  They must not act with the cluster operator's rights (Pods, Secrets of every cluster), so the cluster
operator provisions one ServiceAccount per Cluster and actor (``RISK_ACTOR_COMPONENTS``),
``<cluster>-machine-operator`` and ``<cluster>-kube-controller-manager``, each with a Role that allows Permits
and nothing else — the verbs :mod:`kokpit.runtime.permits` uses: create, get, list and
watch (its one shared watch), patch (renewal), delete (asking anew after a finished attempt), and patching
``permits/status`` (pre/post checks and the release with its outcome).  The Pod names the ServiceAccount
(``serviceAccountName``), so the token reaches it the Kubernetes way: a bound, rotated, projected token that
dies with the Pod, never a long-lived Secret.

Which Cluster's permits: RBAC has no label selectors, so its boundary is the Role's namespace, the
Cluster's.  Clusters that share a namespace are kept apart by admission: an actor ServiceAccount
``<cluster>-<component>`` may only write Permits whose ``spec.cluster`` is ``<cluster>``
(``kokpit.api.risk.actor_cluster``; the embedded API server checks it natively, a real meta cluster through
the ValidatingAdmissionPolicy ``kokpit-permit-actor`` that ``kokpit manifests`` renders).

Every object is owned by the Cluster (garbage-collected with it) and labelled ``kokpit.io/cluster``.
"""

from __future__ import annotations

from typing import Any

from kokpit.api.risk import RISK_ACTOR_COMPONENTS
from kokpit.client import AlreadyExistsError, Kind, ObjectClient
from kokpit.operators.cluster._plan import CLUSTER_LABEL, Names
from kokpit.operators.cluster._resources import owner_refs
from kokpit.runtime import Store

__all__ = ["IDENTITY_KINDS", "ROLE", "ROLE_BINDING", "SERVICE_ACCOUNT", "ActorIdentity", "actor_identity",
           "permit_rules"]

Obj = dict[str, Any]
_RBAC = "rbac.authorization.k8s.io"
SERVICE_ACCOUNT = Kind("", "v1", "ServiceAccount", "serviceaccounts")
ROLE = Kind(_RBAC, "v1", "Role", "roles")
ROLE_BINDING = Kind(_RBAC, "v1", "RoleBinding", "rolebindings")
IDENTITY_KINDS = (SERVICE_ACCOUNT, ROLE, ROLE_BINDING)


def permit_rules() -> list[Obj]:
    """Permits and nothing else (see the module doc for why each verb)."""
    return [{"apiGroups": ["kokpit.io"], "resources": ["permits"],
             "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
            {"apiGroups": ["kokpit.io"], "resources": ["permits/status"], "verbs": ["patch"]}]


def actor_identity(names: Names, owner: Obj,
                   actors: tuple[str, ...] = RISK_ACTOR_COMPONENTS) -> list[tuple[Kind, Obj]]:
    """The ServiceAccount, Role and RoleBinding of each of ``names.cluster``'s risk actors."""

    def meta(name: str) -> Obj:
        return {"name": name, "namespace": names.namespace, "labels": {CLUSTER_LABEL: names.cluster},
                "ownerReferences": owner_refs(owner)}

    out: list[tuple[Kind, Obj]] = []
    for sa in (names.actor(a) for a in actors):
        out += [
            (SERVICE_ACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(sa)}),
            (ROLE, {"apiVersion": f"{_RBAC}/v1", "kind": "Role", "metadata": meta(sa), "rules": permit_rules()}),
            (ROLE_BINDING, {"apiVersion": f"{_RBAC}/v1", "kind": "RoleBinding", "metadata": meta(sa),
                            "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": sa},
                            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": names.namespace}]}),
        ]
    return out


def _drifted(kind: Kind, have: Obj, want: Obj) -> bool:
    if kind is ROLE:
        return bool(have.get("rules") != want["rules"])
    if kind is ROLE_BINDING:
        return bool(have.get("subjects") != want["subjects"])
    return False


class ActorIdentity:
    """Makes the identity exist and hold exactly its rules; reads informer caches, writes only on a gap."""

    def __init__(self, client: ObjectClient, stores: dict[str, Store]) -> None:
        self.client = client
        self.stores = stores

    async def ensure(self, names: Names, owner: Obj, actors: tuple[str, ...] = RISK_ACTOR_COMPONENTS) -> list[str]:
        """Create what is missing for ``actors``, put back rules someone changed; returns what it wrote."""
        wrote = []
        for kind, want in actor_identity(names, owner, actors):
            name = want["metadata"]["name"]
            have = self.stores[kind.plural].get_by_name(name, names.namespace)
            if have is None:
                try:
                    await self.client.create(kind, want, names.namespace)
                    wrote.append(f"created {kind.kind} {name}")
                except AlreadyExistsError:
                    pass
            elif _drifted(kind, have, want):
                body = {"rules": want["rules"]} if kind is ROLE else {"subjects": want["subjects"]}
                await self.client.patch(kind, name, body, names.namespace)
                wrote.append(f"restored {kind.kind} {name}")
        return wrote
