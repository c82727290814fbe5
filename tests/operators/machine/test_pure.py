"""Pure parts of the machine operator: Condition ConfigMap parsing, gate evaluation, resolution order."""

from __future__ import annotations

from typing import Any

from kokpit.operators.machine import evaluate_gates, merge_reports, parse_configmap, removal_order, resolve


def cm(name: str, source: str | None, data: dict[str, str], ns: str = "default") -> dict[str, Any]:
    labels = {"kokpit.io/node": "n1"}
    if source:
        labels["kokpit.io/condition-source"] = source
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "data": data}


def test_parse_configmap_values() -> None:
    reports = {r.type: r for r in parse_configmap(cm("c", "net", {
        "A": "True", "B": " false ", "C": '{"status": "True", "reason": "Up", "message": "all good"}',
        "D": "{not json", "E": '{"status": "Maybe"}', "F": '["True"]', "Ready": "False",
        "G": '{"status": "Unknown"}'}))}
    assert (reports["A"].status, reports["A"].reason, reports["A"].source) == ("True", "Reported", "net")
    assert reports["B"].status == "False"
    assert (reports["C"].status, reports["C"].reason, reports["C"].message) == ("True", "Up", "all good")
    for bad in ("D", "E", "F"):
        assert reports[bad].status == "Unknown" and reports[bad].reason == "InvalidReport"
        assert "ConfigMap default/c key " + bad in reports[bad].message
    assert "'Maybe'" in reports["E"].message
    assert "Ready" not in reports, "a reporter cannot override the operator's own conditions"
    assert reports["G"].status == "Unknown" and reports["G"].reason == "Reported"
    # no source label: the ConfigMap itself is named as the source
    assert parse_configmap(cm("c2", None, {"A": "True"}, ns="kube-system"))[0].source == \
        "configmap/kube-system/c2"


def test_merge_reports_most_pessimistic_wins_deterministically() -> None:
    a = cm("a", "alpha", {"X": "True", "Y": "True"})
    b = cm("b", "beta", {"X": "False", "Y": "True"})
    for order in ([a, b], [b, a]):
        merged = merge_reports(order)
        assert (merged["X"].status, merged["X"].source) == ("False", "beta")
        assert merged["Y"].source == "alpha"


def test_evaluate_gates() -> None:
    reports = merge_reports([cm("a", "net", {"NetworkReady": "True", "DiskOK": '{"status":"False","reason":"Full"}'})])
    assert evaluate_gates([], reports).reason == "NoReadinessGates"
    assert evaluate_gates(["NetworkReady"], reports).met
    g = evaluate_gates(["NetworkReady", "DiskOK", "GPU"], reports)
    assert not g.met and g.reason == "GateNotTrue"
    assert "DiskOK is False (net: Full)" in g.message and "no report yet for GPU" in g.message
    g2 = evaluate_gates(["GPU"], reports)
    assert (g2.met, g2.reason) == (False, "GateNotReported")


def _mpv(name: str, comp: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"component": comp, "version": "1", "dependsOn": list(deps)}}


def test_resolve_order_and_errors() -> None:
    mpvs = {m["metadata"]["name"]: m for m in [
        _mpv("k", "kubelet", ("containerd", "sysctl")), _mpv("c", "containerd", ("kernel",)),
        _mpv("s", "sysctl"), _mpv("kp", "kernel"), _mpv("bad", "Not_A_Name")]}
    r = resolve(["k", "c", "s", "kp"], mpvs.get)
    assert r.ok and [c.name for c in r.components] == ["kernel", "containerd", "sysctl", "kubelet"]
    assert r.spec("kubelet") is not None and r.spec("kubelet").source == "k"  # type: ignore[union-attr]
    bad = resolve(["bad"], mpvs.get)
    assert bad.reason == "InvalidPackageVersion" and "spec.component" in bad.message
    assert resolve([], mpvs.get).ok


def test_removal_order_is_reverse_dependency_order() -> None:
    deps = {"kubelet": ("containerd",), "containerd": ("kernel",), "kernel": ()}
    assert removal_order(["containerd", "kernel", "kubelet"], deps) == ["kubelet", "containerd", "kernel"]
    assert removal_order(["kernel", "kubelet"], deps) == ["kubelet", "kernel"]
