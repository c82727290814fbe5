"""``kokpit node-agent``: run the node agent on a real host (or over fake roots for tests and benches)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import typer

from kokpit.cli._common import fail, setup_logging

__all__ = ["node_agent", "node_agent_cert"]


def node_agent(
    node: str = typer.Option("", "--node", help="Node name of the host this agent manages (with --root)."),
    root: Path = typer.Option(Path("/"), "--root", help="Root folder it manages: / on a real host, a chroot "
                              "in tests."),
    roots_dir: Path | None = typer.Option(None, "--roots-dir", help="Manage every sub-folder as a fake host "
                                          "named after it (tests, benches); replaces --node/--root."),
    tls_dir: Path = typer.Option(..., "--tls-dir", help="ca.crt (the node-driver CA callers must present "
                                 "certificates from), tls.crt and tls.key (this agent's serving certificate)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(9750, "--port", help="Port to listen on (0 picks a free one)."),
    advertise: str | None = typer.Option(None, "--advertise", help="Address callers reach (default --host)."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Credentials to write fault conditions "
                                           "and Events on this agent's Node (no list, no watch)."),
    netns: Path | None = typer.Option(None, "--netns", help="Network namespace to apply sysctls in "
                                      "(e.g. /proc/PID/ns/net; tests), default: the agent's own."),
    refresh_interval: float = typer.Option(30.0, "--refresh-interval", min=0.1,
                                           help="Seconds between looks at the host between actions."),
    min_free_percent: float = typer.Option(5.0, "--disk-min-free-percent", min=0, max=100),
    min_free_mib: int = typer.Option(256, "--disk-min-free-mib", min=0),
    repair_command: str = typer.Option("", "--repair-command", help="Site repair command (docs/nodes.md)."),
    repair_webhook: str = typer.Option("", "--repair-webhook", help="Site repair webhook URL (docs/nodes.md)."),
    ready_file: Path | None = typer.Option(None, "--ready-file", help="Write the serving URL here when up."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the node agent: the real-host node driver, served over mutual TLS."""
    from kokpit.agent import AgentOptions, run_agent
    from kokpit.nodes.mtls import TLSFiles

    setup_logging(verbose)
    if roots_dir is not None:
        if not roots_dir.is_dir():
            fail(f"--roots-dir {roots_dir} is not a folder")
        roots = {p.name: p for p in sorted(roots_dir.iterdir()) if p.is_dir()}
        if not roots:
            fail(f"--roots-dir {roots_dir} has no sub-folders (one per fake host)")
    else:
        if not node:
            fail("--node is required (the name of this host's Node)")
        if not root.is_dir():
            fail(f"--root {root} is not a folder")
        roots = {node: root}
    if repair_command and repair_webhook:
        fail("give --repair-command or --repair-webhook, not both")
    tls = TLSFiles.in_dir(tls_dir)
    try:
        tls.check()
    except ValueError as e:
        fail(f"{e}; the agent serves only mutual TLS (see docs/nodes.md for issuing its certificate)")
    opts = AgentOptions(roots=roots, tls=tls, host=host, port=port, advertise=advertise, kubeconfig=kubeconfig,
                        netns=netns, refresh_interval=refresh_interval, min_free_percent=min_free_percent,
                        min_free_bytes=min_free_mib * 1024 * 1024, repair_command=shlex.split(repair_command),
                        repair_webhook=repair_webhook, ready_file=ready_file)
    try:
        asyncio.run(run_agent(opts))
    except (RuntimeError, ValueError, OSError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass


def node_agent_cert(
    ca_dir: Path = typer.Option(..., "--ca-dir", help="Folder with the node-driver CA: driver-ca.crt and "
                                "driver-ca.key (the cluster's <cluster>-pki Secret has both keys)."),
    node: str = typer.Option(..., "--node", help="Node name (the certificate's common name)."),
    address: list[str] = typer.Option(..., "--address", help="Address the operator dials (IP or DNS name); "
                                      "repeat for more."),
    out: Path = typer.Option(..., "--out", help="Folder to write ca.crt, tls.crt and tls.key into "
                             "(the agent's --tls-dir)."),
    days: int = typer.Option(365, "--days", min=1, max=3650),
) -> None:
    """Issue a node agent's serving certificate from the node-driver CA (one per node: a node's key can then
    never answer for another node)."""
    from kokpit._lib import pki
    from kokpit.nodes.mtls import write_files

    try:
        ca = pki.CertPair((ca_dir / pki.DRIVER_CA_CERT).read_bytes(), (ca_dir / pki.DRIVER_CA_KEY).read_bytes())
        pair = pki.new_serving_cert(ca, list(address), days=days, common_name=f"kokpit-node-agent:{node}")
    except (OSError, ValueError) as e:
        fail(f"cannot issue the certificate: {e}")
    files = write_files(out, ca.cert_pem, pair.cert_pem, pair.key_pem)
    typer.echo(f"wrote {files.ca_file}, {files.cert_file}, {files.key_file}")
