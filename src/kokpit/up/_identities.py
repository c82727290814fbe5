"""The identities `kokpit up` runs its own processes with: each component is its ServiceAccount, with exactly
the RBAC `kokpit manifests` gives it on a real meta cluster (kokpit.manifests), never the admin token.

At every start the namespace, the aggregated kokpit roles and each component's ServiceAccount, ClusterRole,
Role and bindings are server-side applied, then a token is requested for each ServiceAccount (TokenRequest,
as `kubectl create token` does) and written into a kubeconfig of its own (mode 0600) next to the admin one.
A permission missing from the table makes the component fail here, in embedded mode and in tests, instead
of in a user's cluster.

The local kubelet is no ServiceAccount: like a real kubelet it is `system:node:local` in `system:nodes`
(decided by the API server's Node authorizer and NodeRestriction), authenticated by a line of the meta API
server's `--token-auth-file` (`node_tokens`: made once, mode 0600, kept across restarts) — kube's static
token file standing in for the client certificate kubelet TLS bootstrap would give it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

from kokpit.client import Client, Kind
from kokpit.manifests import COMPONENTS, DEFAULT_NAMESPACE, component_rbac, render

__all__ = ["NODES_GROUP", "TOKEN_SECONDS", "install_identities", "node_tokens"]

NODES_GROUP = "system:nodes"

# a year: the supervisor restarts children with the same kubeconfig, and every `kokpit up` issues new ones
TOKEN_SECONDS = 365 * 24 * 3600
_RBAC = "rbac.authorization.k8s.io"
_KINDS = {
    "Namespace": Kind("", "v1", "Namespace", "namespaces", namespaced=False),
    "ServiceAccount": Kind("", "v1", "ServiceAccount", "serviceaccounts"),
    "ClusterRole": Kind(_RBAC, "v1", "ClusterRole", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Kind(_RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    "Role": Kind(_RBAC, "v1", "Role", "roles"),
    "RoleBinding": Kind(_RBAC, "v1", "RoleBinding", "rolebindings"),
}


def node_tokens(path: Path) -> dict[str, str]:
    """node name -> bearer token of each kubelet component, from kube's token file at `path` (CSV `token,user,
    uid,"groups"`), written with a new random token for a node it lacks.  The API server reads the same file."""
    have: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            token, _, rest = line.partition(",")
            user = rest.partition(",")[0]
            if user.startswith("system:node:"):
                have[user.removeprefix("system:node:")] = token
    wanted = [c.node for c in COMPONENTS if c.node and c.node not in have]
    if wanted:
        for node in wanted:
            have[node] = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text("".join(f'{t},system:node:{n},node-{n},"{NODES_GROUP}"\n' for n, t in sorted(have.items())))
        tmp.replace(path)
    return have


async def install_identities(meta: Client, admin_kubeconfig: Path, out_dir: Path,
                             namespace: str = DEFAULT_NAMESPACE,
                             nodes: dict[str, str] | None = None) -> dict[str, Path]:
    """Apply every component's RBAC; return component name -> its kubeconfig (a kubelet's only when `nodes`,
    node name -> token from the API server's --token-auth-file, has its node)."""
    base = render(namespace)
    objs: list[dict[str, Any]] = [*base["namespace.yaml"], *base["rbac-aggregated.yaml"], *base["metrics-reader.yaml"]]
    for c in COMPONENTS:
        objs += component_rbac(c, namespace)
    for obj in objs:
        await meta.apply(_KINDS[obj["kind"]], obj, field_manager="kokpit-up", force=True)
    paths: dict[str, Path] = {}
    for c in COMPONENTS:
        if c.node:
            if c.node in (nodes or {}):
                paths[c.name] = _write_kubeconfig(admin_kubeconfig, out_dir, c.name, c.node_user,
                                                  (nodes or {})[c.node], namespace)
            continue
        answer = await meta.create_subresource(_KINDS["ServiceAccount"], c.service_account, "token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS}}, namespace)
        token = str((answer.get("status") or {}).get("token") or "")
        paths[c.name] = _write_kubeconfig(admin_kubeconfig, out_dir, c.name,
                                          f"system:serviceaccount:{namespace}:{c.service_account}", token, namespace)
    return paths


def _write_kubeconfig(admin_kubeconfig: Path, out_dir: Path, name: str, user: str, token: str, namespace: str) -> Path:
    """The admin kubeconfig's server and CA with this component's token instead (mode 0600, atomic)."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cfg = dict(admin)
    cfg["users"] = [{"name": user, "user": {"token": token}}]
    cfg["contexts"] = [{"name": name, "context": {"cluster": admin["contexts"][0]["context"]["cluster"],
                                                  "user": user, "namespace": namespace}}]
    cfg["current-context"] = name
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = out_dir / f"{name}.kubeconfig"
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
    return path
