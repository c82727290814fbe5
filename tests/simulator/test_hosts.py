"""Driver semantics of simulated hosts without a server: idempotent starts, upgrades, uninstalls, seeded
failures, frozen hosts, and the durable record."""

from __future__ import annotations

from pathlib import Path

import pytest

from kokpit.nodes import ComponentAction, ComponentSpec, InstallState, RunState
from kokpit.simulator import FailRule, HostBook, HostDB
from kokpit.simulator._hosts import FaultError, UnknownNodeError

INSTALL, UNINSTALL = ComponentAction.INSTALL, ComponentAction.UNINSTALL


class Wall:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def spec(name: str, version: str) -> ComponentSpec:
    return ComponentSpec(name=name, version=version, source=f"{name}-{version}")


def test_install_upgrade_uninstall_are_idempotent() -> None:
    wall = Wall()
    book = HostBook(["n1"], install_seconds=10, wall=wall)
    s = book.start_action("n1", INSTALL, spec("kubelet", "1.0"))
    assert (s.install_state, s.version, s.target_version) == (InstallState.INSTALLING, "1.0", "1.0")
    again = book.start_action("n1", INSTALL, spec("kubelet", "1.0"))
    assert again == s  # in flight: a repeat is a no-op
    wall.t += 10
    book.tick()
    done = book.host("n1").components["kubelet"].state()
    assert (done.install_state, done.run_state, done.version) == (InstallState.INSTALLED, RunState.RUNNING, "1.0")
    assert book.start_action("n1", INSTALL, spec("kubelet", "1.0")) == done  # done: no-op

    up = book.start_action("n1", INSTALL, spec("kubelet", "1.1"))
    assert (up.install_state, up.version, up.target_version) == (InstallState.UPGRADING, "1.0", "1.1")
    wall.t += 10
    book.tick()
    assert book.host("n1").installed_version("kubelet") == "1.1"

    un = book.start_action("n1", UNINSTALL, spec("kubelet", "1.1"))
    assert un.install_state == InstallState.UNINSTALLING
    wall.t += 10
    book.tick()
    assert "kubelet" not in book.host("n1").components
    gone = book.start_action("n1", UNINSTALL, spec("kubelet", "1.1"))
    assert gone.install_state == InstallState.PENDING and gone.message == "not installed"


def test_failure_rules_and_seeded_probability() -> None:
    book = HostBook(["n1", "n2"], fail_rules=[FailRule.parse("containerd=2.0")])
    s = book.start_action("n1", INSTALL, spec("containerd", "2.0"))
    assert s.install_state == InstallState.FAILED and "containerd 2.0 is configured to fail" in s.message
    assert book.health("n1", "containerd").healthy is False
    assert book.start_action("n1", INSTALL, spec("containerd", "1.7")).install_state == InstallState.INSTALLED
    book.fault(None, "recover")  # lifts every rule
    assert book.start_action("n2", INSTALL, spec("containerd", "2.0")).install_state == InstallState.INSTALLED

    def outcomes(seed: int) -> list[str]:
        b = HostBook([f"n{i}" for i in range(40)], seed=seed, fail_probability=0.5)
        return [str(b.start_action(n, INSTALL, spec("kubelet", "1.0")).install_state) for n in b.hosts]

    first = outcomes(7)
    assert first == outcomes(7)  # deterministic for a seed
    assert 5 < first.count("Failed") < 35  # and really probabilistic


def test_frozen_hosts_finish_actions_after_recovery() -> None:
    wall = Wall()
    book = HostBook(["n1"], install_seconds=5, wall=wall)
    book.start_action("n1", INSTALL, spec("kubelet", "1.0"))
    book.fault("n1", "hang")
    wall.t += 6
    book.tick()
    assert book.host("n1").components["kubelet"].install_state == InstallState.INSTALLING
    assert book.host("n1").node_state().reachable is False
    book.fault("n1", "recover")
    book.tick()
    assert book.host("n1").components["kubelet"].install_state == InstallState.INSTALLED


def test_fault_validation() -> None:
    book = HostBook(["n1"])
    with pytest.raises(FaultError, match="unknown fault type"):
        book.fault("n1", "meteor")
    with pytest.raises(FaultError, match="installed component"):
        book.fault("n1", "component-stop", "kubelet")
    with pytest.raises(FaultError, match="needs a node"):
        book.fault(None, "hang")
    with pytest.raises(UnknownNodeError):
        book.fault("nope", "hang")
    book.start_action("n1", INSTALL, spec("containerd", "1.7"))
    book.fault("n1", "component-stop", "containerd")
    assert book.host("n1").readiness()[0] is False  # a stopped runtime makes the node NotReady
    book.fault("n1", "recover")
    assert book.host("n1").readiness() == (True, "KubeletReady", "kubelet is posting ready status")


async def test_state_is_durable(tmp_path: Path) -> None:
    wall = Wall()
    book = HostBook(["n1", "n2"], install_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    await book.start()
    book.start_action("n1", INSTALL, spec("kubelet", "1.0"))
    book.fault("n2", "hardware")
    book.fault(None, "install-failure", "containerd")
    await book.persist()
    await book.stop()  # "crash" before the install finished

    wall.t += 6
    again = HostBook(["n1", "n2"], install_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    await again.start()  # completes what became due while down
    try:
        assert again.host("n1").components["kubelet"].install_state == InstallState.INSTALLED
        assert again.host("n2").hardware
        assert again.fail_rules == [FailRule("containerd")]
    finally:
        await again.stop()


async def test_action_log_records_each_action_once_and_survives_restart(tmp_path: Path) -> None:
    """The per-host log is the audit trail chaos runs read: repeated (idempotent) starts add nothing, a
    completion is logged once, and the log lives in the same durable row as the state."""
    wall = Wall()
    book = HostBook(["n1"], install_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    await book.start()
    book.start_action("n1", INSTALL, spec("kubelet", "1.0"))
    book.start_action("n1", INSTALL, spec("kubelet", "1.0"))  # in flight: a repeat is a no-op
    await book.persist()
    await book.stop()  # "crash" mid-install

    wall.t += 6
    again = HostBook(["n1"], install_seconds=5, wall=wall, db=HostDB(tmp_path / "h.sqlite"))
    await again.start()  # completes the install that became due while down
    try:
        again.start_action("n1", INSTALL, spec("kubelet", "1.0"))  # done: a no-op, nothing logged
        again.start_action("n1", UNINSTALL, spec("kubelet", "1.0"))
        wall.t += 5
        again.tick()
        events = [(e["event"], e["component"], e["version"]) for e in again.host("n1").log]
        assert events == [("install-started", "kubelet", "1.0"), ("installed", "kubelet", "1.0"),
                          ("uninstall-started", "kubelet", "1.0"), ("uninstalled", "kubelet", "1.0")]
    finally:
        await again.stop()
