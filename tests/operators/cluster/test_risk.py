"""The cluster operator asks the risk center before a release replaces a running control-plane component
(opt-in: OperatorOptions.risk): while the permit waits nothing is replaced and RiskPermitted says why; once
granted the release goes on; the finished release releases its permits, a release turned back releases them
Failed.  The gate here is a stand-in with the PermitGate interface the test drives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kokpit.api.risk import PermitOutcome
from kokpit.runtime.permits import Admission, PermitView

from .conftest import Harness


@dataclass
class FakeGate:
    grant: bool = False
    asked: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    granted: dict[str, PermitView] = field(default_factory=dict)
    finished: list[tuple[str, PermitOutcome]] = field(default_factory=list)

    async def admit(self, operation: Any, targets: list[str], intent: str, **_: Any) -> Admission:
        self.asked.append((str(operation), tuple(targets), intent))
        name = f"{targets[0]}-{intent}"
        if not self.grant:
            return Admission(False, "RiskQueued", f"permit {name} is Queued (kokpit-control-plane: "
                             "MaxConcurrent)", name, 1.0)
        self.granted[name] = PermitView({"metadata": {"name": name}, "spec": {"operation": str(operation)},
                                         "status": {"state": "Granted"}})
        return Admission(True, "Granted", "", name)

    def open_all(self) -> list[PermitView]:
        done = {n for n, _ in self.finished}
        return [v for n, v in self.granted.items() if n not in done]

    async def finish(self, view: PermitView, outcome: PermitOutcome, message: str = "") -> None:
        self.finished.append((view.name, outcome))


async def test_release_waits_for_the_permit_then_releases_it() -> None:
    gate = FakeGate()
    h = Harness(risk=lambda ns, cluster: gate)
    h.cpv("v1", "v1.30.0")
    h.cpv("v2", "v1.31.0")
    h.cluster(cpv="v1", nodes=3)
    await h.converge()
    assert gate.asked == []  # creating a cluster replaces nothing: it asks nothing
    h.cluster(cpv="v2", nodes=3)
    await h.converge()
    # queued: nothing replaced, the Cluster says why
    assert set(h.pod_versions().values()) == {"v1"}
    assert gate.asked and gate.asked[0] == ("control-plane-release", ("c1-kube-apiserver-0",), "v2")
    c = h.cond("RiskPermitted")
    assert c["status"] == "False" and c["reason"] == "RiskQueued" and "kokpit-control-plane" in c["message"]
    # granted: the release runs to the end and the permits are released Succeeded
    gate.grant = True
    await h.converge()
    assert set(h.pod_versions().values()) == {"v2"}
    assert h.status()["packageVersion"] == "v2"
    assert h.cond("RiskPermitted")["status"] == "True"
    assert gate.finished and {o for _, o in gate.finished} == {PermitOutcome.SUCCEEDED}
    assert {n for n, _ in gate.finished} == set(gate.granted)
