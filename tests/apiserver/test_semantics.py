"""Hand-written validation of built-in kinds: the errors kube gives for values a schema cannot catch."""

from __future__ import annotations

from kokpit.apiserver.semantics import HOOKS


def _deploy(replicas: int, match: dict[str, str], labels: dict[str, str], port: int = 80) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": match},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "i",
                                                           "ports": [{"containerPort": port}]}]}}}}


def test_valid_deployment_passes() -> None:
    assert HOOKS[("apps", "Deployment")](_deploy(2, {"app": "x"}, {"app": "x", "t": "1"}), None) == []


def test_negative_replicas_selector_mismatch_and_bad_port_are_named() -> None:
    causes = HOOKS[("apps", "Deployment")](_deploy(-1, {"app": "x"}, {"app": "y"}, port=70000), None)
    by_field = {c.field: c.message for c in causes}
    assert by_field["spec.replicas"] == "Invalid value: -1: must be greater than or equal to 0"
    assert "`selector` does not match template `labels`" in by_field["spec.template.metadata.labels"]
    assert "must be between 1 and 65535" in by_field["spec.template.spec.containers[0].ports[0].containerPort"]


def test_pod_container_port_range() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 0}]}]}}
    causes = HOOKS[("", "Pod")](pod, None)
    assert [c.field for c in causes] == ["spec.containers[0].ports[0].containerPort"]


def test_service_port_range() -> None:
    causes = HOOKS[("", "Service")]({"spec": {"ports": [{"port": 0}, {"port": 443}]}}, None)
    assert [c.field for c in causes] == ["spec.ports[0].port"]


def test_negative_grace_period_names_the_pod_field() -> None:
    causes = HOOKS[("", "Pod")]({"spec": {"terminationGracePeriodSeconds": -5, "containers": []}}, None)
    assert [c.field for c in causes] == ["spec.terminationGracePeriodSeconds"]


def test_ephemeral_containers_are_not_set_on_create_and_have_no_ports() -> None:
    spec = {"containers": [{"name": "a", "image": "i"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox", "ports": [{"protocol": "TCP"}]}]}
    causes = HOOKS[("", "Pod")]({"spec": spec}, None)
    assert [(c.field, c.message) for c in causes] == [
        ("spec.ephemeralContainers", "Forbidden: cannot be set on create"),
        ("spec.ephemeralContainers[0].ports", "Forbidden: cannot be set for an Ephemeral Container")]
    spec["ephemeralContainers"][0].pop("ports")
    assert HOOKS[("", "Pod")]({"spec": spec}, {"spec": spec}) == []  # an update that keeps them
