"""Certificates and tokens minted by a controller for a server it starts elsewhere (a Pod).

The cluster operator must know a business API server's CA and admin token to write its kubeconfig and to
health-check it, but a Pod cannot hand files back; so the operator creates the CA, the serving certificate
and the tokens itself, stores them in a Secret and mounts that into the API server Pod (as kubeadm, Kamaji
and Gardener do).  The embedded API server keeps its own on-disk PKI for standalone use; this module is the
in-memory variant for controllers, returning PEM bytes only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertPair", "new_ca", "new_serving_cert", "new_token", "serving_cert_covers"]

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
    """A self-signed CA allowed to sign serving certificates only (path length 0)."""
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


def new_serving_cert(ca: CertPair, hosts: list[str], *, days: int = 365,
                     now: dt.datetime | None = None) -> CertPair:
    """A TLS server certificate for ``hosts`` (names or IPs) signed by ``ca``."""
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


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
