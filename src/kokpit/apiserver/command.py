"""The API server's command line: ``kokpit apiserver`` (registered by :mod:`kokpit.cli.main`) and
``python -m kokpit.apiserver`` are this one function, so the server package needs nothing from the CLI."""

from __future__ import annotations

from pathlib import Path

import typer

from kokpit._lib.cli import fail, setup_logging

__all__ = ["apiserver"]


def apiserver(
    data_dir: Path = typer.Option(..., "--data-dir", help="Where state, PKI and tokens live."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(6443, "--port", help="Port to listen on (0 picks a free one)."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Admin kubeconfig path "
                                           "(default DATA_DIR/kubeconfig)."),
    version_label: str = typer.Option("v1.37.0", "--version-label", help="gitVersion reported by /version."),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Serve plain HTTP (tests only)."),
    compaction_window: int = typer.Option(50_000, "--compaction-window", min=0,
                                          help="Revisions of history kept for watches and continue tokens."),
    compaction_interval: float = typer.Option(60.0, "--compaction-interval", min=0.1,
                                              help="Seconds between compactions."),
    event_ttl: float = typer.Option(3600.0, "--event-ttl", min=1, help="Seconds an Event lives."),
    bookmark_interval: float = typer.Option(60.0, "--bookmark-interval", min=0.05,
                                            help="Seconds between watch bookmarks."),
    tls_cert_file: Path | None = typer.Option(None, "--tls-cert-file", help="Serving certificate (PEM); "
                                              "default: the server's own PKI under the data dir."),
    tls_private_key_file: Path | None = typer.Option(None, "--tls-private-key-file", help="Its key (PEM)."),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="CA of --tls-cert-file, for the kubeconfigs."),
    kubelet_client_certificate: Path | None = typer.Option(
        None, "--kubelet-client-certificate", help="Client certificate (PEM) shown to kubelets for pods/log; "
        "default: the server's own PKI's, signed by its CA."),
    kubelet_client_key: Path | None = typer.Option(None, "--kubelet-client-key", help="Its key (PEM)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="JSON {admin, readonly} bearer tokens; "
                                           "default: generated under the data dir."),
    standby: bool = typer.Option(False, "--standby", help="When another server holds --data-dir, wait and "
                                 "take over when it ends (a hot standby replica) instead of failing."),
    instance_name: str = typer.Option("", "--instance-name", help="Name sent as X-Kokpit-Instance on "
                                      "/healthz, /livez and /readyz (default HOST/PID): which replica serves."),
    authorization_mode: str = typer.Option("Node,RBAC", "--authorization-mode", help="Node,RBAC (kubelets "
                                           "decided by the Node authorizer and NodeRestriction, then RBAC), RBAC, "
                                           "or AlwaysAllow (every authenticated request is allowed: benchmarks "
                                           "only)."),
    token_auth_file: Path | None = typer.Option(None, "--token-auth-file", help="kube's static token file (CSV: "
                                                'token,user,uid,"group1,group2"), e.g. a kubelet as '
                                                "system:node:NAME in group system:nodes."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the embedded Kubernetes-compatible API server."""
    from kokpit.apiserver.server import DataDirInUse, ServerOptions, run  # here: `kokpit --help` stays fast

    setup_logging(verbose)
    if not (0 <= port <= 65535):
        fail(f"--port must be between 0 and 65535 (got {port})")
    try:
        run(ServerOptions(data_dir=data_dir, host=host, port=port, kubeconfig=kubeconfig,
                          version_label=version_label, tls=not insecure_http,
                          compaction_window=compaction_window, compaction_interval=compaction_interval,
                          event_ttl=event_ttl, bookmark_interval=bookmark_interval,
                          tls_cert_file=tls_cert_file, tls_key_file=tls_private_key_file, ca_file=ca_file,
                          token_file=token_file, standby=standby, instance=instance_name,
                          authorization_mode=authorization_mode, token_auth_file=token_auth_file,
                          kubelet_client_cert_file=kubelet_client_certificate,
                          kubelet_client_key_file=kubelet_client_key))
    except DataDirInUse as e:
        fail(f"{e}; stop it first or pass another --data-dir")
    except (RuntimeError, PermissionError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass
