"""The /openapi/v3 and /openapi/v2 documents of the embedded API server.

kubectl reads them before it writes: `apply` refuses to run when both are missing, it decides from the v3
document whether the server does field validation (a `fieldValidation` query parameter on the kind's PATCH
operation, matched through the operation's `x-kubernetes-group-version-kind`), and client-side apply/edit
compute strategic merge patches from the component schemas (`x-kubernetes-patch-merge-key` and friends, and
the components' `x-kubernetes-group-version-kind` list).  So the documents follow kube-apiserver's layout:
an index of group-versions at /openapi/v3 pointing to `/openapi/v3/apis/G/V?hash=...`, and one OpenAPI 3.0
document per group-version holding the reachable schemas and the per-resource paths.

Documents are built from the built-in JSON schemas (see `kokpit.apiserver.schema`) and the CRDs'
`openAPIV3Schema`, and cached: :class:`OpenAPICache` rebuilds only when the set of served types changes and
exposes each document's hash for the index URLs and ETags.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.schema import builtin_definition_name, definition_name, load_builtin_definitions

__all__ = [
    "V2_PROTOBUF_CONTENT_TYPE",
    "OpenAPICache",
    "custom_schema_name",
    "group_version_path",
    "openapi_v2_json",
    "openapi_v2_protobuf",
    "openapi_v3_document",
    "openapi_v3_index",
]

# kube-openapi answers the "...spec.v2@v1.0+protobuf" Accept with this ".v1.0" Content-Type: client-go parses
# it with Go's mime.ParseMediaType, which rejects "@" and fails kubectl's v2 validation fallback (e.g. for Lists).
V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
KUBE_VERSION = "v1.37.0"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
OBJECT_META = META + "ObjectMeta"
LIST_META = META + "ListMeta"
STATUS = META + "Status"
DELETE_OPTIONS = META + "DeleteOptions"
PATCH = META + "Patch"
V3_REF = "#/components/schemas/"
V2_REF = "#/definitions/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

_API_VERSION_DESC = ("APIVersion defines the versioned schema of this representation of an object. Servers should "
                     "convert recognized schemas to the latest internal value, and may reject unrecognized values. "
                     "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
                     "api-conventions.md#resources")
_KIND_DESC = ("Kind is a string value representing the REST resource this object represents. Servers may infer "
              "this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More "
              "info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
              "api-conventions.md#types-kinds")
_METADATA_DESC = ("Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
                  "sig-architecture/api-conventions.md#metadata")
_FIELD_VALIDATION_DESC = (
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing "
    "unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are "
    "silently dropped from the object, and will ignore all but the last duplicate field that the decoder "
    "encounters. - Warn: This will send a warning via the standard warning response header for each unknown "
    "field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This "
    "will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or "
    "if any duplicate fields are present. The error returned from the server will contain all unknown and "
    "duplicate fields encountered.")
_DRY_RUN_DESC = ("When present, indicates that modifications should not be persisted. An invalid or unrecognized "
                 "dryRun directive will result in an error response and no further processing of the request. "
                 "Valid values are: - All: all dry run stages will be processed")
_FIELD_MANAGER_DESC = ("fieldManager is a name associated with the actor or entity that is making these changes. "
                       "The value must be less than or 128 characters long, and only contain printable "
                       "characters, as defined by https://golang.org/pkg/unicode/#IsPrint.")
_FORCE_DESC = ("Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields "
               "owned by other people. Force flag must be unset for non-apply patch requests.")
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json")
_SMP = "application/strategic-merge-patch+json"
_SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "eviction": ("policy", "v1", "Eviction"),
    "binding": ("", "v1", "Binding"),
}


def group_version_path(group_version: str) -> str:
    """`v1` → `api/v1`; `apps/v1` → `apis/apps/v1` (the keys of the /openapi/v3 index)."""
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


def custom_schema_name(group: str, version: str, kind: str) -> str:
    """Component name of a custom kind, like kube: reversed group, version, kind (`io.kokpit.v1alpha1.Machine`)."""
    return ".".join([*reversed(group.split(".")), version, kind]) if group else f"{version}.{kind}"


# ---------------------------------------------------------------------------------------------------------
# Schema conversion (built-in JSON-schema defs → OpenAPI v3 / swagger v2 schemas)
# ---------------------------------------------------------------------------------------------------------

_conv_lock = threading.Lock()
_converted: dict[tuple[str, str], tuple[dict[str, Any], frozenset[str]]] = {}


def _is_gvk_enum(key: str, node: dict[str, Any]) -> bool:
    return key in ("apiVersion", "kind") and "enum" in node


def _convert(node: Any, prefix: str, refs: set[str], v3: bool) -> Any:
    """A copy of `node` with refs rewritten under `prefix`, nullable type lists collapsed and the
    int-or-string unions spelled the way kube-apiserver spells them; referenced names are added to `refs`."""
    if isinstance(node, list):
        return [_convert(x, prefix, refs, v3) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = definition_name(node["$ref"]) or node["$ref"]
        refs.add(name)
        siblings = {k: _convert(v, prefix, refs, v3) for k, v in node.items() if k != "$ref"}
        if v3 and siblings:
            return {"allOf": [{"$ref": prefix + name}], **siblings}
        return {"$ref": prefix + name, **siblings}
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            if types:
                out["type"] = types[0] if len(types) == 1 else types
        elif k == "properties" and isinstance(v, dict):
            out[k] = {pk: _convert({x: y for x, y in pv.items() if not (x == "enum" and _is_gvk_enum(pk, pv))},
                                   prefix, refs, v3) for pk, pv in v.items()}
        elif k == "oneOf" and isinstance(v, list) and all(set(o) <= {"type", "format"} for o in v):
            types = [t for o in v for t in ([o["type"]] if isinstance(o.get("type"), str) else o.get("type", []))
                     if t != "null"]
            int_or_string = set(types) == {"integer", "string"}
            if v3:
                out["oneOf"] = [{"type": t} for t in types]
                if int_or_string:
                    out["format"] = "int-or-string"
            else:
                out["type"] = "string"
                if int_or_string:
                    out["format"] = "int-or-string"
        else:
            out[k] = _convert(v, prefix, refs, v3)
    return out


def _builtin_component(name: str, v3: bool) -> tuple[dict[str, Any], frozenset[str]]:
    key = (name, "v3" if v3 else "v2")
    hit = _converted.get(key)
    if hit is None:
        with _conv_lock:
            hit = _converted.get(key)
            if hit is None:
                refs: set[str] = set()
                node = _convert(load_builtin_definitions()[name], V3_REF if v3 else V2_REF, refs, v3)
                hit = (node, frozenset(refs))
                _converted[key] = hit
    return hit


def _add_reachable(schemas: dict[str, Any], roots: Iterable[str], v3: bool) -> None:
    defs = load_builtin_definitions()
    todo = [r for r in roots if r not in schemas]
    while todo:
        name = todo.pop()
        if name in schemas or name not in defs:
            continue
        node, refs = _builtin_component(name, v3)
        schemas[name] = node
        todo.extend(r for r in refs if r not in schemas)


def _custom_components(rt: ResourceType, v3: bool) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The kind's and its list's schemas from a CRD's openAPIV3Schema, with metadata as ObjectMeta."""
    prefix = V3_REF if v3 else V2_REF
    refs: set[str] = set()
    src = copy.deepcopy(rt.schema) if rt.schema else {"type": "object",
                                                       "x-kubernetes-preserve-unknown-fields": True}
    node = _convert(src, prefix, refs, v3)
    node.setdefault("type", "object")
    props = node.setdefault("properties", {})
    props["apiVersion"] = {"description": _API_VERSION_DESC, "type": "string"}
    props["kind"] = {"description": _KIND_DESC, "type": "string"}
    meta_ref = {"$ref": prefix + OBJECT_META}
    props["metadata"] = ({"allOf": [meta_ref], "description": _METADATA_DESC} if v3
                         else {**meta_ref, "description": _METADATA_DESC})
    refs.add(OBJECT_META)
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    node["x-kubernetes-group-version-kind"] = [gvk]
    name = custom_schema_name(rt.group, rt.version, rt.kind)
    list_meta_ref = {"$ref": prefix + LIST_META}
    list_node = {
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": _API_VERSION_DESC, "type": "string"},
            "items": {"description": f"List of {rt.plural}. More info: https://git.k8s.io/community/contributors/"
                      "devel/sig-architecture/api-conventions.md",
                      "type": "array", "items": {"$ref": prefix + name}},
            "kind": {"description": _KIND_DESC, "type": "string"},
            "metadata": ({"allOf": [list_meta_ref], "description": "Standard list metadata."} if v3
                         else {**list_meta_ref, "description": "Standard list metadata."}),
        },
        "x-kubernetes-group-version-kind": [{**gvk, "kind": rt.kind + "List"}],
    }
    refs.add(LIST_META)
    return {name: node, custom_schema_name(rt.group, rt.version, rt.kind + "List"): list_node}, refs


def _kind_schema_names(rt: ResourceType) -> tuple[str | None, str | None]:
    """(kind schema name, list schema name) for a resource type, built-in or custom."""
    if rt.schema and "$ref" in rt.schema:
        name = definition_name(rt.schema["$ref"])
        list_name = builtin_definition_name(rt.group, rt.version, rt.kind + "List")
        return name, list_name
    if rt.schema is not None or rt.crd_name:
        return (custom_schema_name(rt.group, rt.version, rt.kind),
                custom_schema_name(rt.group, rt.version, rt.kind + "List"))
    return None, None


def _collect_schemas(resource_types: Sequence[ResourceType], v3: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    roots = {STATUS, DELETE_OPTIONS, PATCH}
    for rt in resource_types:
        name, list_name = _kind_schema_names(rt)
        if rt.schema and "$ref" in rt.schema:
            roots.update(n for n in (name, list_name) if n)
        elif name:
            comps, refs = _custom_components(rt, v3)
            schemas.update(comps)
            roots.update(refs)
        for sub in rt.subresources:
            gvk = _SUBRESOURCE_KINDS.get(sub)
            if gvk:
                sub_name = builtin_definition_name(*gvk)
                if sub_name:
                    roots.add(sub_name)
    _add_reachable(schemas, sorted(roots), v3)
    return schemas


# ---------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------


def _camel(s: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in s.replace("-", ".").split(".") if p)


def _op_prefix(rt: ResourceType) -> str:
    group = rt.group[: -len(".k8s.io")] if rt.group.endswith(".k8s.io") else rt.group
    return f"{_camel(group) if group else 'Core'}{_camel(rt.version)}"


def _query(name: str, description: str, v3: bool, typ: str = "string") -> dict[str, Any]:
    if v3:
        return {"name": name, "in": "query", "description": description,
                "schema": {"type": typ, "uniqueItems": True}}
    return {"name": name, "in": "query", "description": description, "type": typ, "uniqueItems": True}


def _write_params(v3: bool, patch: bool = False) -> list[dict[str, Any]]:
    params = [_query("dryRun", _DRY_RUN_DESC, v3), _query("fieldManager", _FIELD_MANAGER_DESC, v3),
              _query("fieldValidation", _FIELD_VALIDATION_DESC, v3)]
    if patch:
        params.append(_query("force", _FORCE_DESC, v3, "boolean"))
    return params


def _ref(name: str | None, v3: bool) -> dict[str, Any]:
    if name is None:
        return {"type": "object"}
    return {"$ref": (V3_REF if v3 else V2_REF) + name}


def _responses(schema: dict[str, Any], v3: bool, codes: Sequence[str] = ("200",)) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        desc = {"200": "OK", "201": "Created", "202": "Accepted"}.get(code, "OK")
        if v3:
            out[code] = {"description": desc, "content": {
                ct: {"schema": schema} for ct in ("application/json", "application/yaml",
                                                  "application/vnd.kubernetes.protobuf")}}
        else:
            out[code] = {"description": desc, "schema": schema}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(action: str, op_id: str, gvk: dict[str, str], v3: bool, *, response: dict[str, Any],
               body: dict[str, Any] | None = None, body_types: Sequence[str] = ("application/json",),
               params: list[dict[str, Any]] | None = None, codes: Sequence[str] = ("200",),
               description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {
        "description": description or op_id,
        "operationId": op_id,
        "tags": [gvk["group"].replace(".", "_") + "_" + gvk["version"] if gvk["group"] else f"core_{gvk['version']}"],
        "parameters": list(params or []),
        "responses": _responses(response, v3, codes),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(gvk),
    }
    if body is not None:
        if v3:
            op["requestBody"] = {"content": {ct: {"schema": body} for ct in body_types}, "required": True}
        else:
            op["parameters"].insert(0, {"name": "body", "in": "body", "required": True, "schema": body})
            op["consumes"] = list(body_types)
    if not v3:
        op["produces"] = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
        op["schemes"] = ["https"]
    return op


def _path_param(name: str, description: str, v3: bool) -> dict[str, Any]:
    if v3:
        return {"name": name, "in": "path", "description": description, "required": True,
                "schema": {"type": "string", "uniqueItems": True}}
    return {"name": name, "in": "path", "description": description, "required": True, "type": "string",
            "uniqueItems": True}


def _resource_paths(rt: ResourceType, v3: bool) -> dict[str, Any]:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    kind_name, list_name = _kind_schema_names(rt)
    obj = _ref(kind_name, v3)
    lst = _ref(list_name, v3)
    status = _ref(STATUS, v3)
    patch_body = _ref(PATCH, v3)
    patch_types = (*_PATCH_TYPES, _SMP) if rt.strategic_merge else _PATCH_TYPES
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    pre = _op_prefix(rt)
    ns = "Namespaced" if rt.namespaced else ""
    verbs = set(rt.verbs)
    coll = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    item = coll + "/{name}"
    common_params: list[dict[str, Any]] = []
    if rt.namespaced:
        common_params.append(_path_param("namespace", "object name and auth scope, such as for teams and "
                                         "projects", v3))
    pretty = _query("pretty", "If 'true', then the output is pretty printed.", v3)
    paths: dict[str, Any] = {}

    c: dict[str, Any] = {}
    if "list" in verbs:
        c["get"] = _operation("list", f"list{pre}{ns}{rt.kind}", gvk, v3, response=lst,
                              description=f"list or watch objects of kind {rt.kind}")
    if "create" in verbs:
        c["post"] = _operation("post", f"create{pre}{ns}{rt.kind}", gvk, v3, response=obj, body=obj,
                               params=_write_params(v3), codes=("200", "201", "202"),
                               description=f"create a {rt.kind}")
    if "deletecollection" in verbs:
        c["delete"] = _operation("deletecollection", f"deletecollection{pre}{ns}{rt.kind}", gvk, v3,
                                 response=status, description=f"delete collection of {rt.kind}")
    if c:
        c["parameters"] = [*common_params, pretty]
        paths[coll] = c

    i: dict[str, Any] = {}
    if "get" in verbs:
        i["get"] = _operation("get", f"read{pre}{ns}{rt.kind}", gvk, v3, response=obj,
                              description=f"read the specified {rt.kind}")
    if "update" in verbs:
        i["put"] = _operation("put", f"replace{pre}{ns}{rt.kind}", gvk, v3, response=obj, body=obj,
                              params=_write_params(v3), codes=("200", "201"),
                              description=f"replace the specified {rt.kind}")
    if "patch" in verbs:
        i["patch"] = _operation("patch", f"patch{pre}{ns}{rt.kind}", gvk, v3, response=obj, body=patch_body,
                                body_types=patch_types, params=_write_params(v3, patch=True),
                                codes=("200", "201"), description=f"partially update the specified {rt.kind}")
    if "delete" in verbs:
        i["delete"] = _operation("delete", f"delete{pre}{ns}{rt.kind}", gvk, v3, response=status,
                                 body=_ref(DELETE_OPTIONS, v3), codes=("200", "202"),
                                 description=f"delete a {rt.kind}")
    if i:
        i["parameters"] = [_path_param("name", f"name of the {rt.kind}", v3), *common_params, pretty]
        paths[item] = i

    if rt.namespaced and "list" in verbs:
        paths[f"{base}/{rt.plural}"] = {
            "get": _operation("list", f"list{pre}{rt.kind}ForAllNamespaces", gvk, v3, response=lst,
                              description=f"list or watch objects of kind {rt.kind}"),
            "parameters": [pretty],
        }

    for sub in rt.subresources:
        sp = f"{item}/{sub}"
        sub_params = [_path_param("name", f"name of the {rt.kind}", v3), *common_params, pretty]
        suffix = _camel(sub)
        if sub == "status":
            paths[sp] = {
                "get": _operation("get", f"read{pre}{ns}{rt.kind}Status", gvk, v3, response=obj,
                                  description=f"read status of the specified {rt.kind}"),
                "put": _operation("put", f"replace{pre}{ns}{rt.kind}Status", gvk, v3, response=obj, body=obj,
                                  params=_write_params(v3), codes=("200", "201"),
                                  description=f"replace status of the specified {rt.kind}"),
                "patch": _operation("patch", f"patch{pre}{ns}{rt.kind}Status", gvk, v3, response=obj,
                                    body=patch_body, body_types=patch_types, params=_write_params(v3, True),
                                    codes=("200", "201"),
                                    description=f"partially update status of the specified {rt.kind}"),
                "parameters": sub_params,
            }
        elif sub in _SUBRESOURCE_KINDS:
            g, v, k = _SUBRESOURCE_KINDS[sub]
            sub_gvk = {"group": g, "version": v, "kind": k}
            sub_schema = _ref(builtin_definition_name(g, v, k), v3)
            item_ops: dict[str, Any] = {"parameters": sub_params}
            if sub == "scale":
                item_ops["get"] = _operation("get", f"read{pre}{ns}{rt.kind}Scale", sub_gvk, v3,
                                             response=sub_schema)
                item_ops["put"] = _operation("put", f"replace{pre}{ns}{rt.kind}Scale", sub_gvk, v3,
                                             response=sub_schema, body=sub_schema, params=_write_params(v3),
                                             codes=("200", "201"))
                item_ops["patch"] = _operation("patch", f"patch{pre}{ns}{rt.kind}Scale", sub_gvk, v3,
                                               response=sub_schema, body=patch_body, body_types=patch_types,
                                               params=_write_params(v3, True), codes=("200", "201"))
            else:
                item_ops["post"] = _operation("post", f"create{pre}{ns}{rt.kind}{suffix}", sub_gvk, v3,
                                              response=sub_schema, body=sub_schema, params=_write_params(v3),
                                              codes=("200", "201", "202"))
            paths[sp] = item_ops
    return paths


# ---------------------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------------------


def _doc_hash(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


def openapi_v3_document(group_version: str, resource_types: list[ResourceType]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group-version (served at /openapi/v3/api/v1, /openapi/v3/apis/G/V)."""
    rts = [rt for rt in resource_types if rt.api_version == group_version]
    paths: dict[str, Any] = {}
    for rt in sorted(rts, key=lambda r: r.plural):
        paths.update(_resource_paths(rt, True))
    schemas = _collect_schemas(rts, True)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                                "name": "authorization", "in": "header"}},
        },
    }


def openapi_v3_index(group_versions: list[str], hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """The /openapi/v3 index.  `hashes` maps a group-version to its document's hash (see OpenAPICache);
    without it a hash of the name is used, which is only right for documents that never change."""
    paths: dict[str, Any] = {}
    for gv in sorted(set(group_versions)):
        key = group_version_path(gv)
        h = (hashes or {}).get(gv) or _doc_hash(gv.encode())
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={h}"}
    return {"paths": paths}


def openapi_v2_json(resource_types: list[ResourceType]) -> dict[str, Any]:
    """Swagger 2.0 for clients that ask /openapi/v2 (or /swagger.json) as plain JSON."""
    paths: dict[str, Any] = {}
    for rt in sorted(resource_types, key=lambda r: (r.group, r.version, r.plural)):
        paths.update(_resource_paths(rt, False))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "definitions": dict(sorted(_collect_schemas(resource_types, False).items())),
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey",
                                                "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }


def openapi_v2_protobuf() -> bytes:
    """/openapi/v2 in the protobuf form kubectl requests.  An empty body (with the protobuf content type) is
    accepted by kubectl and turns its client-side v2 checks off; the v3 documents carry the real data."""
    return b""


def _fingerprint(resource_types: Sequence[ResourceType]) -> bytes:
    parts = [[rt.group, rt.version, rt.kind, rt.plural, rt.namespaced, list(rt.verbs), list(rt.subresources),
              rt.strategic_merge, rt.schema] for rt in resource_types]
    parts.sort(key=lambda p: (p[0], p[1], p[3]))
    return orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)


class OpenAPICache:
    """Serialized OpenAPI documents that are rebuilt only when the served types change.

    Call :meth:`update` with the current resource types whenever they may have changed (cheap when they
    did not); documents are built lazily per group-version and kept with their hash, which the server uses
    in the index URLs, as the ETag, and to answer `?hash=` requests with immutable caching.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fp = b""
        self._types: list[ResourceType] = []
        self._v3: dict[str, tuple[bytes, str]] = {}
        self._index: tuple[bytes, str] | None = None
        self._v2: tuple[bytes, str] | None = None

    def update(self, resource_types: Iterable[ResourceType]) -> bool:
        """Take the current types; returns True when documents were invalidated."""
        types = list(resource_types)
        fp = hashlib.sha256(_fingerprint(types)).digest()
        with self._lock:
            if fp == self._fp:
                return False
            self._fp = fp
            self._types = types
            self._v3 = {}
            self._index = None
            self._v2 = None
            return True

    @property
    def group_versions(self) -> list[str]:
        return sorted({rt.api_version for rt in self._types})

    def document(self, group_version: str) -> tuple[bytes, str] | None:
        """(JSON body, hash) of a group-version's v3 document, or None when nothing is served there."""
        hit = self._v3.get(group_version)
        if hit is not None:
            return hit
        types = self._types
        if not any(rt.api_version == group_version for rt in types):
            return None
        body = orjson.dumps(openapi_v3_document(group_version, types))
        hit = (body, _doc_hash(body))
        with self._lock:
            if types is self._types:
                self._v3[group_version] = hit
        return hit

    def document_for_path(self, path: str) -> tuple[bytes, str] | None:
        """Look up by index key (`api/v1`, `apis/apps/v1`)."""
        if path.startswith("api/"):
            return self.document(path[4:])
        if path.startswith("apis/"):
            return self.document(path[5:])
        return None

    def index(self) -> tuple[bytes, str]:
        """(JSON body, hash) of /openapi/v3; building it builds every group-version document (for hashes)."""
        hit = self._index
        if hit is not None:
            return hit
        gvs = self.group_versions
        hashes = {}
        for gv in gvs:
            doc = self.document(gv)
            if doc is not None:
                hashes[gv] = doc[1]
        body = orjson.dumps(openapi_v3_index(gvs, hashes))
        hit = (body, _doc_hash(body))
        self._index = hit
        return hit

    def v2_json(self) -> tuple[bytes, str]:
        hit = self._v2
        if hit is None:
            body = orjson.dumps(openapi_v2_json(self._types))
            hit = (body, _doc_hash(body))
            self._v2 = hit
        return hit
