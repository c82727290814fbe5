"""What the server knows about one served resource: names, scope, verbs, schema, table columns.

A :class:`ResourceType` is the single description every layer reads — discovery, routing, validation,
strategic merge patch, server-side apply, table output and storage keys — so adding a kind (built-in or
from a CRD) is adding one value, not touching each layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PrinterColumn", "Reference", "ResourceType"]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    """A Table column: `json_path` is a CRD additionalPrinterColumns JSONPath (`.spec.replicas`);
    built-in kinds may instead compute cells with ResourceType.table_cells."""

    name: str
    type: str = "string"
    json_path: str = ""
    format: str = ""
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Reference:
    """A field of a custom resource naming a cluster-scoped object that must exist when the field is written
    (e.g. a NodeFault's ``spec.nodeName`` → a Node): declared by the CRD (annotation
    :data:`kokpit.apiserver.admission.REFERENCES_ANNOTATION`), checked by admission."""

    path: tuple[str, ...]
    resource: str
    group: str = ""
    kind: str = ""


@dataclass
class ResourceType:
    """One resource as served at /api/v1 or /apis/GROUP/VERSION.

    `storage_group`/`storage_resource` name where objects live in the store; two resource types may share
    storage (events in core/v1 and events.k8s.io/v1), converting with `to_storage`/`from_storage`.
    `schema` is an OpenAPI v3 (JSON-schema) node for the whole object; `$ref`s point into the built-in
    definitions and are resolved by `kokpit.apiserver.schema`.
    """

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()  # "status", "eviction", "binding", "scale"
    schema: dict[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    table_cells: Callable[[dict[str, Any]], list[Any]] | None = None
    # field selectors beyond metadata.name / metadata.namespace: name -> getter
    field_selectors: dict[str, Callable[[dict[str, Any]], str]] = field(default_factory=dict)
    # built-in kinds use strategic merge patch; custom resources only merge/json/apply
    strategic_merge: bool = True
    # custom resources: set when served by a CRD
    crd_name: str | None = None
    storage_version: str | None = None
    # "status" subresource exists → the main endpoint ignores status
    has_status: bool = False
    # metadata.generation is kept (and bumped by spec changes) only for kinds whose strategy does so in
    # kube: workloads, pods, CRDs and every custom resource — not ConfigMaps, Nodes, Leases...
    has_generation: bool = False
    storage_group: str | None = None
    storage_resource: str | None = None
    to_storage: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    from_storage: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # extra per-kind validation/defaulting hooks (return causes)
    validate_hook: Callable[[dict[str, Any], dict[str, Any] | None], list[Any]] | None = None
    # custom resources: fields that must name an existing object (validating admission)
    references: tuple[Reference, ...] = ()
    default_hook: Callable[[dict[str, Any]], None] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def serves_stored_form(self) -> bool:
        """Whether the object as stored is the object as this type serves it (no conversion, not even the
        apiVersion of another served version): reads can then hand out stored bytes and dicts as they are."""
        return self.from_storage is None and (self.crd_name is None or self.version == self.storage_version)

    @property
    def store_prefix(self) -> str:
        """Key prefix in the store: `/<group or core>/<resource>/`."""
        g = self.storage_group if self.storage_group is not None else self.group
        r = self.storage_resource or self.plural
        return f"/{g or 'core'}/{r}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.store_prefix}{namespace}/{name}"
        return f"{self.store_prefix}{name}"
