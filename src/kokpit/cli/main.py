"""The `kokpit` command: one entry point for every process kokpit runs (servers, operators, tools).

Each subcommand is a thin shell over a library entry point so the same code runs under `kokpit up`, in a
Pod, or in a test.
"""

from __future__ import annotations

from pathlib import Path

import typer

from kokpit.apiserver.command import apiserver
from kokpit.cli._common import (
    METRICS_HOST,
    METRICS_PORT,
    METRICS_TOKEN_FILE,
    fail,
    metrics_tokens,
    setup_logging,
)
from kokpit.cli.manifests import manifests

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="kokpit: final-state fleet management for Kubernetes (Kube on Kube).")


app.command()(apiserver)


@app.command()
def up(
    data_dir: Path = typer.Option(Path(".kokpit"), "--data-dir", help="Where the fleet's state lives."),
    clusters: int = typer.Option(2, "--clusters", help="Business clusters to run (created when missing)."),
    nodes: int = typer.Option(50, "--nodes", help="Simulated nodes per new business cluster."),
    port: int = typer.Option(6443, "--port", help="Port of the meta cluster's API server."),
    host: str = typer.Option("127.0.0.1", "--host", help="The one address every server of the fleet binds to "
                             "(an address of this machine; never 0.0.0.0)."),
) -> None:
    """Start the whole fleet on this machine: meta cluster, business clusters, simulated nodes."""
    from kokpit.up import UpOptions, run_up

    code = run_up(UpOptions(data_dir=data_dir, clusters=clusters, nodes=nodes, port=port, host=host))
    if code:
        raise typer.Exit(code=code)


@app.command()
def status(
    data_dir: Path = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of a running kokpit up."),
) -> None:
    """Print the one-screen summary of the fleet a running `kokpit up` holds."""
    from kokpit.up import status as fleet_status

    code = fleet_status(data_dir)
    if code:
        raise typer.Exit(code=code)


@app.command()
def kubeconfig(
    cluster: str = typer.Argument(..., help="Business cluster name (see kokpit status)."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="The Cluster's namespace."),
    data_dir: Path = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of a running kokpit up."),
) -> None:
    """Print a business cluster's admin kubeconfig (kokpit kubeconfig cluster-1 > c1.kubeconfig)."""
    from kokpit.up import kubeconfig as print_kubeconfig

    code = print_kubeconfig(cluster, namespace, data_dir)
    if code:
        raise typer.Exit(code=code)


@app.command()
def crds() -> None:
    """Print the CustomResourceDefinitions of every kokpit kind as YAML (pipe into kubectl apply -f -)."""
    import yaml

    from kokpit.api import crds as all_crds

    typer.echo(yaml.safe_dump_all(all_crds(), sort_keys=False), nl=False)


@app.command("machine-operator")
def machine_operator(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the cluster to manage."),
    driver_url: str = typer.Option("", "--driver-url", help="The simulator's node driver endpoint "
                                   "(https://HOST:PORT); needed when any node uses the simulator."),
    driver: str = typer.Option("simulator", "--driver", help="Default node driver of this cluster: simulator "
                               "or agent (kokpit node-agent); a Machine's spec.driver overrides it."),
    agent_port: int = typer.Option(9750, "--agent-port", min=1, max=65535, help="Port node agents listen on "
                                   "(at the Node's address) unless a Machine names its agent's endpoint."),
    driver_tls_dir: Path | None = typer.Option(None, "--driver-tls-dir", help="Folder with the node driver's "
                                               "CA and this caller's certificate: ca.crt, tls.crt, tls.key."),
    driver_ca_file: Path | None = typer.Option(None, "--driver-ca-file", help="CA of the node driver (mutual "
                                               "TLS; instead of --driver-tls-dir)."),
    driver_client_certificate: Path | None = typer.Option(None, "--driver-client-certificate",
                                                          help="Client certificate the node driver accepts."),
    driver_client_key: Path | None = typer.Option(None, "--driver-client-key", help="Its key."),
    create_machines_for_nodes: bool = typer.Option(False, "--create-machines-for-nodes",
                                                   help="Create a Machine for every Node that has none."),
    workers: int = typer.Option(64, "--workers", min=1, help="Concurrent reconciles."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    fast_poll: float = typer.Option(0.5, "--fast-poll", min=0.01, help="Seconds between polls of busy nodes."),
    slow_poll: float = typer.Option(10.0, "--slow-poll", min=0.1, help="Seconds between polls of all nodes."),
    risk_kubeconfig: Path | None = typer.Option(None, "--risk-kubeconfig", help="Meta cluster kubeconfig: ask "
                                                "its risk center before upgrading or removing a component."),
    risk_in_cluster: bool = typer.Option(False, "--risk-in-cluster", help="Reach the meta cluster's risk center "
                                         "as the Pod's own ServiceAccount (what the cluster operator gives it)."),
    risk_cluster: str = typer.Option("", "--risk-cluster", help="This business cluster's Cluster name."),
    risk_namespace: str = typer.Option("default", "--risk-namespace", help="That Cluster's namespace."),
    maintenance: bool = typer.Option(True, "--maintenance/--no-maintenance", help="Run the maintenance flows "
                                     "(repair faulty nodes: NodeFault → MaintenanceFlow) in this process."),
    maintenance_policy: str = typer.Option("default", "--maintenance-policy", help="MaintenancePolicy to use "
                                           "(installed with defaults when missing)."),
    maintenance_verify_grace: float = typer.Option(30.0, "--maintenance-verify-grace", min=0.0, help="Seconds "
                                                   "a repaired fault must stay unreported to count as gone."),
    maintenance_poll: float = typer.Option(5.0, "--maintenance-poll", min=0.05, help="Seconds between looks "
                                           "while a flow waits."),
    faults: bool = typer.Option(True, "--faults/--no-faults", help="Also run the fault controllers (event "
                                "center, detector, node-problem-detector ingestion, webhooks)."),
    fault_retention: str = typer.Option("24h", "--fault-retention", help="Keep Resolved/Expired faults this long."),
    lease_grace: str = typer.Option("40s", "--lease-grace", help="A node Lease not renewed this long is a "
                                    "node-unreachable fault."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the machine operator: hold every node at the final state its Machine declares."""
    import asyncio

    from kokpit.cli._faults import fault_add_ons
    from kokpit.cli._maintenance import maintenance_add_ons
    from kokpit.nodes.agent import RoutedDriver
    from kokpit.nodes.mtls import TLSFiles
    from kokpit.nodes.simulator import SimulatorDriver
    from kokpit.operators.machine import OperatorOptions, run_operator

    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    if risk_kubeconfig is not None and (not risk_kubeconfig.is_file() or not risk_cluster):
        fail("--risk-kubeconfig needs an existing file and --risk-cluster NAME")
    if risk_in_cluster and (risk_kubeconfig is not None or not risk_cluster):
        fail("--risk-in-cluster needs --risk-cluster NAME and no --risk-kubeconfig")
    setup_logging(verbose, quiet_http=True)
    tokens = metrics_tokens(metrics_port, metrics_token_file)
    opts = OperatorOptions(create_machines_for_nodes=create_machines_for_nodes, workers=workers,
                           fast_poll=fast_poll, slow_poll=slow_poll)
    if driver_tls_dir is not None:
        tls = TLSFiles.in_dir(driver_tls_dir)
    elif driver_ca_file and driver_client_certificate and driver_client_key:
        tls = TLSFiles(driver_ca_file, driver_client_certificate, driver_client_key)
    else:
        fail("the node driver requires mutual TLS: pass --driver-tls-dir DIR, or --driver-ca-file, "
             "--driver-client-certificate and --driver-client-key")
    if driver == "simulator" and not driver_url:
        fail("--driver simulator needs --driver-url (or pass --driver agent)")
    try:
        routed = RoutedDriver(default=driver, simulator=SimulatorDriver(driver_url, tls=tls) if driver_url else None,
                              tls=tls, agent_port=agent_port)
    except (ValueError, OSError) as e:
        fail(f"cannot use the node driver settings: {e}")
    try:
        asyncio.run(run_operator(kubeconfig, routed, opts, http_port=metrics_port, risk_kubeconfig=risk_kubeconfig,
                                 risk_in_cluster=risk_in_cluster, risk_cluster=risk_cluster,
                                 risk_namespace=risk_namespace, http_host=metrics_host,
                                 metrics_tokens=tokens, add_ons=maintenance_add_ons(
                                     maintenance, policy=maintenance_policy, verify_grace=maintenance_verify_grace,
                                     poll=maintenance_poll, risk_cluster=risk_cluster,
                                     risk_namespace=risk_namespace) + fault_add_ons(
                                     faults, fault_retention, lease_grace, risk_cluster=risk_cluster,
                                     risk_namespace=risk_namespace)))
    except KeyboardInterrupt:
        pass


@app.command("kubelet")
def kubelet_cmd(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster."),
    data_dir: Path = typer.Option(..., "--data-dir", help="Where Pods' folders, logs and volumes live."),
    node_name: str = typer.Option("local", "--node-name", help="Name of the Node to register."),
    fake_runtime: bool = typer.Option(False, "--fake-runtime",
                                      help="A fake container runtime: start no processes, report Pods "
                                      "Running/Ready (cluster operator scale benchmarks). Not the fleet "
                                      "simulator (`kokpit simulator`), which simulates whole hosts."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Log endpoint port (0 picks a free one)."),
    address: str = typer.Option("127.0.0.1", "--address", help="The address the log endpoint listens on and "
                                "the Node advertises (InternalIP, the Pods' hostIP); never a wildcard."),
    client_ca_file: Path | None = typer.Option(None, "--client-ca-file", help="CA whose client certificates "
                                               "may read logs (default: the CA of --kubeconfig)."),
    bind_pending: bool = typer.Option(True, "--bind-pending/--no-bind-pending",
                                      help="Bind unscheduled Pods (default scheduler) to this Node."),
    backoff_base: float = typer.Option(10.0, "--backoff-base", min=0.01, help="First CrashLoopBackOff delay (s)."),
    backoff_cap: float = typer.Option(300.0, "--backoff-cap", min=0.01, help="Longest CrashLoopBackOff delay (s)."),
    stop_pods_on_exit: bool = typer.Option(False, "--stop-pods-on-exit",
                                           help="End the Pods' processes on exit (default: leave them running "
                                                "for the next kubelet to adopt, like kubelet)."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the local kubelet (embedded mode): register a Node and run its kokpit Pods as processes."""
    import asyncio

    from kokpit.kubelet import KubeletOptions, run_kubelet

    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    from kokpit.nodes.mtls import is_wildcard

    if is_wildcard(address):
        fail(f"--address {address or '(empty)'} would listen on every interface; pass one address of this machine")
    if client_ca_file is not None and not client_ca_file.is_file():
        fail(f"--client-ca-file {client_ca_file} not found")
    setup_logging(verbose, quiet_http=True)
    opts = KubeletOptions(data_dir=data_dir, node_name=node_name, fake_runtime=fake_runtime, log_port=port,
                          address=address, client_ca_pem=client_ca_file.read_bytes() if client_ca_file else None,
                          bind_pending=bind_pending, backoff_base=backoff_base, backoff_cap=backoff_cap,
                          metrics_port=metrics_port, metrics_host=metrics_host,
                          metrics_tokens=metrics_tokens(metrics_port, metrics_token_file) or [])
    try:
        asyncio.run(run_kubelet(kubeconfig, opts, stop_pods_on_exit=stop_pods_on_exit))
    except KeyboardInterrupt:
        pass


@app.command("cluster-operator")
def cluster_operator(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster."),
    workers: int = typer.Option(64, "--workers", min=1, help="Concurrent reconciles."),
    data_root: str = typer.Option("/var/lib/kokpit/clusters", "--data-root",
                                  help="Host folder of the business clusters' data (hostPath volumes)."),
    port_range: str = typer.Option("30000-32767", "--port-range",
                                   help="NodePorts for business API servers and node drivers (LO-HI)."),
    apiserver_san: list[str] | None = typer.Option(None, "--apiserver-san",
                                                   help="Extra name/IP in every business API server's "
                                                   "certificate (repeatable; e.g. node addresses)."),
    unhealthy_timeout: float = typer.Option(30.0, "--unhealthy-timeout", min=0.1,
                                            help="Seconds a component may be unready before it is replaced."),
    release_timeout: float = typer.Option(60.0, "--release-timeout", min=0.1,
                                          help="Seconds a release step may take before it is rolled back."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    tools_image: str | None = typer.Option(None, "--tools-image",
                                           help="kokpit image of the Pods that remove a deleted cluster's "
                                           "data on its nodes (default kokpit:<this version>)."),
    trust_pod_readiness: bool = typer.Option(False, "--trust-pod-readiness",
                                             help="For a kubelet with a fake runtime (`kokpit kubelet --fake-runtime`, scale "
                                             "benchmarks): no business API server runs, so judge it by its "
                                             "Pod's readiness instead of probing /readyz."),
    ask_risk_center: bool = typer.Option(False, "--ask-risk-center", help="Take a control-plane-release Permit "
                                         "from the risk center before a release or a restart "
                                         "(spec.controlPlane.restartedAt) replaces a running component."),
    leader_elect: bool = typer.Option(False, "--leader-elect", help="Reconcile only while holding the Lease "
                                      "kokpit-cluster-operator in the kubeconfig's (or Pod's) namespace, so "
                                      "several replicas can run."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the cluster operator: business cluster control planes as Pods of the meta cluster."""
    import asyncio

    from kokpit.operators.cluster import OperatorOptions, run_operator

    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    lo, _, hi = port_range.partition("-")
    if not (lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi) <= 65535):
        fail(f"--port-range must look like 30000-32767 (got {port_range})")
    setup_logging(verbose, quiet_http=True)
    opts = OperatorOptions(workers=workers, data_root=data_root, port_range=(int(lo), int(hi)),
                           extra_sans=tuple(apiserver_san or ()), unhealthy_timeout=unhealthy_timeout,
                           release_timeout=release_timeout, trust_pod_readiness=trust_pod_readiness)
    if tools_image:
        opts.tools_image = tools_image
    try:
        asyncio.run(run_operator(kubeconfig, opts, http_port=metrics_port, ask_risk_center=ask_risk_center,
                                 http_host=metrics_host, metrics_tokens=metrics_tokens(metrics_port, metrics_token_file),
                                 leader_election_lease="kokpit-cluster-operator" if leader_elect else None))
    except KeyboardInterrupt:
        pass


@app.command("remove-cluster-data")
def remove_cluster_data(
    root: Path = typer.Option(..., "--root", help="The folder holding the clusters' folders (one namespace's)."),
    name: str = typer.Option(..., "--name", help="The Cluster whose folder ROOT/NAME goes."),
) -> None:
    """Remove a deleted business cluster's data folder (the cluster operator runs this as a Pod on each node
    holding data of a Cluster with deletionPolicy: Delete)."""
    import re
    import shutil

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 253:
        fail(f"--name must be a Cluster name (lowercase letters, digits and '-'), got {name!r}")
    if not root.is_dir():
        fail(f"--root {root} is not a folder")
    target = root / name
    if not target.exists():
        print(f"nothing to remove: {target} does not exist")
        return
    shutil.rmtree(target)
    print(f"removed {target}")


def _add_simulator() -> None:
    """`kokpit simulator ...` lives in its own module (a group: run, fault, state)."""
    from kokpit.cli._simulator import simulator_app

    app.add_typer(simulator_app, name="simulator")


_add_simulator()
_agent_cli = __import__("kokpit.cli.node_agent", fromlist=["node_agent"])
app.command("node-agent")(_agent_cli.node_agent)
app.command("node-agent-cert")(_agent_cli.node_agent_cert)
app.command("manifests")(manifests)


def _add_control_plane() -> None:
    """`kokpit scheduler` and `kokpit controller-manager` live in their own module."""
    from kokpit.cli._control import register

    register(app)


def _add_risk() -> None:
    """`kokpit risk-center` and `kokpit risk ...` live in their own module."""
    from kokpit.cli._risk import register

    register(app)


def _add_fault() -> None:
    """`kokpit fault ...` (resolve and retry a node's maintenance flow) lives in its own module."""
    from kokpit.cli._fault import fault_app
    from kokpit.cli._faults import fault_rows  # noqa: F401  (adds `kokpit fault list|show` to the group)

    app.add_typer(fault_app, name="fault")


_add_control_plane()
_add_risk()
app.add_typer(__import__("kokpit.cli.portal", fromlist=["portal_app"]).portal_app, name="portal")
app.add_typer(__import__("kokpit.cli.legacy", fromlist=["legacy_app"]).legacy_app, name="legacy")
__import__("kokpit.cli._rollout", fromlist=["register"]).register(app)  # kokpit rollout ..., rollout-controller
_add_fault()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
