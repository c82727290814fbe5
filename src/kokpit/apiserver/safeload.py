"""JSON and YAML request bodies, parsed within bounds that are checked before any parser sees them.

Any authenticated user, the read-only viewer included (it may POST a SelfSubjectAccessReview), can send a
body; nothing in one may take the server down. What goes wrong without these bounds, each found by fuzzing:

* a YAML document nested 100,000 levels (200 KB) overflows the C stack of PyYAML's composer and kills the
  process; 5,000 levels overflow Python's recursion limit in the validators (a 500);
* a YAML alias bomb (504 bytes of anchors and aliases) expands to 10^7 items;
* a YAML integer beyond 64 bits, `.inf` or `.nan` cannot be held by the stored form (JSON through orjson);

So every body is checked *before* it is parsed (its size already was, by decoding.read_body's 413): its
nesting depth (JSON: by
counting brackets outside strings, at C speed; YAML: by walking libyaml's event stream, which does not
recurse, with a budget for aliases), and only then parsed. YAML is composed by PyYAML's C loader and turned
into the JSON form kube's own YAML path (sigs.k8s.io/yaml) produces: timestamps stay the strings written,
integer/bool keys become strings, numbers must fit 64 bits. Limits are kube-like where kube has one, and
far above what any real object needs where kube's (10,000 levels) would not be safe in Python.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import orjson
import yaml
from yaml import events as ev

from kokpit.apiserver import errors

__all__ = ["MAX_ALIASES", "MAX_ALIAS_BYTES", "MAX_DEPTH", "load"]

MAX_DEPTH = 100
"""Deepest nesting of objects and lists in a body. A Pod template inside a CRD schema is about 40 deep."""
MAX_ALIASES = 100
"""YAML alias uses per document: anchors are for hand-written repetition, not for data."""
MAX_ALIAS_BYTES = 256 * 1024
"""What all alias uses of a document may expand to, in bytes of scalar text (plus one per node)."""

_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def load(body: bytes, yaml_ok: bool) -> Any:
    """The JSON value of a body: JSON, or (when `yaml_ok`) YAML, which JSON is a subset of."""
    _check_json_depth(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if not yaml_ok:
            raise errors.bad_request(f"the body is not valid JSON: {e}") from None
    return load_yaml(body)


def _too_deep(what: str) -> errors.APIError:
    return errors.bad_request(f"the request body is nested more than {MAX_DEPTH} levels deep{what}; "
                              f"no Kubernetes object needs that many")


def _check_json_depth(body: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH without parsing it: drop the strings, keep the brackets,
    and peel off innermost pairs one level per pass (each pass is one C-speed bytes.replace)."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return
    t = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    depth = 0
    while t:
        nt = t.replace(b"[]", b"")
        if len(nt) == len(t):
            return  # unbalanced: not JSON (or YAML flow style); the parser names the problem
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep("")
        t = nt


# ------------------------------------------------------------------ YAML
class _Loader(yaml.CSafeLoader):
    """PyYAML's C safe loader, except that timestamps stay the strings written (as sigs.k8s.io/yaml keeps
    them when decoding into untyped data): `2026-01-01T00:00:00Z` must not come back reformatted."""


def _timestamp_as_written(loader: _Loader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_written)


def _scan(body: bytes) -> None:
    """Walk the event stream (libyaml does not recurse) and refuse, before anything is composed, a document
    nested deeper than MAX_DEPTH (aliases count as deep as their anchor) or whose aliases would expand past
    MAX_ALIASES uses / MAX_ALIAS_BYTES."""
    loader = _Loader(body)
    # one frame per open collection: [anchor, weight (bytes of text + nodes), height below]
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int]] = {}
    uses = expanded = 0
    try:
        while loader.check_event():
            e = loader.get_event()
            if isinstance(e, ev.CollectionStartEvent):
                stack.append([e.anchor, 1, 0])
                if len(stack) > MAX_DEPTH:
                    raise _too_deep("")
            elif isinstance(e, ev.CollectionEndEvent):
                anchor, weight, height = stack.pop()
                if anchor is not None:
                    anchors[anchor] = (weight, height + 1)
                if stack:
                    stack[-1][1] += weight
                    stack[-1][2] = max(stack[-1][2], height + 1)
            elif isinstance(e, ev.ScalarEvent):
                weight = len(e.value) + 1
                if e.anchor is not None:
                    anchors[e.anchor] = (weight, 0)
                if stack:
                    stack[-1][1] += weight
            elif isinstance(e, ev.AliasEvent):
                if e.anchor not in anchors:
                    raise errors.bad_request(f"the body is not valid YAML: found undefined alias {e.anchor!r}")
                weight, height = anchors[e.anchor]
                uses += 1
                expanded += weight
                if uses > MAX_ALIASES or expanded > MAX_ALIAS_BYTES:
                    raise errors.bad_request(
                        f"the YAML body uses aliases beyond the limit ({MAX_ALIASES} uses expanding to at "
                        f"most {MAX_ALIAS_BYTES} bytes); write the repeated parts out")
                if len(stack) + height > MAX_DEPTH:
                    raise _too_deep(f" (through alias *{e.anchor})")
                if stack:
                    stack[-1][1] += weight
                    stack[-1][2] = max(stack[-1][2], height)
    except yaml.YAMLError as e:
        raise errors.bad_request(f"the body is not valid YAML: {e}") from None
    finally:
        loader.dispose()


def load_yaml(body: bytes) -> Any:
    """A YAML body (one document) as the JSON value kube's YAML decoding gives, within the bounds above."""
    _scan(body)
    try:
        data = yaml.load(body, Loader=_Loader)  # a safe loader (CSafeLoader)
    except yaml.YAMLError as e:
        raise errors.bad_request(f"the body is not valid YAML: {e}") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. an integer of more than 4,300 digits
        raise errors.bad_request(f"the body is not valid YAML for Kubernetes: {e}") from None
    except RecursionError:  # the scan bounds the depth; this is a last line, not a path
        raise _too_deep("") from None
    return _jsonable(data, [], data)


def _jsonable(value: Any, path: list[str], doc: Any) -> Any:
    """Copy a composed YAML value into plain JSON types (which also un-shares aliased nodes)."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT_MAX:
            raise _number_error(doc, path, value, "must be an integer of at most 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _number_error(doc, path, value, "must be a finite number")
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _key(k, path)
            path.append(key)
            out[key] = _jsonable(v, path, doc)
            path.pop()
        return out
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            path.append(f"[{i}]")
            items.append(_jsonable(v, path, doc))
            path.pop()
        return items
    if isinstance(value, bytes):  # !!binary: JSON carries bytes as base64, like []byte fields
        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):  # a date (timestamps stay strings, see _Loader)
        return value.isoformat()
    raise errors.bad_request(f"the body is not valid YAML for Kubernetes: {_dotted(path) or 'the document'} "
                             f"is a {type(value).__name__}, which JSON cannot hold")


def _key(k: Any, path: list[str]) -> str:
    """Mapping keys as sigs.k8s.io/yaml turns them into JSON keys: numbers and booleans become strings."""
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int | float):
        return str(k)
    raise errors.bad_request(f"the body is not valid YAML for Kubernetes: a key under "
                             f"{_dotted(path) or 'the top level'} is {k!r}; keys must be strings")


def _dotted(path: list[str]) -> str:
    return "".join(p if p.startswith("[") else f".{p}" for p in path).lstrip(".")


def _number_error(doc: Any, path: list[str], value: Any, what: str) -> errors.APIError:
    """422 naming the field, in the words kube's validation uses ("Invalid value: ...")."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    api_version = doc.get("apiVersion") if isinstance(doc, dict) else None
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    shown = str(value) if len(str(value)) <= 40 else str(value)[:37] + "..."
    field = _dotted(path)
    return errors.invalid(kind if isinstance(kind, str) else None, name if isinstance(name, str) else "",
                          [errors.Cause(field, f"Invalid value: {shown}: {what}", "FieldValueInvalid")], group)
