"""The one-screen summary: when a fleet counts as Ready, and what the plain text shows."""

from __future__ import annotations

from pathlib import Path

from kokpit.up import ClusterRow, Snapshot, machine_bodies, render_text
from kokpit.up._fleet import machine_converged, try_commands, unreadable_reason


def row(**kw: object) -> ClusterRow:
    base: dict[str, object] = {"namespace": "default", "name": "cluster-1", "uid": "u1", "version": "v1.36.2",
                               "wanted": "v1.36.2", "ready": "True", "phase": "", "endpoint": "https://x:1",
                               "nodes_total": 3, "nodes_ready": 3, "nodes_seen": 3, "machines": 3,
                               "machines_converged": 3}
    base.update(kw)
    return ClusterRow(**base)  # type: ignore[arg-type]


def test_ready_needs_every_cluster_node_and_machine() -> None:
    assert Snapshot([row(), row(name="cluster-2")]).ready(2)
    assert not Snapshot([row()]).ready(2)  # a cluster missing
    assert not Snapshot([row(ready="False")]).ready(1)
    assert not Snapshot([row(nodes_ready=2)]).ready(1)
    assert not Snapshot([row(machines_converged=2)]).ready(1)
    assert not Snapshot([row(nodes_seen=-1, nodes_ready=-1)]).ready(1)  # business cluster unreadable
    assert not Snapshot([row()], error="meta API server not answering").ready(1)


def test_machine_converged_needs_ready_and_the_newest_generation() -> None:
    m = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
                                                     "conditions": [{"type": "Ready", "status": "True"}]}}
    assert machine_converged(m)
    assert not machine_converged({**m, "metadata": {"generation": 3}})
    assert not machine_converged({**m, "status": {**m["status"], "conditions": []}})


def test_plain_summary_and_commands() -> None:
    snap = Snapshot([row(), row(name="cluster-2", ready="False", nodes_ready=-1, machines_converged=-1)],
                    events=["12:00:00 meta ControlPlane cluster/cluster-1: created"])
    text = render_text(snap, Path("/data"), elapsed=3.0)
    assert "default/cluster-1" in text and "3/3" in text
    assert "?/3" in text  # cluster-2's nodes cannot be read yet
    assert "created" in text
    assert "kokpit kubeconfig cluster-1 --data-dir /data > /data/cluster-1.kubeconfig" in text
    assert try_commands(Path(".kokpit"), snap)[2] == "kokpit kubeconfig cluster-1 > .kokpit/cluster-1.kubeconfig"


def test_one_machine_per_node_named_like_the_simulator() -> None:
    ms = machine_bodies(3)
    assert [m["metadata"]["name"] for m in ms] == ["sim-00001", "sim-00002", "sim-00003"]
    assert all(m["spec"]["nodeName"] == m["metadata"]["name"] for m in ms)


def test_an_api_server_being_replaced_is_not_zero_nodes() -> None:
    """Issue 13: the status screen showed "nodes 0/50" while the business API server was replaced."""
    rolling = {"status": {"conditions": [{"type": "RollingOut", "status": "True"}]}}
    assert unreadable_reason(rolling) == "API server restarting"
    assert unreadable_reason({"status": {"conditions": [{"type": "Remediating", "status": "True"}]}}) == \
        "API server restarting"
    assert unreadable_reason({"status": {}}) == "API server not answering"
    snap = Snapshot([row(name="cluster-2", nodes_ready=-1, machines_converged=-1,
                         unreadable="API server restarting")])
    text = render_text(snap, Path("/data"))
    assert "API server restarting ?/3" in " ".join(text.split()) and "0/3" not in text  # nodes, machines
