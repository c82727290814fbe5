"""Browser sessions without server-side state: the session is sealed into its cookie.

A session holds the user's bearer token (the portal acts *as the user* against the API server, so the token
is what it calls with), the name and groups the API server said the token belongs to, a CSRF token and an
expiry.  It is encrypted and authenticated with AES-GCM under a key the portal keeps in a file (``0600``, or a
mounted Secret), so:

- the browser cannot read the token (the cookie is ``HttpOnly`` too) nor forge or alter a session;
- a restarted portal (or a second replica with the same key) keeps everyone logged in — nothing lives only in
  memory;
- rotating the key file logs everyone out.

The CSRF token is the synchronizer-token pattern: random per session, rendered into every form and sent back
in a hidden field (forms) or the ``X-CSRF-Token`` header (scripts with the cookie); compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["COOKIE", "SESSION_SECONDS", "Session", "SessionCodec", "csrf_ok", "load_or_create_key"]

COOKIE = "kokpit_session"
SESSION_SECONDS = 8 * 3600
_AAD = b"kokpit-portal-session/1"


@dataclass
class Session:
    """Who is logged in: the API server's name for them, their groups, and the token the portal calls with."""

    user: str
    groups: list[str]
    token: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.time() + SESSION_SECONDS)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte session key in ``path`` (created ``0600`` when missing; a short or unreadable file is an
    error, never silently replaced, because replacing it logs everyone out)."""
    if path.exists():
        key = path.read_bytes().strip()
        try:
            raw = base64.b64decode(key, validate=True) if len(key) != 32 else key
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"session key file {path} must hold 32 bytes (or their base64)")
        return raw
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = os.urandom(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(raw))
    tmp.replace(path)
    return raw


class SessionCodec:
    """Seals a :class:`Session` into a cookie value and opens it again (None for anything not sealed by us,
    or expired)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, s: Session) -> str:
        nonce = os.urandom(12)
        body = orjson.dumps({"u": s.user, "g": s.groups, "t": s.token, "c": s.csrf, "e": s.expires})
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, body, _AAD)).decode().rstrip("=")

    def open(self, value: str | None) -> Session | None:
        if not value or len(value) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data = orjson.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
            s = Session(user=str(data["u"]), groups=[str(g) for g in data["g"]], token=str(data["t"]),
                        csrf=str(data["c"]), expires=float(data["e"]))
        except Exception:  # tampered, truncated, another key: not a session
            return None
        return None if s.expired else s


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
