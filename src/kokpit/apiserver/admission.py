"""Checks kube-apiserver makes in its admission chain that no schema can express.

NamespaceLifecycle forbids deleting the namespaces the system itself lives in: `default`, `kube-system` and
`kube-public` (its "immortal namespaces"). Without the check any user allowed to delete namespaces (kokpit's
admin token) could remove `default` with everything in it. kube-node-lease is not among them in kube either:
its controller recreates it.
"""

from __future__ import annotations

from kokpit.apiserver import errors
from kokpit.apiserver.resources import ResourceType

__all__ = ["IMMORTAL_NAMESPACES", "check_delete"]

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})


def check_delete(rt: ResourceType, name: str) -> None:
    """403 Forbidden, with kube's message and details, for deleting an immortal namespace (dry runs too)."""
    if rt.kind == "Namespace" and rt.group == "" and name in IMMORTAL_NAMESPACES:
        raise errors.forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                               name=name, kind="namespaces")
