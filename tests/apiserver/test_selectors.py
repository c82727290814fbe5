"""Label and field selectors: kube's grammar, matching semantics and 400s."""

from __future__ import annotations

import pytest

from kokpit.apiserver.builtins import builtin_resource_types
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.selectors import (
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
    validate_label_key,
)


def _rt(kind: str, group: str = "") -> ResourceType:
    return next(r for r in builtin_resource_types() if r.kind == kind and r.group == group)


# ----------------------------------------------------------------------------------- label selectors

@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {"a": "b"}, True),
        ("", None, True),
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app=web", None, False),
        ("app==web", {"app": "web"}, True),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),  # missing key satisfies !=
        ("app!=web", {"app": "web"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod,staging)", {"env": "dev"}, False),
        ("env in (prod)", {}, False),
        ("env notin (prod,staging)", {"env": "dev"}, True),
        ("env notin (prod,staging)", {}, True),
        ("env notin (prod,staging)", {"env": "prod"}, False),
        ("tier", {"tier": ""}, True),
        ("tier", {"other": "x"}, False),
        ("!tier", {"other": "x"}, True),
        ("!tier", {"tier": "x"}, False),
        ("app=web,tier", {"app": "web", "tier": "1"}, True),
        ("app=web,tier", {"app": "web"}, False),
        ("  app = web ,  !canary  ", {"app": "web"}, True),
        ("app=", {"app": ""}, True),
        ("app=", {"app": "x"}, False),
        ("kokpit.io/node=n1", {"kokpit.io/node": "n1"}, True),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas>2", {"replicas": "2"}, False),
        ("replicas<2", {"replicas": "x"}, False),
        ("x notin ()", {"x": "a"}, True),
        ("x notin ()", {"x": ""}, False),
    ],
)
def test_label_selector_matching(selector: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("env in (prod", "expected ',' or ')'"),
        ("env in prod", "expected '('"),
        ("app=web tier", "expected ','"),
        ("app web", "expected one of: in, notin"),
        ("=web", "expected a label key"),
        ("app=web,", "after ','"),
        ("app=-web", "invalid label value '-web'"),
        ("-app=web", "invalid label key '-app'"),
        ("a" * 64 + "=x", "no more than 63 characters"),
        ("Bad_Prefix/app=x", "prefix part"),
        ("app=" + "v" * 64, "no more than 63 characters"),
        ("replicas>two", "must be an integer"),
        ("app in (a b)", "expected ',' or ')'"),
    ],
)
def test_label_selector_errors_are_400_naming_selector(selector: str, fragment: str) -> None:
    with pytest.raises(APIError) as e:
        parse_label_selector(selector)
    assert e.value.code == 400
    assert e.value.reason == "BadRequest"
    assert repr(selector) in e.value.message
    assert fragment in e.value.message


def test_label_selector_canonical_string_and_equality_requirements() -> None:
    sel = parse_label_selector("z in (b,a), app=web, !gone, tier, x!=y, env notin (q)")
    assert str(sel) == "app=web,env notin (q),!gone,tier,x!=y,z in (a,b)"
    assert sel.equality_requirements() == {"app": "web"}
    assert parse_label_selector(str(sel)) == sel
    assert parse_label_selector("").empty
    assert not sel.empty


def test_validate_label_key() -> None:
    assert validate_label_key("app.kubernetes.io/name") is None
    assert validate_label_key("a/b/c") is not None
    assert validate_label_key("/x") is not None
    assert validate_label_key("x/") is not None


def test_label_selector_from_dict() -> None:
    sel = label_selector_from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "Exists"},
            {"key": "zone", "operator": "NotIn", "values": ["a"]},
        ],
    })
    assert sel.matches({"app": "web", "env": "prod", "tier": "x", "zone": "b"})
    assert not sel.matches({"app": "web", "env": "prod", "tier": "x", "zone": "a"})
    assert not sel.matches({"app": "web", "env": "prod", "tier": "x", "canary": "1"})
    assert not sel.matches({"app": "web", "env": "dev", "tier": "x"})
    assert str(sel) == "app=web,!canary,env in (prod,staging),tier,zone notin (a)"
    assert label_selector_from_dict({}).matches({"any": "thing"})
    assert not label_selector_from_dict(None).matches({})
    assert not label_selector_from_dict(None).empty


@pytest.mark.parametrize(
    ("sel", "fragment"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
         "'Equals' is not a valid label selector operator"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "can't be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
        ({"matchLabels": {"bad key": "x"}}, "matchLabels"),
    ],
)
def test_label_selector_from_dict_errors(sel: dict[str, object], fragment: str) -> None:
    with pytest.raises(APIError) as e:
        label_selector_from_dict(sel)
    assert e.value.code == 400
    assert fragment in e.value.message


# ----------------------------------------------------------------------------------- field selectors

POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "n1", "restartPolicy": "Always"},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}]},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("spec.nodeName=n1", True),
        ("spec.nodeName==n1", True),
        ("spec.nodeName=n2", False),
        ("spec.nodeName!=n2", True),
        ("spec.nodeName!=n1", False),
        ("metadata.name=web-1,metadata.namespace=default", True),
        ("metadata.name=web-1, status.phase!=Running", False),
        ("status.podIP=10.0.0.7", True),
        ("spec.schedulerName=", True),  # unset compares as ""
        ("spec.hostNetwork=false", True),
        ("spec.nodeName=n1,,status.phase=Running", True),
    ],
)
def test_field_selector_matching(selector: str, expected: bool) -> None:
    assert parse_field_selector(selector, _rt("Pod")).matches(POD) is expected


def test_field_selector_unsupported_field() -> None:
    with pytest.raises(APIError) as e:
        parse_field_selector("spec.foo=bar", _rt("Pod"))
    assert e.value.code == 400
    assert e.value.reason == "BadRequest"
    assert e.value.message == "field label not supported: spec.foo"
    with pytest.raises(APIError):
        parse_field_selector("spec.nodeName=x", _rt("ConfigMap"))


@pytest.mark.parametrize("selector", ["spec.nodeName", "=x", "spec.nodeName=a,,bogus"])
def test_field_selector_syntax_errors(selector: str) -> None:
    with pytest.raises(APIError) as e:
        parse_field_selector(selector, _rt("Pod"))
    assert e.value.code == 400


def test_field_selector_escapes_and_index_hint() -> None:
    rt = _rt("Pod")
    obj = {"metadata": {"name": "a,b=c"}, "spec": {"nodeName": "n1"}}
    sel = parse_field_selector(r"metadata.name=a\,b\=c,spec.nodeName=n1", rt)
    assert sel.matches(obj)
    assert sel.equality_requirements() == {"metadata.name": "a,b=c", "spec.nodeName": "n1"}
    assert str(sel) == r"metadata.name=a\,b\=c,spec.nodeName=n1"


def test_field_selectors_of_other_kinds() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {}}
    assert parse_field_selector("spec.unschedulable=false", _rt("Node")).matches(node)
    assert not parse_field_selector("spec.unschedulable=true", _rt("Node")).matches(node)
    assert parse_field_selector("spec.unschedulable=true", _rt("Node")).matches({"spec": {"unschedulable": True}})
    assert parse_field_selector("type=Opaque", _rt("Secret")).matches({"type": "Opaque"})
    assert parse_field_selector("status.phase=Active", _rt("Namespace")).matches({"status": {"phase": "Active"}})


def test_event_field_selectors_kubectl_describe() -> None:
    ev = {"metadata": {"name": "e", "namespace": "ns"},
          "involvedObject": {"kind": "Pod", "name": "web", "namespace": "ns", "uid": "u1"},
          "reason": "Started", "type": "Normal", "source": {"component": "kubelet"}}
    sel = parse_field_selector("involvedObject.name=web,involvedObject.namespace=ns,involvedObject.uid=u1",
                               _rt("Event"))
    assert sel.matches(ev)
    assert parse_field_selector("source=kubelet,type=Normal,reason=Started", _rt("Event")).matches(ev)
    assert not parse_field_selector("involvedObject.kind=Node", _rt("Event")).matches(ev)
    # events.k8s.io names, on both the served form and the stored core form
    v1 = _rt("Event", "events.k8s.io")
    sel = parse_field_selector("regarding.name=web,regarding.kind=Pod", v1)
    assert sel.matches(ev)
    assert sel.matches({"regarding": {"kind": "Pod", "name": "web"}})
    with pytest.raises(APIError):
        parse_field_selector("involvedObject.name=web", v1)
