"""Workloads really move on a `kokpit up` business cluster, driven with the real kubectl: the default
workload comes up (a DaemonSet on every node, gating each node's scheduling through its Condition
ConfigMap), `kubectl create deployment`, `scale`, `rollout status|undo`, bad input answered as kube does,
and `kubectl drain` refused by a PodDisruptionBudget, then allowed, with the evicted pods running elsewhere.
Everything runs as real processes: the meta API server, the local kubelet, the cluster operator, and the
business cluster's API server, scheduler, controller-manager, simulator and machine operator as Pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.apiserver.testing import free_port

from ._fleet import stop_fleet
from .test_up_e2e import ready

Obj = dict[str, Any]
NODES = 4


class _Up:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.out = data_dir.parent / "up.out"
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kokpit.cli.main", "up", "--clusters", "1", "--nodes", str(NODES),
                 "--data-dir", str(data_dir), "--port", str(free_port())],
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[_Up]:
    u = _Up(tmp_path / "fleet")
    try:
        yield u
    finally:
        stop_fleet(u.proc, u.data_dir)


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.argv = [binary, "--kubeconfig", str(kubeconfig)]

    def run(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "KUBECONFIG": ""})
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}{out.stdout}")
        return out

    def json(self, *args: str) -> Obj:
        data: Obj = json.loads(self.run(*args, "-o", "json").stdout)
        return data


def wait_for(fn: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def running(k: Kubectl, ns: str, selector: str) -> list[Obj]:
    pods = k.json("get", "pods", "-n", ns, "-l", selector)["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


@pytest.mark.timeout(600)
def test_workloads_move_on_a_business_cluster(up: _Up, tmp_path: Path, kubectl_bin: str) -> None:
    _wait_cluster_ready(up, kubectl_bin)
    kc = tmp_path / "c1.kubeconfig"
    kc.write_bytes(subprocess.run([sys.executable, "-m", "kokpit.cli.main", "kubeconfig", "cluster-1", "--data-dir",
                                   str(up.data_dir)], capture_output=True, timeout=30, check=True).stdout)
    k = Kubectl(kubectl_bin, kc)
    _scenario(k)


def _wait_cluster_ready(up: _Up, kubectl_bin: str) -> None:
    meta = Kubectl(kubectl_bin, up.data_dir / "kubeconfig")

    def ok() -> bool:
        assert up.proc.poll() is None, up.output()
        if not (up.data_dir / "kubeconfig").exists():
            return False
        items = meta.json("get", "clusters", "-n", "default")["items"]
        return len(items) == 1 and ready(items[0])

    wait_for(ok, "cluster-1 Ready", 240)


def _scenario(k: Kubectl) -> None:
    # the default workload: the log collector on every node, and each node schedulable only once it runs
    def ds_everywhere() -> bool:
        ds = k.json("get", "daemonset", "log-collector", "-n", "kube-system")
        st = ds.get("status") or {}
        return st.get("desiredNumberScheduled") == NODES == st.get("numberAvailable")

    wait_for(ds_everywhere, "log-collector on every node", 240)
    k.run("rollout", "status", "daemonset/log-collector", "-n", "kube-system", "--timeout=60s")
    nodes = [n["metadata"]["name"] for n in k.json("get", "nodes")["items"]]
    assert len(nodes) == NODES
    gate = json.loads(k.json("get", "configmap", f"daemonset-readiness.{nodes[0]}", "-n", "kube-system")["data"][
        "LogCollectionReady"])
    assert gate["status"] == "True"
    wait_for(lambda: all(not n["spec"].get("unschedulable") for n in k.json("get", "nodes")["items"]),
             "nodes uncordoned by the machine operator once the gate is True", 180)
    machine = k.json("get", "machine", nodes[0])
    assert any(c["type"] == "LogCollectionReady" and c["status"] == "True" for c in machine["status"]["conditions"])
    wait_for(lambda: len(running(k, "demo", "app=web")) == 4, "default web Deployment running", 180)

    # kubectl create deployment / scale / rollout status
    k.run("create", "namespace", "shop")
    k.run("create", "deployment", "cart", "--image=nginx:1.27", "--replicas=3", "-n", "shop")
    k.run("rollout", "status", "deployment/cart", "-n", "shop", "--timeout=90s")
    k.run("scale", "deployment/cart", "--replicas=5", "-n", "shop")
    k.run("rollout", "status", "deployment/cart", "-n", "shop", "--timeout=90s")
    assert len(running(k, "shop", "app=cart")) == 5
    wide = k.run("get", "pods", "-n", "shop", "-o", "wide").stdout
    assert "NODE" in wide and any(n in wide for n in nodes)

    # a new image, then rollout undo back to revision 1's template (as revision 3)
    k.run("set", "image", "deployment/cart", "nginx=nginx:1.28", "-n", "shop")
    k.run("rollout", "status", "deployment/cart", "-n", "shop", "--timeout=120s")
    assert {p["spec"]["containers"][0]["image"] for p in running(k, "shop", "app=cart")} == {"nginx:1.28"}
    history = k.run("rollout", "history", "deployment/cart", "-n", "shop").stdout
    assert "1" in history and "2" in history
    k.run("rollout", "undo", "deployment/cart", "-n", "shop")
    k.run("rollout", "status", "deployment/cart", "-n", "shop", "--timeout=120s")
    d = k.json("get", "deployment", "cart", "-n", "shop")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in running(k, "shop", "app=cart")} == {"nginx:1.27"}
             and len(running(k, "shop", "app=cart")) == 5, "pods back on nginx:1.27")

    # bad input: a template that does not match the selector is refused at admission (422, kube's words)
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "shop"},
           "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
               "metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    out = subprocess.run([*k.argv, "apply", "-f", "-"], input=json.dumps(bad), capture_output=True, text=True,
                         timeout=30, env={**os.environ, "KUBECONFIG": ""})
    assert out.returncode != 0 and "`selector` does not match template `labels`" in out.stderr

    # a pod that fits no node: PodScheduled=False with the scheduler's reason, and an Event; nothing crashes
    k.run("run", "huge", "--image=nginx", "-n", "shop", "--overrides",
          json.dumps({"spec": {"containers": [{"name": "huge", "image": "nginx",
                                               "resources": {"requests": {"cpu": "1000"}}}]}}))
    pod = wait_for(lambda: next((p for p in [k.json("get", "pod", "huge", "-n", "shop")]
                                 if any(c["type"] == "PodScheduled" and c["status"] == "False"
                                        for c in p["status"].get("conditions") or [])), None), "Unschedulable")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["reason"] == "Unschedulable" and f"0/{NODES} nodes are available" in cond["message"]
    assert "FailedScheduling" in k.run("describe", "pod", "huge", "-n", "shop").stdout

    # kubectl drain with a PodDisruptionBudget that refuses, then allows
    k.run("create", "pdb", "cart", "-n", "shop", "--selector=app=cart", "--min-available=5")
    wait_for(lambda: k.json("get", "pdb", "cart", "-n", "shop").get("status", {}).get("currentHealthy") == 5,
             "PDB status")
    victim = next(p["spec"]["nodeName"] for p in running(k, "shop", "app=cart"))
    refused = k.run("drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=12s",
                    check=False)
    assert refused.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget" in refused.stdout + refused.stderr
    assert k.json("get", "node", victim)["spec"].get("unschedulable") is True  # drain cordoned it
    k.run("patch", "pdb", "cart", "-n", "shop", "--type=merge", "-p", '{"spec":{"minAvailable":4}}')
    k.run("drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=120s")
    wait_for(lambda: len(ps := running(k, "shop", "app=cart")) == 5 and all(p["spec"]["nodeName"] != victim
                                                                             for p in ps),
             "cart pods running elsewhere after the drain", 180)
    k.run("uncordon", victim)
