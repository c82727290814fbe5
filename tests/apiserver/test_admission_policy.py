"""ValidatingAdmissionPolicy in the embedded API server: a policy and its Deny binding, created through the
API, refuse what they match with kube's status and wording (Invalid 422 / Forbidden 403); matchConditions
narrow them; a policy takes effect and stops with its binding; an expression that fails to evaluate, or a
policy that needs params, fails closed unless failurePolicy is Ignore."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import CONFIGMAP, ApiError, Client, Kind

Obj = dict[str, Any]
VAP = Kind("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
           namespaced=False)
VAPB = Kind("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings", namespaced=False)


def _policy(name: str, expression: str, **spec: Any) -> Obj:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name}, "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                        "operations": ["CREATE", "UPDATE"],
                                                        "resources": ["configmaps"]}]},
                "validations": [{"expression": expression, "message": "no key named bad", "reason": "Invalid"}],
                **spec}}


def _binding(name: str, actions: list[str] | None = None) -> Obj:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": actions or ["Deny"]}}


def _cm(name: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "default"}, "data": data}


async def test_a_policy_with_a_deny_binding_refuses_what_it_matches(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig, max_retries=0) as c:
        await c.create(VAP, _policy("no-bad", "!has(object.data) || !('bad' in object.data)", matchConditions=[
            {"name": "not-exempt", "expression": "!object.metadata.name.startsWith('exempt-')"}]))
        await c.create(CONFIGMAP, _cm("before-binding", bad="1"))  # a policy without a binding does nothing
        await c.create(VAPB, _binding("no-bad", ["Warn"]))
        await c.create(CONFIGMAP, _cm("warn-only", bad="1"))  # Warn/Audit bindings do not refuse
        await c.delete(VAPB, "no-bad")
        await c.create(VAPB, _binding("no-bad"))
        with pytest.raises(ApiError) as e:
            await c.create(CONFIGMAP, _cm("refused", bad="1"))
        assert e.value.code == 422 and e.value.reason == "Invalid"
        assert 'configmaps "refused" is invalid: ValidatingAdmissionPolicy \'no-bad\' with binding \'no-bad\' ' \
               'denied request: no key named bad' in str(e.value)
        await c.create(CONFIGMAP, _cm("fine", good="1"))
        with pytest.raises(ApiError) as e:  # updates are checked too
            await c.patch(CONFIGMAP, "fine", {"data": {"bad": "1"}}, "default")
        assert e.value.code == 422
        await c.create(CONFIGMAP, _cm("exempt-1", bad="1"))  # matchConditions false: not applied
        await c.delete(CONFIGMAP, "fine", "default")  # DELETE is not among its operations
        await c.delete(VAPB, "no-bad")
        await c.create(CONFIGMAP, _cm("after-unbinding", bad="1"))


async def test_evaluation_errors_and_params_fail_closed_unless_ignored(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig, max_retries=0) as c:
        await c.create(VAP, _policy("errs", "object.data.missing == 'x'"))  # no such key: an evaluation error
        await c.create(VAPB, _binding("errs"))
        with pytest.raises(ApiError) as e:
            await c.create(CONFIGMAP, _cm("a", k="v"))
        assert e.value.code == 403 and "expression evaluation error" in str(e.value)
        await c.patch(VAP, "errs", {"spec": {"failurePolicy": "Ignore"}})
        await c.create(CONFIGMAP, _cm("b", k="v"))
        await c.delete(VAPB, "errs")
        await c.create(VAP, _policy("params", "true", paramKind={"apiVersion": "v1", "kind": "ConfigMap"}))
        await c.create(VAPB, _binding("params"))
        with pytest.raises(ApiError) as e:
            await c.create(CONFIGMAP, _cm("c", k="v"))
        assert e.value.code == 403 and "params (paramKind) are not supported" in str(e.value)


def test_expressions_get_only_the_fields_they_read() -> None:
    """CEL converts every value it is handed (a Permit with managedFields: milliseconds), so an expression
    gets only the paths it reads, each subtree whole; anything this cannot follow gets the whole object."""
    from kokpit.apiserver.admission_policy import _paths, _pruned

    assert _paths("object", ["object == null || object.spec.cluster == 'a'", "has(object.metadata.labels)"]) == [
        ("spec", "cluster"), ("metadata", "labels")]
    assert _paths("object", ["object.spec.targets.size() > 0"]) == [("spec", "targets")]  # a method: the receiver
    assert _paths("object", ["object['spec']"]) is None and _paths("object", ["f(object)"]) is None
    assert _paths("object", ["oldObject.spec.x == 1"]) == []  # oldObject is another name
    obj = {"spec": {"cluster": "c", "targets": ["n1"]}, "metadata": {"labels": {"a": "1"}, "managedFields": [{}]}}
    assert _pruned(obj, [("spec", "cluster"), ("metadata", "labels")]) == {
        "spec": {"cluster": "c"}, "metadata": {"labels": {"a": "1"}}}
    assert _pruned(obj, [("spec", "cluster"), ("spec",)]) == {"spec": obj["spec"]}  # the shorter path wins
    assert _pruned(obj, [("status", "x")]) == {} and _pruned(None, [("spec",)]) is None
    assert _pruned(obj, None) is obj


def test_the_policies_matching_a_request_are_remembered_until_a_policy_or_binding_changes() -> None:
    """Which policies match (group, resource, operation) is worked out once per recompile, not per write; a
    change to a policy or a binding (a store event under their prefixes) makes the next write look again."""
    from types import SimpleNamespace
    from typing import cast

    from kokpit.apiserver.admission_policy import AdmissionPolicies
    from kokpit.apiserver.resources import ResourceType
    from kokpit.apiserver.rest import Rest
    from kokpit.apiserver.storage.store import Event

    stored: dict[str, list[Obj]] = {"p": [], "b": []}
    policy_rt = SimpleNamespace(store_prefix="/vap/", group="admissionregistration.k8s.io")
    binding_rt = SimpleNamespace(store_prefix="/vapb/", group="admissionregistration.k8s.io")
    rest = SimpleNamespace(list_entries=lambda rt, _ns: (1, [
        (o["metadata"]["name"], SimpleNamespace(obj=o)) for o in stored["p" if rt is policy_rt else "b"]]))
    policies = AdmissionPolicies(cast(Rest, rest), cast(ResourceType, policy_rt), cast(ResourceType, binding_rt))
    cms = cast(ResourceType, SimpleNamespace(group="", plural="configmaps"))
    secrets = cast(ResourceType, SimpleNamespace(group="", plural="secrets"))

    def changed(key: str) -> None:
        policies.on_event(cast(Event, SimpleNamespace(key=key)))

    assert policies.matching(cms, "CREATE") == []
    stored["p"].append(_policy("no-bad", "true"))
    stored["b"].append(_binding("no-bad"))
    assert policies.matching(cms, "CREATE") == []  # no event yet: nothing was recompiled
    changed("/vapb/no-bad")
    assert [p.name for p in policies.matching(cms, "CREATE")] == ["no-bad"]
    assert policies.matching(cms, "DELETE") == [] and policies.matching(secrets, "CREATE") == []
    first = policies.matching(cms, "CREATE")
    assert policies.matching(cms, "CREATE") is first  # remembered
    stored["p"][0]["spec"]["matchConstraints"]["resourceRules"][0]["resources"] = ["secrets"]
    changed("/vap/no-bad")
    assert policies.matching(cms, "CREATE") == []
    assert [p.name for p in policies.matching(secrets, "UPDATE")] == ["no-bad"]
    changed("/core/configmaps/default/x")  # other writes do not recompile
    assert policies.matching(secrets, "UPDATE") is policies.matching(secrets, "UPDATE")
