"""`kokpit portal` (serve the web portal) and `kokpit portal token` (the login token of a `kokpit up` fleet)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from kokpit.cli._common import (
    METRICS_HOST,
    METRICS_PORT,
    METRICS_TOKEN_FILE,
    fail,
    metrics_tokens,
    setup_logging,
)

__all__ = ["portal_app"]

portal_app = typer.Typer(add_completion=False, invoke_without_command=True,
                         help="The web portal: the fleet, the controlled change process, the legacy adapter.")


@portal_app.callback()
def portal(
    ctx: typer.Context,
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="The portal's own identity in the meta "
                                           "cluster (reads for its caches; users' changes use their tokens)."),
    host: str = typer.Option("127.0.0.1", "--host", help="The one address to listen on (never 0.0.0.0)."),
    port: int = typer.Option(8443, "--port", min=0, max=65535, help="Port (0: any free one)."),
    data_dir: Path = typer.Option(Path(".kokpit/portal"), "--data-dir",
                                  help="Session key and the generated TLS certificate."),
    tls_cert_file: Path | None = typer.Option(None, "--tls-cert-file", help="Serving certificate (PEM)."),
    tls_key_file: Path | None = typer.Option(None, "--tls-key-file", help="Its key (PEM)."),
    http: bool = typer.Option(False, "--http", help="Plain HTTP (only on a loopback address)."),
    session_key_file: Path | None = typer.Option(None, "--session-key-file",
                                                 help="32-byte key sealing session cookies (default: DATA_DIR/"
                                                      "session.key, made when missing)."),
    url_file: Path | None = typer.Option(None, "--url-file", help="Write the URL here once listening."),
    leader_elect: bool = typer.Option(False, "--leader-elect/--no-leader-elect", help="Replicas > 1: carry "
                                      "changes forward only while holding the Lease (every replica serves)."),
    lease_namespace: str = typer.Option("kokpit-system", "--lease-namespace", help="Namespace of that Lease."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Serve the portal (HTTPS, or HTTP on 127.0.0.1 only)."""
    if ctx.invoked_subcommand is not None:
        return
    from kokpit.portal import PortalOptions, check_address, run_portal
    from kokpit.portal._extensions import default_extensions

    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    if (tls_cert_file is None) != (tls_key_file is None):
        fail("--tls-cert-file and --tls-key-file go together")
    try:
        check_address(host, http)
    except ValueError as e:
        fail(str(e))
    setup_logging(verbose, quiet_http=True)
    opts = PortalOptions(kubeconfig=kubeconfig, host=host, port=port, data_dir=data_dir, tls_cert_file=tls_cert_file,
                         tls_key_file=tls_key_file, http=http, session_key_file=session_key_file, url_file=url_file,
                         extensions=default_extensions(), leader_elect=leader_elect, lease_namespace=lease_namespace,
                         metrics_port=metrics_port, metrics_host=metrics_host,
                         metrics_tokens=metrics_tokens(metrics_port, metrics_token_file) or [])
    try:
        asyncio.run(run_portal(opts, on_url=lambda url: typer.echo(f"portal: {url}", err=True)))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        fail(f"portal: {e}")


@portal_app.command("token")
def token(
    data_dir: Path = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of a running `kokpit up`."),
    viewer: bool = typer.Option(False, "--viewer", help="The read-only token instead of the admin's."),
) -> None:
    """Print the token to log in to the portal of a `kokpit up` fleet with (admin, or --viewer)."""
    path = data_dir / "meta" / "tokens.json"
    try:
        tokens = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(f"{path}: {e} (is `kokpit up --data-dir {data_dir}` running?)")
    typer.echo(tokens["readonly" if viewer else "admin"])
