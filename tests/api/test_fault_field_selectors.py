"""NodeFault and MaintenanceFlow field selectors, as kubectl and watchers use them (issue 15: "consumers
watch NodeFault with label/field selectors"): the generated CRDs declare ``selectableFields`` (kube 1.32 GA)
and the embedded API server serves them for list and watch — including the ADDED/DELETED a watch filtered on
``status.state`` sees when a fault starts or stops matching — and refuses a CRD whose selectable field is not
a scalar of its schema."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import subprocess
import threading
from typing import Any

import pytest

from kokpit.api import crd_for, install_crds
from kokpit.api.fault import NodeFault, fault_labels, fault_name
from kokpit.api.maintenance import MaintenanceFlow
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CRD, AlreadyExistsError, ApiError, Client, Kind

NODEFAULT = Kind("kokpit.io", "v1alpha1", "NodeFault", "nodefaults", namespaced=False)
FAULTTYPE = Kind("kokpit.io", "v1alpha1", "FaultType", "faulttypes", namespaced=False)
FLOW = Kind("kokpit.io", "v1alpha1", "MaintenanceFlow", "maintenanceflows", namespaced=False)
NODE = Kind("", "v1", "Node", "nodes", namespaced=False)


def test_crds_declare_selectable_fields() -> None:
    nf = crd_for(NodeFault)["spec"]["versions"][0]["selectableFields"]
    assert {".spec.nodeName", ".spec.type", ".status.state", ".status.severity"} <= {f["jsonPath"] for f in nf}
    mf = crd_for(MaintenanceFlow)["spec"]["versions"][0]["selectableFields"]
    assert {".spec.nodeName", ".status.phase"} <= {f["jsonPath"] for f in mf}


async def _fault(c: Client, node: str, ftype: str, state: str, severity: str) -> None:
    with contextlib.suppress(AlreadyExistsError):  # a fault's type must be in the catalog (a 422 otherwise)
        await c.create(FAULTTYPE, {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultType", "metadata": {"name": ftype},
                                   "spec": {"category": "Hardware", "severity": severity, "flow": "none"}})
    await c.create(NODEFAULT, {"apiVersion": "kokpit.io/v1alpha1", "kind": "NodeFault",
                               "metadata": {"name": fault_name(node, ftype), "labels": fault_labels(node, ftype)},
                               "spec": {"nodeName": node, "type": ftype}})
    await c.patch_status(NODEFAULT, fault_name(node, ftype), {"status": {"state": state, "severity": severity}})


def _kubectl(kubectl_bin: str, srv: ApiServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_bin, "--kubeconfig", str(srv.kubeconfig), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def _kubectl_watch(kubectl_bin: str, srv: ApiServerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([kubectl_bin, "--kubeconfig", str(srv.kubeconfig), "get", "--watch-only", "-o", "name",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _prepare(c: Client) -> None:
    await install_crds(c)
    for n in ("n1", "n2"):
        await c.create(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
    await _fault(c, "n1", "disk-failure", "Active", "Critical")
    await _fault(c, "n1", "clock-skew", "Resolved", "Minor")
    await _fault(c, "n2", "disk-failure", "Active", "Critical")


async def test_kubectl_lists_and_watches_nodefaults_by_field(apiserver: ApiServerProcess, kubectl_bin: str) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await _prepare(c)

        def names(*sel: str) -> set[str]:
            r = _kubectl(kubectl_bin, apiserver, "get", "nodefaults", "-o", "name", *sel)
            assert r.returncode == 0, r.stderr
            return {x.split("/", 1)[1] for x in r.stdout.split()}

        assert names("--field-selector", "spec.nodeName=n1") == {"n1.disk-failure", "n1.clock-skew"}
        assert names("--field-selector", "spec.type=disk-failure,status.state=Active") == {
            "n1.disk-failure", "n2.disk-failure"}
        assert names("--field-selector", "status.state!=Active") == {"n1.clock-skew"}
        assert names("--field-selector", "spec.nodeName=n2,status.severity=Critical") == {"n2.disk-failure"}
        assert names("--field-selector", "spec.component=") == {"n1.disk-failure", "n1.clock-skew",
                                                               "n2.disk-failure"}  # absent evaluates to ""
        # the table kubectl prints by default goes through the same selector
        r = _kubectl(kubectl_bin, apiserver, "get", "nf", "--field-selector", "spec.nodeName=n2")
        assert r.returncode == 0 and "n2.disk-failure" in r.stdout and "n1." not in r.stdout, r.stdout + r.stderr
        # a field that is not selectable is kube's 400
        r = _kubectl(kubectl_bin, apiserver, "get", "nodefaults", "--field-selector", "status.message=x")
        assert r.returncode != 0 and "field label not supported: status.message" in r.stderr, r.stderr

        # kubectl get -w: only the faults of n1, ADDED as they appear
        watch = _kubectl_watch(kubectl_bin, apiserver, "nodefaults", "--field-selector", "spec.nodeName=n1")
        assert watch.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in watch.stdout or ()], daemon=True).start()
        try:
            # the watch opens after kubectl's discovery: write n2 then n1 faults until one shows (no sleep-and-
            # hope), then one more pair once it is surely open; only n1's may ever show
            first = None
            for i in range(60):
                await _fault(c, "n2", f"probe-{i}", "Active", "Minor")
                await _fault(c, "n1", f"probe-{i}", "Active", "Minor")
                try:
                    first = await asyncio.to_thread(lines.get, True, 1.0)
                    break
                except queue.Empty:
                    continue
            assert first is not None and first.strip().startswith("nodefault.kokpit.io/n1.probe-"), first
            await _fault(c, "n2", "memory-ecc", "Active", "Critical")
            await _fault(c, "n1", "memory-ecc", "Active", "Critical")
            while True:
                line = await asyncio.to_thread(lines.get, True, 60)
                assert line.strip().startswith("nodefault.kokpit.io/n1."), line
                if line.strip() == "nodefault.kokpit.io/n1.memory-ecc":
                    break
        finally:
            watch.terminate()
            watch.wait(10)


async def test_watch_sees_faults_enter_and_leave_a_state(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await _prepare(c)
        start = (await c.list(NODEFAULT)).resource_version
        seen: list[tuple[str, str]] = []

        async def consume() -> None:
            async for ev in c.watch(NODEFAULT, resource_version=start, field_selector="status.state=Active",
                                    timeout_seconds=60):
                if ev.type != "BOOKMARK":
                    seen.append((ev.type, ev.object["metadata"]["name"]))
                if len(seen) == 3:
                    return

        task = asyncio.create_task(consume())
        await c.patch_status(NODEFAULT, "n1.disk-failure", {"status": {"state": "Resolved"}})  # leaves: DELETED
        await c.patch_status(NODEFAULT, "n1.clock-skew", {"status": {"state": "Active"}})  # enters: ADDED
        await c.patch_status(NODEFAULT, "n2.disk-failure", {"status": {"count": 2}})  # stays: MODIFIED
        await asyncio.wait_for(task, 60)
        assert seen == [("DELETED", "n1.disk-failure"), ("ADDED", "n1.clock-skew"), ("MODIFIED", "n2.disk-failure")]

        # a MaintenanceFlow is selectable by node too
        flows = await c.list(FLOW, field_selector="spec.nodeName=n1")
        assert flows.items == []


@pytest.mark.parametrize(("path", "message"), [
    (".spec.count", "must point to a field of type string, boolean or integer"),
    (".spec.nope", "is an invalid path"),
    (".metadata.name", "must not point to metadata fields"),
    ("spec.name", "must be a simple JSON path"),
    (".spec.items[0]", "must be a simple JSON path"),
])
async def test_a_crd_with_a_bad_selectable_field_is_refused(apiserver: ApiServerProcess, path: str,
                                                            message: str) -> None:
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                                   "type": "object", "properties": {"name": {"type": "string"},
                                                                    "count": {"type": "number"},
                                                                    "items": {"type": "array",
                                                                              "items": {"type": "string"}}}}}}},
                               "selectableFields": [{"jsonPath": path}]}]}}
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        with pytest.raises(ApiError) as ei:
            await c.create(CRD, crd)
        causes = (ei.value.status.get("details") or {}).get("causes", [])
        assert ei.value.code == 422, ei.value.message
        assert any(x.get("field") == "spec.versions[0].selectableFields[0].jsonPath" and message in x.get("message", "")
                   for x in causes), causes
        crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.name"}]
        await c.create(CRD, crd)
