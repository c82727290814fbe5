"""ServiceAccount tokens: issued by TokenRequest (`serviceaccounts/<name>/token`), mounted into Pods,
verified on every request that presents one.

They are kube's: RS256-signed JWTs with kube's claims (`sub: system:serviceaccount:<ns>:<name>`, a
`kubernetes.io` claim naming the ServiceAccount and the Pod or Secret the token is bound to, `aud`, `exp`),
signed with a key kept in the data dir (`sa.key`, made on first start; every replica of one data dir shares
it).  A token is accepted only while its ServiceAccount — and the object it is bound to — still exists with
the same uid, so deleting a Pod or a ServiceAccount revokes its tokens at once.  Signature checks are
cached per token (bounded); the existence checks are dictionary lookups in the store's memory.

Secrets of type `kubernetes.io/service-account-token` (kube's long-lived legacy tokens) are filled in by
the token controller in `rbac_controllers`, and verified the same way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kokpit.apiserver import errors
from kokpit.apiserver.auth import User
from kokpit.apiserver.pki import atomic_write
from kokpit.apiserver.rbac import service_account_username
from kokpit.apiserver.storage.store import Store

__all__ = [
    "ISSUER",
    "LEGACY_ISSUER",
    "TokenIssuer",
    "load_or_create_key",
    "token_request",
]

ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
MIN_EXPIRATION = 600
DEFAULT_EXPIRATION = 3600
MAX_EXPIRATION = 2**32
_CACHE_MAX = 50_000

Obj = dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The service-account signing key (RSA 2048, PEM, mode 0600), created once."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise RuntimeError(f"{path}: the service-account key must be an RSA key")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return key


class TokenIssuer:
    """Signs and verifies ServiceAccount JWTs and maps a verified token to its User."""

    def __init__(self, key: rsa.RSAPrivateKey, store: Store, *, audiences: tuple[str, ...] = (ISSUER,),
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.public = key.public_key()
        der = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())
        self.store = store
        self.audiences = audiences
        self.clock = clock
        self._verified: dict[str, Obj] = {}

    # ------------------------------------------------------------------ signing
    def sign(self, claims: Obj) -> str:
        head = _b64(orjson.dumps({"alg": "RS256", "kid": self.kid}))
        body = _b64(orjson.dumps(claims))
        sig = self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(sig)}"

    def _claims(self, token: str) -> Obj | None:
        """The token's claims if the signature is ours (cached), else None."""
        got = self._verified.get(token)
        if got is not None:
            return got
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            head = orjson.loads(_unb64(parts[0]))
            if not isinstance(head, dict) or head.get("alg") != "RS256":
                return None
            self.public.verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                               hashes.SHA256())
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict):
            return None
        if len(self._verified) >= _CACHE_MAX:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    # ------------------------------------------------------------------ authentication
    def authenticate(self, token: str) -> User | None:
        """The ServiceAccount user behind a token we signed, while it and what it is bound to exist."""
        if token.count(".") != 2:
            return None
        c = self._claims(token)
        if c is None:
            return None
        if c.get("iss") == LEGACY_ISSUER:
            return self._legacy_user(token, c)
        if c.get("iss") != ISSUER:
            return None
        now = self.clock()
        if not isinstance(c.get("exp"), int) or now >= c["exp"] or now < int(c.get("nbf") or 0) - 60:
            return None
        aud = c.get("aud") or []
        if not any(a in self.audiences for a in (aud if isinstance(aud, list) else [aud])):
            return None
        k = c.get("kubernetes.io") or {}
        ns = str(k.get("namespace") or "")
        sa = k.get("serviceaccount") or {}
        if not self._exists("core/serviceaccounts", ns, sa.get("name"), sa.get("uid")):
            return None
        extra: list[tuple[str, tuple[str, ...]]] = []
        for kind, plural in (("pod", "core/pods"), ("secret", "core/secrets")):
            ref = k.get(kind)
            if ref:
                if not self._exists(plural, ns, ref.get("name"), ref.get("uid")):
                    return None
                if kind == "pod":
                    extra += [("authentication.kubernetes.io/pod-name", (str(ref.get("name")),)),
                              ("authentication.kubernetes.io/pod-uid", (str(ref.get("uid")),))]
        node = k.get("node") or {}
        if node.get("name"):
            extra.append(("authentication.kubernetes.io/node-name", (str(node["name"]),)))
        if c.get("jti"):
            extra.append(("authentication.kubernetes.io/credential-id", (f"JTI={c['jti']}",)))
        return _sa_user(ns, str(sa.get("name")), str(sa.get("uid") or ""), tuple(extra))

    def _legacy_user(self, token: str, c: Obj) -> User | None:
        ns = str(c.get("kubernetes.io/serviceaccount/namespace") or "")
        name = str(c.get("kubernetes.io/serviceaccount/service-account.name") or "")
        uid = str(c.get("kubernetes.io/serviceaccount/service-account.uid") or "")
        if not self._exists("core/serviceaccounts", ns, name, uid):
            return None
        secret = self.store.get(f"/core/secrets/{ns}/{c.get('kubernetes.io/serviceaccount/secret.name')}")
        if secret is None:
            return None
        stored = (secret.obj.get("data") or {}).get("token")
        if not stored or base64.b64decode(stored).decode(errors="replace") != token:
            return None
        return _sa_user(ns, name, uid, ())

    def _exists(self, bucket: str, ns: str, name: Any, uid: Any) -> bool:
        if not ns or not name:
            return False
        e = self.store.get(f"/{bucket}/{ns}/{name}")
        if e is None:
            return False
        meta = e.obj.get("metadata") or {}
        return not uid or meta.get("uid") == uid

    # ------------------------------------------------------------------ issuing
    def issue(self, namespace: str, sa: Obj, *, audiences: list[str], expiration: int,
              bound: Obj | None = None, node: str = "") -> tuple[str, int]:
        """A bound token for ServiceAccount `sa`; returns (token, expiry as unix seconds)."""
        now = int(self.clock())
        meta = sa.get("metadata") or {}
        k: Obj = {"namespace": namespace, "serviceaccount": {"name": meta.get("name"), "uid": meta.get("uid")}}
        if bound is not None:
            k[bound["kind"].lower()] = {"name": bound["name"], "uid": bound["uid"]}
        if node:
            k["node"] = {"name": node}
        claims = {"aud": audiences, "exp": now + expiration, "iat": now, "iss": ISSUER,
                  "jti": str(uuid.uuid4()), "kubernetes.io": k, "nbf": now,
                  "sub": service_account_username(namespace, str(meta.get("name")))}
        return self.sign(claims), now + expiration

    def issue_legacy(self, namespace: str, sa: Obj, secret_name: str) -> str:
        meta = sa.get("metadata") or {}
        return self.sign({
            "iss": LEGACY_ISSUER, "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret_name,
            "kubernetes.io/serviceaccount/service-account.name": meta.get("name"),
            "kubernetes.io/serviceaccount/service-account.uid": meta.get("uid"),
            "sub": service_account_username(namespace, str(meta.get("name"))),
            "jti": secrets.token_hex(8)})


def _sa_user(ns: str, name: str, uid: str, extra: tuple[tuple[str, tuple[str, ...]], ...]) -> User:
    return User(name=service_account_username(ns, name),
                groups=("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"),
                uid=uid, extra=extra)


def _rfc3339(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_request(issuer: TokenIssuer, namespace: str, sa_name: str, body: Any) -> Obj:
    """POST serviceaccounts/<name>/token: validate the TokenRequest, issue, answer it with its status."""
    if not isinstance(body, dict) or (body.get("kind") not in (None, "TokenRequest")):
        raise errors.bad_request("the body must be an authentication.k8s.io/v1 TokenRequest")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.bad_request("spec must be an object")
    causes: list[errors.Cause] = []
    exp = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if exp is None:
        exp = DEFAULT_EXPIRATION
    if not isinstance(exp, int) or isinstance(exp, bool):
        causes.append(errors.Cause("spec.expirationSeconds", "Invalid value: must be an integer", "FieldValueInvalid"))
    elif exp < MIN_EXPIRATION:
        causes.append(errors.Cause("spec.expirationSeconds", f"Invalid value: {exp}: may not specify a duration "
                                   "less than 10 minutes", "FieldValueInvalid"))
    elif exp > MAX_EXPIRATION:
        causes.append(errors.Cause("spec.expirationSeconds", f"Invalid value: {exp}: may not specify a duration "
                                   "larger than 2^32 seconds", "FieldValueInvalid"))
    auds = spec.get("audiences") or list(issuer.audiences)
    if not isinstance(auds, list) or not all(isinstance(a, str) and a for a in auds):
        causes.append(errors.Cause("spec.audiences", "Invalid value: a list of non-empty strings",
                                   "FieldValueInvalid"))
    ref = spec.get("boundObjectRef")
    bound: Obj | None = None
    node = ""
    if ref is not None:
        kind = ref.get("kind") if isinstance(ref, dict) else None
        if kind not in ("Pod", "Secret", "Node"):
            causes.append(errors.Cause("spec.boundObjectRef.kind", f'Unsupported value: "{kind}": supported '
                                       'values: "Pod", "Secret", "Node"', "FieldValueNotSupported"))
    if causes:
        raise errors.invalid("TokenRequest", sa_name, causes, "authentication.k8s.io")
    sa = issuer.store.get(f"/core/serviceaccounts/{namespace}/{sa_name}")
    if sa is None:
        raise errors.not_found("serviceaccounts", sa_name)
    if ref is not None:
        kind, rname = str(ref["kind"]), str(ref.get("name") or "")
        key = f"/core/nodes/{rname}" if kind == "Node" else f"/core/{kind.lower()}s/{namespace}/{rname}"
        obj = issuer.store.get(key)
        uid = (obj.obj.get("metadata") or {}).get("uid") if obj is not None else None
        if obj is None or (ref.get("uid") and ref["uid"] != uid):
            raise errors.APIError(404, "NotFound", f'{kind.lower()}s "{rname}" not found' if obj is None else
                                  f'the UID in the bound object reference ({ref.get("uid")}) does not match '
                                  f"the UID in record. The object might have been deleted and then recreated")
        if kind == "Node":
            node = rname
        else:
            bound = {"kind": kind, "name": rname, "uid": uid}
            if kind == "Pod":
                node = str(((obj.obj.get("spec") or {}).get("nodeName")) or "")
    token, expiry = issuer.issue(namespace, sa.obj, audiences=list(auds), expiration=int(exp), bound=bound,
                                 node=node)
    out_spec: Obj = {"audiences": list(auds), "expirationSeconds": int(exp), "boundObjectRef": ref}
    if ref is None:
        out_spec.pop("boundObjectRef")
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa_name, "namespace": namespace, "creationTimestamp": None},
            "spec": out_spec, "status": {"token": token, "expirationTimestamp": _rfc3339(expiry)}}
