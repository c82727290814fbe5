"""The cluster operator asks the risk center before a release replaces a running control-plane component
(opt-in: OperatorOptions.risk): while the permit waits nothing is replaced and RiskPermitted says why; once
granted the release goes on; the finished release releases its permits, a release turned back releases them
Failed.  The gate here is a stand-in with the PermitGate interface the test drives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kokpit.api.risk import PermitOutcome
from kokpit.runtime.permit_gate import Admission, PermitGate
from kokpit.runtime.permits import PermitView

from .conftest import CPV_COMPONENTS, Harness


@dataclass
class FakeGate:
    grant: bool = False
    asked: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    granted: dict[str, PermitView] = field(default_factory=dict)
    finished: list[tuple[str, PermitOutcome]] = field(default_factory=list)

    repair_flags: list[bool] = field(default_factory=list)

    async def admit(self, operation: Any, targets: list[str], intent: str, *, repair: bool = False,
                    **_: Any) -> Admission:
        self.asked.append((str(operation), tuple(targets), intent))
        self.repair_flags.append(repair)
        name = f"{targets[0]}-{intent}"
        if name in self.granted and name not in {n for n, _ in self.finished}:
            return Admission(True, "Granted", "", name)
        if not self.grant:
            return Admission(False, "RiskQueued", f"permit {name} is Queued (kokpit-control-plane: "
                             "MaxConcurrent)", name, 1.0)
        self.granted[name] = PermitView({"metadata": {"name": name, "annotations": {"kokpit.io/intent": intent}},
                                         "spec": {"operation": str(operation), "targets": list(targets)},
                                         "status": {"state": "Granted"}})
        return Admission(True, "Granted", "", name)

    def open_all(self) -> list[PermitView]:
        done = {n for n, _ in self.finished}
        return [v for n, v in self.granted.items() if n not in done]

    def open_for(self, target: str) -> list[PermitView]:
        return [v for v in self.open_all() if target in v.obj["spec"]["targets"]]

    @staticmethod
    def intent(view: PermitView) -> str:
        return PermitGate.intent(view)

    async def finish(self, view: PermitView, outcome: PermitOutcome, message: str = "") -> None:
        self.finished.append((view.name, outcome))


def _break(h: Harness, pod: str) -> None:
    p = h.pods.get_by_name(pod, "default")
    assert p is not None
    p.setdefault("status", {})["phase"] = "Failed"
    h.pods.put(p)


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


async def test_a_broken_pod_is_replaced_only_with_a_repair_permit() -> None:
    """control-plane-repair (issue 14 item 6): a broken Pod waits while the permit is Queued (RiskPermitted
    says why), is replaced once granted (asked with repair=True: its pre-check is the failure itself), and the
    permit is released Succeeded when the replacement is healthy; a replacement that breaks again ends the
    first attempt Failed and asks anew."""
    gate = FakeGate(grant=True)
    h = Harness(risk=lambda ns, cluster: gate)
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1", nodes=3)
    await h.converge()
    gate.grant = False
    _break(h, "c1-simulator-0")
    await h.run()
    assert h.pods.get_by_name("c1-simulator-0", "default") is not None  # queued: not replaced
    assert gate.asked[-1] == ("control-plane-repair", ("c1-simulator-0",), "repair-1") and gate.repair_flags[-1]
    c = h.cond("RiskPermitted")
    assert c["status"] == "False" and c["reason"] == "RiskQueued"
    gate.grant = True
    await h.run()
    assert h.pods.get_by_name("c1-simulator-0", "default") is None  # granted: replaced
    await h.converge()
    assert gate.finished == [("c1-simulator-0-repair-1", PermitOutcome.SUCCEEDED)]
    assert h.cond("RiskPermitted")["status"] == "True"
    # a second episode: granted, replaced, and the replacement breaks again before it was ever healthy
    _break(h, "c1-simulator-0")
    await h.clock.advance(60)
    await h.run()
    assert gate.asked[-1][2] == "repair-2"  # the count (and backoff) carries on until a long healthy spell
    assert h.pods.get_by_name("c1-simulator-0", "default") is None
    await h.run()  # recreated, not yet judged healthy
    _break(h, "c1-simulator-0")
    await h.clock.advance(60)
    await h.run()
    assert gate.asked[-1][2] == "repair-3"
    assert ("c1-simulator-0-repair-2", PermitOutcome.FAILED) in gate.finished
    assert h.pods.get_by_name("c1-simulator-0", "default") is None


async def test_each_risk_actor_gets_its_own_least_privilege_identity() -> None:
    """With actors asking, the cluster operator provisions <cluster>-machine-operator and
    <cluster>-kube-controller-manager (ServiceAccount, Role on Permits only, RoleBinding; owned by the
    Cluster), runs each actor's Pod as it with in-cluster risk flags (the controller-manager asks node-drain
    before taint-based eviction), keeps every other component without a meta credential, and puts back
    rules someone widened."""
    gate = FakeGate(grant=True)
    h = Harness(risk=lambda ns, cluster: gate)
    h.cpv("v1", "v1.30.0", [*CPV_COMPONENTS, {"name": "kube-controller-manager", "args": ["controller-manager"]},
                            {"name": "kube-scheduler", "args": ["scheduler"]}])
    h.cluster(cpv="v1", nodes=3)
    await h.converge()
    for actor in ("machine-operator", "kube-controller-manager"):
        name = f"c1-{actor}"
        sa = h.client.extra["serviceaccounts"].get_by_name(name, "default")
        role = h.client.extra["roles"].get_by_name(name, "default")
        rb = h.client.extra["rolebindings"].get_by_name(name, "default")
        assert sa is not None and role is not None and rb is not None
        assert {r["resources"][0] for r in role["rules"]} == {"permits", "permits/status"}
        assert rb["roleRef"]["name"] == name
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
        assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-c1" for o in (sa, role, rb))
        pod = h.pods.get_by_name(f"c1-{actor}-0", "default")
        assert pod is not None and pod["spec"]["serviceAccountName"] == name
        assert "automountServiceAccountToken" not in pod["spec"]
        args = pod["spec"]["containers"][0]["args"]
        assert args[args.index("--risk-cluster") + 1] == "c1" and "--risk-in-cluster" in args
        assert args[args.index("--risk-namespace") + 1] == "default"
    for other in ("kube-apiserver", "kube-scheduler", "simulator"):
        pod = h.pods.get_by_name(f"c1-{other}-0", "default")
        assert pod is not None and pod["spec"]["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod["spec"] and "--risk-in-cluster" not in pod["spec"]["containers"][0]["args"]
    role = h.client.extra["roles"].get_by_name("c1-machine-operator", "default")
    assert role is not None
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    h.client.extra["roles"].put(role)
    await h.run()
    role = h.client.extra["roles"].get_by_name("c1-machine-operator", "default")
    assert role is not None and {r["resources"][0] for r in role["rules"]} == {"permits", "permits/status"}


async def test_without_the_risk_center_nothing_is_provisioned(harness: Harness) -> None:
    harness.cpv("v1", "v1.30.0")
    harness.cluster(cpv="v1", nodes=3)
    await harness.converge()
    assert harness.client.extra.get("serviceaccounts") is None or not harness.client.extra["serviceaccounts"].list()
    mo = harness.pods.get_by_name("c1-machine-operator-0", "default")
    assert mo is not None and "serviceAccountName" not in mo["spec"]


async def test_a_restart_replaces_the_pods_one_at_a_time_each_with_a_permit() -> None:
    """spec.controlPlane.restartedAt (what the portal's control-plane-restart change writes): every replica of
    that component becomes outdated; each is replaced only with a control-plane-release permit (intent
    restart-<time>), the next only once the one before is healthy again; other components are untouched; the
    row says restartedAt once all run it, and the permits are released Succeeded.  Asking again with the same
    time changes nothing."""
    gate = FakeGate(grant=True)
    h = Harness(risk=lambda ns, cluster: gate)
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1", nodes=3, replicas=2)
    await h.converge()
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods.list()}
    row = next(r for r in h.status()["components"] if r["name"] == "kube-apiserver")
    assert "restartedAt" not in row
    gate.grant = False
    stamp = "2026-12-07T08:00:00Z"
    c = h.clusters.get_by_name("c1", "default")
    assert c is not None
    c["spec"]["controlPlane"]["restartedAt"] = {"kube-apiserver": stamp}
    h.clusters.put(c)
    await h.run()
    # queued: nothing replaced, the Cluster says why
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods.list()} == uids
    assert gate.asked[-1] == ("control-plane-release", ("c1-kube-apiserver-0",), f"restart-{stamp}")
    assert h.cond("RiskPermitted")["reason"] == "RiskQueued"
    gate.grant = True
    old0 = h.pods.get_by_name("c1-kube-apiserver-0", "default")
    await h.run()
    assert h.pods.get_by_name("c1-kube-apiserver-0", "default") is None  # replaced ...
    assert h.pods.get_by_name("c1-kube-apiserver-1", "default")["metadata"]["uid"] == uids["c1-kube-apiserver-1"]
    # ... while it terminates (a real kubelet's graceful deletion) the next one waits
    h.pods.put({**old0, "metadata": {**old0["metadata"], "deletionTimestamp": "2026-12-07T08:00:01Z"}})
    await h.run()
    assert h.pods.get_by_name("c1-kube-apiserver-1", "default")["metadata"]["uid"] == uids["c1-kube-apiserver-1"]
    h.pods.delete("default/c1-kube-apiserver-0")
    h.new_reconciler()  # an operator restarted mid-restart: what it needs is in the API (spec, annotations)
    await h.run()  # ... recreated with the stamp, not ready yet: the other one waits
    new0 = h.pods.get_by_name("c1-kube-apiserver-0", "default")
    assert new0 is not None and new0["metadata"]["annotations"]["kokpit.io/restarted-at"] == stamp
    await h.run()
    assert h.pods.get_by_name("c1-kube-apiserver-1", "default")["metadata"]["uid"] == uids["c1-kube-apiserver-1"]
    assert ("control-plane-release", ("c1-kube-apiserver-1",), f"restart-{stamp}") not in gate.asked
    await h.converge()
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods.list()}
    assert {n for n in now if now[n] != uids[n]} == {"c1-kube-apiserver-0", "c1-kube-apiserver-1"}
    assert ("control-plane-release", ("c1-kube-apiserver-1",), f"restart-{stamp}") in gate.asked
    row = next(r for r in h.status()["components"] if r["name"] == "kube-apiserver")
    assert row["restartedAt"] == stamp and row["healthy"]
    assert {n for n, _ in gate.finished} == set(gate.granted)
    assert {o for _, o in gate.finished} == {PermitOutcome.SUCCEEDED}
    assert h.cond("Ready")["status"] == "True"
    writes = len(h.client.writes("delete"))
    await h.converge()
    assert len(h.client.writes("delete")) == writes  # the same restart asks nothing more
