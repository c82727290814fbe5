"""Sealed session cookies: what the browser holds cannot be read, altered or replayed past its expiry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kokpit.portal._session import Session, SessionCodec, csrf_ok, load_or_create_key


def test_seal_open_round_trip_and_tamper(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path / "k") == key  # kept: a restart keeps everyone logged in
    codec = SessionCodec(key)
    s = Session(user="alice", groups=["g"], token="secret-token")
    value = codec.seal(s)
    assert "secret-token" not in value and "alice" not in value
    back = codec.open(value)
    assert back is not None and back.user == "alice" and back.token == "secret-token" and back.csrf == s.csrf
    flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
    assert codec.open(flipped) is None
    assert SessionCodec(b"x" * 32).open(value) is None  # another key
    assert codec.open("garbage") is None and codec.open(None) is None


def test_expired_session_and_csrf(tmp_path: Path) -> None:
    codec = SessionCodec(load_or_create_key(tmp_path / "k"))
    old = Session(user="a", groups=[], token="t", expires=time.time() - 1)
    assert codec.open(codec.seal(old)) is None
    s = Session(user="a", groups=[], token="t")
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, "") and not csrf_ok(s, None) and not csrf_ok(s, s.csrf + "x")


def test_short_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        load_or_create_key(tmp_path / "k")
