"""The protobuf request decoder: round trip of a hand-encoded ConfigMap, and clear errors for bad bodies."""

from __future__ import annotations

import pytest

from kokpit.apiserver.errors import APIError
from kokpit.apiserver.protobuf import MAGIC, decode


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    tm = _ld(1, api_version.encode()) + _ld(2, kind.encode())
    return MAGIC + _ld(1, tm) + _ld(2, raw)


def test_configmap_with_labels_and_binary_data() -> None:
    meta = _ld(1, b"cm") + _ld(3, b"ns") + _ld(11, _ld(1, b"app") + _ld(2, b"web")) + _ld(2, b"")
    raw = _ld(1, meta) + _ld(2, _ld(1, b"k") + _ld(2, b"v")) + _ld(3, _ld(1, b"bin") + _ld(2, b"\x00\x01"))
    obj = decode(_unknown("v1", "ConfigMap", raw))
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm", "namespace": "ns", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "binaryData": {"bin": "AAE="}}


@pytest.mark.parametrize("body,code", [
    (b"not-protobuf", 400),
    (MAGIC + b"\x0a\xff", 400),  # truncated length
    (MAGIC + b"\x0f", 400),  # wire type 7
])
def test_malformed_bodies_are_400(body: bytes, code: int) -> None:
    with pytest.raises(APIError) as e:
        decode(body)
    assert e.value.code == code


def test_unknown_kind_and_unknown_set_field_are_415() -> None:
    with pytest.raises(APIError) as e:
        decode(_unknown("batch/v1", "Job", b""))
    assert e.value.code == 415 and "Job" in e.value.message
    raw = _ld(1, _ld(1, b"cm")) + _ld(9, b"surprise")  # field 9 is not a ConfigMap field we know
    with pytest.raises(APIError) as e:
        decode(_unknown("v1", "ConfigMap", raw))
    assert e.value.code == 415 and "field 9" in e.value.message
