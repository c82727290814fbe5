"""`kokpit scheduler` and `kokpit controller-manager`: a business cluster's control-plane components.

The cluster operator runs them as Pods from the ClusterPackageVersion (the kubeconfig comes from the
``KUBECONFIG`` environment the operator sets); both elect a leader, so extra replicas wait warm.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kokpit.cli._common import (
    METRICS_HOST,
    METRICS_PORT,
    METRICS_TOKEN_FILE,
    fail,
    metrics_tokens,
    setup_logging,
)

if TYPE_CHECKING:
    from kokpit.runtime.component import ComponentConfig

__all__ = ["register"]


def _check(kubeconfig: Path | None) -> None:
    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")


def _component(host: str, port: int | None, token_file: Path | None, leader_elect: bool,
               qps: float | None) -> ComponentConfig:
    from kokpit.runtime.component import ComponentConfig

    return ComponentConfig(http_host=host, http_port=port, leader_elect=leader_elect, qps=qps,
                           metrics_tokens=metrics_tokens(port, token_file))


def scheduler(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the business cluster "
                                           "(default: $KUBECONFIG)."),
    metrics_host: str = METRICS_HOST,
    metrics_port: int | None = METRICS_PORT,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    leader_elect: bool = typer.Option(True, "--leader-elect/--no-leader-elect",
                                      help="Elect a leader on the kube-system/kube-scheduler Lease."),
    bind_concurrency: int = typer.Option(64, "--bind-concurrency", min=1, help="Bindings in flight."),
    scheduled_events: bool = typer.Option(True, "--scheduled-events/--no-scheduled-events",
                                          help="Record a Normal 'Scheduled' Event per bound pod."),
    qps: float | None = typer.Option(None, "--qps", min=1, help="Client requests per second (default: unlimited)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the scheduler: bind pending pods to nodes (filters, scores, Unschedulable conditions)."""
    from kokpit.scheduler import SchedulerOptions, run_scheduler

    _check(kubeconfig)
    setup_logging(verbose, quiet_http=True)
    opts = SchedulerOptions(bind_concurrency=bind_concurrency, scheduled_events=scheduled_events)
    try:
        asyncio.run(run_scheduler(kubeconfig, opts, _component(metrics_host, metrics_port, metrics_token_file,
                                                               leader_elect, qps)))
    except KeyboardInterrupt:
        pass


def controller_manager(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the business cluster "
                                           "(default: $KUBECONFIG)."),
    controllers: str = typer.Option("*", "--controllers", help="Comma-separated controllers to run "
                                    "('*' for all)."),
    metrics_host: str = METRICS_HOST,
    metrics_port: int | None = METRICS_PORT,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    leader_elect: bool = typer.Option(True, "--leader-elect/--no-leader-elect",
                                      help="Elect a leader on the kube-system/kube-controller-manager Lease."),
    qps: float | None = typer.Option(None, "--qps", min=1, help="Client requests per second (default: unlimited)."),
    pod_update_batch_period: float = typer.Option(
        0.5, "--pod-update-batch-period", min=0.0,
        help="Seconds a ReplicaSet, DaemonSet or Job waits to look at status-only updates of its pods, so "
             "that one pass covers them all (creations, deletions and terminal pods are seen at once)."),
    terminated_pod_gc_threshold: int = typer.Option(
        12500, "--terminated-pod-gc-threshold", min=0,
        help="Finished (Succeeded/Failed) pods kept before the oldest are deleted (0: keep them all)."),
    risk_kubeconfig: Path | None = typer.Option(None, "--risk-kubeconfig", help="Meta cluster kubeconfig: ask "
                                                "its risk center (node-drain) before taint-based eviction."),
    risk_in_cluster: bool = typer.Option(False, "--risk-in-cluster", help="Reach the meta cluster's risk center "
                                         "as the Pod's own ServiceAccount (what the cluster operator gives it)."),
    risk_cluster: str = typer.Option("", "--risk-cluster", help="This business cluster's Cluster name."),
    risk_namespace: str = typer.Option("default", "--risk-namespace", help="That Cluster's namespace."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the controller-manager: Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs, node lifecycle,
    disruption budgets."""
    from kokpit.controllermanager import (
        CONTROLLERS,
        ControllerManagerOptions,
        RiskAccess,
        run_controller_manager,
    )

    _check(kubeconfig)
    if risk_kubeconfig is not None and (not risk_kubeconfig.is_file() or not risk_cluster):
        fail("--risk-kubeconfig needs an existing file and --risk-cluster NAME")
    if risk_in_cluster and (risk_kubeconfig is not None or not risk_cluster):
        fail("--risk-in-cluster needs --risk-cluster NAME and no --risk-kubeconfig")
    names = list(CONTROLLERS) if controllers.strip() == "*" else [c.strip() for c in controllers.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONTROLLERS]
    if unknown:
        fail(f"--controllers: unknown {', '.join(unknown)}; known: {', '.join(CONTROLLERS)}")
    setup_logging(verbose, quiet_http=True)
    try:
        opts = ControllerManagerOptions(controllers=names, pod_update_batch_period=pod_update_batch_period,
                                        risk=RiskAccess(risk_kubeconfig, risk_cluster, risk_namespace)
                                        if risk_kubeconfig is not None or risk_in_cluster else None)
        opts.pod_gc.terminated_threshold = terminated_pod_gc_threshold
        asyncio.run(run_controller_manager(kubeconfig, opts, _component(metrics_host, metrics_port,
                                                                        metrics_token_file, leader_elect, qps)))
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    app.command("scheduler")(scheduler)
    app.command("controller-manager")(controller_manager)
