"""PKI, tokens and kubeconfig: what real clients will check, checked here with real verifiers."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kokpit.apiserver.pki import (
    Pki,
    atomic_write,
    ensure_pki,
    ensure_tokens,
    kubeconfig_dict,
    write_kubeconfig,
)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def _sans(p: Path) -> tuple[set[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    san = _cert(p).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


def _verify(pki: Pki, host: str, now: dt.datetime | None = None) -> None:
    """Full chain verification with cryptography's webpki-style verifier (raises on failure)."""
    builder = PolicyBuilder().store(Store([_cert(pki.ca_cert)]))
    if now is not None:
        builder = builder.time(now)
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = DNSName(host)
    builder.build_server_verifier(subject).verify(_cert(pki.server_cert), [])


def test_first_start_creates_verifiable_chain(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, ["10.1.2.3", "api.example.test", "[fd00::5]"])
    assert pki.ca_cert == tmp_path / "pki" / "ca.crt"
    assert pki.server_key == tmp_path / "pki" / "server.key"
    for p in (pki.ca_cert, pki.ca_key, pki.server_cert, pki.server_key):
        assert p.is_file()
    assert _mode(pki.ca_key) == 0o600
    assert _mode(pki.server_key) == 0o600
    assert pki.ca_pem == pki.ca_cert.read_bytes()
    assert pki.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")

    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert dt.timedelta(days=3640) < ca.not_valid_after_utc - ca.not_valid_before_utc
    server = _cert(pki.server_cert)
    server.verify_directly_issued_by(ca)
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(eku)
    life = server.not_valid_after_utc - server.not_valid_before_utc
    assert dt.timedelta(days=360) < life < dt.timedelta(days=370)

    names, ips = _sans(pki.server_cert)
    assert names == {"localhost", "api.example.test"}
    assert ips == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3", "fd00::5")}
    for host in ("localhost", "api.example.test", "127.0.0.1", "::1", "10.1.2.3"):
        _verify(pki, host)
    with pytest.raises(VerificationError, match="no matching subjectAltName"):
        _verify(pki, "other.example.test")


def test_second_start_reuses_files(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, ["10.1.2.3"])
    files = [first.ca_cert, first.ca_key, first.server_cert, first.server_key]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    # Same hosts, in another order and spelling, plus hosts that are always there anyway.
    second = ensure_pki(tmp_path, ["localhost", "10.1.2.3", "127.0.0.1"])
    assert second == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before


def test_new_host_reissues_server_cert_and_keeps_ca(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, ["10.1.2.3"])
    ca_before = first.ca_cert.read_bytes()
    ca_key_before = first.ca_key.read_bytes()
    server_before = first.server_cert.read_bytes()
    key_before = first.server_key.read_bytes()

    second = ensure_pki(tmp_path, ["10.1.2.3", "node-7.example.test"])
    assert second.ca_cert.read_bytes() == ca_before
    assert second.ca_key.read_bytes() == ca_key_before
    assert second.ca_pem == first.ca_pem
    assert second.server_cert.read_bytes() != server_before
    assert second.server_key.read_bytes() != key_before
    assert "node-7.example.test" in _sans(second.server_cert)[0]
    _verify(second, "node-7.example.test")
    _verify(second, "10.1.2.3")
    # Dropping a host does not force a new certificate: the old one still covers what is asked.
    server_now = second.server_cert.read_bytes()
    ensure_pki(tmp_path, ["node-7.example.test"])
    assert second.server_cert.read_bytes() == server_now


def test_near_expiry_reissues_server_cert_only(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    first = ensure_pki(tmp_path, [], now=now)
    server_before = first.server_cert.read_bytes()
    # 300 days on: still more than 30 days left, reused.
    ensure_pki(tmp_path, [], now=now + dt.timedelta(days=300))
    assert first.server_cert.read_bytes() == server_before
    # 340 days on: under 30 days left, re-issued by the same CA.
    later = now + dt.timedelta(days=340)
    second = ensure_pki(tmp_path, [], now=later)
    assert second.ca_pem == first.ca_pem
    assert second.server_cert.read_bytes() != server_before
    assert _cert(second.server_cert).not_valid_after_utc > later + dt.timedelta(days=300)
    _verify(second, "localhost", now=later)


def test_expiring_ca_is_replaced(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    first = ensure_pki(tmp_path, [], now=now)
    much_later = now + dt.timedelta(days=3640)
    second = ensure_pki(tmp_path, [], now=much_later)
    assert second.ca_pem != first.ca_pem
    _verify(second, "127.0.0.1", now=much_later)


@pytest.mark.parametrize("damage", ["server_garbage", "server_key_missing", "server_key_swapped"])
def test_broken_server_files_are_regenerated(tmp_path: Path, damage: str) -> None:
    first = ensure_pki(tmp_path, [])
    if damage == "server_garbage":
        first.server_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")  # a torn write
    elif damage == "server_key_missing":
        first.server_key.unlink()
    else:
        first.server_key.write_bytes(first.ca_key.read_bytes())
    second = ensure_pki(tmp_path, [])
    assert second.ca_pem == first.ca_pem
    _verify(second, "localhost")
    assert _mode(second.server_key) == 0o600


def test_mismatched_ca_pair_regenerates_everything(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, [])
    first.ca_key.write_bytes(first.server_key.read_bytes())  # e.g. crash between key and cert writes
    second = ensure_pki(tmp_path, [])
    assert second.ca_pem != first.ca_pem
    _verify(second, "localhost")


def test_loosened_key_mode_is_tightened(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, [])
    os.chmod(pki.server_key, 0o644)
    ensure_pki(tmp_path, [])
    assert _mode(pki.server_key) == 0o600


def test_tls_handshake_with_stdlib_ssl(tmp_path: Path) -> None:
    """A real handshake: the server side loads the files as uvicorn would, the client checks the hostname."""
    pki = ensure_pki(tmp_path, [])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(5))
            except BaseException as e:  # surfaced by the assertion below
                errors.append(e)

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
        t.join(5)
        assert not errors


def test_tokens_stable_and_private(tmp_path: Path) -> None:
    t1 = ensure_tokens(tmp_path)
    path = tmp_path / "tokens.json"
    assert _mode(path) == 0o600
    assert t1.admin != t1.readonly
    assert len(t1.admin) >= 40 and len(t1.readonly) >= 40
    mtime = path.stat().st_mtime_ns
    t2 = ensure_tokens(tmp_path)
    assert t2 == t1
    assert path.stat().st_mtime_ns == mtime
    assert ensure_tokens(tmp_path / "elsewhere") != t1


def test_tokens_repair_keeps_valid_field(tmp_path: Path) -> None:
    t1 = ensure_tokens(tmp_path)
    (tmp_path / "tokens.json").write_text(f'{{"admin": "{t1.admin}"}}')
    t2 = ensure_tokens(tmp_path)
    assert t2.admin == t1.admin
    assert t2.readonly and t2.readonly != t1.readonly
    (tmp_path / "tokens.json").write_text("not json")
    t3 = ensure_tokens(tmp_path)
    assert t3.admin != t1.admin and t3 == ensure_tokens(tmp_path)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.key"
    atomic_write(target, b"one")
    atomic_write(target, b"two", 0o640)
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.key"]


def _auth_header(cfg: k8s_client.Configuration) -> tuple[str, str]:
    """The header the official client will send, read through its own auth settings."""
    setting = cfg.auth_settings()["BearerToken"]
    return setting["key"], setting["value"]


def test_kubeconfig_loads_with_official_client(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, [])
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server="https://127.0.0.1:6443", ca_pem=pki.ca_pem, token="tok-123",
                     namespace="team-a")
    assert _mode(path) == 0o600
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "https://127.0.0.1:6443"
    assert _auth_header(cfg) == ("authorization", "Bearer tok-123")
    assert cfg.verify_ssl is True
    assert Path(cfg.ssl_ca_cert).read_bytes() == pki.ca_pem
    _, active = k8s_config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "kokpit"
    assert active["context"] == {"cluster": "kokpit", "user": "kokpit-admin", "namespace": "team-a"}


def test_kubeconfig_plain_http(tmp_path: Path) -> None:
    path = tmp_path / "kc.yaml"
    write_kubeconfig(path, server="http://127.0.0.1:8080", ca_pem=None, token="t", cluster_name="c",
                     user="u", context="x")
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "http://127.0.0.1:8080"
    assert cfg.verify_ssl is False
    assert _auth_header(cfg) == ("authorization", "Bearer t")
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "x"
    assert doc["clusters"] == [{"name": "c", "cluster": {"server": "http://127.0.0.1:8080",
                                                          "insecure-skip-tls-verify": True}}]


def test_kubeconfig_dict_shape_and_errors() -> None:
    d = kubeconfig_dict(server="https://h:1", ca_pem=b"PEM", token="t")
    assert d["clusters"][0]["cluster"]["certificate-authority-data"] == base64.b64encode(b"PEM").decode()
    assert "namespace" not in d["contexts"][0]["context"]
    assert d["users"] == [{"name": "kokpit-admin", "user": {"token": "t"}}]
    with pytest.raises(ValueError, match="plain-HTTP"):
        kubeconfig_dict(server="http://h:1", ca_pem=b"PEM", token="t")
    with pytest.raises(ValueError, match="URL"):
        kubeconfig_dict(server="h:1", ca_pem=None, token="t")


def test_kubelet_client_certificate_is_issued_by_the_ca_and_follows_it(tmp_path: Path) -> None:
    """The certificate the server shows kubelets (pods/log): signed by the cluster CA, clientAuth only, the
    kubelet client identity; kept across starts, re-issued with a new CA."""
    from kokpit._lib.pki import KUBELET_CLIENT_NAME

    pki = ensure_pki(tmp_path, [])
    assert pki.kubelet_client_cert is not None and pki.kubelet_client_key is not None
    cert = x509.load_pem_x509_certificate(pki.kubelet_client_cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_pem))
    assert cert.subject.rfc4514_string() == f"CN={KUBELET_CLIENT_NAME}"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE(pki.kubelet_client_key.stat().st_mode) == 0o600
    first = pki.kubelet_client_cert.read_bytes()
    assert ensure_pki(tmp_path, []).kubelet_client_cert.read_bytes() == first  # type: ignore[union-attr]
    (tmp_path / "pki" / "ca.key").unlink()  # a new CA: everything it signed is re-issued
    again = ensure_pki(tmp_path, [])
    assert again.kubelet_client_cert is not None
    x509.load_pem_x509_certificate(again.kubelet_client_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(again.ca_pem))
