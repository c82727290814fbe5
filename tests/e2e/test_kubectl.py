"""kubectl 1.37 against the embedded API server: apply, get, patch, label, edit, describe, discovery.

These are the commands users type first; each test runs the real binary and asserts what it prints or what
the server stored afterwards, so a server that only looks right to our own client fails here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.apiserver.rbac_admission import ROOT_CA
from kokpit.apiserver.testing import ApiServerProcess

from .conftest import Kubectl, table, unique

pytestmark = pytest.mark.e2e


def cm(name: str, ns: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def write(path: Path, obj: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def pod(name: str, ns: str, node: str | None = None, labels: dict[str, str] | None = None,
        containers: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": "busybox"} for i in range(containers)]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}


def node(name: str, ready: str | None = "True", labels: dict[str, str] | None = None,
         version: str = "v1.37.0") -> dict[str, Any]:
    status: dict[str, Any] = {"nodeInfo": {
        "kubeletVersion": version, "architecture": "amd64", "operatingSystem": "linux", "osImage": "Debian",
        "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://2.0", "bootID": "", "machineID": "",
        "systemUUID": "", "kubeProxyVersion": ""}}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "m",
                                 "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "status": status}


def deployment(name: str, ns: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


# ---------------------------------------------------------------------------------------------------- apply
def test_apply_client_side_configmap(kubectl: Kubectl, ns: str, tmp_path: Path) -> None:
    f = tmp_path / "cm.yaml"
    assert "configmap/c1 created" in kubectl.out("apply", "-f", write(f, cm("c1", ns, {"a": "1", "b": "2"},
                                                                                    {"team": "x"})))
    got = kubectl.json("get", "cm", "c1", "-n", ns)
    last = json.loads(got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["data"] == {"a": "1", "b": "2"}
    # someone else adds a key: a three-way merge must keep it
    kubectl.out("patch", "cm", "c1", "-n", ns, "-p", '{"data":{"other":"kept"}}')
    # change a, drop b and the label, add c
    out = kubectl.out("apply", "-f", write(f, cm("c1", ns, {"a": "10", "c": "3"})))
    assert "configmap/c1 configured" in out
    got = kubectl.json("get", "cm", "c1", "-n", ns)
    assert got["data"] == {"a": "10", "c": "3", "other": "kept"}
    assert "team" not in got["metadata"].get("labels", {})
    last = json.loads(got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["data"] == {"a": "10", "c": "3"}
    # unchanged file: nothing to do
    assert "configmap/c1 unchanged" in kubectl.out("apply", "-f", str(f))
    # the same apply through -v=6 uses a strategic merge patch for a built-in kind
    f.write_text(yaml.safe_dump(cm("c1", ns, {"a": "11", "c": "3"})))
    log = kubectl.run("apply", "-f", str(f), "-v=6").stderr
    assert "PATCH" in log and "fieldManager=kubectl-client-side-apply" in log
    assert kubectl.json("get", "cm", "c1", "-n", ns)["data"]["a"] == "11"


def test_apply_server_side_conflicts(kubectl: Kubectl, ns: str, tmp_path: Path) -> None:
    f = tmp_path / "cm.yaml"
    out = kubectl.out("apply", "--server-side", "-f", write(f, cm("s1", ns, {"a": "1", "b": "2"})))
    assert "configmap/s1 serverside-applied" in out
    got = kubectl.json("get", "cm", "s1", "-n", ns, "--show-managed-fields")
    managers = {m["manager"]: m for m in got["metadata"]["managedFields"]}
    assert managers["kubectl"]["operation"] == "Apply"
    assert set(managers["kubectl"]["fieldsV1"]["f:data"]) >= {"f:a", "f:b"}
    # another manager wants a different value of a field kubectl owns
    g = tmp_path / "other.yaml"
    err = kubectl.fail("apply", "--server-side", "--field-manager=other", "-f",
                       write(g, cm("s1", ns, {"a": "changed"})))
    assert "conflict" in err.lower() and "kubectl" in err and ".data.a" in err
    assert kubectl.json("get", "cm", "s1", "-n", ns)["data"]["a"] == "1"
    # same value is shared ownership, not a conflict
    kubectl.out("apply", "--server-side", "--field-manager=sharer", "-f", write(g, cm("s1", ns, {"b": "2"})))
    out = kubectl.out("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f",
                      write(g, cm("s1", ns, {"a": "changed"})))
    assert "serverside-applied" in out
    got = kubectl.json("get", "cm", "s1", "-n", ns, "--show-managed-fields")
    assert got["data"] == {"a": "changed", "b": "2"}
    managers = {m["manager"]: m for m in got["metadata"]["managedFields"]}
    assert "f:a" in managers["other"]["fieldsV1"]["f:data"]
    assert "f:a" not in managers["kubectl"]["fieldsV1"]["f:data"]
    assert "f:b" in managers["sharer"]["fieldsV1"]["f:data"]
    # kubectl drops b from its config: b stays because "sharer" still owns it; kubectl's a is gone already
    kubectl.out("apply", "--server-side", "-f", write(f, cm("s1", ns, {"z": "9"})))
    assert kubectl.json("get", "cm", "s1", "-n", ns)["data"] == {"a": "changed", "b": "2", "z": "9"}


def test_apply_deployment_merges_containers_by_name(kubectl: Kubectl, ns: str, tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    base = [{"name": "web", "image": "nginx:1"}, {"name": "side", "image": "busybox:1"}]
    kubectl.out("apply", "-f", write(f, deployment("d1", ns, base)))
    # someone else adds env to "web" with a strategic patch (merge key: name)
    kubectl.out("patch", "deployment", "d1", "-n", ns, "-p",
                '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"E","value":"1"}]}]}}}}')
    # the file changes side's image and drops nothing
    kubectl.out("apply", "-f", write(f, deployment("d1", ns, [{"name": "web", "image": "nginx:1"},
                                                                {"name": "side", "image": "busybox:2"}])))
    got = kubectl.json("get", "deployment", "d1", "-n", ns)
    cs = {c["name"]: c for c in got["spec"]["template"]["spec"]["containers"]}
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["web", "side"]
    assert cs["side"]["image"] == "busybox:2"
    assert cs["web"]["env"] == [{"name": "E", "value": "1"}]
    assert got["metadata"]["generation"] >= 3
    # dropping "side" from the file removes it
    kubectl.out("apply", "-f", write(f, deployment("d1", ns, [{"name": "web", "image": "nginx:1"}])))
    got = kubectl.json("get", "deployment", "d1", "-n", ns)
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["web"]
    # server-side apply: the containers list is associative, another manager adds its own container
    g = tmp_path / "ssa.yaml"
    kubectl.out("apply", "--server-side", "-f", write(g, deployment("d2", ns, base)))
    kubectl.out("apply", "--server-side", "--field-manager=injector", "-f",
                write(g, deployment("d2", ns, [{"name": "proxy", "image": "envoy:1"}])))
    names = [c["name"] for c in kubectl.json("get", "deployment", "d2", "-n", ns)
             ["spec"]["template"]["spec"]["containers"]]
    assert sorted(names) == ["proxy", "side", "web"]
    err = kubectl.fail("apply", "--server-side", "--field-manager=injector", "-f",
                       write(g, deployment("d2", ns, [{"name": "web", "image": "nginx:evil"}])))
    assert "conflict" in err.lower()


# ---------------------------------------------------------------------------------------------------- get
def test_get_nodes_table(kubectl: Kubectl) -> None:
    ready, notready, nocond, cordoned = (unique(p) for p in ("ready", "notready", "nocond", "cordoned"))
    kubectl.create(node(ready, "True", {"node-role.kubernetes.io/control-plane": ""}),
                   node(notready, "False", {"node-role.kubernetes.io/worker": ""}, version="v1.36.2"),
                   node(nocond, None), node(cordoned, "True"))
    assert kubectl.out("cordon", cordoned).strip() == f"node/{cordoned} cordoned"
    rows = {r["NAME"]: r for r in table(kubectl.out("get", "nodes", ready, notready, nocond, cordoned))}
    assert list(table(kubectl.out("get", "nodes", ready))[0]) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[ready]["STATUS"] == "Ready" and rows[ready]["ROLES"] == "control-plane"
    assert rows[notready]["STATUS"] == "NotReady" and rows[notready]["ROLES"] == "worker"
    assert rows[notready]["VERSION"] == "v1.36.2" and rows[ready]["VERSION"] == "v1.37.0"
    assert rows[nocond]["STATUS"] == "Unknown" and rows[nocond]["ROLES"] == "<none>"
    assert rows[cordoned]["STATUS"] == "Ready,SchedulingDisabled"
    assert kubectl.json("get", "node", cordoned)["spec"]["unschedulable"] is True
    assert kubectl.out("uncordon", cordoned).strip() == f"node/{cordoned} uncordoned"
    assert "unschedulable" not in kubectl.json("get", "node", cordoned).get("spec", {})
    assert table(kubectl.out("get", "node", cordoned))[0]["STATUS"] == "Ready"
    wide = table(kubectl.out("get", "node", ready, "-o", "wide"))[0]
    assert wide["OS-IMAGE"] == "Debian" and wide["CONTAINER-RUNTIME"] == "containerd://2.0"


def test_get_pods_table(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(pod("pending", ns, containers=2), pod("running", ns, containers=2))
    status = {"status": {"phase": "Running", "containerStatuses": [
        {"name": "c0", "ready": True, "restartCount": 4, "image": "busybox", "imageID": "",
         "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
        {"name": "c1", "ready": False, "restartCount": 1, "image": "busybox", "imageID": "",
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    kubectl.out("patch", "pod", "running", "-n", ns, "--subresource=status", "--type=merge",
                "-p", json.dumps(status))
    out = kubectl.out("get", "pods", "-n", ns)
    assert out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {r["NAME"]: r for r in table(out)}
    assert rows["pending"]["READY"] == "0/2" and rows["pending"]["STATUS"] == "Pending"
    assert rows["pending"]["RESTARTS"] == "0"
    assert rows["running"]["READY"] == "1/2"
    assert rows["running"]["STATUS"] == "CrashLoopBackOff"
    assert rows["running"]["RESTARTS"] == "5"


def test_get_other_tables(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("three", ns, {"a": "1", "b": "2", "c": "3"}),
                   {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "lock", "namespace": ns},
                    "spec": {"holderIdentity": "me-123", "leaseDurationSeconds": 15}},
                   {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": ns},
                    "involvedObject": {"kind": "ConfigMap", "name": "three", "namespace": ns},
                    "reason": "Tested", "message": "hello events", "type": "Warning",
                    "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
    row = table(kubectl.out("get", "ns", ns))[0]
    assert row["NAME"] == ns and row["STATUS"] == "Active"
    row = table(kubectl.out("get", "cm", "three", "-n", ns))[0]
    assert row["DATA"] == "3"
    row = table(kubectl.out("get", "leases", "-n", ns))[0]
    assert row["NAME"] == "lock" and row["HOLDER"] == "me-123"
    row = table(kubectl.out("get", "events", "-n", ns))[0]
    assert (row["TYPE"], row["REASON"], row["OBJECT"], row["MESSAGE"]) == (
        "Warning", "Tested", "configmap/three", "hello events")


def test_get_output_formats_and_selectors(kubectl: Kubectl, ns: str) -> None:
    tiers = {"a": "web", "b": "web", "c": "db", "d": "cache", "e": None}
    kubectl.create(*(cm(n, ns, {"n": n}, {"tier": t} if t else {"other": "x"}) for n, t in tiers.items()))
    assert kubectl.out("get", "cm", "a", "-n", ns, "-o", "name").strip() == "configmap/a"
    y = yaml.safe_load(kubectl.out("get", "cm", "a", "-n", ns, "-o", "yaml"))
    assert y["data"] == {"n": "a"} and y["metadata"]["labels"] == {"tier": "web"}
    names = kubectl.out("get", "cm", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}").split()
    assert [n for n in names if n != ROOT_CA] == ["a", "b", "c", "d", "e"]
    assert kubectl.out("get", "cm", "c", "-n", ns, "-o", "jsonpath={.data.n}") == "c"
    lst = kubectl.json("get", "cm", "-n", ns)
    assert lst["kind"] == "List" and len(lst["items"]) == 5 + 1  # and the namespace's root CA ConfigMap

    def names(*sel: str) -> list[str]:
        out = kubectl.out("get", "cm", "-n", ns, *sel, "-o", "jsonpath={.items[*].metadata.name}").split()
        return sorted(n for n in out if n != ROOT_CA)

    assert names("-l", "tier=web") == ["a", "b"]
    assert names("-l", "tier==db") == ["c"]
    assert names("-l", "tier!=web") == ["c", "d", "e"]
    assert names("-l", "tier in (db,cache)") == ["c", "d"]
    assert names("-l", "tier notin (db,cache)") == ["a", "b", "e"]
    assert names("-l", "tier") == ["a", "b", "c", "d"]
    assert names("-l", "!tier") == ["e"]
    assert names("-l", "tier,tier!=web") == ["c", "d"]
    assert names("--field-selector", "metadata.name=c") == ["c"]
    assert names("--field-selector", "metadata.name!=c,metadata.name!=a") == ["b", "d", "e"]
    # -A lists across namespaces with a NAMESPACE column
    rows = [r for r in table(kubectl.out("get", "cm", "-A", "-l", "tier=db")) if r["NAMESPACE"] == ns]
    assert [r["NAME"] for r in rows] == ["c"]
    # pagination: --chunk-size=2 must fetch 3 pages and still print all six (five and the root CA's)
    res = kubectl.run("get", "cm", "-n", ns, "--chunk-size=2", "-v=6")
    assert [r["NAME"] for r in table(res.stdout)] == ["a", "b", "c", "d", "e", ROOT_CA]
    gets = [ln for ln in res.stderr.splitlines() if "configmaps" in ln and "limit=2" in ln]
    assert len(gets) == 3, gets
    assert sum("continue=" in ln for ln in gets) == 2


def test_get_pods_field_selector_node(kubectl: Kubectl, ns: str) -> None:
    n1, n2 = unique("fs-node"), unique("fs-node")
    kubectl.create(node(n1, "False"), node(n2, "False"))
    kubectl.create(pod("p1", ns, n1), pod("p2", ns, n1), pod("p3", ns, n2), pod("p4", ns))
    out = kubectl.out("get", "pods", "-A", "--field-selector", f"spec.nodeName={n1}", "-o", "name")
    assert sorted(out.split()) == ["pod/p1", "pod/p2"]
    out = kubectl.out("get", "pods", "-n", ns, "--field-selector", "spec.nodeName=", "-o", "name")
    assert out.split() == ["pod/p4"]
    rows = table(kubectl.out("get", "pods", "-n", ns, "-o", "wide", "--field-selector", f"spec.nodeName={n2}"))
    assert [(r["NAME"], r["NODE"]) for r in rows] == [("p3", n2)]
    err = kubectl.fail("get", "pods", "-n", ns, "--field-selector", "spec.bogus=1")
    assert "field label not supported" in err or "not a known field selector" in err


# ---------------------------------------------------------------------------------------------------- describe
def test_describe_pod_and_node_show_events(kubectl: Kubectl, ns: str) -> None:
    n = unique("desc-node")
    kubectl.create(node(n, "True"))
    kubectl.create(pod("web", ns, n))
    puid = kubectl.json("get", "pod", "web", "-n", ns)["metadata"]["uid"]
    nuid = kubectl.json("get", "node", n)["metadata"]["uid"]
    kubectl.create(
        {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": ns},
         "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": ns, "uid": puid},
         "reason": "Pulled", "message": "Pulled image busybox for the test", "type": "Normal", "count": 3,
         "source": {"component": "kubelet", "host": n},
         "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"},
        {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "other.1", "namespace": ns},
         "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "other", "namespace": ns},
         "reason": "Unrelated", "message": "not about web", "type": "Normal",
         "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"},
        {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{n}.1", "namespace": "default"},
         "involvedObject": {"kind": "Node", "name": n, "uid": nuid},
         "reason": "NodeHasSufficientMemory", "message": f"Node {n} status is now: NodeHasSufficientMemory",
         "type": "Normal", "source": {"component": "kubelet", "host": n},
         "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
    out = kubectl.out("describe", "pod", "web", "-n", ns)
    assert re.search(rf"^Node:\s+{n}/", out, re.M)
    events = out.split("Events:")[1]
    assert "Pulled" in events and "Pulled image busybox for the test" in events and "(x3 over" in events
    assert "kubelet" in events and "Unrelated" not in events
    out = kubectl.out("describe", "node", n)
    assert "Ready" in out and "KubeletReady" in out
    assert ns in out.split("Non-terminated Pods:")[1]
    events = out.split("Events:")[-1]
    assert "NodeHasSufficientMemory" in events and f"Node {n} status is now" in events


# ---------------------------------------------------------------------------------------------------- edit
EDITOR = r"""
import os, re, sys
path = sys.argv[-1]
text = open(path).read()
if os.environ.get("EDIT_LOG"):
    open(os.environ["EDIT_LOG"], "a").write(text + "\n=====\n")
new = re.sub(os.environ["EDIT_FROM"], os.environ["EDIT_TO"], text, count=1, flags=re.M)
open(path, "w").write(new)
"""


@pytest.fixture
def editor(tmp_path: Path) -> str:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    return f"{sys.executable} {script}"


def test_edit_configmap(kubectl: Kubectl, ns: str, editor: str, tmp_path: Path) -> None:
    kubectl.create(cm("ed", ns, {"color": "blue", "keep": "me"}))
    out = kubectl.out("edit", "cm", "ed", "-n", ns,
                      env={"KUBE_EDITOR": editor, "EDIT_FROM": r"^  color: blue$", "EDIT_TO": "  color: green"})
    assert "configmap/ed edited" in out
    got = kubectl.json("get", "cm", "ed", "-n", ns, "--show-managed-fields")
    assert got["data"] == {"color": "green", "keep": "me"}
    assert "kubectl-edit" in {m["manager"] for m in got["metadata"]["managedFields"]}
    # no change → "Edit cancelled"
    res = kubectl.run("edit", "cm", "ed", "-n", ns, check=False,
                      env={"KUBE_EDITOR": editor, "EDIT_FROM": "^nomatch$", "EDIT_TO": "x"})
    assert "Edit cancelled, no changes made." in res.stdout + res.stderr
    # an invalid edit: a label value with spaces is rejected; kubectl reopens the editor with the server's
    # causes as comments (our editor then changes nothing, so kubectl gives up)
    log = tmp_path / "edit.log"
    res = kubectl.run("edit", "cm", "ed", "-n", ns, check=False,
                      env={"KUBE_EDITOR": editor, "EDIT_FROM": r"^  name: ed$", "EDIT_LOG": str(log),
                           "EDIT_TO": "  labels:\n    bad: not a valid value!\n  name: ed"})
    assert res.returncode != 0
    assert 'configmaps "ed" is invalid' in res.stderr and "no valid changes were saved" in res.stderr
    second = log.read_text().split("=====")[1]
    assert "# * metadata.labels: Invalid value" in second, second
    assert "labels" not in kubectl.json("get", "cm", "ed", "-n", ns)["metadata"]


# ---------------------------------------------------------------------------------------------------- patch
def test_patch_types(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(deployment("pd", ns, [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]))
    # strategic (default): containers merge by name
    out = kubectl.out("patch", "deployment", "pd", "-n", ns, "-p",
                      '{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"b:2"}]}}}}')
    assert "deployment.apps/pd patched" in out
    cs = kubectl.json("get", "deploy", "pd", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in cs] == [("a", "a:1"), ("b", "b:2")]
    # strategic $patch: delete directive
    kubectl.out("patch", "deployment", "pd", "-n", ns, "-p",
                '{"spec":{"template":{"spec":{"containers":[{"name":"a","$patch":"delete"}]}}}}')
    cs = kubectl.json("get", "deploy", "pd", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["b"]
    # merge: lists are replaced wholesale, null removes
    kubectl.out("patch", "deployment", "pd", "-n", ns, "--type=merge", "-p",
                '{"metadata":{"labels":{"x":"1"}},"spec":{"template":{"spec":{"containers":'
                '[{"name":"m","image":"m:1"}]}}}}')
    got = kubectl.json("get", "deploy", "pd", "-n", ns)
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["m"]
    kubectl.out("patch", "deployment", "pd", "-n", ns, "--type=merge", "-p", '{"metadata":{"labels":{"x":null}}}')
    assert "x" not in kubectl.json("get", "deploy", "pd", "-n", ns)["metadata"].get("labels", {})
    # json patch, with a passing test op
    kubectl.out("patch", "deployment", "pd", "-n", ns, "--type=json", "-p", json.dumps([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "j", "image": "j:1"}}]))
    got = kubectl.json("get", "deploy", "pd", "-n", ns)
    assert got["spec"]["replicas"] == 3
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["m", "j"]
    rv = got["metadata"]["resourceVersion"]
    # a failing test op changes nothing
    err = kubectl.fail("patch", "deployment", "pd", "-n", ns, "--type=json", "-p", json.dumps([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 7}]))
    assert "test" in err.lower()
    assert kubectl.json("get", "deploy", "pd", "-n", ns)["metadata"]["resourceVersion"] == rv
    # an invalid result of a patch is rejected with the field named
    err = kubectl.fail("patch", "deployment", "pd", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":"x"}}')
    assert "spec.replicas" in err


def test_label_and_annotate(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(cm("l1", ns, {}))
    assert "configmap/l1 labeled" in kubectl.out("label", "cm", "l1", "-n", ns, "env=dev", "tier=web")
    err = kubectl.fail("label", "cm", "l1", "-n", ns, "env=prod")
    assert "already has a value (dev)" in err and "--overwrite" in err
    kubectl.out("label", "cm", "l1", "-n", ns, "env=prod", "--overwrite")
    kubectl.out("label", "cm", "l1", "-n", ns, "tier-")
    assert kubectl.json("get", "cm", "l1", "-n", ns)["metadata"]["labels"] == {"env": "prod"}
    assert kubectl.out("get", "cm", "-n", ns, "-l", "env=prod", "-o", "name").split() == ["configmap/l1"]
    assert "configmap/l1 annotated" in kubectl.out("annotate", "cm", "l1", "-n", ns, "note=hello world", "x=1")
    err = kubectl.fail("annotate", "cm", "l1", "-n", ns, "note=bye")
    assert "--overwrite" in err
    kubectl.out("annotate", "cm", "l1", "-n", ns, "note=bye", "--overwrite")
    kubectl.out("annotate", "cm", "l1", "-n", ns, "x-")
    assert kubectl.json("get", "cm", "l1", "-n", ns)["metadata"]["annotations"] == {"note": "bye"}
    err = kubectl.fail("label", "cm", "l1", "-n", ns, "bad key=1")
    assert "invalid" in err.lower()


# ---------------------------------------------------------------------------------------------------- discovery
def test_version_label(kubectl_bin: str, tmp_path: Path) -> None:
    with ApiServerProcess(tmp_path / "srv", extra_args=["--version-label", "v1.99.1"]) as srv:
        k = Kubectl(kubectl_bin, srv, tmp_path / "home")
        v = json.loads(k.out("version", "-o", "json"))
        assert v["serverVersion"]["gitVersion"] == "v1.99.1"
        assert (v["serverVersion"]["major"], v["serverVersion"]["minor"]) == ("1", "99")
        assert v["clientVersion"]["gitVersion"].startswith("v1.37.")
        assert "Server Version: v1.99.1" in k.out("version")


def test_api_resources_and_explain(kubectl: Kubectl) -> None:
    rows = {(r["NAME"], r["APIVERSION"]): r for r in table(kubectl.out("api-resources"))}
    expect = {("pods", "v1"): ("po", "Pod", "true"), ("nodes", "v1"): ("no", "Node", "false"),
              ("configmaps", "v1"): ("cm", "ConfigMap", "true"),
              ("namespaces", "v1"): ("ns", "Namespace", "false"),
              ("deployments", "apps/v1"): ("deploy", "Deployment", "true"),
              ("customresourcedefinitions", "apiextensions.k8s.io/v1"):
                  ("crd,crds", "CustomResourceDefinition", "false"),
              ("leases", "coordination.k8s.io/v1"): ("", "Lease", "true")}
    for key, (short, kind, namespaced) in expect.items():
        r = rows[key]
        assert (r["SHORTNAMES"], r["KIND"], r["NAMESPACED"]) == (short, kind, namespaced), r
    apps = table(kubectl.out("api-resources", "--api-group=apps"))
    assert {r["NAME"] for r in apps} >= {"deployments", "daemonsets", "statefulsets"}
    assert all(r["APIVERSION"] == "apps/v1" for r in apps)
    verbs = kubectl.out("api-resources", "--verbs=list", "--namespaced=false", "-o", "name").split()
    assert "nodes" in verbs and "pods" not in verbs
    out = kubectl.out("explain", "pod.spec.containers")
    assert "KIND:       Pod" in out and "FIELD: containers <[]Container>" in out
    assert "image\t<string>" in out and "List of containers belonging to the pod" in out
    out = kubectl.out("explain", "deploy.spec.replicas")
    assert "FIELD: replicas <integer>" in out


def test_scale_deployment(kubectl: Kubectl, ns: str) -> None:
    kubectl.create(deployment("sc", ns, [{"name": "a", "image": "a:1"}]))
    res = kubectl.run("scale", "deployment", "sc", "-n", ns, "--replicas=4", "-v=6")
    assert "deployment.apps/sc scaled" in res.stdout
    assert "PATCH" in res.stderr and f"/namespaces/{ns}/deployments/sc/scale" in res.stderr
    assert kubectl.json("get", "deploy", "sc", "-n", ns)["spec"]["replicas"] == 4
    err = kubectl.fail("scale", "deployment", "sc", "-n", ns, "--current-replicas=3", "--replicas=5")
    assert "Expected replicas to be 3, was 4" in err
    kubectl.out("scale", "deployment", "sc", "-n", ns, "--current-replicas=4", "--replicas=0")
    scale = kubectl.json("get", "deploy", "sc", "-n", ns, "--subresource=scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 0
    assert scale["status"]["selector"] == "app=sc"


def test_replace_wait_and_misc_output(kubectl: Kubectl, ns: str, tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    kubectl.out("create", "-f", write(f, cm("r1", ns, {"a": "1"}, {"grp": "g"})))
    kubectl.create(cm("r2", ns, {"b": "1"}, {"grp": "g"}), cm("r3", ns, {}, {"grp": "h"}))
    uid = kubectl.json("get", "cm", "r1", "-n", ns)["metadata"]["uid"]
    assert "configmap/r1 replaced" in kubectl.out("replace", "-f", write(f, cm("r1", ns, {"a": "2"}, {"grp": "g"})))
    out = kubectl.out("wait", "--for=jsonpath={.data.a}=2", "cm/r1", "-n", ns, "--timeout=10s")
    assert "configmap/r1 condition met" in out
    rows = table(kubectl.out("get", "cm", "r1", "-n", ns, "-o", "custom-columns=NAME:.metadata.name,A:.data.a"))
    assert rows == [{"NAME": "r1", "A": "2"}]
    rows = table(kubectl.out("get", "cm", "-n", ns, "--show-labels", "--sort-by=.metadata.name"))
    assert [(r["NAME"], r["LABELS"]) for r in rows if r["NAME"] != ROOT_CA] == [
        ("r1", "grp=g"), ("r2", "grp=g"), ("r3", "grp=h")]
    # replace --force deletes and recreates: a new uid
    kubectl.out("replace", "--force", "-f", str(f))
    assert kubectl.json("get", "cm", "r1", "-n", ns)["metadata"]["uid"] != uid
    out = kubectl.out("delete", "cm", "-n", ns, "-l", "grp=g")
    assert 'configmap "r1" deleted' in out and 'configmap "r2" deleted' in out
    assert kubectl.out("get", "cm", "-n", ns, "-o", "name").split() == [f"configmap/{ROOT_CA}", "configmap/r3"]
    # dry runs change nothing; diff shows the change and exits 1
    res = kubectl.run("apply", "-f", write(f, cm("r3", ns, {"z": "1"}, {"grp": "h"})), "--dry-run=server",
                      "-o", "json")
    assert json.loads(res.stdout)["data"] == {"z": "1"}
    assert kubectl.json("get", "cm", "r3", "-n", ns).get("data", {}) == {}
    res = kubectl.run("diff", "-f", str(f), check=False)
    assert res.returncode == 1 and "+  z: \"1\"" in res.stdout, res.stdout + res.stderr
