"""Label and field selectors, parsed once and matched cheaply.

Lists and watches filter every object (and every watch event) through these, so a selector is compiled into
a tuple of small requirement tuples when the request arrives and matching is a tight loop over plain dicts.
Grammar, validation and matching follow apimachinery's `labels.Parse`, `fields.ParseSelector` and
`metav1.LabelSelectorAsSelector`, because kubectl, kopf and controllers build these strings and expect the
same answers (and the same 400s) as from a real kube-apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kokpit.apiserver.errors import APIError, bad_request
from kokpit.apiserver.resources import ResourceType

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "label_selector_from_dict",
    "parse_field_selector",
    "parse_label_selector",
    "validate_label_key",
    "validate_label_value",
]

# Requirement operators, as small ints so matching compares ints, not strings.
_EQ, _NE, _IN, _NOTIN, _EXISTS, _NOT_EXISTS, _GT, _LT = range(8)

_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INT_RE = re.compile(r"^[-+]?[0-9]+$")


def validate_label_key(key: str) -> str | None:
    """Return why `key` is not a valid label key (qualified name), or None when it is."""
    if not key:
        return "name part must be non-empty"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > 253:
            return "prefix part must be no more than 253 characters"
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric character")
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_RE.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character")
    return None


def validate_label_value(value: str) -> str | None:
    """Return why `value` is not a valid label value, or None (the empty string is valid)."""
    if value == "":
        return None
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _NAME_RE.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character")
    return None


# ----------------------------------------------------------------------------------------------- labels

_Req = tuple[str, int, Any]  # (key, op, value: str | frozenset[str] | int | None)


@dataclass(frozen=True)
class LabelSelector:
    """A compiled label selector: requirements sorted by key, all must hold.

    `nothing` is the selector of a nil metav1.LabelSelector, which matches no object.
    """

    requirements: tuple[_Req, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when it selects everything (so callers can skip filtering)."""
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        if not self.requirements:
            return True
        if labels is None:
            labels = {}
        for key, op, value in self.requirements:
            if op == _EQ:
                if labels.get(key) != value:
                    return False
            elif op == _NE:
                if key in labels and labels[key] == value:
                    return False
            elif op == _IN:
                if key not in labels or labels[key] not in value:
                    return False
            elif op == _NOTIN:
                if key in labels and labels[key] in value:
                    return False
            elif op == _EXISTS:
                if key not in labels:
                    return False
            elif op == _NOT_EXISTS:
                if key in labels:
                    return False
            else:  # _GT / _LT
                have = labels.get(key)
                if have is None or not _INT_RE.match(have):
                    return False
                n = int(have)
                if (op == _GT and not n > value) or (op == _LT and not n < value):
                    return False
        return True

    def equality_requirements(self) -> dict[str, str]:
        """The `key=value` requirements (an object must carry each), for index lookups in the store."""
        return {key: value for key, op, value in self.requirements if op == _EQ}

    def __str__(self) -> str:
        """Canonical text, as apimachinery's Selector.String() writes it (used in table cells)."""
        parts = []
        for key, op, value in self.requirements:
            if op == _EQ:
                parts.append(f"{key}={value}")
            elif op == _NE:
                parts.append(f"{key}!={value}")
            elif op == _IN:
                parts.append(f"{key} in ({','.join(sorted(value))})")
            elif op == _NOTIN:
                parts.append(f"{key} notin ({','.join(sorted(value))})")
            elif op == _EXISTS:
                parts.append(key)
            elif op == _NOT_EXISTS:
                parts.append(f"!{key}")
            elif op == _GT:
                parts.append(f"{key}>{value}")
            else:
                parts.append(f"{key}<{value}")
        return ",".join(parts)


def _build(reqs: Iterable[_Req]) -> LabelSelector:
    return LabelSelector(tuple(sorted(reqs, key=lambda r: (r[0], r[1]))))


class _LabelParser:
    """Recursive-descent parser over apimachinery's selector lexicon."""

    _SPECIAL = "!=,()<>"

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._lex(text)
        self.pos = 0

    def fail(self, what: str) -> APIError:
        return bad_request(f"unable to parse label selector {self.text!r}: {what}")

    def _lex(self, s: str) -> list[str]:
        out: list[str] = []
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            if c.isspace():
                i += 1
            elif s.startswith(("==", "!="), i):
                out.append(s[i:i + 2])
                i += 2
            elif c in self._SPECIAL:
                out.append(c)
                i += 1
            else:
                j = i
                while j < n and not s[j].isspace() and s[j] not in self._SPECIAL:
                    j += 1
                out.append(s[i:j])
                i = j
        return out

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    @staticmethod
    def _describe(tok: str | None) -> str:
        return "end of input" if tok is None else repr(tok)

    def _is_ident(self, tok: str | None) -> bool:
        return tok is not None and tok not in ("==", "!=") and tok not in self._SPECIAL

    def key(self) -> str:
        tok = self.take()
        if not self._is_ident(tok):
            raise self.fail(f"found {self._describe(tok)}, expected a label key")
        assert tok is not None
        why = validate_label_key(tok)
        if why:
            raise self.fail(f"invalid label key {tok!r}: {why}")
        return tok

    def value(self, key: str) -> str:
        tok = self.peek()
        if tok is None or tok == ",":  # `key=` selects the empty value
            return ""
        if not self._is_ident(tok):
            raise self.fail(f"found {self._describe(tok)}, expected a value for {key!r}")
        self.pos += 1
        why = validate_label_value(tok)
        if why:
            raise self.fail(f"invalid label value {tok!r} for key {key!r}: {why}")
        return tok

    def value_set(self, key: str) -> frozenset[str]:
        tok = self.take()
        if tok != "(":
            raise self.fail(f"found {self._describe(tok)}, expected '(' after 'in'/'notin'")
        values: list[str] = []
        while True:
            tok = self.peek()
            if tok in (",", ")"):
                values.append("")  # `in ()` and `in (a,,b)` hold the empty value, as in apimachinery
            else:
                values.append(self.value(key))
            tok = self.take()
            if tok == ")":
                break
            if tok != ",":
                raise self.fail(f"found {self._describe(tok)}, expected ',' or ')'")
        return frozenset(values)

    def requirement(self) -> _Req:
        tok = self.peek()
        if tok == "!":
            self.pos += 1
            return (self.key(), _NOT_EXISTS, None)
        key = self.key()
        op = self.peek()
        if op is None or op == ",":
            return (key, _EXISTS, None)
        self.pos += 1
        if op in ("=", "=="):
            return (key, _EQ, self.value(key))
        if op == "!=":
            return (key, _NE, self.value(key))
        if op in ("in", "notin"):
            return (key, _IN if op == "in" else _NOTIN, self.value_set(key))
        if op in (">", "<"):
            tok = self.take()
            if tok is None or not _INT_RE.match(tok):
                raise self.fail(f"for 'gt', 'lt' operators, the value must be an integer, got "
                                f"{self._describe(tok)} (key {key!r})")
            return (key, _GT if op == ">" else _LT, int(tok))
        raise self.fail(f"found {op!r}, expected one of: in, notin, =, ==, !=, >, < (after key {key!r})")

    def parse(self) -> LabelSelector:
        reqs: list[_Req] = []
        if not self.tokens:
            return LabelSelector()
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                break
            if tok != ",":
                raise self.fail(f"found {tok!r}, expected ','")
            if self.peek() is None:
                raise self.fail("found end of input after ',', expected a requirement")
        return _build(reqs)


def parse_label_selector(s: str | None) -> LabelSelector:
    """Parse a `labelSelector` query parameter; raise a 400 naming the selector and the problem."""
    if not s or not s.strip():
        return LabelSelector()
    return _LabelParser(s).parse()


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """Compile a metav1.LabelSelector (matchLabels + matchExpressions); None selects nothing."""
    if sel is None:
        return LabelSelector(nothing=True)
    reqs: list[_Req] = []
    for key, value in (sel.get("matchLabels") or {}).items():
        why = validate_label_key(key) or validate_label_value(str(value))
        if why:
            raise bad_request(f"invalid label selector: matchLabels {key}={value}: {why}")
        reqs.append((key, _EQ, str(value)))
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        key = expr.get("key", "")
        op = expr.get("operator", "")
        values = [str(v) for v in (expr.get("values") or [])]
        where = f"invalid label selector: matchExpressions[{i}]"
        why = validate_label_key(key)
        if why:
            raise bad_request(f"{where}: key {key!r}: {why}")
        if op in ("In", "NotIn"):
            if not values:
                raise bad_request(f"{where}: for 'in', 'notin' operators, values set can't be empty")
            for v in values:
                why = validate_label_value(v)
                if why:
                    raise bad_request(f"{where}: value {v!r}: {why}")
            reqs.append((key, _IN if op == "In" else _NOTIN, frozenset(values)))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                raise bad_request(f"{where}: values set must be empty for exists and does not exist")
            reqs.append((key, _EXISTS if op == "Exists" else _NOT_EXISTS, None))
        else:
            raise bad_request(f"{where}: {op!r} is not a valid label selector operator")
    return _build(reqs)


# ----------------------------------------------------------------------------------------------- fields

_Getter = Callable[[dict[str, Any]], str]


def _meta_name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _meta_namespace(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


@dataclass(frozen=True)
class FieldSelector:
    """A compiled field selector: (field, getter, wanted value, equal?) terms, all must hold."""

    terms: tuple[tuple[str, _Getter, str, bool], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, obj: dict[str, Any]) -> bool:
        for _name, getter, value, equal in self.terms:
            if (getter(obj) == value) != equal:
                return False
        return True

    def equality_requirements(self) -> dict[str, str]:
        """The `field=value` terms, so storage can use an index (metadata.name, spec.nodeName...)."""
        return {name: value for name, _g, value, equal in self.terms if equal}

    def __str__(self) -> str:
        return ",".join(f"{n}{'=' if eq else '!='}{_escape(v)}" for n, _g, v, eq in self.terms)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_unescaped(s: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(s: str, whole: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s) or s[i + 1] not in "\\,=":
                raise bad_request(f"invalid field selector {whole!r}: invalid escape sequence in {s!r}")
            out.append(s[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _find_operator(term: str) -> tuple[int, int, bool] | None:
    """Position and width of the first unescaped operator in `term`, and whether it means equality."""
    i = 0
    while i < len(term):
        c = term[i]
        if c == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return i, 2, False
        if term.startswith("==", i):
            return i, 2, True
        if c == "=":
            return i, 1, True
        i += 1
    return None


def parse_field_selector(s: str | None, rt: ResourceType) -> FieldSelector:
    """Parse a `fieldSelector` for resource `rt`; only metadata.name, metadata.namespace and the kind's own
    selectable fields are accepted (anything else is the 400 kube answers: `field label not supported`)."""
    if not s or not s.strip():
        return FieldSelector()
    getters: dict[str, _Getter] = {"metadata.name": _meta_name, "metadata.namespace": _meta_namespace}
    getters.update(rt.field_selectors)
    terms: list[tuple[str, _Getter, str, bool]] = []
    for raw in _split_unescaped(s, ","):
        term = raw.strip()
        if not term:
            continue  # as apimachinery: `a=b,,c=d` is two terms
        found = _find_operator(term)
        if found is None:
            raise bad_request(f"invalid selector: {s!r}; can't understand {term!r}")
        at, width, equal = found
        name = term[:at].strip()
        value = _unescape(term[at + width:].strip(), s)
        if not name:
            raise bad_request(f"invalid field selector {s!r}: missing field name in {term!r}")
        getter = getters.get(name)
        if getter is None:
            raise bad_request(f"field label not supported: {name}")
        terms.append((name, getter, value, equal))
    return FieldSelector(tuple(terms))
