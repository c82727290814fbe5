"""Bearer-token authentication for the embedded API server, and kube-apiserver's 403 wording.

Clients reach the embedded server with an ordinary kubeconfig.  Two static tokens are made with every data
dir: the admin token (user `kokpit-admin`, group `system:masters`: everything) and the read-only token (user
`kokpit-viewer`, group `kokpit:viewers`, bound to the `view` ClusterRole).  ServiceAccount tokens are
checked by `rbac_tokens.TokenIssuer`, handed in as `service_accounts`.  What a user may do is decided by
RBAC (`kokpit.apiserver.rbac`).  Messages for refused requests copy kube-apiserver's wording so that kubectl
shows what people already know how to read.
"""

from __future__ import annotations

import csv
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kokpit.apiserver.errors import APIError, forbidden
from kokpit.apiserver.pki import Tokens

__all__ = [
    "ADMIN_GROUP",
    "ADMIN_USER",
    "VIEWER_GROUP",
    "VIEWER_USER",
    "Authenticator",
    "User",
    "forbidden_error",
    "forbidden_message",
    "load_token_file",
]

ADMIN_USER = "kokpit-admin"
ADMIN_GROUP = "system:masters"
VIEWER_USER = "kokpit-viewer"
VIEWER_GROUP = "kokpit:viewers"


@dataclass(frozen=True)
class User:
    """An authenticated caller (kube's user.Info); `extra` is a tuple of (key, values) pairs."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _user(name: str, groups: tuple[str, ...], uid: str = "") -> User:
    return User(name=name, groups=(*groups, "system:authenticated"), uid=uid)


class Authenticator:
    """Maps `Authorization: Bearer <token>` to a User, comparing every known token in constant time."""

    def __init__(self, tokens: Tokens, extra: Mapping[str, User] | None = None,
                 service_accounts: Callable[[str], User | None] | None = None) -> None:
        self.service_accounts = service_accounts
        table: dict[str, User] = dict(extra or {})
        table[tokens.admin] = _user(ADMIN_USER, (ADMIN_GROUP,))
        table[tokens.readonly] = _user(VIEWER_USER, (VIEWER_GROUP,))
        self._table: list[tuple[bytes, User]] = [(t.encode(), u) for t, u in table.items() if t]

    def authenticate(self, authorization_header: str | None) -> User | None:
        """The user behind the header, or None (→ 401) for a missing, malformed or unknown token."""
        if not authorization_header:
            return None
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = token.encode("utf-8", "surrogateescape")
        found: User | None = None
        for known, user in self._table:  # no early exit: timing does not tell which token matched
            if hmac.compare_digest(presented, known):
                found = user
        if found is None and self.service_accounts is not None:
            found = self.service_accounts(token)
        return found


def _q(s: str) -> str:
    """Go's %q for the strings that appear here."""
    return json.dumps(s, ensure_ascii=False)


def forbidden_message(user: User, verb: str, resource: str, group: str, namespace: str | None,
                      name: str | None, *, subresource: str | None = None, path: str | None = None) -> str:
    """kube-apiserver's 403 message, e.g. `configmaps is forbidden: User "kokpit-viewer" cannot create
    resource "configmaps" in API group "" in the namespace "default"`.

    An empty `resource` means a non-resource request; then `path` is what the message names.
    """
    if not resource:
        return f"forbidden: User {_q(user.name)} cannot {verb} path {_q(path or '')}"
    full = f"{resource}/{subresource}" if subresource else resource
    if namespace:
        where = f"in the namespace {_q(namespace)}"
    else:
        where = "at the cluster scope"
    reason = f"User {_q(user.name)} cannot {verb} resource {_q(full)} in API group {_q(group)} {where}"
    qualified = f"{resource}.{group}" if group else resource
    if name:
        return f"{qualified} {_q(name)} is forbidden: {reason}"
    return f"{qualified} is forbidden: {reason}"


def forbidden_error(user: User, verb: str, resource: str, group: str, namespace: str | None,
                    name: str | None, *, subresource: str | None = None, path: str | None = None,
                    reason: str = "") -> APIError:
    """The 403 Status kube-apiserver sends, with details {name, group, kind=resource} filled the same way;
    an authorizer's `reason` is appended as kube's responsewriters.Forbidden does."""
    msg = forbidden_message(user, verb, resource, group, namespace, name, subresource=subresource, path=path)
    if reason:
        msg = f"{msg}: {reason}"
    if not resource:
        return forbidden(msg)
    return forbidden(msg, name=name or None, group=group, kind=resource)


def load_token_file(path: Path) -> dict[str, User]:
    """Read kube's --token-auth-file CSV: `token,user,uid,"group1,group2"` (groups optional).

    What the users may do is up to RBAC (members of system:masters may do everything).  Blank lines and lines starting with `#` are skipped; a
    later line with the same token wins, as in kube-apiserver.
    """
    out: dict[str, User] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: need at least token,user,uid; got {len(row)} fields")
            token, name, uid = (c.strip() for c in row[:3])
            if not token or not name:
                raise ValueError(f"{path}:{lineno}: token and user must not be empty")
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            out[token] = _user(name, groups, uid)
    return out
