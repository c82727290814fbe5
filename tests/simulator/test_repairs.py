"""Simulated repairs (maintenance flows): idempotent by request id — also across a simulator restart —, the
host down while it runs, and what each repair fixes (a reboot clears a hang but not a hardware fault; a
reinstall wipes every component; a restart runs a stopped component again)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.simulator.test_hosts import Wall, spec

from kokpit.nodes import ComponentAction, RunState
from kokpit.simulator import HostBook, HostDB
from kokpit.simulator._hosts import FaultError


def _installed(book: HostBook, node: str) -> None:
    for name, ver in (("containerd", "1.7"), ("kubelet", "1.30")):
        book.start_action(node, ComponentAction.INSTALL, spec(name, ver))


def test_reboot_is_idempotent_by_request_id_and_clears_a_hang_not_hardware(tmp_path: Path) -> None:
    wall = Wall()
    book = HostBook(["n1", "n2"], repair_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    _installed(book, "n1")
    book.fault("n1", "hang")
    first = book.repair("n1", "reboot", "req-1")
    assert first.state == "Running" and first.operation_id == "n1/reboot-1"
    assert book.host("n1").readiness()[:2] == (False, "NodeRepairing")
    assert book.repair("n1", "reboot", "req-1") == first  # asked again: the same reboot, not a second
    with pytest.raises(FaultError):
        book.repair("n1", "reboot", "req-2")  # one repair at a time
    asyncio.run(book.flush())
    # a restarted simulator remembers the running reboot and finishes it
    book2 = HostBook(["n1", "n2"], repair_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    assert book2.repair("n1", "reboot", "req-1").state == "Running"
    wall.t += 5
    book2.tick()
    done = book2.repair("n1", "reboot", "req-1")
    assert done.state == "Succeeded" and done.finished_at
    host = book2.host("n1")
    assert not host.hung and host.healthy
    assert [e["event"] for e in host.log].count("reboot-started") == 1
    book2.fault("n2", "hardware")
    book2.repair("n2", "reboot", "req-3")
    wall.t += 5
    book2.tick()
    r = book2.repair("n2", "reboot", "req-3")
    assert r.state == "Succeeded" and "hardware fault remains" in r.message
    assert not book2.host("n2").healthy


def test_reinstall_wipes_components_and_restart_runs_a_stopped_one() -> None:
    book = HostBook(["n1"], repair_seconds=0)
    _installed(book, "n1")
    book.fault("n1", "component-stop", "kubelet")
    assert book.host("n1").components["kubelet"].run_state == RunState.STOPPED
    r = book.repair("n1", "restart-component", "r1", component="kubelet")
    assert r.state == "Succeeded"
    assert book.host("n1").components["kubelet"].run_state == RunState.RUNNING
    assert book.repair("n1", "restart-component", "r2", component="etcd").state == "Failed"
    with pytest.raises(FaultError):
        book.repair("n1", "restart-component", "r3")  # which component?
    with pytest.raises(FaultError):
        book.repair("n1", "format", "r4")
    assert book.repair("n1", "reinstall", "r5").state == "Succeeded"
    assert book.host("n1").components == {}


def test_repairs_end_the_reported_faults_they_fix_and_leave_hardware() -> None:
    """A host reporting an injected fault: a reboot ends a kernel deadlock but not a failing disk; a reinstall
    ends a corrupted OS; the host's reporter clears what is gone (``reported`` is what it reports)."""
    book = HostBook(["n1", "n2"], repair_seconds=0)
    _installed(book, "n1")
    for kind in ("kernel-deadlock", "disk-failure", "clock-skew"):
        book.fault("n1", kind)
    r = book.repair("n1", "reboot", "r1")
    assert r.state == "Succeeded" and "clock-skew, kernel-deadlock gone" in r.message
    assert set(book.host("n1").reported) == {"disk-failure"}  # a reboot does not replace a disk
    book.fault("n2", "os-corrupted")
    assert book.repair("n2", "reboot", "r2").state == "Succeeded"
    assert set(book.host("n2").reported) == {"os-corrupted"}
    assert book.repair("n2", "reinstall", "r3").state == "Succeeded"
    assert book.host("n2").reported == {}
