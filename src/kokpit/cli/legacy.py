"""`kokpit legacy ...`: the old imperative commands, sent to the portal's adapter, which turns each into a
declarative change (a ChangeRequest that goes through approval and the risk center) and answers with the
translation.  Nothing here changes the fleet directly: the portal decides, as the user whose token is sent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import typer
import yaml

from kokpit.cli._common import fail

__all__ = ["legacy_app"]

legacy_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Legacy imperative commands, translated by the portal into declarative changes.")

_PORTAL = typer.Option(None, "--portal", help="The portal's URL (default: DATA_DIR/portal/url of `kokpit up`).")
_TOKEN = typer.Option(None, "--token", envvar="KOKPIT_TOKEN", help="Your bearer token (default: the token of "
                      "--kubeconfig, else of DATA_DIR/kubeconfig).")
_KUBECONFIG = typer.Option(None, "--kubeconfig", help="Take the token from this kubeconfig.")
_CA = typer.Option(None, "--ca-file", help="CA of the portal's certificate (default: DATA_DIR/portal/pki/ca.crt).")
_DATA_DIR = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of a running `kokpit up`.")
_CLUSTER = typer.Option("", "--cluster", "-c", help="The cluster (NAME or NAMESPACE/NAME); found from the nodes "
                        "when they are in exactly one cluster.")


def _token(token: str | None, kubeconfig: Path | None, data_dir: Path) -> str:
    if token:
        return token
    path = kubeconfig or data_dir / "kubeconfig"
    try:
        cfg = yaml.safe_load(path.read_text())
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
        return str(user["token"])
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError):
        fail(f"no token: pass --token, or a --kubeconfig with a bearer token ({path} has none)")


def _send(path: str, body: dict[str, Any], portal: str | None, token: str | None, kubeconfig: Path | None,
          ca_file: Path | None, data_dir: Path) -> None:
    from kokpit.client import JsonHttpClient, TransportError

    url = portal
    if not url:
        try:
            url = (data_dir / "portal" / "url").read_text().strip()
        except OSError:
            fail(f"no portal URL: pass --portal, or --data-dir of a running `kokpit up` ({data_dir / 'portal' / 'url'})")
    ca = ca_file or data_dir / "portal" / "pki" / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else ssl.create_default_context()
    secret = _token(token, kubeconfig, data_dir)

    async def go() -> Any:
        async with JsonHttpClient(url, ssl_context=ctx, token=secret, timeout=30.0) as c:
            return await c.post(path, body)

    try:
        answer = asyncio.run(go())
    except (TransportError, OSError) as e:
        fail(f"portal {url}: {e}")
    data = answer.data or {}
    if not answer.ok:
        fail(f"refused ({answer.status}): {data.get('message') or data}")
    typer.echo(json.dumps(data, indent=2))


@legacy_app.command("run")
def run(command: str = typer.Argument(..., help='One line, e.g. "reboot node n1 in cluster c1".'),
        portal: str | None = _PORTAL, token: str | None = _TOKEN, kubeconfig: Path | None = _KUBECONFIG,
        ca_file: Path | None = _CA, data_dir: Path = _DATA_DIR) -> None:
    """Send one legacy command line as a runbook has it."""
    _send("/api/v1/legacy", {"command": command}, portal, token, kubeconfig, ca_file, data_dir)


def _verb(_: str, **fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, "", [])}


@legacy_app.command("reinstall-node")
def reinstall_node(nodes: list[str] = typer.Argument(..., help="Node names."), cluster: str = _CLUSTER,
                   portal: str | None = _PORTAL, token: str | None = _TOKEN, kubeconfig: Path | None = _KUBECONFIG,
                   ca_file: Path | None = _CA, data_dir: Path = _DATA_DIR) -> None:
    """Reinstall nodes (a node-reinstall ChangeRequest: a maintenance flow per node, after approval)."""
    _send("/api/v1/legacy/reinstall-node", _verb("", nodes=nodes, cluster=cluster), portal, token, kubeconfig,
          ca_file, data_dir)


@legacy_app.command("reboot-node")
def reboot_node(nodes: list[str] = typer.Argument(..., help="Node names."), cluster: str = _CLUSTER,
                portal: str | None = _PORTAL, token: str | None = _TOKEN, kubeconfig: Path | None = _KUBECONFIG,
                ca_file: Path | None = _CA, data_dir: Path = _DATA_DIR) -> None:
    """Reboot nodes (a node-reboot ChangeRequest: a maintenance flow per node)."""
    _send("/api/v1/legacy/reboot-node", _verb("", nodes=nodes, cluster=cluster), portal, token, kubeconfig,
          ca_file, data_dir)


@legacy_app.command("restart-component")
def restart_component(component: str = typer.Argument(..., help="kubelet, containerd, ..."),
                      nodes: list[str] = typer.Option(..., "--nodes", "-n", help="Node names (repeat or comma-separate)."),
                      cluster: str = _CLUSTER, portal: str | None = _PORTAL, token: str | None = _TOKEN,
                      kubeconfig: Path | None = _KUBECONFIG, ca_file: Path | None = _CA,
                      data_dir: Path = _DATA_DIR) -> None:
    """Restart a component on nodes (a component-restart ChangeRequest: a maintenance flow per node)."""
    names = [n for x in nodes for n in x.split(",") if n]
    _send("/api/v1/legacy/restart-component", _verb("", component=component, nodes=names, cluster=cluster), portal,
          token, kubeconfig, ca_file, data_dir)


@legacy_app.command("upgrade-component")
def upgrade_component(component: str = typer.Argument(..., help="kubelet, containerd, ..."),
                      version: str = typer.Argument(..., help="A version (1.37.1) or a MachinePackageVersion."),
                      nodes: list[str] = typer.Option(..., "--nodes", "-n", help="Node names (repeat or comma-separate)."),
                      cluster: str = _CLUSTER, portal: str | None = _PORTAL, token: str | None = _TOKEN,
                      kubeconfig: Path | None = _KUBECONFIG, ca_file: Path | None = _CA,
                      data_dir: Path = _DATA_DIR) -> None:
    """Upgrade a component on nodes (becomes a component-upgrade ChangeRequest, run in batches)."""
    names = [n for x in nodes for n in x.split(",") if n]
    _send("/api/v1/legacy/upgrade-component", _verb("", component=component, version=version, nodes=names,
                                                    cluster=cluster), portal, token, kubeconfig, ca_file, data_dir)


@legacy_app.command("restart-control-plane")
def restart_control_plane(component: str = typer.Argument(..., help="kube-apiserver, kube-scheduler, ..."),
                          cluster: str = typer.Option(..., "--cluster", "-c", help="The cluster."),
                          portal: str | None = _PORTAL, token: str | None = _TOKEN,
                          kubeconfig: Path | None = _KUBECONFIG, ca_file: Path | None = _CA,
                          data_dir: Path = _DATA_DIR) -> None:
    """Restart a control-plane component of a cluster: once approved, its Pods are replaced one at a time
    (the Cluster's spec.controlPlane.restartedAt), each with a risk-center permit."""
    _send("/api/v1/legacy/restart-control-plane", _verb("", component=component, cluster=cluster), portal, token,
          kubeconfig, ca_file, data_dir)


@legacy_app.command("release-cluster")
def release_cluster(cluster: str = typer.Argument(..., help="NAME or NAMESPACE/NAME."),
                    version: str = typer.Argument(..., help="A ClusterPackageVersion, or the Kubernetes version "
                                                            "exactly one of them carries."),
                    portal: str | None = _PORTAL, token: str | None = _TOKEN, kubeconfig: Path | None = _KUBECONFIG,
                    ca_file: Path | None = _CA, data_dir: Path = _DATA_DIR) -> None:
    """Release (or roll back) a cluster's control plane to a version."""
    _send("/api/v1/legacy/release-cluster", _verb("", cluster=cluster, version=version), portal, token, kubeconfig,
          ca_file, data_dir)


@legacy_app.command("create-cluster")
def create_cluster(cluster: str = typer.Argument(..., help="NAME or NAMESPACE/NAME."),
                   version: str = typer.Argument(..., help="The release to run."),
                   nodes: int = typer.Option(0, "--nodes", min=0, help="Simulated nodes."),
                   portal: str | None = _PORTAL, token: str | None = _TOKEN, kubeconfig: Path | None = _KUBECONFIG,
                   ca_file: Path | None = _CA, data_dir: Path = _DATA_DIR) -> None:
    """Create a business cluster."""
    _send("/api/v1/legacy/create-cluster", {"cluster": cluster, "version": version, "nodes": nodes}, portal, token,
          kubeconfig, ca_file, data_dir)
