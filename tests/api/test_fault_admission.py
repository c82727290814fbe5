"""NodeFault, FaultType and FaultSubscription admission: malformed reports, catalog entries and webhooks are
refused by the real (embedded) API server with a 422 Status naming the field; good ones pass, and the printer
columns are the ones the issue lists."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kokpit.api import crd_for, install_crds
from kokpit.api.fault import NodeFault, fault_labels, fault_name
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client, Kind

NODEFAULT = Kind("kokpit.io", "v1alpha1", "NodeFault", "nodefaults", namespaced=False)
FAULTTYPE = Kind("kokpit.io", "v1alpha1", "FaultType", "faulttypes", namespaced=False)
NODE = Kind("", "v1", "Node", "nodes", namespaced=False)
SUBSCRIPTION = Kind("kokpit.io", "v1alpha1", "FaultSubscription", "faultsubscriptions", namespaced=False)
NOW = "2026-12-07T01:30:00.000000Z"


def _fields(e: ApiError) -> list[str]:
    return [str(x.get("field")) for x in (e.status.get("details") or {}).get("causes", [])]


async def _refused(c: Client, kind: Kind, good: dict[str, Any], spec: dict[str, Any], field: str) -> None:
    """Creating ``good`` with ``spec`` merged into its spec is a 422 naming ``field``."""
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "bad"
    bad["spec"].update(spec)
    with pytest.raises(ApiError) as ei:
        await c.create(kind, bad)
    assert ei.value.code == 422 and field in _fields(ei.value), (spec, ei.value.message)


def test_names_are_deterministic_and_bounded() -> None:
    assert fault_name("node-1", "kernel-deadlock") == "node-1.kernel-deadlock"
    assert fault_name("node-1", "component-unhealthy", "kubelet") == "node-1.component-unhealthy.kubelet"
    long = "n" * 250
    a, b = fault_name(long, "disk-failure"), fault_name(long + "x", "disk-failure")
    assert len(a) <= 253 and len(b) <= 253 and a != b and a.endswith(a[-10:])
    assert fault_name(long, "disk-failure") == a  # stable
    labels = fault_labels(long, "disk-failure", severity="Critical", state="Active")
    assert all(len(v) <= 63 for v in labels.values())
    assert labels["kokpit.io/fault-type"] == "disk-failure"


def test_printer_columns_are_the_issues() -> None:
    cols = [c["name"] for c in crd_for(NodeFault)["spec"]["versions"][0]["additionalPrinterColumns"]
            if not c.get("priority")]
    assert cols == ["Node", "Type", "Severity", "State", "Count", "First Seen", "Last Seen", "Source"]


async def test_bad_faults_types_and_subscriptions_are_refused_naming_the_field(
        apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        ft = {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultType", "metadata": {"name": "kernel-deadlock"},
              "spec": {"category": "System", "severity": "Critical", "flow": "reboot",
                       "nodeConditions": [{"type": "KernelDeadlock"}],
                       "nodeEvents": [{"reason": "TaskHung", "source": "kernel-monitor"}]}}
        made = await c.create(FAULTTYPE, ft)
        assert made["spec"]["ttl"] == "5m" and made["spec"]["nodeConditions"][0]["status"] == "True"
        for spec, field in (({"severity": "Apocalyptic"}, "spec.severity"),
                            ({"category": "Cosmic"}, "spec.category"),
                            ({"flow": "Reboot Now"}, "spec.flow"),
                            ({"ttl": "five minutes"}, "spec.ttl"),
                            ({"nodeConditions": [{"type": "KernelDeadlock", "status": "Maybe"}]},
                             "spec.nodeConditions[0].status")):
            await _refused(c, FAULTTYPE, ft, spec, field)

        await c.create(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
        nf: dict[str, Any] = {"apiVersion": "kokpit.io/v1alpha1", "kind": "NodeFault",
                              "metadata": {"name": "node-1.kernel-deadlock",
                                           "labels": fault_labels("node-1", "kernel-deadlock")},
                              "spec": {"nodeName": "node-1", "type": "kernel-deadlock"}}
        await c.create(NODEFAULT, nf)
        for spec, field in (({"nodeName": "Node_1"}, "spec.nodeName"), ({"type": "Kernel Deadlock"}, "spec.type"),
                            ({"nodeName": ""}, "spec.nodeName")):
            await _refused(c, NODEFAULT, nf, spec, field)
        # the identity is immutable
        cur = await c.get(NODEFAULT, "node-1.kernel-deadlock")
        cur["spec"]["nodeName"] = "node-2"
        with pytest.raises(ApiError) as ei:
            await c.update(NODEFAULT, cur)
        assert ei.value.code == 422 and "spec" in _fields(ei.value)

        # a report (status) without a reporter, or with a malformed time, is refused and loses nothing
        good_status = {"state": "Active", "count": 1, "firstSeen": NOW, "lastSeen": NOW, "reporter": "agent/node-1",
                       "sources": [{"reporter": "node-agent/node-1", "kind": "Agent", "firstSeen": NOW,
                                    "lastSeen": NOW, "count": 1, "message": "task hung"}]}
        await c.patch(NODEFAULT, "node-1.kernel-deadlock", {"status": good_status}, patch_type="merge",
                      subresource="status")
        for status, field in (
                ({"sources": [{"kind": "Agent", "firstSeen": NOW, "lastSeen": NOW}]}, "status.sources[0].reporter"),
                ({"sources": [{"reporter": "", "firstSeen": NOW, "lastSeen": NOW}]}, "status.sources[0].reporter"),
                ({"lastSeen": "yesterday"}, "status.lastSeen"),
                ({"state": "Exploded"}, "status.state"),
                ({"count": -1}, "status.count")):
            with pytest.raises(ApiError) as ei:
                await c.patch(NODEFAULT, "node-1.kernel-deadlock", {"status": status}, patch_type="merge",
                              subresource="status")
            assert ei.value.code == 422 and field in _fields(ei.value), (status, ei.value.message)
        kept = (await c.get(NODEFAULT, "node-1.kernel-deadlock"))["status"]
        assert kept["sources"][0]["reporter"] == "node-agent/node-1" and kept["lastSeen"] == NOW

        sub = {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultSubscription", "metadata": {"name": "pager"},
               "spec": {"url": "https://pager.example.com/hooks/kokpit", "types": ["kernel-deadlock"],
                        "selector": {"matchLabels": {"kokpit.io/severity": "Critical"}}}}
        made = await c.create(SUBSCRIPTION, sub)
        assert made["spec"]["retry"]["maxAttempts"] == 10
        assert made["spec"]["states"] == ["Active", "Resolved", "Expired", "ManualRequired"]
        for spec, field in (({"url": "ftp://pager.example.com/x"}, "spec.url"), ({"url": "pager"}, "spec.url"),
                            ({"retry": {"maxAttempts": 0}}, "spec.retry.maxAttempts"),
                            ({"minSeverity": "Huge"}, "spec.minSeverity"),
                            ({"states": ["Escalated"]}, "spec.states[0]")):
            await _refused(c, SUBSCRIPTION, sub, spec, field)


def _kubectl(kubectl_bin: str, srv: ApiServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_bin, "--kubeconfig", str(srv.kubeconfig), *args], capture_output=True,
                          text=True, timeout=60, check=False)


async def test_a_report_naming_a_missing_node_or_type_is_refused_naming_the_field(
        apiserver: ApiServerProcess, kubectl_bin: str, tmp_path: Path) -> None:
    """What is certainly wrong when the report is written (the node or the type does not exist) is a 422
    naming the field, through the API and kubectl; what turns wrong later (the Node deleted afterwards) never
    blocks a write of the fault's status — the event center reports it as a condition."""
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        await c.create(FAULTTYPE, {"apiVersion": "kokpit.io/v1alpha1", "kind": "FaultType",
                                   "metadata": {"name": "disk-failure"},
                                   "spec": {"category": "Hardware", "severity": "Critical", "flow": "hardware-repair"}})
        await c.create(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})

        def nf(node: str, ftype: str) -> dict[str, Any]:
            return {"apiVersion": "kokpit.io/v1alpha1", "kind": "NodeFault",
                    "metadata": {"name": fault_name(node, ftype), "labels": fault_labels(node, ftype)},
                    "spec": {"nodeName": node, "type": ftype}}

        for node, ftype, field, text in (("ghost", "disk-failure", "spec.nodeName", 'no Node named "ghost"'),
                                         ("n1", "flux-capacitor", "spec.type",
                                          'no FaultType named "flux-capacitor"')):
            with pytest.raises(ApiError) as ei:
                await c.create(NODEFAULT, nf(node, ftype))
            assert ei.value.code == 422 and _fields(ei.value) == [field], ei.value.message
            assert text in ei.value.message and ei.value.status["reason"] == "Invalid"
            causes = ei.value.status["details"]["causes"]
            assert causes[0]["reason"] == "FieldValueNotFound"
            # kubectl shows the same refusal, naming the field
            manifest = tmp_path / f"{node}-{ftype}.json"
            manifest.write_text(json.dumps(nf(node, ftype)))
            r = _kubectl(kubectl_bin, apiserver, "create", "-f", str(manifest))
            assert r.returncode != 0 and f"{field}: Not found" in r.stderr, r.stderr
            assert "is invalid" in r.stderr
        assert [x["metadata"]["name"] for x in (await c.list(NODEFAULT)).items] == []  # nothing half-written

        # both exist: accepted; the Node deleted later: status writes still pass (the condition path)
        made = await c.create(NODEFAULT, nf("n1", "disk-failure"))
        assert made["spec"]["nodeName"] == "n1"
        await c.delete(NODE, "n1")
        await c.patch(NODEFAULT, "n1.disk-failure", {"status": {"state": "Invalid"}}, patch_type="merge",
                      subresource="status")
        await c.patch(NODEFAULT, "n1.disk-failure", {"metadata": {"labels": {"kokpit.io/fault-state": "Invalid"}}},
                      patch_type="merge")
        assert (await c.get(NODEFAULT, "n1.disk-failure"))["status"]["state"] == "Invalid"
