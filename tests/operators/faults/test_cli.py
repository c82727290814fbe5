"""`kokpit fault list|show` against a real API server (KUBECONFIG → the business cluster)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from typer.testing import CliRunner

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NODE, Client
from kokpit.operators.faults.catalog import install_defaults
from kokpit.runtime.faultreports import FaultReport, FaultReporter


@dataclass
class Run:
    returncode: int
    stdout: str


def kokpit(*args: str) -> Run:
    from kokpit.cli.main import app

    out = CliRunner().invoke(app, list(args))
    return Run(out.exit_code, out.output)


async def _seed(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        await c.create(NODE, {"metadata": {"name": "w1"}})
        await install_defaults(c)  # a report of a type not in the catalog is refused
        rep = FaultReporter(c)
        await rep.report(FaultReport("w1", "disk-failure", "smartd/w1", message="sda failing", ttl_seconds=600))
        await rep.report(FaultReport("w1", "disk-failure", "kernel-monitor/w1", message="Buffer I/O error"))
        await rep.report(FaultReport("w1", "kubelet-unhealthy", "node-agent/w1", component="kubelet"))
        await rep.report(FaultReport("w1", "clock-skew", "chrony/w1"))
        await rep.clear("w1", "clock-skew", "chrony/w1")


def test_fault_list_and_show(apiserver: ApiServerProcess) -> None:
    asyncio.run(_seed(apiserver))
    kc = str(apiserver.kubeconfig)
    # the event center is not running here: state labels are its job, so list by --all and filter on state
    out = kokpit("fault", "list", "--kubeconfig", kc, "--all")
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["NODE", "TYPE", "SEVERITY", "STATE", "COUNT"]
    rows = {ln.split()[1]: ln.split() for ln in lines[1:]}
    assert rows["disk-failure"][3] == "Active" and rows["disk-failure"][4] == "2"
    assert rows["kubelet-unhealthy/kubelet"][3] == "Active" and rows["clock-skew"][3] == "Resolved"
    out = kokpit("fault", "list", "--kubeconfig", kc, "--all", "--type", "clock-skew", "-o", "json")
    assert [f["metadata"]["name"] for f in json.loads(out.stdout)] == ["w1.clock-skew"]
    out = kokpit("fault", "show", "w1.disk-failure", "--kubeconfig", kc)
    assert out.returncode == 0, out.stdout
    assert "smartd/w1" in out.stdout and "kernel-monitor/w1" in out.stdout and "Buffer I/O error" in out.stdout
    out = kokpit("fault", "show", "w1", "--kubeconfig", kc)  # a node: all its faults
    assert out.stdout.count("Name:") == 3
    # bad input: a clear message, exit 1
    out = kokpit("fault", "list", "--kubeconfig", kc, "--state", "Sleeping")
    assert out.returncode != 0 and "--state must be one of" in out.stdout
    out = kokpit("fault", "show", "nothing-here", "--kubeconfig", kc)
    assert out.returncode != 0 and "no NodeFault" in out.stdout
    out = kokpit("fault", "list", "--cluster", "c1", "--data-dir", "/nonexistent")
    assert out.returncode != 0 and "is kokpit up running" in out.stdout
