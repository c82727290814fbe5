"""The simulated-kubelet mode (``--trust-pod-readiness``): no business API server runs, so the operator must
judge the API server component by its Pod's readiness alone — and still never call an unready Pod healthy."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kokpit.cli.main import app
from kokpit.operators.cluster import ClusterReconciler, OperatorOptions, PodReadinessProber
from kokpit.runtime import EventRecorder

from .conftest import Harness


def _trusting(h: Harness) -> ClusterReconciler:
    """The harness' reconciler, but built from options alone (no prober passed), as the CLI builds it."""
    h.options = OperatorOptions(trust_pod_readiness=True, unhealthy_timeout=10.0, release_timeout=20.0)
    h.rec = ClusterReconciler(h.client, clusters=h.clusters, cpvs=h.cpvs, pods=h.pods, services=h.services,
                              secrets=h.secrets, recorder=EventRecorder(h.client, "cluster-operator", clock=h.clock),
                              options=h.options, clock=h.clock)
    return h.rec


async def test_option_picks_the_pod_readiness_prober() -> None:
    h = Harness()
    assert isinstance(_trusting(h).prober, PodReadinessProber)
    h.new_reconciler()
    assert not isinstance(ClusterReconciler(
        h.client, clusters=h.clusters, cpvs=h.cpvs, pods=h.pods, services=h.services, secrets=h.secrets,
        recorder=EventRecorder(h.client, "x", clock=h.clock)).prober, PodReadinessProber)


async def test_ready_on_pod_readiness_and_says_it_was_not_probed() -> None:
    h = Harness()
    _trusting(h)
    h.cpv("v1", "v1.30.0")
    h.cpv("v2", "v1.31.0")
    h.cluster(nodes=0)
    await h.run()
    assert h.pod_names() == ["c1-kube-apiserver-0"]  # nodes 0: no simulator, no machine operator
    assert h.cond("Ready")["status"] == "False"  # the Pod exists but is not Ready yet
    await h.converge()
    assert h.cond("Ready")["status"] == "True"
    cp = h.cond("ControlPlaneReady")
    assert cp["status"] == "True" and cp["message"] == PodReadinessProber.MESSAGE
    # a release goes through the same path: the new Pod, once Ready, is the new version
    h.cluster(cpv="v2", nodes=0)
    await h.converge()
    assert h.status()["packageVersion"] == "v2" and h.pod_versions() == {"c1-kube-apiserver-0": "v2"}
    assert h.cond("Ready")["status"] == "True" and h.cond("Upgrading")["reason"] == "UpToDate"


async def test_an_unready_pod_is_still_unhealthy() -> None:
    h = Harness()
    _trusting(h)
    h.cpv("v1", "v1.30.0")
    h.unready_images.add("kokpit:v1.30.0")
    h.cluster(nodes=0)
    for _ in range(3):
        await h.run()
        h.kubelet()
    assert h.cond("Ready")["status"] == "False"
    assert h.cond("ControlPlaneReady")["status"] == "False"


def test_cli_has_the_switch() -> None:
    out = CliRunner().invoke(app, ["cluster-operator", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "--trust-pod-readiness" in out.output


async def test_node_ports_are_unique_across_clusters_and_restarts() -> None:
    """Free NodePorts come from the Services' nodeport index: ports held by Services (also ones a previous
    operator process chose) are never handed out again, and a full range says so."""
    h = Harness(port_range=(31000, 31002))
    h.cpv("v1", "v1.30.0")
    for name in ("a", "b"):
        h.cluster(name=name, nodes=0)
        await h.run(name)
    h.new_reconciler()  # a restarted operator: nothing reserved in memory, only the Services tell
    h.cluster(name="c", nodes=0)
    await h.run("c")
    ports = sorted(p["nodePort"] for s in h.services.list() for p in s["spec"]["ports"])
    assert ports == [31000, 31001, 31002]
    h.cluster(name="d", nodes=0)
    with pytest.raises(RuntimeError, match="no free port"):
        await h.run("d")
