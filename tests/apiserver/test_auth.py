"""Authentication of the static tokens, and kube-compatible 403 messages (RBAC itself: test_rbac.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kokpit.apiserver.auth import (
    Authenticator,
    User,
    forbidden_error,
    forbidden_message,
    load_token_file,
)
from kokpit.apiserver.pki import Tokens

TOKENS = Tokens(admin="admin-token-aaaaaaaaaaaaaaaaaaaaaaaa", readonly="viewer-token-bbbbbbbbbbbbbbbbbbbbbb")


@pytest.fixture
def authn() -> Authenticator:
    return Authenticator(TOKENS)


def test_admin_token(authn: Authenticator) -> None:
    user = authn.authenticate(f"Bearer {TOKENS.admin}")
    assert user is not None
    assert user.name == "kokpit-admin"
    assert "system:masters" in user.groups


def test_readonly_token(authn: Authenticator) -> None:
    user = authn.authenticate(f"Bearer {TOKENS.readonly}")
    assert user is not None
    assert user.name == "kokpit-viewer"
    assert "kokpit:viewers" in user.groups
    assert "system:masters" not in user.groups


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer",
    "Bearer ",
    f"Basic {TOKENS.admin}",
    f"Token {TOKENS.admin}",
    f"Bearer {TOKENS.admin}x",
    f"Bearer {TOKENS.admin[:-1]}",
    f"Bearer {TOKENS.admin} {TOKENS.admin}",
    "Bearer wrong",
    "Bearer ünïcødé",
    TOKENS.admin,
])
def test_rejected_headers(authn: Authenticator, header: str | None) -> None:
    assert authn.authenticate(header) is None


@pytest.mark.parametrize("header", [f"bearer {TOKENS.admin}", f"BEARER  {TOKENS.admin} ", f" Bearer {TOKENS.admin}"])
def test_scheme_case_and_spacing(authn: Authenticator, header: str) -> None:
    user = authn.authenticate(header)
    assert user is not None and user.name == "kokpit-admin"


def test_forbidden_message_namespaced_create() -> None:
    viewer = User("kokpit-viewer", ("kokpit:viewers",))
    assert forbidden_message(viewer, "create", "configmaps", "", "default", None) == (
        'configmaps is forbidden: User "kokpit-viewer" cannot create resource "configmaps" in API group "" '
        'in the namespace "default"')


def test_forbidden_message_named_cluster_scoped_with_group_and_subresource() -> None:
    viewer = User("kokpit-viewer", ("kokpit:viewers",))
    assert forbidden_message(viewer, "patch", "machines", "kokpit.io", None, "m-1", subresource="status") == (
        'machines.kokpit.io "m-1" is forbidden: User "kokpit-viewer" cannot patch resource "machines/status" '
        'in API group "kokpit.io" at the cluster scope')


def test_forbidden_message_non_resource() -> None:
    viewer = User("kokpit-viewer", ("kokpit:viewers",))
    assert forbidden_message(viewer, "post", "", "", None, None, path="/logs") == (
        'forbidden: User "kokpit-viewer" cannot post path "/logs"')


def test_forbidden_error_status() -> None:
    viewer = User("kokpit-viewer", ("kokpit:viewers",))
    status = forbidden_error(viewer, "delete", "pods", "", "ns1", "p").status()
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    assert status["details"] == {"name": "p", "group": "", "kind": "pods"}
    assert status["message"].startswith('pods "p" is forbidden: User "kokpit-viewer" cannot delete')


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(
        "# comment\n"
        "\n"
        'tok-ops,alice,uid-1,"system:masters,ops"\n'
        "tok-dev,bob,uid-2,devs\n"
        "tok-none,carol,uid-3\n"
        "tok-dup,first,u\n"
        "tok-dup,second,u\n"
    )
    users = load_token_file(path)
    assert set(users) == {"tok-ops", "tok-dev", "tok-none", "tok-dup"}
    assert {"system:masters", "ops"} <= set(users["tok-ops"].groups)
    assert users["tok-ops"].uid == "uid-1"
    assert "system:masters" not in users["tok-dev"].groups
    assert users["tok-none"].groups == ("system:authenticated",)
    assert users["tok-dup"].name == "second"

    authn = Authenticator(TOKENS, users)
    alice = authn.authenticate("Bearer tok-ops")
    bob = authn.authenticate("Bearer tok-dev")
    assert alice is not None and alice.name == "alice" and "system:masters" in alice.groups
    assert bob is not None and bob.name == "bob" and "devs" in bob.groups
    # The built-in tokens still work next to the file's.
    admin = authn.authenticate(f"Bearer {TOKENS.admin}")
    assert admin is not None and admin.name == "kokpit-admin"


@pytest.mark.parametrize("bad", ["onlytoken,user\n", ",user,uid\n", "tok,,uid\n"])
def test_token_file_errors(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(bad)
    with pytest.raises(ValueError, match=r"bad\.csv:1"):
        load_token_file(path)
