"""Schemas of served kinds, and validation of objects against them on every write.

kube-apiserver rejects a bad object with a 422 whose causes name the exact field (`spec.containers[0].image`),
and with `fieldValidation=Strict` (what kubectl sends) it rejects unknown fields too.  Clients depend on
those answers, so the embedded server must give them.  Built-in kinds take their schemas from the JSON
schemas that `kubernetes-validate` ships (generated from kube's own OpenAPI, patch-merge keys included);
custom resources take theirs from the CRD's `openAPIV3Schema`.

Validation runs on every write, so a generic JSON-schema library is too slow: each schema node is compiled
once into a small checker object (refs resolved, types mapped to Python types, CEL rules compiled), cached by
the identity of the schema dict, and the hot path walks the object with plain dict and type checks.

This module also holds the rest of the CRD machinery that needs the schema: structural-schema checks of a
CRD (`validate_crd`), pruning of unknown fields (`prune`), structural defaulting (`apply_defaults`) and
`x-kubernetes-validations` CEL rules (with `oldSelf` transition rules on update).
"""

from __future__ import annotations

import base64
import binascii
import copy
import importlib.util
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cel
import orjson

from kokpit.apiserver.errors import Cause

__all__ = [
    "BUILTIN_SCHEMA_VERSION",
    "CompiledRule",
    "apply_defaults",
    "builtin_definition_name",
    "builtin_schema",
    "compile_rule",
    "definition_name",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "load_builtin_definitions",
    "prune",
    "resolve",
    "validate",
    "validate_crd",
    "validate_labels",
    "validate_object_meta",
    "validate_qualified_name",
]

BUILTIN_SCHEMA_VERSION = "v1.37.0-local"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_REF_PREFIXES = ("#/$defs/", "/api/_definitions.json#/$defs/", "_definitions.json#/$defs/",
                 "#/components/schemas/", "#/definitions/")

# ---------------------------------------------------------------------------------------------------------
# Built-in definitions
# ---------------------------------------------------------------------------------------------------------

_defs_lock = threading.Lock()
_defs: dict[str, dict[str, Any]] | None = None
_gvk_index: dict[tuple[str, str, str], str] | None = None


def _definitions_path() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "kubernetes-json-schema" / BUILTIN_SCHEMA_VERSION / "_definitions.json"


def load_builtin_definitions() -> dict[str, dict[str, Any]]:
    """The `$defs` of kube 1.37's JSON schemas, loaded once (about 5 MB) on first use."""
    global _defs
    if _defs is None:
        with _defs_lock:
            if _defs is None:
                _defs = orjson.loads(_definitions_path().read_bytes())["$defs"]
    return _defs


def definition_name(ref: str) -> str | None:
    """The definition name a `$ref` points at (any of the ref spellings we meet), or None."""
    for prefix in _REF_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return None


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s into the built-in definitions; a node without `$ref` is returned as is."""
    seen = 0
    while "$ref" in node:
        name = definition_name(node["$ref"])
        defs = load_builtin_definitions()
        if name is None or name not in defs:
            raise KeyError(f"unresolvable $ref {node['$ref']!r}")
        node = defs[name]
        seen += 1
        if seen > 64:
            raise KeyError(f"$ref loop at {name!r}")
    return node


def builtin_definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind (via `x-kubernetes-group-version-kind`)."""
    global _gvk_index
    if _gvk_index is None:
        index: dict[tuple[str, str, str], str] = {}
        for name, d in load_builtin_definitions().items():
            for gvk in d.get("x-kubernetes-group-version-kind") or ():
                index.setdefault((gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")), name)
        _gvk_index = index
    return _gvk_index.get((group, version, kind))


_ref_nodes: dict[str, dict[str, Any]] = {}


def builtin_schema(group: str, version: str, kind: str) -> dict[str, Any] | None:
    """A schema node (`{"$ref": "#/$defs/io.k8s.api.core.v1.Pod"}`) for a built-in kind, or None.

    The same dict is returned on every call (validators are cached by schema identity): do not mutate it.
    """
    name = builtin_definition_name(group, version, kind)
    if not name:
        return None
    node = _ref_nodes.get(name)
    if node is None:
        node = _ref_nodes.setdefault(name, {"$ref": f"#/$defs/{name}"})
    return node


# ---------------------------------------------------------------------------------------------------------
# Messages and small helpers
# ---------------------------------------------------------------------------------------------------------


def _json_type(v: Any) -> str:
    t = type(v)
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if t is dict:
        return "object"
    if t is list:
        return "array"
    if v is None:
        return "null"
    return t.__name__


def _fmt(v: Any) -> str:
    """A value as kube's field errors print it: strings quoted, numbers bare, containers by type."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if v is None:
        return "null"
    return f'"{_json_type(v)}"'


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, f"Invalid value: {_fmt(value)}: {detail}", "FieldValueInvalid")


def _required(path: str, detail: str = "") -> Cause:
    return Cause(path, f"Required value: {detail}" if detail else "Required value", "FieldValueRequired")


def _unsupported(path: str, value: Any, allowed: list[Any]) -> Cause:
    opts = ", ".join(_fmt(a) for a in allowed)
    return Cause(path, f"Unsupported value: {_fmt(value)}: supported values: {opts}", "FieldValueNotSupported")


def _forbidden(path: str, detail: str) -> Cause:
    return Cause(path, f"Forbidden: {detail}", "FieldValueForbidden")


def _unknown(path: str) -> Cause:
    return Cause(path, f'unknown field "{path}"', "FieldValueUnknown")


# ---------------------------------------------------------------------------------------------------------
# Compiled checkers
# ---------------------------------------------------------------------------------------------------------

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_IGNORE, _WARN, _STRICT = 0, 1, 2
_MODES = {"Ignore": _IGNORE, "Warn": _WARN, "Strict": _STRICT}
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class _Ctx:
    __slots__ = ("errors", "mode", "unknown")

    def __init__(self, mode: int) -> None:
        self.errors: list[Cause] = []
        self.unknown: list[str] = []
        self.mode = mode


@dataclass(frozen=True)
class CompiledRule:
    """One `x-kubernetes-validations` rule, compiled once."""

    rule: str
    program: Any
    message: str | None
    message_expression: Any | None
    field_path: str | None
    reason: str
    transition: bool


def compile_rule(rule: dict[str, Any]) -> CompiledRule:
    """Compile an `x-kubernetes-validations` entry; raises ValueError when the rule does not parse."""
    src = rule.get("rule")
    if not isinstance(src, str) or not src.strip():
        raise ValueError("rule is required")
    program = cel.compile(src)
    msg_expr = None
    if rule.get("messageExpression"):
        msg_expr = cel.compile(rule["messageExpression"])
    try:
        variables = set(program.variables())
    except Exception:  # older bindings: fall back to a textual check
        variables = {"oldSelf"} if "oldSelf" in src else set()
    return CompiledRule(src, program, rule.get("message"), msg_expr, rule.get("fieldPath"),
                        rule.get("reason") or "FieldValueInvalid", "oldSelf" in variables)


def _run_rules(rules: tuple[CompiledRule, ...], v: Any, old: Any, path: str, ctx: _Ctx) -> None:
    for r in rules:
        if r.transition and old is None:
            continue
        act = {"self": v}
        if r.transition:
            act["oldSelf"] = old
        field = path
        if r.field_path:
            fp = r.field_path
            field = path + fp if fp.startswith((".", "[")) else _join(path, fp)
        try:
            ok = r.program.execute(act)
        except Exception as e:  # CEL runtime errors become a field error, not a 500
            ctx.errors.append(Cause(field, f"Invalid value: {_fmt(_json_type(v))}: rule evaluation error: "
                                    f"{r.rule}: {e}", "FieldValueInvalid"))
            continue
        if ok is True:
            continue
        msg = r.message
        if r.message_expression is not None:
            try:
                m = r.message_expression.execute(act)
                if isinstance(m, str) and m.strip():
                    msg = m
            except Exception:  # fall back to message / rule text
                pass
        if not msg:
            msg = f"failed rule: {r.rule}"
        reason = r.reason
        if reason == "FieldValueRequired":
            text = f"Required value: {msg}"
        elif reason == "FieldValueForbidden":
            text = f"Forbidden: {msg}"
        elif reason == "FieldValueDuplicate":
            text = f"Duplicate value: {_fmt(_json_type(v))}: {msg}"
        else:
            text = f"Invalid value: {_fmt(_json_type(v))}: {msg}"
        ctx.errors.append(Cause(field, text, reason))


class _Node:
    """One compiled schema node.  `simple` is set for nodes that constrain only the type: the parent then
    checks `type(value) in simple` inline instead of calling `check`."""

    __slots__ = (
        "additional", "all_of", "any_of", "builtin", "enum", "excl_max", "excl_min", "expected", "format",
        "free_form", "int_or_string", "items", "list_map_keys", "max_items", "max_len", "max_props", "maximum",
        "min_items", "min_len", "min_props", "minimum", "multiple_of", "not_", "nullable", "one_of", "pattern",
        "preserve", "props", "py_types", "required", "rules", "rules_below", "simple", "unique",
    )

    def __init__(self) -> None:
        self.py_types: tuple[type, ...] | None = None
        self.expected = ""
        self.int_or_string = False
        self.props: dict[str, _Node] | None = None
        self.required: tuple[str, ...] = ()
        self.additional: _Node | None = None
        self.preserve = False
        self.free_form = False
        self.builtin = False
        self.nullable = False
        self.items: _Node | None = None
        self.enum: list[Any] | None = None
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.excl_min = False
        self.excl_max = False
        self.multiple_of: float | None = None
        self.min_len: int | None = None
        self.max_len: int | None = None
        self.pattern: re.Pattern[str] | None = None
        self.format: str | None = None
        self.min_items: int | None = None
        self.max_items: int | None = None
        self.unique = False
        self.list_map_keys: tuple[str, ...] = ()
        self.min_props: int | None = None
        self.max_props: int | None = None
        self.all_of: tuple[_Node, ...] = ()
        self.any_of: tuple[_Node, ...] = ()
        self.one_of: tuple[_Node, ...] = ()
        self.not_: _Node | None = None
        self.rules: tuple[CompiledRule, ...] = ()
        self.simple: tuple[type, ...] | None = None
        self.rules_below: bool | None = None

    # The hot path.  `path` is the kube field path of `v`; `old` the correlated old value or None.
    def check(self, v: Any, old: Any, path: str, ctx: _Ctx) -> None:
        t = type(v)
        pt = self.py_types
        if pt is not None and t not in pt:
            if t is float and int in pt and v.is_integer():
                pass  # JSON 3.0 decodes to an integer in Go too
            elif t is bool or t not in (int, float) or float not in pt:
                jt = _json_type(v)
                ctx.errors.append(Cause(path, f'Invalid value: "{jt}": {path or "body"} in body must be of type '
                                        f'{self.expected}: "{jt}"', "FieldValueTypeInvalid"))
                return
        if t is dict:
            self._check_object(v, old, path, ctx)
        elif t is list:
            self._check_array(v, old, path, ctx)
        elif t is str:
            self._check_string(v, path, ctx)
        elif t is int or t is float:
            self._check_number(v, path, ctx)
        if self.enum is not None and v not in self.enum:
            ctx.errors.append(_unsupported(path, v, self.enum))
        if self.all_of or self.any_of or self.one_of or self.not_ is not None:
            self._check_junctions(v, old, path, ctx)
        if self.rules:
            _run_rules(self.rules, v, old, path, ctx)

    def _check_object(self, v: dict[str, Any], old: Any, path: str, ctx: _Ctx) -> None:
        props = self.props
        old_d = old if type(old) is dict else None
        if props is not None:
            extra = self.additional
            for k, val in v.items():
                child = props.get(k)
                if child is None:
                    if extra is not None:
                        if val is not None:
                            extra.check(val, old_d.get(k) if old_d else None, _join(path, k), ctx)
                    elif not self.preserve and ctx.mode:
                        ctx.unknown.append(_join(path, k))
                    continue
                if val is None:
                    continue
                s = child.simple
                if s is not None and type(val) in s:
                    continue
                o = old_d.get(k) if old_d else None
                if o is not None and type(o) is type(val) and o == val and not child.has_rules():
                    # unchanged since the stored object: not judged again (kube's validation ratcheting: a
                    # schema tightened later does not block updates of other fields); CEL rules still run.
                    # Most of a status write is unchanged, so this is also most of validation's cost saved.
                    continue
                child.check(val, o, f"{path}.{k}" if path else k, ctx)
            for r in self.required:
                if v.get(r) is None:
                    ctx.errors.append(_required(_join(path, r)))
        elif self.additional is not None:
            extra = self.additional
            s = extra.simple
            for k, val in v.items():
                if val is None or (s is not None and type(val) in s):
                    continue
                extra.check(val, old_d.get(k) if old_d else None, _join(path, k), ctx)
        elif not (self.preserve or self.free_form) and ctx.mode and v:
            ctx.unknown.extend(_join(path, k) for k in v)
        n = len(v)
        if self.min_props is not None and n < self.min_props:
            ctx.errors.append(_invalid(path, n, f"{path or 'body'} in body should have at least "
                                       f"{self.min_props} properties"))
        if self.max_props is not None and n > self.max_props:
            ctx.errors.append(Cause(path, f"Too many: {n}: must have at most {self.max_props} items",
                                    "FieldValueTooMany"))

    def _check_array(self, v: list[Any], old: Any, path: str, ctx: _Ctx) -> None:
        n = len(v)
        if self.min_items is not None and n < self.min_items:
            ctx.errors.append(_invalid(path, n, f"{path or 'body'} in body should have at least "
                                       f"{self.min_items} items"))
        if self.max_items is not None and n > self.max_items:
            ctx.errors.append(Cause(path, f"Too many: {n}: must have at most {self.max_items} items",
                                    "FieldValueTooMany"))
        items = self.items
        keys = self.list_map_keys
        old_by_key: dict[Any, Any] | None = None
        if keys and type(old) is list and items is not None and items.has_rules():
            old_by_key = {}
            for o in old:
                if type(o) is dict:
                    old_by_key[tuple(o.get(k) for k in keys)] = o
        if items is not None:
            s = items.simple
            for i, val in enumerate(v):
                if val is None:
                    # kube prunes a null *field* that is not nullable but keeps a null list item, which a
                    # custom resource's schema then refuses; a built-in list decodes null as the zero item
                    if not (items.nullable or items.builtin or items.py_types is None):
                        p = f"{path}[{i}]"
                        ctx.errors.append(Cause(p, f'Invalid value: "null": {p} in body must be of type '
                                                   f'{items.expected}: "null"', "FieldValueTypeInvalid"))
                    continue
                if s is not None and type(val) in s:
                    continue
                o = None
                if old_by_key is not None and type(val) is dict:
                    o = old_by_key.get(tuple(val.get(k) for k in keys))
                items.check(val, o, f"{path}[{i}]", ctx)
        if keys and n > 1:
            seen: set[str] = set()
            for i, val in enumerate(v):
                if type(val) is not dict:
                    continue
                key = json.dumps([val.get(k) for k in keys], sort_keys=True)
                if key in seen:
                    shown = {k: val.get(k) for k in keys}
                    ctx.errors.append(Cause(f"{path}[{i}]", f"Duplicate value: {json.dumps(shown)}",
                                            "FieldValueDuplicate"))
                seen.add(key)
        elif self.unique and n > 1:
            seen_v: set[str] = set()
            for i, val in enumerate(v):
                key = json.dumps(val, sort_keys=True)
                if key in seen_v:
                    ctx.errors.append(Cause(f"{path}[{i}]", f"Duplicate value: {_fmt(val)}",
                                            "FieldValueDuplicate"))
                seen_v.add(key)

    def _check_string(self, v: str, path: str, ctx: _Ctx) -> None:
        if self.max_len is not None and len(v) > self.max_len:
            ctx.errors.append(Cause(path, f"Too long: may not be more than {self.max_len} bytes",
                                    "FieldValueTooLong"))
        if self.min_len is not None and len(v) < self.min_len:
            ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body should be at least "
                                       f"{self.min_len} chars long"))
        if self.pattern is not None and self.pattern.search(v) is None:
            ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body should match "
                                       f"'{self.pattern.pattern}'"))
        f = self.format
        if f is not None:
            bad = False
            if f == "date-time":
                bad = _DATE_TIME.match(v) is None
            elif f == "date":
                bad = _DATE.match(v) is None
            elif f == "byte":
                try:
                    base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    bad = True
            if bad:
                ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body must be of type {f}: "
                                           f"{_fmt(v)}"))

    def _check_number(self, v: float, path: str, ctx: _Ctx) -> None:
        p = path or "body"
        if self.minimum is not None:
            if self.excl_min and v <= self.minimum:
                ctx.errors.append(_invalid(path, v, f"{p} in body should be greater than {_num(self.minimum)}"))
            elif v < self.minimum:
                ctx.errors.append(_invalid(path, v, f"{p} in body should be greater than or equal to "
                                           f"{_num(self.minimum)}"))
        if self.maximum is not None:
            if self.excl_max and v >= self.maximum:
                ctx.errors.append(_invalid(path, v, f"{p} in body should be less than {_num(self.maximum)}"))
            elif v > self.maximum:
                ctx.errors.append(_invalid(path, v, f"{p} in body should be less than or equal to "
                                           f"{_num(self.maximum)}"))
        if self.multiple_of and (v / self.multiple_of) % 1:
            ctx.errors.append(_invalid(path, v, f"{p} in body should be a multiple of {_num(self.multiple_of)}"))

    def _check_junctions(self, v: Any, old: Any, path: str, ctx: _Ctx) -> None:
        for n in self.all_of:
            n.check(v, old, path, ctx)
        if self.any_of:
            if not any(_passes(n, v, old, path) for n in self.any_of):
                ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body must match at least one "
                                           "schema in anyOf"))
        if self.one_of:
            count = sum(1 for n in self.one_of if _passes(n, v, old, path))
            if count != 1:
                ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body must validate one and only "
                                           "one schema (oneOf)"))
        if self.not_ is not None and _passes(self.not_, v, old, path):
            ctx.errors.append(_invalid(path, v, f"{path or 'body'} in body should not be valid against "
                                       "the given schema"))

    def has_rules(self) -> bool:
        """Whether any node at or below this one has CEL rules (to decide whether to correlate old items)."""
        if self.rules_below is None:
            self.rules_below = self.rules_anywhere()
        return self.rules_below

    def rules_anywhere(self, _seen: set[int] | None = None) -> bool:
        if self.rules:
            return True
        seen = _seen if _seen is not None else set()
        if id(self) in seen:
            return False
        seen.add(id(self))
        kids: list[_Node] = list((self.props or {}).values())
        for k in (self.additional, self.items):
            if k is not None:
                kids.append(k)
        return any(k.rules_anywhere(seen) for k in kids)


_BUILTIN_REQUIRED = frozenset({"name", "containers", "image", "uid"})


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _passes(n: _Node, v: Any, old: Any, path: str) -> bool:
    c = _Ctx(_IGNORE)
    n.check(v, old, path, c)
    return not c.errors


_compile_lock = threading.RLock()
_MAX_COMPILED = 200_000
_compiled: dict[tuple[int, bool, bool], tuple[dict[str, Any], _Node]] = {}


def _types_of(node: dict[str, Any]) -> list[str]:
    t = node.get("type")
    if t is None:
        return []
    if isinstance(t, str):
        return [t]
    return [x for x in t if x != "null"]


def _compile(schema: dict[str, Any], builtin: bool, root: bool, junction: bool = False) -> _Node:
    if "$ref" in schema:
        return _compile(resolve(schema), True, root, junction)
    key = (id(schema), builtin, root and not junction)
    hit = _compiled.get(key)
    if hit is not None and hit[0] is schema:
        return hit[1]
    n = _Node()
    _compiled[key] = (schema, n)  # before children: recursive definitions (JSONSchemaProps) terminate
    n.builtin = builtin
    types = _types_of(schema)
    one_of = schema.get("oneOf")
    # IntOrString / Quantity in the built-in schemas: oneOf over plain types → a type union
    if one_of and all(set(o) <= {"type", "format"} for o in one_of):
        for o in one_of:
            types.extend(_types_of(o))
        one_of = None
    if schema.get("x-kubernetes-int-or-string"):
        n.int_or_string = True
        types = ["integer", "string"]
    if types:
        py: list[type] = []
        for t in types:
            py.extend(_PY_TYPES.get(t, ()))
        n.py_types = tuple(dict.fromkeys(py))
        n.expected = ",".join(dict.fromkeys(types))
    n.preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    n.nullable = bool(schema.get("nullable"))
    props = schema.get("properties")
    if props is not None:
        n.props = {k: _compile(p, builtin, False, junction) for k, p in props.items()}
    if root and not junction:
        _add_root_fields(n, schema)
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        n.additional = _compile(addl, builtin, False, junction)
    elif addl is True:
        n.free_form = True
    if junction:
        n.free_form = True
    if builtin and props is None and addl is None:
        n.free_form = True  # FieldsV1, RawExtension: opaque in the Go types
    if schema.get("x-kubernetes-embedded-resource") and n.props is not None:
        _add_root_fields(n, schema)
    req = schema.get("required")
    if req and builtin:
        # kube-apiserver enforces built-in "required" markers only through its handwritten validation,
        # which is far looser than the OpenAPI (a Node without nodeInfo.machineID is fine); keep the
        # handful that it really checks.
        req = [r for r in req if r in _BUILTIN_REQUIRED]
    if req:
        n.required = tuple(req)
    items = schema.get("items")
    if isinstance(items, dict):
        n.items = _compile(items, builtin, False, junction)
    enum = schema.get("enum")
    if enum is not None and not (builtin and _is_gvk_enum(schema)):
        n.enum = list(enum)
    for attr, k in (("minimum", "minimum"), ("maximum", "maximum"), ("multiple_of", "multipleOf")):
        if isinstance(schema.get(k), int | float):
            setattr(n, attr, schema[k])
    n.excl_min = bool(schema.get("exclusiveMinimum"))
    n.excl_max = bool(schema.get("exclusiveMaximum"))
    for attr, k in (("min_len", "minLength"), ("max_len", "maxLength"), ("min_items", "minItems"),
                    ("max_items", "maxItems"), ("min_props", "minProperties"), ("max_props", "maxProperties")):
        if isinstance(schema.get(k), int):
            setattr(n, attr, schema[k])
    if isinstance(schema.get("pattern"), str):
        try:
            n.pattern = re.compile(schema["pattern"])
        except re.error:
            n.pattern = None
    fmt = schema.get("format")
    # a built-in's date-time is a Time / MicroTime, which kube's decoder refuses unless time.Parse reads it
    # (an empty string too: the fuzzer found an Event stored with eventTime "")
    if fmt == "date-time" or (fmt in ("date", "byte") and not builtin):
        n.format = fmt
    n.unique = bool(schema.get("uniqueItems")) or schema.get("x-kubernetes-list-type") == "set"
    if schema.get("x-kubernetes-list-type") == "map":
        n.list_map_keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
    for attr, k in (("all_of", "allOf"), ("any_of", "anyOf")):
        if schema.get(k):
            setattr(n, attr, tuple(_compile(s, builtin, root, True) for s in schema[k]))
    if one_of:
        n.one_of = tuple(_compile(s, builtin, root, True) for s in one_of)
    if isinstance(schema.get("not"), dict):
        n.not_ = _compile(schema["not"], builtin, root, True)
    rules = schema.get("x-kubernetes-validations")
    if rules:
        compiled: list[CompiledRule] = []
        for r in rules:
            try:
                compiled.append(compile_rule(r))
            except Exception:  # validate_crd reports bad rules; skip them here
                continue
        n.rules = tuple(compiled)
    constrained = (n.props is not None or n.additional is not None or n.items is not None or n.enum is not None
                   or n.rules or n.all_of or n.any_of or n.one_of or n.not_ is not None or n.pattern
                   or n.format or n.required or n.list_map_keys or n.unique
                   or any(x is not None for x in (n.minimum, n.maximum, n.multiple_of, n.min_len, n.max_len,
                                                  n.min_items, n.max_items, n.min_props, n.max_props)))
    if n.py_types is not None and not constrained and dict not in n.py_types and list not in n.py_types:
        n.simple = n.py_types
    elif n.py_types is None and not constrained and (n.free_form or n.preserve or not types):
        n.simple = (str, int, float, bool, dict, list) if (n.preserve or n.free_form or junction) else None
    return n


def _is_gvk_enum(schema: dict[str, Any]) -> bool:
    # kubernetes-validate adds enums on apiVersion/kind of each kind; the server checks those itself.
    return "APIVersion defines" in schema.get("description", "") or "Kind is a string value" in schema.get(
        "description", "")


_STRING_NODE = _Node()
_STRING_NODE.py_types = (str,)
_STRING_NODE.expected = "string"
_STRING_NODE.simple = (str,)


def _add_root_fields(n: _Node, schema: dict[str, Any]) -> None:
    """apiVersion, kind and metadata exist on every object (and embedded resource) even if the CRD schema
    does not list them; metadata is always validated as ObjectMeta."""
    if n.props is None:
        n.props = {}
    n.props["apiVersion"] = _STRING_NODE
    n.props["kind"] = _STRING_NODE
    meta = _compile({"$ref": f"#/$defs/{OBJECT_META}"}, True, False)
    n.props["metadata"] = meta


def _mode(field_validation: str) -> int:
    return _MODES.get(field_validation, _STRICT)


def compiled_validator(schema: dict[str, Any]) -> _Node:
    """The compiled (and cached) checker for a whole-object schema."""
    key = (id(schema), False, True)
    hit = _compiled.get(key)
    if hit is not None and hit[0] is schema:
        return hit[1]
    with _compile_lock:
        if len(_compiled) > _MAX_COMPILED:
            _compiled.clear()  # callers passing fresh schema dicts each time must not grow memory forever
        node = _compile(schema, False, True)
        _compiled[key] = (schema, node)
        return node


def validate(obj: dict[str, Any], schema: dict[str, Any], *, field_validation: str = "Strict",
             old: dict[str, Any] | None = None) -> tuple[list[Cause], list[str]]:
    """Validate a whole object; returns (errors, warnings).

    Unknown fields are errors (reason FieldValueUnknown) under Strict, warning strings under Warn and
    nothing under Ignore.  `old` is the stored object on update: CEL transition rules (`oldSelf`) run only
    then.  `schema` should be stable (the same dict each call): compiled checkers are cached by identity.
    """
    node = compiled_validator(schema)
    ctx = _Ctx(_mode(field_validation))
    node.check(obj, old, "", ctx)
    errors = ctx.errors
    warnings: list[str] = []
    if ctx.unknown:
        if ctx.mode == _STRICT:
            errors = [*(_unknown(p) for p in ctx.unknown), *errors]
        elif ctx.mode == _WARN:
            warnings = [f'unknown field "{p}"' for p in ctx.unknown]
    return errors, warnings


# ---------------------------------------------------------------------------------------------------------
# Names and metadata
# ---------------------------------------------------------------------------------------------------------

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_DNS1123_LABEL_RE = re.compile("^" + _DNS1123_LABEL_FMT + "$")
_DNS1123_SUBDOMAIN_RE = re.compile("^" + _DNS1123_SUBDOMAIN_FMT + "$")
_DNS1035_LABEL_RE = re.compile("^" + _DNS1035_LABEL_FMT + "$")
_QUALIFIED_NAME_RE = re.compile("^" + _QUALIFIED_NAME_FMT + "$")
_LABEL_VALUE_RE = re.compile("^" + _LABEL_VALUE_FMT + "$")

_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                      "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                      f"regex used for validation is '{_DNS1123_LABEL_FMT}')")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                          "'-' or '.', and must start and end with an alphanumeric character (e.g. "
                          f"'example.com', regex used for validation is '{_DNS1123_SUBDOMAIN_FMT}')")
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                      "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                      f"'abc-123', regex used for validation is '{_DNS1035_LABEL_FMT}')")
_QUALIFIED_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                       "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
                       f"used for validation is '{_QUALIFIED_NAME_FMT}')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE_FMT}')")
_TOTAL_ANNOTATION_SIZE = 256 * 1024


def is_dns1123_label(value: str) -> list[str]:
    """Problems with `value` as an RFC 1123 label (empty list when valid), in kube's words."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(_DNS1123_LABEL_MSG)
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(_DNS1035_LABEL_MSG)
    return errs


def _path_segment(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


_NAME_RULES: dict[str, Callable[[str], list[str]]] = {
    "dns1123subdomain": is_dns1123_subdomain,
    "dns1123label": is_dns1123_label,
    "dns1035label": is_dns1035_label,
    "path": _path_segment,
}


def validate_qualified_name(value: str) -> list[str]:
    """A label/annotation key: optional DNS-subdomain prefix and '/', then a name part."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
                f"used for validation is '{_QUALIFIED_NAME_FMT}') with an optional DNS subdomain prefix and "
                "'/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME_RE.match(name):
        errs.append(_QUALIFIED_NAME_MSG)
    return errs


def validate_labels(labels: Any, path: str = "metadata.labels") -> list[Cause]:
    """Label keys are qualified names, values at most 63 characters of the label alphabet."""
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [Cause(path, f'Invalid value: "{_json_type(labels)}": {path} in body must be of type object',
                      "FieldValueTypeInvalid")]
    out: list[Cause] = []
    for k, v in labels.items():
        for m in validate_qualified_name(k):
            out.append(_invalid(path, k, m))
        if v is None:
            continue
        if not isinstance(v, str):
            out.append(Cause(f"{path}.{k}", f'Invalid value: "{_json_type(v)}": {path}.{k} in body must be '
                             "of type string", "FieldValueTypeInvalid"))
            continue
        if len(v) > 63:
            out.append(_invalid(path, v, "must be no more than 63 characters"))
        if not _LABEL_VALUE_RE.match(v):
            out.append(_invalid(path, v, _LABEL_VALUE_MSG))
    return out


def validate_object_meta(meta: dict[str, Any], *, namespaced: bool,
                         name_rule: str = "dns1123subdomain") -> list[Cause]:
    """kube's ValidateObjectMeta: name (or generateName), namespace, labels, annotations, finalizers.

    `name_rule` is "dns1123subdomain" (most kinds), "dns1123label" (namespaces, services), "dns1035label"
    or "path" (only path-segment rules: RBAC roles and the like).
    """
    out: list[Cause] = []
    for key in ("labels", "annotations"):
        m = meta.get(key)
        if isinstance(m, dict) and any(v is None for v in m.values()):
            # kube decodes a JSON null in a map of strings as "" (Go's encoding/json): store that, not null,
            # which no reader of map[string]string expects (the fuzzer found {"k": null} stored and served)
            meta[key] = {k: "" if v is None else v for k, v in m.items()}
    check = _NAME_RULES.get(name_rule, is_dns1123_subdomain)
    name = meta.get("name")
    gen = meta.get("generateName")
    if gen:
        if not isinstance(gen, str):
            out.append(_invalid("metadata.generateName", gen, "must be a string"))
        else:
            prefix = gen[:-1] if gen.endswith("-") else gen
            if prefix:
                out.extend(_invalid("metadata.generateName", gen, m) for m in check(prefix))
    if not name:
        if not gen:
            out.append(_required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        out.append(_invalid("metadata.name", name, "must be a string"))
    else:
        out.extend(_invalid("metadata.name", name, m) for m in check(name))
    ns = meta.get("namespace")
    if namespaced:
        if not ns:
            out.append(_required("metadata.namespace"))
        elif isinstance(ns, str):
            out.extend(_invalid("metadata.namespace", ns, m) for m in is_dns1123_label(ns))
    elif ns:
        out.append(_forbidden("metadata.namespace", "not allowed on this type"))
    out.extend(validate_labels(meta.get("labels")))
    ann = meta.get("annotations")
    if ann is not None:
        if not isinstance(ann, dict):
            out.append(Cause("metadata.annotations", f'Invalid value: "{_json_type(ann)}": '
                             "metadata.annotations in body must be of type object", "FieldValueTypeInvalid"))
        else:
            total = 0
            for k, v in ann.items():
                out.extend(_invalid("metadata.annotations", k, m) for m in validate_qualified_name(k.lower()))
                total += len(k) + (len(v) if isinstance(v, str) else 0)
            if total > _TOTAL_ANNOTATION_SIZE:
                out.append(Cause("metadata.annotations", f"Too long: may not be more than "
                                 f"{_TOTAL_ANNOTATION_SIZE} bytes", "FieldValueTooLong"))
    fins = meta.get("finalizers")
    if isinstance(fins, list):
        seen: set[str] = set()
        for i, f in enumerate(fins):
            p = f"metadata.finalizers[{i}]"
            if not isinstance(f, str):
                out.append(_invalid(p, f, "must be a string"))
                continue
            out.extend(_invalid(p, f, m) for m in validate_qualified_name(f))
            if f in seen:
                out.append(Cause(p, f"Duplicate value: {_fmt(f)}", "FieldValueDuplicate"))
            seen.add(f)
    return out


# ---------------------------------------------------------------------------------------------------------
# CRDs: structural schemas, pruning, defaulting
# ---------------------------------------------------------------------------------------------------------

_VALID_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def _structural(node: Any, path: str, out: list[Cause], *, root: bool = False, junction: bool = False,
                under_meta: bool = False) -> None:
    if not isinstance(node, dict):
        out.append(_invalid(path, node, "must be an object"))
        return
    if "$ref" in node:
        out.append(_forbidden(f"{path}.$ref", "$ref is not supported"))
    t = node.get("type")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    int_or_string = node.get("x-kubernetes-int-or-string")
    if preserve is not None and preserve is not True:
        out.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", preserve, "must be true or undefined"))
    if junction:
        for k in ("type", "default", "nullable", "x-kubernetes-preserve-unknown-fields",
                  "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "additionalProperties"):
            if k in node and not (k == "type" and not t):
                out.append(_forbidden(f"{path}.{k}", "must be empty to be structural"))
    elif not t:
        if not (int_or_string or preserve):
            out.append(_required(f"{path}.type", "must not be empty for specified object fields"
                                 if not root else "must not be empty at the root"))
    elif not isinstance(t, str) or t not in _VALID_TYPES:
        out.append(_unsupported(f"{path}.type", t, sorted(_VALID_TYPES)))
    if root and not junction and t and t != "object":
        out.append(_invalid(f"{path}.type", t, "must be object at the root"))
    if int_or_string and t and not junction:
        out.append(_invalid(f"{path}.type", t, "must be empty with x-kubernetes-int-or-string"))
    props = node.get("properties")
    addl = node.get("additionalProperties")
    if props is not None and addl is not None:
        out.append(_forbidden(f"{path}.additionalProperties", "additionalProperties and properties are "
                              "mutual exclusive"))
    if addl is False:
        out.append(_forbidden(f"{path}.additionalProperties", "must not be false"))
    if (props is not None or addl is not None) and t and t != "object" and not junction:
        out.append(_invalid(f"{path}.type", t, "must be object if properties or additionalProperties are set"))
    if t == "array" and not junction and not isinstance(node.get("items"), dict):
        out.append(_required(f"{path}.items", "must be specified"))
    if node.get("x-kubernetes-embedded-resource") and t != "object":
        out.append(_invalid(f"{path}.type", t, "must be object if x-kubernetes-embedded-resource is true"))
    if isinstance(props, dict):
        for k, p in props.items():
            sub = f"{path}.properties[{k}]"
            if root and k == "metadata" and isinstance(p, dict):
                extra = set(p.get("properties") or {}) - {"name", "generateName"}
                if extra or (p.get("type") not in (None, "object")):
                    out.append(_forbidden(sub, "must not specify anything other than name and generateName, "
                                          "but metadata is implicitly specified"))
                _structural(p, sub, out, junction=junction, under_meta=True)
                continue
            _structural(p, sub, out, junction=junction)
    if isinstance(addl, dict):
        _structural(addl, f"{path}.additionalProperties", out, junction=junction)
    if isinstance(node.get("items"), dict):
        _structural(node["items"], f"{path}.items", out, junction=junction)
    for k in ("allOf", "anyOf", "oneOf"):
        for i, s in enumerate(node.get(k) or ()):
            _structural(s, f"{path}.{k}[{i}]", out, junction=True)
    if isinstance(node.get("not"), dict):
        _structural(node["not"], f"{path}.not", out, junction=True)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as e:
            out.append(_invalid(f"{path}.pattern", pattern, f"must be a valid regular expression: {e}"))
    for i, r in enumerate(node.get("x-kubernetes-validations") or ()):
        rp = f"{path}.x-kubernetes-validations[{i}]"
        if not isinstance(r, dict):
            out.append(_invalid(rp, r, "must be an object"))
            continue
        if not r.get("rule"):
            out.append(_required(f"{rp}.rule"))
            continue
        try:
            compile_rule(r)
        except Exception as e:  # any compile failure is the CRD author's error
            out.append(_invalid(f"{rp}.rule", r.get("rule"), f"compilation failed: {e}"))


def validate_crd(crd: dict[str, Any]) -> list[Cause]:
    """apiextensions.k8s.io/v1 CustomResourceDefinition checks, with kube's field paths and wording."""
    out: list[Cause] = []
    meta = crd.get("metadata") or {}
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [_required("spec")]
    group = spec.get("group") or ""
    names = spec.get("names") or {}
    plural = names.get("plural") or ""
    if not group:
        out.append(_required("spec.group"))
    else:
        out.extend(_invalid("spec.group", group, m) for m in is_dns1123_subdomain(group))
        if "." not in group:
            out.append(_invalid("spec.group", group, "should be a domain with at least one dot"))
    name = meta.get("name") or ""
    if name != f"{plural}.{group}":
        out.append(_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not plural:
        out.append(_required("spec.names.plural"))
    else:
        out.extend(_invalid("spec.names.plural", plural, m) for m in is_dns1035_label(plural))
    singular = names.get("singular")
    if singular:
        out.extend(_invalid("spec.names.singular", singular, m) for m in is_dns1035_label(singular))
    kind = names.get("kind") or ""
    if not kind:
        out.append(_required("spec.names.kind"))
    elif not re.match(r"^[A-Za-z][A-Za-z0-9]*$", kind):
        out.append(_invalid("spec.names.kind", kind, "may have mixed case, but should otherwise match: "
                            f"{_DNS1035_LABEL_FMT}"))
    list_kind = names.get("listKind")
    if list_kind and list_kind == kind:
        out.append(_invalid("spec.names.listKind", list_kind, "kind and listKind may not be the same"))
    for i, sn in enumerate(names.get("shortNames") or ()):
        out.extend(_invalid(f"spec.names.shortNames[{i}]", sn, m) for m in is_dns1035_label(str(sn)))
    scope = spec.get("scope")
    if not scope:
        out.append(_required("spec.scope"))
    elif scope not in ("Namespaced", "Cluster"):
        out.append(_unsupported("spec.scope", scope, ["Cluster", "Namespaced"]))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        out.append(_invalid("spec.versions", versions if versions is not None else [],
                            "must have exactly one version marked as storage version"))
        return out
    storage = 0
    seen: set[str] = set()
    for i, v in enumerate(versions):
        vp = f"spec.versions[{i}]"
        if not isinstance(v, dict):
            out.append(_invalid(vp, v, "must be an object"))
            continue
        vname = v.get("name") or ""
        if not vname:
            out.append(_required(f"{vp}.name"))
        else:
            out.extend(_invalid(f"{vp}.name", vname, m) for m in is_dns1035_label(vname))
            if vname in seen:
                out.append(Cause(f"{vp}.name", f"Duplicate value: {_fmt(vname)}", "FieldValueDuplicate"))
            seen.add(vname)
        if v.get("storage"):
            storage += 1
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        sp = f"{vp}.schema.openAPIV3Schema"
        if schema is None:
            if v.get("served", True) or v.get("storage"):
                out.append(_required(sp, "schemas are required"))
            continue
        _structural(schema, sp, out, root=True)
        subs = v.get("subresources") or {}
        scale = subs.get("scale")
        if isinstance(scale, dict):
            for k in ("specReplicasPath", "statusReplicasPath"):
                if not scale.get(k):
                    out.append(_required(f"{vp}.subresources.scale.{k}"))
        for j, col in enumerate(v.get("additionalPrinterColumns") or ()):
            cp = f"{vp}.additionalPrinterColumns[{j}]"
            for k in ("name", "type", "jsonPath"):
                if not (col or {}).get(k):
                    out.append(_required(f"{cp}.{k}"))
            ctype = (col or {}).get("type")
            if ctype and ctype not in ("integer", "number", "string", "boolean", "date"):
                out.append(_unsupported(f"{cp}.type", ctype, ["boolean", "date", "integer", "number", "string"]))
        _selectable_fields(v.get("selectableFields"), schema, f"{vp}.selectableFields", out)
    if storage != 1:
        out.append(_invalid("spec.versions", f"{storage} storage versions" if storage else versions,
                            "must have exactly one version marked as storage version"))
    return out


_SELECTABLE_MAX = 8
_SELECTABLE_TYPES = ("string", "integer", "boolean")


def _selectable_fields(fields: Any, schema: Any, path: str, out: list[Cause]) -> None:
    """A version's ``selectableFields`` (kube 1.32): at most 8, each a simple ``.a.b`` path outside
    metadata to a string, integer or boolean field of the schema, no path twice."""
    if not fields:
        return
    if not isinstance(fields, list):
        out.append(_invalid(path, fields, "must be a list"))
        return
    if len(fields) > _SELECTABLE_MAX:
        out.append(Cause(path, f"Too many: {len(fields)}: must have at most {_SELECTABLE_MAX} items",
                         "FieldValueTooMany"))
    seen: set[str] = set()
    for i, f in enumerate(fields):
        jp_path = f"{path}[{i}].jsonPath"
        jp = f.get("jsonPath") if isinstance(f, dict) else None
        if not jp:
            out.append(_required(jp_path))
            continue
        if not isinstance(jp, str) or not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_-]*)+", jp):
            out.append(_invalid(jp_path, jp, "must be a simple JSON path without array notation, e.g. "
                                             ".spec.field"))
            continue
        if jp in seen:
            out.append(Cause(jp_path, f"Duplicate value: {_fmt(jp)}", "FieldValueDuplicate"))
        seen.add(jp)
        parts = jp[1:].split(".")
        if parts[0] == "metadata":
            out.append(_invalid(jp_path, jp, "must not point to metadata fields"))
            continue
        node: Any = schema
        for part in parts:
            props = node.get("properties") if isinstance(node, dict) else None
            node = props.get(part) if isinstance(props, dict) else None
            if node is None:
                break
        if node is None:
            out.append(_invalid(jp_path, jp, "is an invalid path: no such field in the schema"))
        elif node.get("type") not in _SELECTABLE_TYPES:
            out.append(_invalid(jp_path, jp, "must point to a field of type string, boolean or integer. Enum "
                                             "string fields and strings with formats are allowed."))


def _prune_meta(meta: Any, path: str, removed: list[str]) -> None:
    if not isinstance(meta, dict):
        return
    _prune_node(meta, resolve({"$ref": f"#/$defs/{OBJECT_META}"}), path, removed, True)


def _prune_node(v: Any, schema: dict[str, Any], path: str, removed: list[str], builtin: bool,
                root: bool = False) -> None:
    if "$ref" in schema:
        schema = resolve(schema)
        builtin = True
    if schema.get("x-kubernetes-preserve-unknown-fields") and not (root or schema.get(
            "x-kubernetes-embedded-resource")):
        # unknown fields survive, but known ones below are still pruned
        if isinstance(v, dict) and schema.get("properties"):
            for k, sub in schema["properties"].items():
                if k in v:
                    _prune_node(v[k], sub, _join(path, k), removed, builtin)
        return
    if isinstance(v, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if props is None and addl is None and builtin:
            return  # opaque built-in (FieldsV1, RawExtension)
        for k in list(v):
            p = _join(path, k)
            if embedded and k in ("apiVersion", "kind"):
                continue
            if embedded and k == "metadata":
                _prune_meta(v[k], p, removed)
                continue
            if props is not None and k in props:
                _prune_node(v[k], props[k], p, removed, builtin)
            elif isinstance(addl, dict):
                _prune_node(v[k], addl, p, removed, builtin)
            elif addl is True or preserve:
                continue
            else:
                del v[k]
                removed.append(p)
    elif isinstance(v, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, x in enumerate(v):
                _prune_node(x, items, f"{path}[{i}]", removed, builtin)


def prune(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Drop fields the (structural) schema does not declare, in place; returns the removed field paths.

    apiVersion and kind are always kept, metadata is pruned to ObjectMeta's fields, and nothing below
    `x-kubernetes-preserve-unknown-fields: true` is pruned except inside declared properties.
    """
    removed: list[str] = []
    _prune_node(obj, schema, "", removed, False, root=True)
    return removed


def _default_node(v: Any, schema: dict[str, Any], root: bool = False) -> None:
    if "$ref" in schema:
        return  # built-in kinds default in code, not from schemas
    if isinstance(v, dict):
        props = schema.get("properties")
        if props:
            for k, sub in props.items():
                if root and k == "metadata":
                    continue
                if "default" in sub and v.get(k) is None and not (k in v and sub.get("nullable")):
                    v[k] = copy.deepcopy(sub["default"])
                if k in v and v[k] is not None:
                    _default_node(v[k], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for x in v.values():
                if x is not None:
                    _default_node(x, addl)
    elif isinstance(v, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for x in v:
                if x is not None:
                    _default_node(x, items)


def apply_defaults(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    """Structural defaulting of a custom resource: absent fields with a `default` get it (deep-copied),
    recursively, so defaults inside defaulted or existing objects apply too."""
    _default_node(obj, schema, root=True)
