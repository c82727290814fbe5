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

from kokpit.cli._common import fail, setup_logging

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
    driver_host: str = typer.Option("127.0.0.1", "--driver-host", help="Address of the node driver API."),
    driver_port: int = typer.Option(9740, "--driver-port", help="Port of the node driver API (0: any)."),
    name_prefix: str = typer.Option("sim-", "--name-prefix", help="Node names are <prefix>00001, ..."),
    install_seconds: float = typer.Option(0.0, "--install-seconds", min=0.0,
                                          help="How long a component install/upgrade/uninstall takes."),
    fail_probability: float = typer.Option(0.0, "--fail-probability", min=0.0, max=1.0,
                                           help="Chance an install fails (seeded)."),
    fail_component: list[str] | None = typer.Option(None, "--fail-component",
                                                    help="COMPONENT or COMPONENT=VERSION whose installs "
                                                    "always fail (repeatable)."),
    binder: bool = typer.Option(True, "--binder/--no-binder", help="Bind pending pods to simulated nodes."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run N simulated hosts (bare form), or a subcommand against a running simulator."""
    if ctx.invoked_subcommand is not None:
        return
    from kokpit.simulator import FailRule, SimulatorOptions, run

    setup_logging(verbose, quiet_http=True)
    try:
        rules = [FailRule.parse(r) for r in fail_component or []]
    except ValueError as e:
        fail(str(e))
        return
    opts = SimulatorOptions(kubeconfig=kubeconfig, nodes=nodes, seed=seed,
                            lease_period=parse_duration(lease_period), lease_jitter=lease_jitter,
                            status_report_period=parse_duration(status_period), data_dir=data_dir,
                            driver_host=driver_host, driver_port=driver_port, name_prefix=name_prefix,
                            install_seconds=install_seconds, fail_probability=fail_probability,
                            fail_rules=rules, binder=binder)
    if opts.lease_period <= 0:
        fail("--lease-period must be positive")
    try:
        run(opts)
    except RuntimeError as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass


def _driver_call(url: str, fn: str, *args: Any) -> Any:
    from kokpit.nodes import DriverError
    from kokpit.nodes.simulator import SimulatorDriver, node_state_to_dict

    async def go() -> Any:
        d = SimulatorDriver(url, timeout=10.0)
        try:
            if fn == "fault":
                return await d.fault(*args)
            return node_state_to_dict(await d.state(*args))
        finally:
            await d.close()

    try:
        return asyncio.run(go())
    except DriverError as e:
        fail(str(e))


@simulator_app.command("fault")
def fault(
    url: str = typer.Option("http://127.0.0.1:9740", "--url", help="The simulator's driver URL."),
    node: str = typer.Option("*", "--node", help="Node name; '*' for every node (install-failure, recover)."),
    kind: str = typer.Option(..., "--type", help="component-stop | hardware | hang | install-failure | recover"),
    component: str = typer.Option("", "--component", help="Component (component-stop, install-failure)."),
    version: str = typer.Option("", "--version", help="Version that fails (install-failure; empty: any)."),
) -> None:
    """Inject or lift a fault on a running simulator; prints the resulting faults as JSON."""
    from kokpit.simulator import FAULT_TYPES

    if kind not in FAULT_TYPES:
        fail(f"--type must be one of {', '.join(FAULT_TYPES)} (got {kind!r})")
    typer.echo(json.dumps(_driver_call(url, "fault", node, kind, component, version), indent=2))


@simulator_app.command("state")
def state(
    url: str = typer.Option("http://127.0.0.1:9740", "--url", help="The simulator's driver URL."),
    node: str = typer.Option(..., "--node", help="Node name."),
) -> None:
    """Print one simulated host's components as the node driver reports them (JSON)."""
    typer.echo(json.dumps(_driver_call(url, "state", node), indent=2))
