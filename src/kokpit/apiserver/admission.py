"""Checks kube-apiserver makes in its admission chain that no schema can express.

NamespaceLifecycle forbids deleting the namespaces the system itself lives in: `default`, `kube-system` and
`kube-public` (its "immortal namespaces"). Without the check any user allowed to delete namespaces (kokpit's
admin token) could remove `default` with everything in it. kube-node-lease is not among them in kube either:
its controller recreates it.

**References** (validating admission that needs a lookup, as kube's compiled-in plugins such as
ServiceAccount admission do): a CRD may declare, in annotation :data:`REFERENCES_ANNOTATION`, fields that
must name an existing cluster-scoped object when they are written — a NodeFault's ``spec.nodeName`` (a
Node) and ``spec.type`` (a FaultType).  A write that sets such a field to a name that does not exist is a
422 naming the field (``FieldValueNotFound``); writes that leave the field as it was (status updates,
relabelling) are not checked again, so an object whose referent disappears later stays writable — its
controller reports that as a condition.  A real kube-apiserver ignores the annotation (the controllers'
condition path covers it there).  The check runs after schema validation, as kube's validating admission
runs after the registry's validation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.errors import Cause
from kokpit.apiserver.resources import Reference, ResourceType

__all__ = ["IMMORTAL_NAMESPACES", "REFERENCES_ANNOTATION", "check_delete", "check_references",
           "parse_references"]

REFERENCES_ANNOTATION = "kokpit.io/admission-references"
"""JSON list of ``{"jsonPath": ".spec.nodeName", "resource": "nodes", "group": "", "kind": "Node"}``."""

log = logging.getLogger(__name__)

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})


def check_delete(rt: ResourceType, name: str) -> None:
    """403 Forbidden, with kube's message and details, for deleting an immortal namespace (dry runs too)."""
    if rt.kind == "Namespace" and rt.group == "" and name in IMMORTAL_NAMESPACES:
        raise errors.forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                               name=name, kind="namespaces")


def parse_references(crd: dict[str, Any]) -> tuple[Reference, ...]:
    """The references a CRD declares (a malformed annotation declares none, and is logged)."""
    raw = ((crd.get("metadata") or {}).get("annotations") or {}).get(REFERENCES_ANNOTATION)
    if not raw:
        return ()
    try:
        items = json.loads(raw)
        return tuple(Reference(path=tuple(str(i["jsonPath"]).lstrip(".").split(".")), resource=str(i["resource"]),
                               group=str(i.get("group", "")), kind=str(i.get("kind", "")))
                     for i in items)
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("CRD %s: annotation %s is not a list of references; ignored",
                    (crd.get("metadata") or {}).get("name"), REFERENCES_ANNOTATION)
        return ()


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def check_references(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                     exists: Callable[[str], bool]) -> list[Cause]:
    """A ``FieldValueNotFound`` cause per declared reference that this write sets to a missing object;
    ``exists`` answers for a store key (``/<group or core>/<resource>/<name>``)."""
    out: list[Cause] = []
    for ref in rt.references:
        value = _at(obj, ref.path)
        if not isinstance(value, str) or not value:
            continue  # the schema says whether it is required
        if old is not None and _at(old, ref.path) == value:
            continue
        if not exists(f"/{ref.group or 'core'}/{ref.resource}/{value}"):
            what = ref.kind or (f"{ref.resource}.{ref.group}" if ref.group else ref.resource)
            out.append(Cause(".".join(ref.path), f'Not found: "{value}": no {what} named "{value}" exists',
                             "FieldValueNotFound"))
    return out
