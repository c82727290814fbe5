"""Certificates and tokens minted by a controller for a server it starts elsewhere (a Pod).

The cluster operator must know a business API server's CA and admin token to write its kubeconfig and to
health-check it, but a Pod cannot hand files back; so the operator creates the CA, the serving certificate
and the tokens itself, stores them in a Secret and mounts that into the API server Pod (as kubeadm, Kamaji
and Gardener do).  The embedded API server keeps its own on-disk PKI for standalone use; this module is the
in-memory variant for controllers, returning PEM bytes only.

The node driver endpoint (the simulator's today, the node agent's later) can install software and inject
faults, so it authenticates its callers by mutual TLS from a CA of its own (``driver-ca.*``, apart from the
API server's CA, so no API-server credential opens it and no driver credential opens the API server):
servers hold ``serverAuth`` certificates, callers ``clientAuth`` ones, and :func:`driver_pki` keeps the
set current in the per-Cluster PKI Secret.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DRIVER_CA_CERT",
    "DRIVER_CA_KEY",
    "DRIVER_CLIENT_CERT",
    "DRIVER_CLIENT_KEY",
    "DRIVER_KEYS",
    "DRIVER_SERVING_CERT",
    "DRIVER_SERVING_KEY",
    "KUBELET_CLIENT_NAME",
    "CertPair",
    "cert_valid",
    "driver_pki",
    "new_ca",
    "new_client_cert",
    "new_serving_cert",
    "new_token",
    "self_signed_server_context",
    "serving_cert_covers",
]

# the common name of the API server's client certificate towards kubelets (kubeadm's name for it): the one
# identity a kubelet's log endpoint serves (kube-apiserver --kubelet-client-certificate)
KUBELET_CLIENT_NAME = "kube-apiserver-kubelet-client"

# the node driver's PKI as keys of the per-Cluster PKI Secret (and file names in a simulator's pki folder)
DRIVER_CA_CERT = "driver-ca.crt"
DRIVER_CA_KEY = "driver-ca.key"
DRIVER_SERVING_CERT = "driver.crt"
DRIVER_SERVING_KEY = "driver.key"
DRIVER_CLIENT_CERT = "driver-client.crt"
DRIVER_CLIENT_KEY = "driver-client.key"
DRIVER_KEYS = (DRIVER_CA_CERT, DRIVER_CA_KEY, DRIVER_SERVING_CERT, DRIVER_SERVING_KEY, DRIVER_CLIENT_CERT,
               DRIVER_CLIENT_KEY)
DRIVER_CLIENT_NAME = "kokpit:node-driver-client"

_SKEW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class CertPair:
    cert_pem: bytes
    key_pem: bytes


def new_token() -> str:
    """A bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(common_name: str, *, days: int = 3650, now: dt.datetime | None = None) -> CertPair:
    """A self-signed CA that signs leaf certificates only (path length 0)."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _leaf(ca: CertPair, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[str] | None, days: int,
          now: dt.datetime | None) -> CertPair:
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_serving_cert(ca: CertPair, hosts: list[str], *, days: int = 365, now: dt.datetime | None = None,
                     common_name: str = "kube-apiserver") -> CertPair:
    """A TLS server certificate for ``hosts`` (names or IPs) signed by ``ca`` (``serverAuth`` only)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _leaf(ca, subject, ExtendedKeyUsageOID.SERVER_AUTH, hosts, days, now)


def new_client_cert(ca: CertPair, common_name: str, *, organization: str = "", days: int = 365,
                    now: dt.datetime | None = None) -> CertPair:
    """A TLS client certificate signed by ``ca`` (``clientAuth`` only: it cannot serve)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return _leaf(ca, x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH, None, days, now)


def cert_valid(cert_pem: bytes, *, ca_pem: bytes | None = None, now: dt.datetime | None = None,
               renew_before: dt.timedelta = dt.timedelta(days=30)) -> bool:
    """Whether the certificate parses, is not about to expire and (given ``ca_pem``) was issued by that CA."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        if ca_pem is not None:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - renew_before >= now


def driver_pki(current: Mapping[str, bytes], hosts: list[str], *, ca_name: str,
               now: dt.datetime | None = None) -> dict[str, bytes]:
    """The node driver's CA, serving certificate (for ``hosts``) and client certificate, as
    :data:`DRIVER_KEYS` → PEM: what is still good in ``current`` is kept (so callers holding the client
    certificate stay valid), the rest is issued.  Equal to ``current`` when nothing needed doing."""
    ca_cert, ca_key = current.get(DRIVER_CA_CERT, b""), current.get(DRIVER_CA_KEY, b"")
    if ca_cert and ca_key and cert_valid(ca_cert, now=now, renew_before=dt.timedelta(days=365)):
        ca = CertPair(ca_cert, ca_key)
    else:
        ca = new_ca(ca_name, now=now)
    out = {DRIVER_CA_CERT: ca.cert_pem, DRIVER_CA_KEY: ca.key_pem}
    serving, serving_key = current.get(DRIVER_SERVING_CERT, b""), current.get(DRIVER_SERVING_KEY, b"")
    if not (serving_key and cert_valid(serving, ca_pem=ca.cert_pem, now=now)
            and serving_cert_covers(serving, hosts, now=now)):
        pair = new_serving_cert(ca, hosts, now=now, common_name="kokpit-node-driver")
        serving, serving_key = pair.cert_pem, pair.key_pem
    out |= {DRIVER_SERVING_CERT: serving, DRIVER_SERVING_KEY: serving_key}
    client, client_key = current.get(DRIVER_CLIENT_CERT, b""), current.get(DRIVER_CLIENT_KEY, b"")
    if not (client_key and cert_valid(client, ca_pem=ca.cert_pem, now=now)):
        pair = new_client_cert(ca, DRIVER_CLIENT_NAME, organization="kokpit:node-driver-clients", now=now)
        client, client_key = pair.cert_pem, pair.key_pem
    out |= {DRIVER_CLIENT_CERT: client, DRIVER_CLIENT_KEY: client_key}
    return out


def serving_cert_covers(cert_pem: bytes, hosts: list[str], *, now: dt.datetime | None = None,
                        renew_before: dt.timedelta = dt.timedelta(days=30)) -> bool:
    """Whether the certificate names every host and is not about to expire (else re-issue it)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - renew_before < now:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    have |= {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    want = set()
    for h in hosts:
        try:
            want.add(str(ipaddress.ip_address(h)))
        except ValueError:
            want.add(h.lower())
    return want <= have


def self_signed_server_context(hosts: list[str], common_name: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context with a fresh in-memory CA and serving certificate for ``hosts`` — the
    self-signed default of kubelet and kube-controller-manager when no certificate is given.  The callers
    authenticate (a token, a client certificate); the certificate only encrypts."""
    ca = new_ca(f"{common_name}-ca")
    cert = new_serving_cert(ca, hosts, common_name=common_name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="kokpit-tls-") as d:  # ssl loads keys from files only
        crt, key = Path(d) / "tls.crt", Path(d) / "tls.key"
        crt.write_bytes(cert.cert_pem + ca.cert_pem)
        key.touch(0o600)
        key.write_bytes(cert.key_pem)
        ctx.load_cert_chain(crt, key)
    return ctx
