"""Process entry point of the cluster operator, shared by ``kokpit cluster-operator`` and tests.

Kept apart from the reconcile so the CLI, a Pod and an in-process test start the operator the same way:
client from kubeconfig, a Manager (probes and metrics), the operator wired onto it, a clean shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from kokpit.client import Client
from kokpit.operators.cluster.operator import ClusterOperator, OperatorOptions, Prober
from kokpit.runtime import Manager, Request
from kokpit.runtime.informer import strip_managed_fields
from kokpit.runtime.leaderelection import LeaderElectionConfig
from kokpit.runtime.permit_gate import PermitGate
from kokpit.runtime.permit_watch import PermitWatch
from kokpit.runtime.permits import PermitClient

__all__ = ["run_operator"]

log = logging.getLogger("kokpit.operators.cluster")


async def run_operator(
    kubeconfig: str | Path | None,
    options: OperatorOptions | None = None,
    *,
    prober: Prober | None = None,
    http_port: int | None = 0,
    handle_signals: bool = True,
    ask_risk_center: bool = False,
    http_host: str = "127.0.0.1",
    metrics_tokens: list[str] | None = None,
    leader_election_lease: str | None = None,
) -> None:
    """Run the cluster operator against the meta cluster until SIGTERM/SIGINT (or cancellation); with
    ``ask_risk_center`` every release step that replaces a running component first takes a permit; with a
    Lease name, reconcile only while holding it (in the client's namespace: the Pod's, in-cluster)."""
    client = Client.from_kubeconfig(kubeconfig, field_manager="kokpit-cluster-operator")
    gates: dict[tuple[str, str], PermitGate] = {}
    watches: dict[str, PermitWatch] = {}  # one watch of the Permits per namespace, not one per Cluster
    op: ClusterOperator | None = None
    if ask_risk_center:
        def gate(namespace: str, cluster: str) -> PermitGate:
            g = gates.get((namespace, cluster))
            if g is None:
                shared = watches.get(namespace)
                if shared is None:
                    shared = watches[namespace] = PermitWatch(client, namespace)
                g = gates[(namespace, cluster)] = PermitGate(PermitClient(
                    client, namespace=namespace, cluster=cluster, holder="cluster-operator", shared_watch=shared))
                if op is not None:  # a permit's answer wakes its Cluster at once
                    queue = op.controller.queue
                    g.permits.add_listener(lambda _p: queue.add(Request(namespace, cluster)))
            return g

        options = dataclasses.replace(options or OperatorOptions(), risk=gate)
    try:
        election = (LeaderElectionConfig(leader_election_lease, namespace=client.namespace)
                    if leader_election_lease else None)
        manager = Manager(client, http_port=http_port, handle_signals=handle_signals,
                          cache_transform=strip_managed_fields, http_host=http_host, metrics_tokens=metrics_tokens,
                          leader_election=election)
        op = ClusterOperator(manager, options, prober=prober)
        log.info("cluster operator starting against %s", client.server)
        await manager.run()
    finally:
        for g in gates.values():
            await g.permits.close()
        for w in watches.values():
            await w.close()
        await client.close()
