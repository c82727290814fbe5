"""The patch engine of the embedded API server: how a write request turns into the next object.

kubectl, kopf and the client libraries rely on the exact semantics of kube-apiserver's four patch types
(JSON merge patch, JSON patch, strategic merge patch, server-side apply) and on `metadata.managedFields`
being kept like kube-apiserver keeps them, so that `kubectl apply --server-side` reports the same conflicts
against `kubectl edit` or client-side apply.  Everything here is a pure function on JSON values (dicts,
lists, scalars), so the HTTP and storage layers stay thin and these rules are tested in isolation.

Schema information comes in as a JSON-schema node (OpenAPI v3 as served by kube-apiserver, or a CRD's
structural schema) plus a `resolve` callable that follows `$ref`.  `None` means "no schema": maps merge
key by key, lists are atomic.

Field sets (FieldsV1) are handled internally as Python sets of paths; a path is a tuple of FieldsV1 path
elements: `f:<field>`, `k:<compact JSON of the list-map keys>`, `v:<JSON value>`.

The modules, one job each: :mod:`.json_patches` (JSON merge patch, JSON patch), :mod:`.strategic` (strategic
merge patch), :mod:`.fieldsets` (FieldsV1 path sets), :mod:`.managed` (``managedFields`` bookkeeping),
:mod:`.apply` (server-side apply) and :mod:`._schema` (what they need from a schema node).
"""

from kokpit.apiserver.patch._schema import Resolver, deep_copy
from kokpit.apiserver.patch.apply import server_side_apply
from kokpit.apiserver.patch.fieldsets import fields_set
from kokpit.apiserver.patch.json_patches import json_merge_patch, json_patch
from kokpit.apiserver.patch.managed import update_managed_fields
from kokpit.apiserver.patch.strategic import strategic_merge_patch

__all__ = [
    "Resolver",
    "deep_copy",
    "fields_set",
    "json_merge_patch",
    "json_patch",
    "server_side_apply",
    "strategic_merge_patch",
    "update_managed_fields",
]
