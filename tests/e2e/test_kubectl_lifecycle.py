"""kubectl's long-running and multi-step commands: watch, delete with finalizers, namespace deletion, garbage
collection, cordon/drain through the eviction API.

These exercise the server's watch streams and its controllers (namespace termination, garbage collector)
through the exact request sequences kubectl uses; background kubectl processes are read with deadlines and
always terminated.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kokpit.apiserver.rbac_admission import ROOT_CA

from .conftest import Kubectl, unique, wait_until

pytestmark = pytest.mark.e2e


def cm(name: str, ns: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, **meta},
            "data": data or {}}


# ---------------------------------------------------------------------------------------------------- watch
def test_get_watch_table(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("w0", ns, {"a": "1"}))
    w = kubectl.background("get", "cm", "-n", ns, "-w")
    try:
        w.expect(r"^NAME\s+DATA\s+AGE$")
        w.expect(r"^w0\s+1\s+")
        kubectl.create(cm("w1", ns, {"a": "1", "b": "2"}))
        w.expect(r"^w1\s+2\s+")
        kubectl.out("patch", "cm", "w1", "-n", ns, "--type=merge", "-p", '{"data":{"c":"3"}}')
        w.expect(r"^w1\s+3\s+")
        kubectl.out("delete", "cm", "w0", "-n", ns)
        w.expect(r"^w0\s+1\s+")   # plain -w prints the deleted object's last state
        assert w.running()
    finally:
        w.stop()


def test_get_watch_output_events(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("e0", ns))
    w = kubectl.background("get", "cm", "-n", ns, "-w", "--output-watch-events")
    j = kubectl.background("get", "cm", "-n", ns, "-w", "--output-watch-events", "-o", "json")
    try:
        w.expect(r"^EVENT\s+NAME\s+DATA\s+AGE$")
        w.expect(r"^ADDED\s+e0\s+0\s+")
        j.expect(r'^\{"type":"ADDED"')
        kubectl.create(cm("e1", ns, {"k": "v"}))
        w.expect(r"^ADDED\s+e1\s+1\s+")
        kubectl.out("label", "cm", "e1", "-n", ns, "x=y")
        w.expect(r"^MODIFIED\s+e1\s+1\s+")
        kubectl.out("delete", "cm", "e1", "-n", ns)
        w.expect(r"^DELETED\s+e1\s+1\s+")
        # the JSON form prints one compact event per line with the whole object
        j.expect(r'^\{"type":"DELETED"')
        objs = [o for o in (json.loads(line) for line in j.lines) if o["object"]["metadata"]["name"] != ROOT_CA]
        seq = [(e["type"], e["object"]["metadata"]["name"]) for e in objs]
        assert seq == [("ADDED", "e0"), ("ADDED", "e1"), ("MODIFIED", "e1"), ("DELETED", "e1")]
        assert objs[2]["object"]["metadata"]["labels"] == {"x": "y"}
    finally:
        w.stop()
        j.stop()


def test_get_watch_pods_table_columns(kubectl: Kubectl, ns: str) -> None:
    w = kubectl.background("get", "pods", "-n", ns, "-w")
    try:
        kubectl.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wp", "namespace": ns},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        w.expect(r"^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE$")
        w.expect(r"^wp\s+0/1\s+Pending\s+0\s+")
        kubectl.out("patch", "pod", "wp", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(
            {"status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": True, "restartCount": 2, "image": "busybox", "imageID": "",
                 "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}))
        w.expect(r"^wp\s+1/1\s+Running\s+2\s+")
    finally:
        w.stop()


# ---------------------------------------------------------------------------------------------------- delete
def test_delete_waits_for_finalizers(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("fin", ns, finalizers=["example.com/hold"]))
    d = kubectl.background("delete", "cm", "fin", "-n", ns, "--wait=true", "--timeout=30s")
    try:
        ts = wait_until(lambda: kubectl.json("get", "cm", "fin", "-n", ns)["metadata"].get("deletionTimestamp"),
                        msg="deletionTimestamp")
        assert ts.endswith("Z")
        # kubectl prints "deleted" once the DELETE call returned, then keeps waiting for the object to go
        d.expect(r'configmap "fin" deleted')
        assert d.running(), "kubectl delete returned while a finalizer still holds the object"
        assert kubectl.exists("cm", "fin", "-n", ns)
        kubectl.out("patch", "cm", "fin", "-n", ns, "--type=json",
                    "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
        assert d.wait(20) == 0
        assert not kubectl.exists("cm", "fin", "-n", ns)
    finally:
        d.stop()


def test_delete_namespace_with_contents(kubectl: Kubectl) -> None:
    ns = unique("doomed")
    kubectl.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kubectl.create(cm("a", ns), cm("b", ns), cm("held", ns, finalizers=["example.com/hold"]),
                   {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert 'namespace "' + ns + '" deleted' in kubectl.out("delete", "ns", ns, "--wait=false")
    # the finalizer on "held" keeps the namespace Terminating; everything else goes
    wait_until(lambda: kubectl.out("get", "cm,pods", "-n", ns, "-o", "name").split() == ["configmap/held"],
               msg="namespace contents deleted")
    row = kubectl.out("get", "ns", ns, "--no-headers").split()
    assert row[:2] == [ns, "Terminating"]
    assert kubectl.json("get", "ns", ns)["status"]["phase"] == "Terminating"
    err = kubectl.fail("create", "-f", "-", input=json.dumps(cm("late", ns)))
    assert "because it is being terminated" in err
    kubectl.out("patch", "cm", "held", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kubectl.out("wait", "--for=delete", f"namespace/{ns}", "--timeout=20s")
    assert not kubectl.exists("ns", ns)


def test_garbage_collection_and_orphan(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("owner", ns), cm("owner2", ns))
    uid = kubectl.json("get", "cm", "owner", "-n", ns)["metadata"]["uid"]
    uid2 = kubectl.json("get", "cm", "owner2", "-n", ns)["metadata"]["uid"]

    def ref(name: str, u: str) -> list[dict[str, Any]]:
        return [{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": u}]

    kubectl.create(cm("dep", ns, ownerReferences=ref("owner", uid)),
                   cm("dep2", ns, ownerReferences=ref("owner2", uid2)),
                   cm("unrelated", ns))
    kubectl.out("delete", "cm", "owner", "-n", ns)
    kubectl.out("wait", "--for=delete", "configmap/dep", "-n", ns, "--timeout=20s")
    kubectl.out("delete", "cm", "owner2", "-n", ns, "--cascade=orphan")
    wait_until(lambda: "ownerReferences" not in kubectl.json("get", "cm", "dep2", "-n", ns)["metadata"],
               msg="orphaned dependent loses its ownerReference")
    assert not kubectl.exists("cm", "owner2", "-n", ns)
    assert sorted(kubectl.out("get", "cm", "-n", ns, "-o", "name").split()) == [
        "configmap/dep2", f"configmap/{ROOT_CA}", "configmap/unrelated"]
    # foreground: the owner waits (with the foregroundDeletion finalizer) until its dependents are gone
    kubectl.create(cm("fg", ns))
    fuid = kubectl.json("get", "cm", "fg", "-n", ns)["metadata"]["uid"]
    kubectl.create(cm("fgdep", ns, ownerReferences=[{**ref("fg", fuid)[0], "blockOwnerDeletion": True}]))
    kubectl.out("delete", "cm", "fg", "-n", ns, "--cascade=foreground", "--timeout=20s")
    assert not kubectl.exists("cm", "fgdep", "-n", ns) and not kubectl.exists("cm", "fg", "-n", ns)


# ---------------------------------------------------------------------------------------------------- drain
def evictions_counted(kubectl: Kubectl) -> float:
    status, body = kubectl.server.request("GET", "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="pods/eviction"' in line \
                and 'code="201"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_cordon_and_drain(kubectl: Kubectl, ns: str) -> None:
    node = unique("drain")
    kubectl.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                    "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NotReady",
                                               "message": "no kubelet here",
                                               "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                               "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"containers": [{"name": "a", "image": "agent"}]}}}}
    kubectl.create(ds)
    ds_uid = kubectl.json("get", "ds", "agent", "-n", ns)["metadata"]["uid"]

    def pod(name: str, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
        meta: dict[str, Any] = {"name": name, "namespace": ns}
        if "volumes" in extra:
            spec["volumes"] = extra["volumes"]
        if "owner" in extra:
            meta["ownerReferences"] = [extra["owner"]]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    # (no owner for the plain pods: an ownerReference to a missing owner would be garbage collected at once)
    kubectl.create(pod("web-1"), pod("web-2"), pod("scratch", volumes=[{"name": "tmp", "emptyDir": {}}]),
                   pod("agent-x", owner={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                         "uid": ds_uid, "controller": True}))
    other = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": ns},
             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    kubectl.create(other)
    # without the flags kubectl refuses (DaemonSet pod, emptyDir, unmanaged pods) and evicts nothing
    err = kubectl.fail("drain", node, "--timeout=10s")
    assert "cannot delete DaemonSet-managed Pods" in err and f"{ns}/agent-x" in err
    assert kubectl.json("get", "node", node)["spec"]["unschedulable"] is True
    assert sorted(kubectl.out("get", "pods", "-n", ns, "-o", "name").split()) == [
        "pod/agent-x", "pod/elsewhere", "pod/scratch", "pod/web-1", "pod/web-2"]
    evicted_before = evictions_counted(kubectl)
    res = kubectl.run("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=30s",
                      "-v=6")
    assert f"node/{node} drained" in res.stdout
    assert f"ignoring DaemonSet-managed Pods: {ns}/agent-x" in res.stderr
    evictions = [ln for ln in res.stderr.splitlines() if "POST" in ln and "/eviction" in ln]
    assert sorted(ln.split("/pods/")[1].split("/")[0] for ln in evictions) == ["scratch", "web-1", "web-2"]
    assert all('status="201' in ln for ln in evictions), evictions
    assert all(f"/namespaces/{ns}/pods/" in ln for ln in evictions)
    left = kubectl.out("get", "pods", "-n", ns, "-o", "name").split()
    assert sorted(left) == ["pod/agent-x", "pod/elsewhere"]
    assert kubectl.out("get", "node", node, "--no-headers").split()[1] == "NotReady,SchedulingDisabled"
    # the server's metrics counted exactly these evictions
    assert evictions_counted(kubectl) - evicted_before == 3
    kubectl.out("uncordon", node)
    assert "unschedulable" not in kubectl.json("get", "node", node)["spec"]
