"""Generate apiextensions.k8s.io/v1 CRDs from the typed models, so the schema can never drift from the code.

Pydantic emits JSON Schema 2020-12 with ``$defs``/``$ref``, ``anyOf [X, null]`` for optionals and numeric
``exclusiveMinimum``; Kubernetes wants a *structural* OpenAPI v3.0 schema: every node typed, no ``$ref``,
boolean ``exclusiveMinimum``, list semantics in ``x-kubernetes-*`` extensions.  This module converts one into
the other generically (any :class:`~kokpit.api.meta.ResourceModel` with a ``KIND_INFO``), so the cluster
operator's kinds reuse it unchanged.

Models declare list semantics with :func:`list_map` / :func:`list_set` in ``Field(json_schema_extra=...)``
and free-form objects with :data:`PRESERVE_UNKNOWN`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = [
    "PRESERVE_UNKNOWN",
    "REFERENCES_ANNOTATION",
    "FieldReference",
    "KindInfo",
    "PrinterColumn",
    "crd_for",
    "list_map",
    "list_set",
    "structural_schema",
]

Obj = dict[str, Any]

PRESERVE_UNKNOWN: Obj = {"x-kubernetes-preserve-unknown-fields": True}
REFERENCES_ANNOTATION = "kokpit.io/admission-references"
"""The CRD annotation kokpit's API server reads for :class:`FieldReference` checks (a real kube-apiserver
ignores it; the kind's controller reports a dangling reference as a condition there)."""
"""``json_schema_extra`` for a free-form object field (install parameters and the like)."""

# JSON-schema keywords kube's OpenAPI v3.0 subset understands (everything else is dropped)
_KEEP = {
    "type", "format", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "required", "properties", "additionalProperties", "items", "nullable",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string", "x-kubernetes-map-type", "x-kubernetes-validations",
    "x-kubernetes-embedded-resource", "example",
}


def list_map(*keys: str) -> Obj:
    """``json_schema_extra`` for a list of objects keyed by ``keys`` (merged by key in server-side apply)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys or ("name",))}


def list_set() -> Obj:
    """``json_schema_extra`` for a list of unique scalars."""
    return {"x-kubernetes-list-type": "set"}


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_dict(self) -> Obj:
        out: Obj = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class FieldReference:
    """A spec field that must name an existing cluster-scoped object when it is written: refused at
    admission with a 422 naming the field (e.g. a NodeFault's ``.spec.nodeName`` → a Node)."""

    json_path: str
    resource: str
    group: str = ""
    kind: str = ""

    def to_dict(self) -> Obj:
        return {"jsonPath": self.json_path, "resource": self.resource, "group": self.group, "kind": self.kind}


@dataclass(frozen=True)
class KindInfo:
    """Names and serving options of one kind; a model's ``KIND_INFO``."""

    group: str
    version: str
    kind: str
    plural: str
    scope: str = "Namespaced"  # or "Cluster"
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("kokpit",)
    printer_columns: tuple[PrinterColumn, ...] = ()
    status_subresource: bool = True
    required: tuple[str, ...] = ("spec",)
    selectable_fields: tuple[str, ...] = ()
    """CRD ``selectableFields`` (JSON paths such as ``.spec.nodeName``, at most 8): what ``kubectl get
    --field-selector`` and watches may filter on, as kube 1.32+ serves them for custom resources."""
    references: tuple[FieldReference, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"


def _deref(node: Any, defs: dict[str, Obj], stack: tuple[str, ...]) -> Any:
    """Inline every ``$ref``; a recursive model cannot be structural, so it is refused."""
    if isinstance(node, list):
        return [_deref(x, defs, stack) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive model {name!r} cannot be expressed as a structural schema")
        base = copy.deepcopy(defs[name])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        merged = _deref(base, defs, (*stack, name))
        merged.update(_deref(siblings, defs, stack))
        return merged
    out: Obj = {}
    for k, v in node.items():
        if k == "properties" and isinstance(v, dict):
            out[k] = {pk: _deref(pv, defs, stack) for pk, pv in v.items()}
        else:
            out[k] = _deref(v, defs, stack)
    return out


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _clean(node: Obj) -> Obj:
    """Turn one (already inlined) JSON Schema node into a structural OpenAPI v3.0 node, recursively."""
    node = dict(node)
    # optional X (anyOf [X, null]) → X; the field is simply left out when unset
    for key in ("anyOf", "oneOf"):
        alts = node.get(key)
        if isinstance(alts, list):
            non_null = [a for a in alts if not _is_null(a)]
            if len(non_null) == 1:
                del node[key]
                inner = dict(non_null[0])
                inner.update({k: v for k, v in node.items() if k not in inner or k in ("description",)})
                node = inner
            elif non_null and all(isinstance(a, dict) and a.get("type") in ("string", "integer")
                                  for a in non_null) and len({a.get("type") for a in non_null}) == 2:
                del node[key]
                node["x-kubernetes-int-or-string"] = True
            else:
                raise ValueError(f"cannot express {key} of {alts!r} structurally; use a single type")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    # JSON Schema 2020 numeric exclusive bounds → OpenAPI 3.0 boolean form
    for ex, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if ex in node and not isinstance(node[ex], bool):
            node[bound] = node.pop(ex)
            node[ex] = True
    if node.get("default", 0) is None:
        del node["default"]
    if "enum" in node and "type" not in node:
        vals = node["enum"]
        node["type"] = ("string" if all(isinstance(v, str) for v in vals)
                        else "integer" if all(isinstance(v, int) for v in vals) else "string")
    if "properties" in node or ("additionalProperties" in node and "type" not in node):
        node.setdefault("type", "object")
    if node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas prune unknown fields anyway
    if "type" not in node and not (node.get("x-kubernetes-preserve-unknown-fields")
                                   or node.get("x-kubernetes-int-or-string")):
        # a bare Any: keep it as an arbitrary object rather than an untyped node
        node["type"] = "object"
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        node["type"] = "object"
    out: Obj = {}
    for k, v in node.items():
        if k not in _KEEP:
            continue
        if k == "properties":
            out[k] = {pk: _clean(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = _clean(v)
        else:
            out[k] = v
    if out.get("type") == "object" and not out.get("properties") and "additionalProperties" not in out:
        out.pop("properties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


def structural_schema(model: type[BaseModel]) -> Obj:
    """The structural OpenAPI v3 schema of ``model`` (wire names, every ``$ref`` inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _clean(_deref(raw, defs, ()))


def _root_schema(model: type[BaseModel], info: KindInfo) -> Obj:
    schema = structural_schema(model)
    props: Obj = dict(schema.get("properties") or {})
    # apiVersion/kind/metadata are the server's: typed, but no defaults and only name/generateName in meta
    props["apiVersion"] = {"type": "string", "description": "APIVersion of this representation."}
    props["kind"] = {"type": "string", "description": "Kind of this object."}
    props["metadata"] = {"type": "object"}
    out: Obj = {"type": "object", "properties": props}
    if schema.get("description"):
        out["description"] = schema["description"]
    required = [r for r in info.required if r in props]
    if required:
        out["required"] = required
    return out


def crd_for(model: type[BaseModel], info: KindInfo | None = None) -> Obj:
    """The CustomResourceDefinition of a top-level kind (``info`` defaults to ``model.KIND_INFO``)."""
    ki: KindInfo = info if info is not None else model.KIND_INFO  # type: ignore[attr-defined]
    names: Obj = {
        "kind": ki.kind,
        "listKind": f"{ki.kind}List",
        "plural": ki.plural,
        "singular": ki.singular or ki.kind.lower(),
    }
    if ki.short_names:
        names["shortNames"] = list(ki.short_names)
    if ki.categories:
        names["categories"] = list(ki.categories)
    version: Obj = {
        "name": ki.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _root_schema(model, ki)},
    }
    if ki.status_subresource:
        version["subresources"] = {"status": {}}
    if ki.printer_columns:
        version["additionalPrinterColumns"] = [c.to_dict() for c in ki.printer_columns]
    if ki.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in ki.selectable_fields]
    meta: Obj = {"name": ki.crd_name, "labels": {"app.kubernetes.io/part-of": "kokpit"}}
    if ki.references:
        meta["annotations"] = {REFERENCES_ANNOTATION: json.dumps([r.to_dict() for r in ki.references],
                                                                 separators=(",", ":"))}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta,
        "spec": {"group": ki.group, "scope": ki.scope, "names": names, "versions": [version]},
    }
