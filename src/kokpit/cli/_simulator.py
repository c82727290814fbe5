"""`kokpit simulator`: run simulated hosts, and poke a running simulator (faults, host state).

A group whose bare form runs the simulator (``kokpit simulator --kubeconfig K --nodes N``) and whose
subcommands talk to a running one over its driver URL, so the same binary injects faults in demos and tests.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import typer

from kokpit.cli._common import (
    METRICS_HOST,
    METRICS_PORT,
    METRICS_TOKEN_FILE,
    fail,
    metrics_tokens,
    setup_logging,
)

__all__ = ["parse_duration", "simulator_app"]

simulator_app = typer.Typer(add_completion=False, help="Simulated hosts: Nodes, Leases, pods, component "
                                                       "installs and fault injection.")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """``10s``, ``500ms``, ``1m``, ``1.5`` (seconds)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|)\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration (try 10s, 500ms, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@simulator_app.callback(invoke_without_command=True)
def simulator(
    ctx: typer.Context,
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the cluster the nodes "
                                           "join (default: $KUBECONFIG / in-cluster)."),
    nodes: int = typer.Option(10, "--nodes", min=0, help="How many hosts to simulate."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice (shapes, jitter, failures)."),
    lease_period: str = typer.Option("10s", "--lease-period", help="Lease renew interval (kubelet: 10s)."),
    lease_jitter: float = typer.Option(0.04, "--lease-jitter", min=0.0, help="Jitter factor of renewals."),
    status_period: str = typer.Option("5m", "--status-report-period",
                                      help="Node status is posted on change and at least this often."),
    data_dir: Path = typer.Option(Path(".kokpit/simulator"), "--data-dir",
                                  help="Where host state (installed components, faults) persists."),
    driver_host: str = typer.Option("127.0.0.1", "--driver-host", help="Address the node driver API listens "
                                    "on (HTTPS, client certificates required)."),
    driver_port: int = typer.Option(9740, "--driver-port", help="Port of the node driver API (0: any)."),
    driver_advertise: str = typer.Option("", "--driver-advertise-address", help="Host callers reach the "
                                         "driver at (default --driver-host; needed when that is 0.0.0.0)."),
    tls_cert_file: Path | None = typer.Option(None, "--tls-cert-file", help="The driver API's serving "
                                              "certificate (default: the simulator's own PKI in DATA_DIR/pki, "
                                              "callers' credentials in DATA_DIR/pki/client)."),
    tls_private_key_file: Path | None = typer.Option(None, "--tls-private-key-file", help="Its key."),
    client_ca_file: Path | None = typer.Option(None, "--client-ca-file", help="CA whose client certificates "
                                               "may call the driver API."),
    name_prefix: str = typer.Option("sim-", "--name-prefix", help="Node names are <prefix>00001, ..."),
    install_seconds: float = typer.Option(0.0, "--install-seconds", min=0.0,
                                          help="How long a component install/upgrade/uninstall takes."),
    repair_seconds: float = typer.Option(2.0, "--repair-seconds", min=0.0,
                                         help="How long a simulated reboot, reinstall or restart takes."),
    fail_probability: float = typer.Option(0.0, "--fail-probability", min=0.0, max=1.0,
                                           help="Chance an install fails (seeded)."),
    fail_component: list[str] | None = typer.Option(None, "--fail-component",
                                                    help="COMPONENT or COMPONENT=VERSION whose installs "
                                                    "always fail (repeatable)."),
    fault_report_ttl: int = typer.Option(60, "--fault-report-ttl", min=1, help="Seconds a host's NodeFault "
                                         "report of an injected fault holds unless refreshed."),
    fault_report_refresh: float = typer.Option(20.0, "--fault-report-refresh", min=0.1, help="Seconds between "
                                               "refreshes of a lasting injected fault's report."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run N simulated hosts (bare form), or a subcommand against a running simulator."""
    if ctx.invoked_subcommand is not None:
        return
    from kokpit.nodes.mtls import TLSFiles
    from kokpit.simulator import FailRule, SimulatorOptions, run

    setup_logging(verbose, quiet_http=True)
    try:
        rules = [FailRule.parse(r) for r in fail_component or []]
    except ValueError as e:
        fail(str(e))
        return
    given = [tls_cert_file, tls_private_key_file, client_ca_file]
    tls = None
    if any(given):
        if not all(given):
            fail("--tls-cert-file, --tls-private-key-file and --client-ca-file go together")
        assert tls_cert_file and tls_private_key_file and client_ca_file
        tls = TLSFiles(client_ca_file, tls_cert_file, tls_private_key_file)
    opts = SimulatorOptions(kubeconfig=kubeconfig, nodes=nodes, seed=seed,
                            lease_period=parse_duration(lease_period), lease_jitter=lease_jitter,
                            status_report_period=parse_duration(status_period), data_dir=data_dir,
                            driver_host=driver_host, driver_port=driver_port, driver_advertise=driver_advertise,
                            tls=tls, name_prefix=name_prefix,
                            install_seconds=install_seconds, repair_seconds=repair_seconds,
                            fail_probability=fail_probability,
                            fail_rules=rules, metrics_port=metrics_port, metrics_host=metrics_host,
                            fault_report_ttl=fault_report_ttl, fault_report_refresh=fault_report_refresh,
                            metrics_tokens=metrics_tokens(metrics_port, metrics_token_file, delegated=False) or [])
    if opts.lease_period <= 0:
        fail("--lease-period must be positive")
    try:
        run(opts)
    except RuntimeError as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass


class _Target:
    """Where the driver is and whose credentials to call it with (``--cluster``, or ``--url``/``--tls-dir``)."""

    def __init__(self, cluster: str, namespace: str, data_dir: Path, url: str, tls_dir: Path | None,
                 sim_dir: Path | None) -> None:
        if sum(bool(x) for x in (cluster, url, sim_dir)) != 1:
            fail("say which simulator: --cluster NAME (a business cluster of kokpit up), --simulator-dir DIR "
                 "(a standalone simulator's --data-dir) or --url URL --tls-dir DIR")
        if url and tls_dir is None:
            fail("the node driver requires a client certificate: pass --tls-dir DIR (ca.crt, tls.crt, tls.key; a "
                 "standalone simulator writes them to DATA_DIR/pki/client), or use --cluster NAME")
        self.cluster, self.namespace, self.data_dir = cluster, namespace, data_dir
        self.url, self.tls_dir, self.sim_dir = url, tls_dir, sim_dir

    async def resolve(self, tmp: Path) -> tuple[str, Any]:
        from kokpit.nodes.mtls import TLSFiles, write_files

        if self.sim_dir is not None:
            try:
                url = (self.sim_dir / "driver-url").read_text().strip()
            except OSError:
                fail(f"{self.sim_dir} holds no driver-url: is it a simulator's --data-dir, and did it start?")
            return url, TLSFiles.in_dir(self.sim_dir / "pki" / "client")
        if self.url:
            assert self.tls_dir is not None
            return self.url, TLSFiles.in_dir(self.tls_dir)
        from kokpit.client import Client
        from kokpit.up import AccessError, driver_access

        kc = self.data_dir / "kubeconfig"
        if not kc.is_file():
            fail(f"{kc} not found: is kokpit up running with --data-dir {self.data_dir}?")
        meta = Client.from_kubeconfig(kc, field_manager="kokpit-simulator-cli", max_retries=1, timeout=10.0)
        try:
            access = await driver_access(meta, self.cluster, self.namespace)
        except AccessError as e:
            fail(str(e))
        finally:
            await meta.close()
        return access.url, write_files(tmp, access.ca_pem, access.cert_pem, access.key_pem)


def _driver_call(target: _Target, fn: str, *args: Any) -> Any:
    import tempfile

    from kokpit.nodes import DriverError
    from kokpit.nodes.simulator import SimulatorDriver, node_state_to_dict

    async def go(tmp: Path) -> Any:
        url, tls = await target.resolve(tmp)
        try:
            d = SimulatorDriver(url, tls=tls, timeout=10.0)
        except (ValueError, OSError) as e:
            fail(f"cannot use the driver credentials: {e}")
        try:
            if fn == "fault":
                return await d.fault(*args)
            return node_state_to_dict(await d.state(*args))
        finally:
            await d.close()

    with tempfile.TemporaryDirectory(prefix="kokpit-driver-") as tmp:
        try:
            return asyncio.run(go(Path(tmp)))
        except DriverError as e:
            fail(str(e))


_CLUSTER = typer.Option("", "--cluster", "-c", help="Business cluster of a running kokpit up: the driver's "
                        "address and credentials are read from the meta cluster.")
_NAMESPACE = typer.Option("default", "--namespace", "-n", help="The Cluster's namespace.")
_DATA_DIR = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of the kokpit up (with --cluster).")
_URL = typer.Option("", "--url", help="The driver URL (https://HOST:PORT), with --tls-dir.")
_TLS_DIR = typer.Option(None, "--tls-dir", help="Folder with the caller's ca.crt, tls.crt and tls.key.")
_SIM_DIR = typer.Option(None, "--simulator-dir", help="A standalone simulator's --data-dir (its driver-url "
                        "and pki/client).")


@simulator_app.command("fault")
def fault(
    node: str = typer.Option("*", "--node", help="Node name; '*' for every node (install-failure, recover)."),
    kind: str = typer.Option(..., "--type", help="component-stop | hardware | hang | install-failure | recover, "
                             "or a fault the host reports (a NodeFault): disk-failure | memory-ecc | nic-down | "
                             "gpu-fault | kernel-deadlock | readonly-filesystem | clock-skew | disk-pressure | "
                             "os-corrupted"),
    component: str = typer.Option("", "--component", help="Component (component-stop, install-failure)."),
    version: str = typer.Option("", "--version", help="Version that fails (install-failure; empty: any)."),
    cluster: str = _CLUSTER,
    namespace: str = _NAMESPACE,
    data_dir: Path = _DATA_DIR,
    url: str = _URL,
    tls_dir: Path | None = _TLS_DIR,
    simulator_dir: Path | None = _SIM_DIR,
) -> None:
    """Inject or lift a fault on a running simulator; prints the resulting faults as JSON."""
    from kokpit.simulator import FAULT_TYPES

    if kind not in FAULT_TYPES:
        fail(f"--type must be one of {', '.join(FAULT_TYPES)} (got {kind!r})")
    target = _Target(cluster, namespace, data_dir, url, tls_dir, simulator_dir)
    typer.echo(json.dumps(_driver_call(target, "fault", node, kind, component, version), indent=2))


@simulator_app.command("state")
def state(
    node: str = typer.Option(..., "--node", help="Node name."),
    cluster: str = _CLUSTER,
    namespace: str = _NAMESPACE,
    data_dir: Path = _DATA_DIR,
    url: str = _URL,
    tls_dir: Path | None = _TLS_DIR,
    simulator_dir: Path | None = _SIM_DIR,
) -> None:
    """Print one simulated host's components as the node driver reports them (JSON)."""
    target = _Target(cluster, namespace, data_dir, url, tls_dir, simulator_dir)
    typer.echo(json.dumps(_driver_call(target, "state", node), indent=2))
