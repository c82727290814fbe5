"""Pod priority end to end: PriorityClasses and the API server's Priority admission, and the scheduler's
preemption through the real API server, scheduler, controller-manager and simulated kubelets, read back
with kubectl as a person would."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kokpit._lib.podutil import parse_quantity
from kokpit.client import EVENT, NODE, POD, ApiError, Client, Kind
from kokpit.controllermanager._common import DEPLOYMENT

from .conftest import ControlPlane, eventually
from .test_workloads import running_pods

Obj = dict[str, Any]
PC = Kind("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False)


async def _kubectl(kubectl_bin: str, srv: Any, *args: str) -> str:
    done = await asyncio.to_thread(subprocess.run, [kubectl_bin, "--kubeconfig", str(srv.kubeconfig), *args],
                                   capture_output=True, text=True, check=True)
    return done.stdout


async def _class(c: Client, name: str, value: int, **extra: Any) -> None:
    try:
        await c.create(PC, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                            "value": value, **extra})
    except ApiError as e:
        if e.code != 409:
            raise


async def test_priority_admission_resolves_and_refuses(shared_apiserver: Any, kubectl_bin: str) -> None:
    c = Client.from_kubeconfig(shared_apiserver.kubeconfig)
    try:
        await _class(c, "adm-high", 5000, description="test")
        created = await c.create(POD, {"metadata": {"name": "adm-a"}, "spec": {
            "priorityClassName": "adm-high", "containers": [{"name": "c", "image": "x"}]}}, "default")
        assert created["spec"]["priority"] == 5000 and created["spec"]["preemptionPolicy"] == "PreemptLowerPriority"
        plain = await c.create(POD, {"metadata": {"name": "adm-b"}, "spec": {
            "containers": [{"name": "c", "image": "x"}]}}, "default")
        assert plain["spec"]["priority"] == 0  # no global default class: 0
        with pytest.raises(ApiError) as e:
            await c.create(POD, {"metadata": {"name": "adm-c"}, "spec": {
                "priorityClassName": "nope", "containers": [{"name": "c", "image": "x"}]}}, "default")
        assert e.value.code == 403 and "no PriorityClass with name nope was found" in str(e.value)
        with pytest.raises(ApiError) as e:
            await c.create(POD, {"metadata": {"name": "adm-d"}, "spec": {
                "priorityClassName": "adm-high", "priority": 7, "containers": [{"name": "c", "image": "x"}]}},
                "default")
        assert e.value.code == 403 and "must not be provided in pod spec" in str(e.value)
        with pytest.raises(ApiError) as e:
            await _class(c, "system-mine", 10)
        assert e.value.code == 422 and "reserved" in str(e.value)
        with pytest.raises(ApiError) as e:
            await _class(c, "too-high", 2_000_000_000)
        assert e.value.code == 422 and "maximum allowed value of a user defined priority is 1000000000" in str(e.value)
        # kubectl sees the system classes kube ships next to the user's
        out = await _kubectl(kubectl_bin, shared_apiserver, "get", "priorityclass")
        lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
        assert out.split()[:3] == ["NAME", "VALUE", "GLOBAL-DEFAULT"]
        assert lines["system-node-critical"][1] == "2000001000" and lines["adm-high"][1:3] == ["5000", "false"]
    finally:
        for n in ("adm-a", "adm-b"):
            await c.delete(POD, n, "default", grace_period_seconds=0)
        await c.close()


async def test_high_priority_pod_preempts_and_the_victim_waits(plane: Callable[..., Awaitable[ControlPlane]],
                                                               namespace: str, kubectl_bin: str,
                                                               shared_apiserver: Any) -> None:
    cp = await plane(nodes=2, controllers=["replicaset", "deployment"])
    c, ns = cp.client, namespace
    await _class(c, "pre-low", 10)
    await _class(c, "pre-high", 1000)
    target = cp.nodes[0]
    alloc = (await c.get(NODE, target))["status"]["allocatable"]["cpu"]
    whole = f"{int(parse_quantity(alloc) * 1000)}m"  # the pod asks for all the node has
    pin = {"kubernetes.io/hostname": target}
    await c.create(DEPLOYMENT, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "filler"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "filler"}}, "template": {
            "metadata": {"labels": {"app": "filler"}}, "spec": {
                "priorityClassName": "pre-low", "nodeSelector": pin,
                "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": whole}}}]}}}}, ns)
    victim = (await eventually(lambda: running_pods(c, ns, "app=filler"), lambda ps: len(ps) == 1,
                               what="filler running"))[0]
    high = await c.create(POD, {"metadata": {"name": "urgent"}, "spec": {
        "priorityClassName": "pre-high", "nodeSelector": pin,
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": whole}}}]}}, ns)
    urgent = await eventually(lambda: c.get(POD, "urgent", ns), lambda p: p["spec"].get("nodeName") == target
                              and p["status"].get("phase") == "Running", what="the high-priority pod runs")
    assert urgent["status"]["nominatedNodeName"] == target
    name = victim["metadata"]["name"]
    evs = await eventually(lambda: c.list(EVENT, ns, field_selector=f"involvedObject.name={name}"),
                           lambda r: any(e["reason"] == "Preempted" for e in r.items), what="Preempted event")
    ev = next(e for e in evs.items if e["reason"] == "Preempted")
    assert ev["message"] == f"Preempted by pod {high['metadata']['uid']} on node {target}"
    assert ev["source"]["component"] == "default-scheduler"
    # the Deployment replaces its pod, which has no lower-priority pod to preempt: it waits and says why
    repl = await eventually(lambda: c.list(POD, ns, label_selector="app=filler"), lambda r: any(
        p["metadata"]["name"] != name and any(x["type"] == "PodScheduled" and x["status"] == "False"
                                              for x in p["status"].get("conditions") or []) for p in r.items),
        what="replacement pending")
    waiting = next(p for p in repl.items if p["metadata"]["name"] != name)
    cond = next(x for x in waiting["status"]["conditions"] if x["type"] == "PodScheduled")
    assert cond["message"] == ("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node "
                               "affinity/selector. preemption: 0/2 nodes are available: 1 No preemption victims "
                               "found for incoming pod, 1 Preemption is not helpful for scheduling.")
    # kubectl get pods -o wide: the NOMINATED NODE column, as kube prints it
    out = await _kubectl(kubectl_bin, shared_apiserver, "get", "pods", "-n", ns, "-o", "wide")
    header, *rows = out.splitlines()
    assert "NOMINATED NODE" in header
    col = header.index("NOMINATED NODE")
    row = next(r for r in rows if r.startswith("urgent "))
    assert row[col:].split()[0] == target
    assert json.dumps(urgent["spec"]).count('"priority": 1000') == 1


async def test_the_global_default_class_is_followed_as_classes_change(apiserver: Any) -> None:
    """Admission remembers the global default PriorityClass between Pod creates and forgets it on any
    PriorityClass write: a default created, refused a second time, deleted and replaced is each seen by
    the very next Pod."""
    c = Client.from_kubeconfig(apiserver.kubeconfig)

    async def pod(name: str) -> Obj:
        created: Obj = await c.create(POD, {"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": "x"}]}}, "default")
        return created

    try:
        assert (await pod("gd-0"))["spec"]["priority"] == 0  # remembered: no default
        await _class(c, "gd-one", 300, globalDefault=True)
        spec = (await pod("gd-1"))["spec"]
        assert spec["priority"] == 300 and spec["priorityClassName"] == "gd-one"
        with pytest.raises(ApiError) as e:
            await _class(c, "gd-two", 100, globalDefault=True)
        assert e.value.code == 403 and "gd-one is already marked as default" in str(e.value)
        await c.delete(PC, "gd-one")
        spec = (await pod("gd-2"))["spec"]
        assert spec["priority"] == 0 and "priorityClassName" not in spec
        await _class(c, "gd-two", 100, globalDefault=True)
        assert (await pod("gd-3"))["spec"]["priority"] == 100
    finally:
        await c.close()
