"""TLS material, bearer tokens and kubeconfigs for the embedded API server.

kubectl, the official client and lightkube verify the server's certificate and send a bearer token, exactly as
they do against a real cluster; nothing in them may be switched off for kokpit.  So the embedded server needs
its own small PKI: a long-lived CA that clients trust through their kubeconfig, and a short-lived serving
certificate signed by it that can be re-issued (new host names, near expiry) without invalidating any
kubeconfig already handed out.  Everything lives under the data directory and survives restarts; every file is
written atomically because a `kill -9` while a key is half-written must never leave a server that cannot
start.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kokpit._lib import pki as _lib_pki

__all__ = [
    "ALWAYS_HOSTS",
    "CA_VALIDITY",
    "RENEW_BEFORE",
    "SERVER_VALIDITY",
    "Pki",
    "Tokens",
    "atomic_write",
    "ensure_pki",
    "ensure_tokens",
    "kubeconfig_dict",
    "write_kubeconfig",
]

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
# Names every local client may use, whatever the caller asked for.
ALWAYS_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
# Backdate notBefore so a client whose clock is slightly behind still accepts a fresh certificate.
_CLOCK_SKEW = dt.timedelta(hours=1)

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """Where the server's TLS files are; `ca_pem` is what goes into kubeconfigs."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    ca_pem: bytes
    # the client certificate this server presents to kubelets (pods/log), CN KUBELET_CLIENT_NAME
    kubelet_client_cert: Path | None = None
    kubelet_client_key: Path | None = None


@dataclass(frozen=True)
class Tokens:
    """The two built-in bearer tokens: full access, and get/list/watch only."""

    admin: str
    readonly: str


# --- files -------------------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix.

    The temporary file gets `mode` before any byte is written, so a key is never readable by others even
    for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise two processes starting on the same data directory, so their CAs cannot interleave."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- PKI -----------------------------------------------------------------------------------------------------


def _parse_hosts(hosts: list[str]) -> tuple[set[_IP], set[str]]:
    ips: set[_IP] = set()
    names: set[str] = set()
    for raw in [*hosts, *ALWAYS_HOSTS]:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):  # "[::1]" as written in URLs
            host = host[1:-1]
        if not host:
            continue
        try:
            ips.add(ipaddress.ip_address(host))
        except ValueError:
            names.add(host.lower().rstrip("."))
    return ips, names


def _pem_key(key: _Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, _Key] | None:
    """The certificate and its key, or None when either is missing, unreadable or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        return None
    return cert, key


def _usable(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now + _CLOCK_SKEW and cert.not_valid_after_utc - RENEW_BEFORE > now


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, _Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kokpit-ca@{int(now.timestamp())}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server(ca: x509.Certificate, ca_key: _Key, ips: set[_IP], names: set[str],
                now: dt.datetime) -> tuple[x509.Certificate, _Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    sans += [x509.IPAddress(ip) for ip in sorted(ips, key=lambda i: (i.version, int(i)))]
    not_after = min(now + SERVER_VALIDITY, ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kokpit-apiserver")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _server_ok(cert: x509.Certificate, ca: x509.Certificate, ips: set[_IP], names: set[str],
               now: dt.datetime) -> bool:
    if not _usable(cert, now) or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    have_names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    return ips <= have_ips and names <= have_names


def ensure_pki(data_dir: Path, hosts: list[str], *, now: dt.datetime | None = None) -> Pki:
    """Create or reuse the CA and serving certificate under `data_dir/pki/`.

    The CA is replaced only when it is missing, broken or near expiry (which invalidates kubeconfigs, but so
    would expiry); the serving certificate whenever it no longer covers `hosts` (plus 127.0.0.1, ::1 and
    localhost), expires within 30 days, or was not signed by the current CA.  `now` is for tests.
    """
    now = now or dt.datetime.now(dt.UTC)
    pki_dir = data_dir / "pki"
    paths = {n: pki_dir / n for n in ("ca.crt", "ca.key", "server.crt", "server.key")}
    ips, names = _parse_hosts(hosts)
    with _locked(pki_dir):
        ca_pair = _load_pair(paths["ca.crt"], paths["ca.key"])
        if ca_pair is None or not _usable(ca_pair[0], now):
            ca_pair = _new_ca(now)
            # Key first: a crash between the two writes leaves a mismatched pair, which is detected above.
            atomic_write(paths["ca.key"], _pem_key(ca_pair[1]), 0o600)
            atomic_write(paths["ca.crt"], ca_pair[0].public_bytes(serialization.Encoding.PEM), 0o644)
        ca, ca_key = ca_pair
        server_pair = _load_pair(paths["server.crt"], paths["server.key"])
        if server_pair is None or not _server_ok(server_pair[0], ca, ips, names, now):
            cert, key = _new_server(ca, ca_key, ips, names, now)
            atomic_write(paths["server.key"], _pem_key(key), 0o600)
            atomic_write(paths["server.crt"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
        ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        _ensure_kubelet_client(pki_dir, ca_pem, _pem_key(ca_key), now)
        for key_name in ("ca.key", "server.key", "kubelet-client.key"):  # tighten files loosened by hand
            if (pki_dir / key_name).stat().st_mode & 0o077:
                os.chmod(pki_dir / key_name, 0o600)
    return Pki(ca_cert=paths["ca.crt"], ca_key=paths["ca.key"], server_cert=paths["server.crt"],
               server_key=paths["server.key"], ca_pem=ca_pem, kubelet_client_cert=pki_dir / "kubelet-client.crt",
               kubelet_client_key=pki_dir / "kubelet-client.key")


def _ensure_kubelet_client(pki_dir: Path, ca_pem: bytes, ca_key_pem: bytes, now: dt.datetime) -> None:
    """The client certificate this server shows kubelets (kube-apiserver --kubelet-client-certificate):
    signed by the cluster CA, which kubelets trust for callers, ``clientAuth`` only; re-issued when missing,
    not matching its key, near expiry or signed by an older CA."""
    crt, key = pki_dir / "kubelet-client.crt", pki_dir / "kubelet-client.key"
    pair = _load_pair(crt, key)
    if pair is not None and _lib_pki.cert_valid(pair[0].public_bytes(serialization.Encoding.PEM), ca_pem=ca_pem,
                                                now=now, renew_before=RENEW_BEFORE):
        return
    made = _lib_pki.new_client_cert(_lib_pki.CertPair(ca_pem, ca_key_pem), _lib_pki.KUBELET_CLIENT_NAME,
                                    days=SERVER_VALIDITY.days, now=now)
    atomic_write(key, made.key_pem, 0o600)
    atomic_write(crt, made.cert_pem, 0o644)


# --- tokens ----------------------------------------------------------------------------------------------------


def ensure_tokens(data_dir: Path) -> Tokens:
    """Load the admin and read-only tokens from `data_dir/tokens.json`, creating them on first start.

    They are reused across restarts so kubeconfigs written earlier keep working.  A missing or unreadable
    field is replaced (and only that one).
    """
    path = data_dir / "tokens.json"
    with _locked(data_dir):
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError):
            raw = {}
        if not isinstance(raw, dict):
            raw = {}
        stored = {k: raw.get(k) for k in ("admin", "readonly")}
        changed = False
        for k, v in stored.items():
            if not isinstance(v, str) or len(v) < 16:
                stored[k] = secrets.token_urlsafe(32)
                changed = True
        if changed:
            atomic_write(path, json.dumps(stored, indent=2).encode() + b"\n", 0o600)
        elif path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    return Tokens(admin=str(stored["admin"]), readonly=str(stored["readonly"]))


# --- kubeconfig ------------------------------------------------------------------------------------------------


def kubeconfig_dict(*, server: str, ca_pem: bytes | None, token: str, cluster_name: str = "kokpit",
                    user: str = "kokpit-admin", context: str = "kokpit",
                    namespace: str | None = None) -> dict[str, Any]:
    """A one-cluster, one-user, one-context kubeconfig as a plain dict.

    Without `ca_pem` the cluster entry says insecure-skip-tls-verify; that is meant for plain-HTTP dev
    servers only, so pairing a CA with an http:// URL is refused as a likely mistake.
    """
    if not server.startswith(("https://", "http://")):
        raise ValueError(f"server must be an http:// or https:// URL, got {server!r}")
    if ca_pem is not None and server.startswith("http://"):
        raise ValueError("a certificate authority was given for a plain-HTTP server")
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode("ascii")
    ctx: dict[str, Any] = {"cluster": cluster_name, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
    }


def write_kubeconfig(path: Path, *, server: str, ca_pem: bytes | None, token: str,
                     cluster_name: str = "kokpit", user: str = "kokpit-admin", context: str = "kokpit",
                     namespace: str | None = None) -> None:
    """Write a kubeconfig (mode 0600, atomically) that kubectl and every client library load unmodified."""
    doc = kubeconfig_dict(server=server, ca_pem=ca_pem, token=token, cluster_name=cluster_name, user=user,
                          context=context, namespace=namespace)
    atomic_write(path, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
