"""Projected volumes, as the kubelet materialises them: the ServiceAccount token a Pod gets mounted.

The API server's ServiceAccount admission gives every Pod a `kube-api-access-<x>` projected volume: a
`serviceAccountToken` source (a token bound to the Pod, from TokenRequest), the `kube-root-ca.crt`
ConfigMap's `ca.crt`, and the namespace through the downward API.  Here each source becomes a file in the
volume's folder, written atomically; the token is requested again once 80% of its lifetime has passed (or
24 hours, whichever is first), as kube's kubelet token manager does, so a long-running process reading the
file always finds a valid token.  `secret` and `configMap` sources follow the rules of those volume kinds.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kokpit.client import CONFIGMAP, SECRET, Client, NotFoundError
from kokpit.client._kinds import Kind
from kokpit.kubelet._spec import ContainerConfigError

__all__ = ["SA_MOUNT_PATH", "ProjectedVolume", "TokenCache", "object_files", "write_file"]

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

SERVICEACCOUNT = Kind("", "v1", "ServiceAccount", "serviceaccounts")
_MAX_TOKEN_AGE = 24 * 3600.0

Obj = dict[str, Any]


@dataclass
class _Token:
    token: str
    refresh_at: float


class TokenCache:
    """Tokens per (pod uid, audience, expiration), renewed at 80% of their lifetime."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, str, int], _Token] = {}

    def forget(self, pod_uid: str) -> None:
        for k in [k for k in self._tokens if k[0] == pod_uid]:
            del self._tokens[k]

    def due(self, pod_uid: str) -> bool:
        """Whether any token of this Pod should be requested again now."""
        now = self.clock()
        return any(k[0] == pod_uid and t.refresh_at <= now for k, t in self._tokens.items())

    async def get(self, client: Client, pod: Obj, audience: str, expiration: int) -> str:
        meta = pod.get("metadata") or {}
        uid, ns = str(meta.get("uid")), str(meta.get("namespace"))
        key = (uid, audience, expiration)
        now = self.clock()
        got = self._tokens.get(key)
        if got is not None and got.refresh_at > now:
            return got.token
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: Obj = {"expirationSeconds": expiration,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta.get("name"), "uid": uid}}
        if audience:
            spec["audiences"] = [audience]
        answer = await client.create_subresource(SERVICEACCOUNT, sa, "token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}, ns)
        token = str((answer.get("status") or {}).get("token") or "")
        lifetime = float((answer.get("spec") or {}).get("expirationSeconds") or expiration)
        self._tokens[key] = _Token(token, now + min(0.8 * lifetime, _MAX_TOKEN_AGE))
        return token


def write_file(target: Path, content: bytes, mode: int) -> None:
    """Atomically, with `mode` from the start (a reader never sees half a token or a key)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


class ProjectedVolume:
    """Writes one `projected` volume of one Pod into its folder."""

    def __init__(self, client: Client, tokens: TokenCache, field_value: Callable[[str], str]) -> None:
        self.client = client
        self.tokens = tokens
        self.field_value = field_value

    async def write(self, pod: Obj, volume: Obj, folder: Path) -> None:
        spec = volume.get("projected") or {}
        mode = int(spec.get("defaultMode") or 0o644)
        ns = str((pod.get("metadata") or {}).get("namespace"))
        files: dict[str, tuple[bytes, int]] = {}
        for src in spec.get("sources") or []:
            if "serviceAccountToken" in src:
                t = src["serviceAccountToken"] or {}
                token = await self.tokens.get(self.client, pod, str(t.get("audience") or ""),
                                              int(t.get("expirationSeconds") or 3600))
                files[str(t.get("path") or "token")] = (token.encode(), 0o600 if mode == 0o644 else mode)
            elif "configMap" in src or "secret" in src:
                kind = "secret" if "secret" in src else "configMap"
                files.update(await object_files(self.client, kind, src[kind] or {}, ns, mode))
            elif "downwardAPI" in src:
                for item in (src["downwardAPI"] or {}).get("items") or []:
                    path = str((item.get("fieldRef") or {}).get("fieldPath") or "")
                    files[str(item.get("path"))] = (self.field_value(path).encode(), int(item.get("mode") or mode))
        for rel, (content, m) in files.items():
            write_file(folder / rel, content, m)


async def object_files(client: Client, kind: str, ref: Obj, ns: str, mode: int) -> dict[str, tuple[bytes, int]]:
    """The files of a `secret` or `configMap` source (volume or projection): path -> (content, mode)."""
    is_secret = kind == "secret"
    name = str(ref.get("secretName") or ref.get("name")) if is_secret else str(ref.get("name"))
    try:
        obj = await client.get(SECRET if is_secret else CONFIGMAP, name, ns)
    except NotFoundError:
        if ref.get("optional"):
            return {}
        raise ContainerConfigError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found') from None
    if is_secret:
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = ref.get("items")
    if items:
        return {str(i["path"]): (data[i["key"]], int(i.get("mode") or mode)) for i in items if i.get("key") in data}
    return {k: (v, mode) for k, v in data.items()}
