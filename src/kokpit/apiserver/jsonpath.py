"""The JSONPath subset of CRD ``additionalPrinterColumns`` (``.a.b``, ``[n]``, ``[*]``, ``[?(@.x==\"y\")]``):
checked when a CRD is written, evaluated for every printed row."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["jsonpath_values", "validate_jsonpath"]



# ------------------------------------------------------------------------------------------- JSONPath

_Step = tuple[Any, ...]
_FILTER_OPS = ("==", "!=", "<=", ">=", "<", ">")


def _closing_bracket(p: str, start: int) -> int:
    quote = ""
    depth = 0
    for i in range(start + 1, len(p)):
        c = p[i]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "]" and depth == 0:
            return i
    raise ValueError(f"unclosed '[' in {p!r}")


def _literal(text: str) -> Any:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t in ("true", "false"):
        return t == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"unrecognized literal {t!r}") from None


def _filter(expr: str, whole: str) -> _Step:
    e = expr.strip()
    if not (e.startswith("(") and e.endswith(")")):
        raise ValueError(f"filter must look like ?(@.field==\"value\") in {whole!r}")
    e = e[1:-1].strip()
    quote = ""
    for i, c in enumerate(e):
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
            continue
        for op in _FILTER_OPS:
            if e.startswith(op, i):
                lhs, rhs = e[:i].strip(), e[i + len(op):]
                if not lhs.startswith("@"):
                    raise ValueError(f"filter must start with '@' in {whole!r}")
                return ("filter", _compile(lhs[1:]), op, _literal(rhs))
    if not e.startswith("@"):
        raise ValueError(f"filter must start with '@' in {whole!r}")
    return ("exists", _compile(e[1:]))


@lru_cache(maxsize=1024)
def _compile(path: str) -> tuple[_Step, ...]:
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1].strip()
    i = 1 if p.startswith("$") else 0
    steps: list[_Step] = []
    while i < len(p):
        c = p[i]
        if c == ".":
            i += 1
            if i < len(p) and p[i] == "*":
                steps.append(("all",))
                i += 1
                continue
            name: list[str] = []
            while i < len(p) and p[i] not in ".[":
                if p[i] == "\\" and i + 1 < len(p):
                    name.append(p[i + 1])
                    i += 2
                    continue
                name.append(p[i])
                i += 1
            if not name:
                if i >= len(p) and not steps:
                    break  # "." alone is the whole object
                raise ValueError(f"empty field name (recursive descent is not supported) in {path!r}")
            steps.append(("key", "".join(name)))
        elif c == "[":
            j = _closing_bracket(p, i)
            inner = p[i + 1:j].strip()
            i = j + 1
            if inner == "*":
                steps.append(("all",))
            elif inner.startswith("?"):
                steps.append(_filter(inner[1:], path))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                steps.append(("key", inner[1:-1]))
            elif re.fullmatch(r"-?\d+", inner):
                steps.append(("index", int(inner)))
            else:
                raise ValueError(f"unsupported subscript [{inner}] in {path!r}")
        else:
            raise ValueError(f"unexpected {c!r} at {i} in {path!r} (paths start with '.')")
    return tuple(steps)


def _compare(have: Any, op: str, want: Any) -> bool:
    if op == "==":
        return bool(have == want)
    if op == "!=":
        return bool(have != want)
    try:
        if op == "<":
            return bool(have < want)
        if op == ">":
            return bool(have > want)
        if op == "<=":
            return bool(have <= want)
        return bool(have >= want)
    except TypeError:
        return False


def _eval(steps: tuple[_Step, ...], root: Any) -> list[Any]:
    current = [root]
    for step in steps:
        nxt: list[Any] = []
        kind = step[0]
        for v in current:
            if kind == "key":
                if isinstance(v, dict) and step[1] in v:
                    nxt.append(v[step[1]])
            elif kind == "index":
                if isinstance(v, list) and -len(v) <= step[1] < len(v):
                    nxt.append(v[step[1]])
            elif kind == "all":
                if isinstance(v, dict):
                    nxt.extend(v[k] for k in sorted(v))
                elif isinstance(v, list):
                    nxt.extend(v)
            elif isinstance(v, list):
                for item in v:
                    found = _eval(step[1], item)
                    if kind == "exists":
                        if found:
                            nxt.append(item)
                    elif any(_compare(f, step[2], step[3]) for f in found):
                        nxt.append(item)
        current = nxt
    return current


def validate_jsonpath(path: str) -> str | None:
    """Why `path` is not a supported printer-column JSONPath, or None (for CRD validation)."""
    try:
        _compile(path)
    except ValueError as e:
        return str(e)
    return None


def jsonpath_values(obj: Any, path: str) -> list[Any]:
    """Every value `path` selects in `obj`, missing keys yielding nothing (kube's AllowMissingKeys)."""
    return _eval(_compile(path), obj)
