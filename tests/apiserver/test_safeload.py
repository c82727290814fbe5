"""safeload: the bounds on a body are checked before a parser sees it (unit level; tests/e2e/test_abuse.py
sends the same bodies to a real server)."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.apiserver.errors import APIError
from kokpit.apiserver.safeload import MAX_ALIAS_BYTES, MAX_ALIASES, MAX_DEPTH, load


def nested_json(levels: int) -> bytes:
    return b'{"a":' * (levels - 1) + b"[]" + b"}" * (levels - 1)


def refused(body: bytes, yaml_ok: bool = True) -> APIError:
    with pytest.raises(APIError) as e:
        load(body, yaml_ok)
    return e.value


def test_json_depth_at_the_limit_and_beyond() -> None:
    assert load(nested_json(MAX_DEPTH), False) is not None
    err = refused(nested_json(MAX_DEPTH + 1), False)
    assert err.code == 400 and f"more than {MAX_DEPTH} levels" in err.message


def test_brackets_in_strings_do_not_count_but_escaped_quotes_do_not_hide_any() -> None:
    assert load(b'{"a": "' + b"[" * 10_000 + b'"}', False) == {"a": "[" * 10_000}
    tricky = b'{"a": "\\"[", "b": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
    assert refused(tricky, False).code == 400


def test_yaml_depth_in_flow_and_block_style() -> None:
    assert load(b"- " * (MAX_DEPTH - 1) + b"[x]\n", True) is not None
    assert refused(b"- " * MAX_DEPTH + b"[x]\n").code == 400
    assert refused(b"a: " + b"{b: " * 100_000 + b"}" * 100_000 + b"\n").code == 400


def test_alias_budget() -> None:
    few = b"a: &x {k: v}\n" + b"".join(b"b%d: *x\n" % i for i in range(MAX_ALIASES))
    assert len(load(few, True)) == MAX_ALIASES + 1
    many = few + b"z: *x\n"
    assert "aliases" in refused(many).message
    big = b"a: &x '" + b"y" * (MAX_ALIAS_BYTES // 2) + b"'\nb: *x\nc: *x\n"
    assert "aliases" in refused(big).message


@pytest.mark.parametrize(("doc", "field"), [
    (b"spec:\n  replicas: 18446744073709551616\n", "spec.replicas"),
    (b"x: [1, -9223372036854775809]\n", "x[1]"),
    (b"a: {b: .inf}\n", "a.b"),
    (b"a: .nan\n", "a"),
])
def test_numbers_the_stored_form_cannot_hold(doc: bytes, field: str) -> None:
    err = refused(doc)
    assert err.code == 422 and err.causes[0].field == field


def test_yaml_as_kube_reads_it() -> None:
    doc = b"t: 2026-01-01T00:00:00Z\nd: 2026-01-01\n8080: http\ntrue: yes\nn: 18446744073709551615\nb: !!binary aGk=\n"
    got: Any = load(doc, True)
    assert got == {"t": "2026-01-01T00:00:00Z", "d": "2026-01-01", "8080": "http", "true": True,
                   "n": 18446744073709551615, "b": "aGk="}


@pytest.mark.parametrize("doc", [b"? [a]\n: b\n", b"? null\n: b\n", b"a: !!set {x}\n", b"a: *nope\n",
                                 b"a: 1\n---\nb: 2\n", b"x: " + b"9" * 5000 + b"\n", b"a: \"\xff\"\n"])
def test_yaml_garbage_is_a_400(doc: bytes) -> None:
    assert refused(doc).code == 400


def test_json_only_when_yaml_is_not_allowed() -> None:
    err = refused(b"a: 1\n", yaml_ok=False)
    assert err.code == 400 and "JSON" in err.message
