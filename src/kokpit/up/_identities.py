"""The identities `kokpit up` runs its own processes with: each component is its ServiceAccount, with exactly
the RBAC `kokpit manifests` gives it on a real meta cluster (kokpit.manifests), never the admin token.

At every start the namespace, the aggregated kokpit roles and each component's ServiceAccount, ClusterRole,
Role and bindings are server-side applied, then a token is requested for each ServiceAccount (TokenRequest,
as `kubectl create token` does) and written into a kubeconfig of its own (mode 0600) next to the admin one.
A permission missing from the table makes the component fail here, in embedded mode and in tests, instead
of in a user's cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kokpit.client import Client, Kind
from kokpit.manifests import COMPONENTS, DEFAULT_NAMESPACE, component_rbac, render

__all__ = ["TOKEN_SECONDS", "install_identities"]

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


async def install_identities(meta: Client, admin_kubeconfig: Path, out_dir: Path,
                             namespace: str = DEFAULT_NAMESPACE) -> dict[str, Path]:
    """Apply every component's RBAC; return component name -> its kubeconfig."""
    base = render(namespace)
    objs: list[dict[str, Any]] = [*base["namespace.yaml"], *base["rbac-aggregated.yaml"]]
    for c in COMPONENTS:
        objs += component_rbac(c, namespace)
    for obj in objs:
        await meta.apply(_KINDS[obj["kind"]], obj, field_manager="kokpit-up", force=True)
    paths: dict[str, Path] = {}
    for c in COMPONENTS:
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
