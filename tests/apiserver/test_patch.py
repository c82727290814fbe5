"""Tests of the patch engine against the shapes real clients send (kubectl, kopf, controllers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kokpit.apiserver.errors import APIError
from kokpit.apiserver.patch import (
    fields_set,
    json_merge_patch,
    json_patch,
    server_side_apply,
    strategic_merge_patch,
    update_managed_fields,
)

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


@cache
def _defs() -> dict[str, Any]:
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.37.0-local"
    with open(root / "_definitions.json") as f:
        return json.load(f)["$defs"]  # type: ignore[no-any-return]


def make_resolver(defs: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Follows `#/$defs/X` and `/api/_definitions.json#/$defs/X` refs."""

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 16:
            ref = node["$ref"]
            name = ref.split("#/$defs/", 1)[1]
            node = defs[name]
            seen += 1
        return node

    return resolve


RESOLVE = make_resolver(_defs())


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


POD = ref("io.k8s.api.core.v1.Pod")
DEPLOYMENT = {"$ref": "/api/_definitions.json#/$defs/io.k8s.api.apps.v1.Deployment"}
NODE = ref("io.k8s.api.core.v1.Node")
CONFIGMAP = ref("io.k8s.api.core.v1.ConfigMap")


def mf(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """managedFields by manager (asserting each manager appears once)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in obj["metadata"].get("managedFields", []):
        key = entry["manager"] if entry["operation"] == "Apply" else f"{entry['manager']}/Update"
        assert key not in out
        out[key] = entry
    return out


def deployment(replicas: int = 1, image: str = "nginx:1.25") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image,
                                         "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "resourceVersion": "7",
                     "labels": {"app": "web", "tier": "front"}, "finalizers": ["a.example.com/x"]},
        "spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
                {"name": "sidecar", "image": "proxy:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
    }


def node() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        ]},
    }


# ------------------------------------------------------------------------------------- JSON merge patch


def test_json_merge_patch_rfc7386_examples() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert json_merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert json_merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert json_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert json_merge_patch({"a": "foo"}, "bar") == "bar"
    assert json_merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert json_merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert json_merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_json_merge_patch_does_not_mutate_inputs() -> None:
    target = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}
    patch = {"metadata": {"labels": {"b": "2"}}}
    out = json_merge_patch(target, patch)
    out["spec"]["x"].append(2)
    assert target == {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1]}}
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}


# ------------------------------------------------------------------------------------------- JSON patch


def test_json_patch_kopf_finalizer_with_resource_version_test() -> None:
    obj = pod()
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "kopf.zalando.org/KopfFinalizerMarker"},
    ]
    out = json_patch(obj, ops)
    assert out["metadata"]["finalizers"] == ["a.example.com/x", "kopf.zalando.org/KopfFinalizerMarker"]
    assert obj["metadata"]["finalizers"] == ["a.example.com/x"]  # input untouched


def test_json_patch_failed_test_is_422_naming_the_path() -> None:
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "6"},
           {"op": "remove", "path": "/metadata/finalizers/0"}]
    with pytest.raises(APIError) as err:
        json_patch(pod(), ops)
    assert err.value.code == 422
    assert err.value.reason == "Invalid"
    assert "/metadata/resourceVersion" in err.value.message
    assert err.value.status()["code"] == 422


@pytest.mark.parametrize("ops", [
    [{"op": "remove", "path": "/metadata/nope"}],
    [{"op": "replace", "path": "/spec/nodeName", "value": "x"}],
    [{"op": "add", "path": "/nothere/x", "value": 1}],
    [{"op": "add", "path": "/metadata/finalizers/9", "value": "x"}],
])
def test_json_patch_missing_path_is_422(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(APIError) as err:
        json_patch(pod(), ops)
    assert err.value.code == 422


@pytest.mark.parametrize("ops", [
    {"op": "add", "path": "/a", "value": 1},
    [{"op": "frobnicate", "path": "/a"}],
    [{"path": "/a", "value": 1}],
    [{"op": "add", "value": 1}],
    [{"op": "add", "path": "/a"}],
    ["not an op"],
    "nonsense",
])
def test_json_patch_malformed_is_400(ops: Any) -> None:
    with pytest.raises(APIError) as err:
        json_patch(pod(), ops)
    assert err.value.code == 400
    assert err.value.reason == "BadRequest"


# -------------------------------------------------------------------------------- strategic merge patch


def test_smp_cordon_and_uncordon() -> None:
    cordoned = strategic_merge_patch(node(), {"spec": {"unschedulable": True}}, NODE, RESOLVE)
    assert cordoned["spec"] == {"podCIDR": "10.0.0.0/24", "unschedulable": True}
    uncordoned = strategic_merge_patch(cordoned, {"spec": {"unschedulable": None}}, NODE, RESOLVE)
    assert uncordoned["spec"] == {"podCIDR": "10.0.0.0/24"}
    assert cordoned["spec"]["unschedulable"] is True  # input untouched


def test_smp_patch_one_container_image_by_name() -> None:
    out = strategic_merge_patch(pod(), {"spec": {"containers": [{"name": "sidecar", "image": "proxy:2"}]}},
                                POD, RESOLVE)
    containers = out["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[1] == {"name": "sidecar", "image": "proxy:2"}
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_smp_new_container_goes_first_like_kube() -> None:
    # apimachinery puts patch items before server-only ones when their relative order is unknown
    out = strategic_merge_patch(pod(), {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}},
                                POD, RESOLVE)
    assert [c["name"] for c in out["spec"]["containers"]] == ["debug", "app", "sidecar"]


def test_smp_nested_merge_env_and_ports() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                                      "ports": [{"containerPort": 9090}]}]}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    app = out["spec"]["containers"][0]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "22"}, {"name": "C", "value": "3"}]
    assert [p["containerPort"] for p in app["ports"]] == [9090, 8080]
    assert app["image"] == "app:1"


def test_smp_delete_container_with_patch_directive() -> None:
    patch = {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]


def test_smp_replace_list_directive() -> None:
    patch = {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]


def test_smp_replace_and_delete_map_directives() -> None:
    out = strategic_merge_patch(pod(), {"metadata": {"labels": {"$patch": "replace", "new": "1"}}}, POD, RESOLVE)
    assert out["metadata"]["labels"] == {"new": "1"}
    out = strategic_merge_patch(pod(), {"spec": {"containers": [{"name": "app", "env": None}]}}, POD, RESOLVE)
    assert "env" not in out["spec"]["containers"][0]
    out = strategic_merge_patch(pod(), {"metadata": {"labels": {"$patch": "delete"}}}, POD, RESOLVE)
    assert out["metadata"]["labels"] == {}


def test_smp_kubectl_apply_patch_with_set_element_order() -> None:
    # what kubectl apply (client-side) sends after reordering containers and changing one image
    live = pod()
    patch = {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
        "containers": [{"name": "sidecar", "image": "proxy:3"}],
    }}
    out = strategic_merge_patch(live, patch, POD, RESOLVE)
    assert [c["name"] for c in out["spec"]["containers"]] == ["sidecar", "app"]
    assert out["spec"]["containers"][0]["image"] == "proxy:3"
    assert out["spec"]["containers"][1]["image"] == "app:1"


def test_smp_kubectl_apply_removes_container_and_env_with_order() -> None:
    patch = {"spec": {
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [
            {"$setElementOrder/env": [{"name": "B"}], "name": "app", "env": [{"name": "A", "$patch": "delete"}]},
            {"name": "sidecar", "$patch": "delete"},
        ],
    }}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert "$setElementOrder/env" not in out["spec"]["containers"][0]


def test_smp_set_element_order_alone_reorders() -> None:
    patch = {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert [c["name"] for c in out["spec"]["containers"]] == ["sidecar", "app"]


def test_smp_primitive_merge_list_finalizers() -> None:
    out = strategic_merge_patch(pod(), {"metadata": {"finalizers": ["b.example.com/y", "a.example.com/x"]}},
                                POD, RESOLVE)
    assert out["metadata"]["finalizers"] == ["b.example.com/y", "a.example.com/x"]
    out = strategic_merge_patch(
        out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x"]}}, POD, RESOLVE)
    assert out["metadata"]["finalizers"] == ["b.example.com/y"]
    ordered = strategic_merge_patch(
        {"metadata": {"finalizers": ["x", "y"]}},
        {"metadata": {"$setElementOrder/finalizers": ["y", "z", "x"], "finalizers": ["z"]}}, POD, RESOLVE)
    assert ordered["metadata"]["finalizers"] == ["y", "z", "x"]


def test_smp_non_merge_lists_replace() -> None:
    out = strategic_merge_patch(pod(), {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}, POD, RESOLVE)
    assert out["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    args = strategic_merge_patch(
        {"spec": {"containers": [{"name": "app", "args": ["a", "b"]}]}},
        {"spec": {"containers": [{"name": "app", "args": ["c"]}]}}, POD, RESOLVE)
    assert args["spec"]["containers"][0]["args"] == ["c"]


def test_smp_node_status_conditions_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}}
    out = strategic_merge_patch(node(), patch, NODE, RESOLVE)
    conds = out["status"]["conditions"]
    assert [c["type"] for c in conds] == ["MemoryPressure", "Ready"]
    assert conds[1] == {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}
    assert conds[0]["status"] == "False"


def test_smp_labels_and_annotations() -> None:
    patch = {"metadata": {"labels": {"tier": None, "env": "prod"}, "annotations": {"a/b": "c"}}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert out["metadata"]["labels"] == {"app": "web", "env": "prod"}
    assert out["metadata"]["annotations"] == {"a/b": "c"}


def test_smp_retain_keys_on_deployment_strategy() -> None:
    live = deployment()
    live["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    out = strategic_merge_patch(live, patch, DEPLOYMENT, RESOLVE)
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_retain_keys_on_volume_source_switch() -> None:
    patch = {"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "c"}}]}}
    out = strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert out["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "c"}}]


def test_smp_dollar_fields_that_are_not_directives_are_data() -> None:
    crd_schema = {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"$ref": "#/x"}}}}
    out = strategic_merge_patch({"spec": {"versions": []}}, {"spec": {"schema": crd_schema}}, None, RESOLVE)
    assert out["spec"]["schema"] == crd_schema


def test_smp_without_schema_merges_maps_and_replaces_lists() -> None:
    live = {"spec": {"items": [1, 2], "nested": {"a": 1}}}
    out = strategic_merge_patch(live, {"spec": {"items": [3], "nested": {"b": 2}}}, None, RESOLVE)
    assert out == {"spec": {"items": [3], "nested": {"a": 1, "b": 2}}}


@pytest.mark.parametrize("patch", [
    {"spec": {"containers": [{"image": "no-name"}]}},
    {"spec": {"containers": [{"name": "app", "$patch": "explode"}]}},
    {"metadata": {"labels": {"$patch": "explode"}}},
    {"spec": {"$setElementOrder/containers": "x"}},
])
def test_smp_bad_patches_are_400(patch: dict[str, Any]) -> None:
    with pytest.raises(APIError) as err:
        strategic_merge_patch(pod(), patch, POD, RESOLVE)
    assert err.value.code == 400


# ----------------------------------------------------------------------------------- server-side apply


def test_ssa_create_records_fieldsv1_like_kube() -> None:
    obj = server_side_apply(None, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    assert obj["spec"]["replicas"] == 1
    entries = obj["metadata"]["managedFields"]
    assert len(entries) == 1
    entry = entries[0]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "time", "fieldsType")} == {
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": NOW, "fieldsType": "FieldsV1"}
    assert "subresource" not in entry
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},  # LabelSelector is an atomic map
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
                }}},
            },
        },
    }


def test_ssa_reapply_same_config_is_stable() -> None:
    first = server_side_apply(None, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    again = server_side_apply(first, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, LATER)
    assert again["spec"] == first["spec"]
    assert mf(again)["kubectl"]["fieldsV1"] == mf(first)["kubectl"]["fieldsV1"]
    assert mf(again)["kubectl"]["time"] == LATER


def test_ssa_conflict_with_update_manager_and_force() -> None:
    live = server_side_apply(None, deployment(replicas=1), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    # an HPA-like controller scales with a PUT/patch
    scaled = json_merge_patch(live, {"spec": {"replicas": 5}})
    update_managed_fields(live, scaled, "kube-controller-manager", "Update", DEPLOYMENT, RESOLVE, NOW)
    assert "f:replicas" not in mf(scaled)["kubectl"]["fieldsV1"]["f:spec"]
    assert mf(scaled)["kube-controller-manager/Update"]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}

    with pytest.raises(APIError) as err:
        server_side_apply(scaled, deployment(replicas=3), "kubectl", False, DEPLOYMENT, RESOLVE, LATER)
    e = err.value
    assert (e.code, e.reason) == (409, "Conflict")
    assert e.message == ('Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1: '
                         ".spec.replicas")
    assert [c.to_dict() for c in e.causes] == [{
        "reason": "FieldManagerConflict", "field": ".spec.replicas",
        "message": 'conflict with "kube-controller-manager" using apps/v1'}]

    forced = server_side_apply(scaled, deployment(replicas=3), "kubectl", True, DEPLOYMENT, RESOLVE, LATER)
    assert forced["spec"]["replicas"] == 3
    assert "kube-controller-manager/Update" not in mf(forced)  # lost its only field → dropped
    assert "f:replicas" in mf(forced)["kubectl"]["fieldsV1"]["f:spec"]


def test_ssa_conflict_lists_every_field_and_manager() -> None:
    live = server_side_apply(None, deployment(), "alice", False, DEPLOYMENT, RESOLVE, NOW)
    with pytest.raises(APIError) as err:
        server_side_apply(live, deployment(replicas=2, image="nginx:2"), "bob", False, DEPLOYMENT, RESOLVE, NOW)
    fields = sorted(c.field for c in err.value.causes)
    assert fields == ['.spec.replicas', '.spec.template.spec.containers[name="nginx"].image']
    assert err.value.message.startswith('Apply failed with 2 conflicts: conflicts with "alice":')


def test_ssa_two_managers_share_a_field_with_the_same_value() -> None:
    live = server_side_apply(None, deployment(), "alice", False, DEPLOYMENT, RESOLVE, NOW)
    shared = server_side_apply(live, deployment(), "bob", False, DEPLOYMENT, RESOLVE, NOW)
    managers = mf(shared)
    assert managers["alice"]["fieldsV1"] == managers["bob"]["fieldsV1"]
    # bob stops applying replicas: alice still owns it, so it stays
    cfg = deployment()
    del cfg["spec"]["replicas"]
    after = server_side_apply(shared, cfg, "bob", False, DEPLOYMENT, RESOLVE, LATER)
    assert after["spec"]["replicas"] == 1
    assert "f:replicas" not in mf(after)["bob"]["fieldsV1"]["f:spec"]
    assert "f:replicas" in mf(after)["alice"]["fieldsV1"]["f:spec"]


def test_ssa_removes_fields_dropped_from_the_applied_config() -> None:
    cfg = deployment()
    cfg["metadata"]["labels"]["team"] = "a"
    cfg["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy:1"})
    live = server_side_apply(None, cfg, "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    # someone else sets a field on the sidecar: it survives the sidecar's removal from the config
    edited = json.loads(json.dumps(live))
    edited["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = "Always"
    update_managed_fields(live, edited, "kubectl-edit", "Update", DEPLOYMENT, RESOLVE, NOW)

    after = server_side_apply(edited, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, LATER)
    assert after["metadata"]["labels"] == {"app": "web"}
    containers = after["spec"]["template"]["spec"]["containers"]
    assert containers[0]["name"] == "nginx"
    assert containers[1] == {"name": "sidecar", "imagePullPolicy": "Always"}

    # without another owner the whole item goes
    plain = server_side_apply(live, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, LATER)
    assert [c["name"] for c in plain["spec"]["template"]["spec"]["containers"]] == ["nginx"]
    assert 'k:{"name":"sidecar"}' not in json.dumps(plain["metadata"]["managedFields"])


def test_ssa_unowned_server_fields_survive_and_lists_merge_by_key() -> None:
    live = server_side_apply(None, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = "TCP"
    cfg = deployment(image="nginx:1.26")
    after = server_side_apply(live, cfg, "kubectl", False, DEPLOYMENT, RESOLVE, LATER)
    c = after["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "nginx:1.26"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_ssa_finalizers_set_and_ownership_values() -> None:
    live = pod()
    cfg: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["mine.example.com/f"]}}
    out = server_side_apply(live, cfg, "ctrl", False, POD, RESOLVE, NOW)
    assert out["metadata"]["finalizers"] == ["a.example.com/x", "mine.example.com/f"]
    managers = mf(out)
    assert managers["ctrl"]["fieldsV1"] == {"f:metadata": {"f:finalizers": {'v:"mine.example.com/f"': {}}}}
    # a pre-existing object without managedFields: its fields belong to before-first-apply
    assert 'v:"a.example.com/x"' in managers["before-first-apply/Update"]["fieldsV1"]["f:metadata"]["f:finalizers"]
    # dropping the finalizer from the config removes only ours
    cfg["metadata"]["finalizers"] = []
    out2 = server_side_apply(out, cfg, "ctrl", False, POD, RESOLVE, NOW)
    assert out2["metadata"]["finalizers"] == ["a.example.com/x"]


def test_ssa_ignores_server_set_metadata_in_config() -> None:
    live = server_side_apply(None, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    live["metadata"].update(uid="u-1", resourceVersion="10", creationTimestamp=NOW, generation=1)
    cfg = deployment()
    cfg["metadata"].update(uid="other", resourceVersion="3", generation=9,
                           managedFields=[{"manager": "evil", "operation": "Apply", "fieldsV1": {}}])
    out = server_side_apply(live, cfg, "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    assert out["metadata"]["uid"] == "u-1"
    assert out["metadata"]["resourceVersion"] == "10"
    assert out["metadata"]["generation"] == 1
    assert set(mf(out)) == {"kubectl"}
    assert set(mf(out)["kubectl"]["fieldsV1"]["f:metadata"]) == {"f:labels"}


def test_ssa_custom_resource_without_schema_lists_are_atomic() -> None:
    cr = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": {"name": "m1"},
          "spec": {"nodeName": "n1", "packages": ["kubelet-1.30", "containerd-1.7"]}}
    live = server_side_apply(None, cr, "kokpit", False, None, RESOLVE, NOW)
    assert mf(live)["kokpit"]["fieldsV1"] == {"f:spec": {"f:nodeName": {}, "f:packages": {}}}
    with pytest.raises(APIError) as err:
        server_side_apply(live, {**cr, "spec": {"packages": ["kubelet-1.31"]}}, "other", False, None, RESOLVE, NOW)
    assert [c.field for c in err.value.causes] == [".spec.packages"]
    # the owner replaces the list whole
    upgraded = server_side_apply(live, {**cr, "spec": {"nodeName": "n1", "packages": ["kubelet-1.31"]}},
                                 "kokpit", False, None, RESOLVE, NOW)
    assert upgraded["spec"]["packages"] == ["kubelet-1.31"]


CRD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "components": {"type": "array", "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"],
                           "items": {"type": "object", "properties": {
                               "name": {"type": "string"}, "version": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                         "additionalProperties": {"type": "string"}},
        }},
    },
}


def test_ssa_crd_schema_list_and_map_types() -> None:
    base = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"}}
    a = server_side_apply(None, {**base, "spec": {"components": [{"name": "etcd", "version": "3.5"}],
                                                  "tags": ["x"], "selector": {"a": "1"}}},
                          "alice", False, CRD_SCHEMA, RESOLVE, NOW)
    b = server_side_apply(a, {**base, "spec": {"components": [{"name": "apiserver", "version": "1.30"}],
                                               "tags": ["y"]}}, "bob", False, CRD_SCHEMA, RESOLVE, NOW)
    assert b["spec"]["components"] == [{"name": "etcd", "version": "3.5"}, {"name": "apiserver", "version": "1.30"}]
    assert b["spec"]["tags"] == ["x", "y"]
    assert mf(b)["bob"]["fieldsV1"]["f:spec"] == {
        "f:components": {'k:{"name":"apiserver"}': {".": {}, "f:name": {}, "f:version": {}}},
        "f:tags": {'v:"y"': {}},
    }
    assert mf(b)["alice"]["fieldsV1"]["f:spec"]["f:selector"] == {}
    with pytest.raises(APIError) as err:
        server_side_apply(b, {**base, "spec": {"selector": {"b": "2"}}}, "bob", False, CRD_SCHEMA, RESOLVE, NOW)
    assert [c.field for c in err.value.causes] == [".spec.selector"]


def test_ssa_status_subresource_entry() -> None:
    live = server_side_apply(None, node(), "kubelet", False, NODE, RESOLVE, NOW)
    cfg = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
           "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
    out = server_side_apply(live, cfg, "node-problem-detector", False, NODE, RESOLVE, NOW, subresource="status")
    entry = mf(out)["node-problem-detector"]
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"]["f:status"]["f:conditions"]['k:{"type":"Ready"}'] == {
        ".": {}, "f:reason": {}, "f:status": {}, "f:type": {}}
    with pytest.raises(APIError) as err:
        server_side_apply(out, {**cfg, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                          "other", False, NODE, RESOLVE, NOW, subresource="status")
    assert 'conflicts with "kubelet":' in err.value.message or 'conflict with "kubelet"' in err.value.message
    assert any(c.field == '.status.conditions[type="Ready"].status' for c in err.value.causes)


def test_ssa_requires_object_and_manager() -> None:
    with pytest.raises(APIError) as err:
        server_side_apply(None, ["x"], "m", False, None, RESOLVE, NOW)  # type: ignore[arg-type]
    assert err.value.code == 400
    with pytest.raises(APIError):
        server_side_apply(None, {"a": 1}, "", False, None, RESOLVE, NOW)


# --------------------------------------------------------------------------------------- managed fields


def test_update_on_create_records_everything_like_kube() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "c", "namespace": "d", "uid": "u", "resourceVersion": "1", "labels": {"a": "b"}},
          "data": {"k": "v", "k2": "v2"}}
    update_managed_fields(None, cm, "kubectl-create", "Update", CONFIGMAP, RESOLVE, NOW)
    assert cm["metadata"]["managedFields"] == [{
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": NOW,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {".": {}, "f:k": {}, "f:k2": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}},
    }]


def test_update_moves_ownership_and_drops_empty_managers() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    update_managed_fields(None, cm, "creator", "Update", CONFIGMAP, RESOLVE, NOW)
    edited = json_merge_patch(cm, {"data": {"k": "v2", "extra": "1"}})
    update_managed_fields(cm, edited, "kubectl-edit", "Update", CONFIGMAP, RESOLVE, LATER)
    managers = mf(edited)
    assert managers["creator/Update"]["fieldsV1"] == {"f:data": {}}
    assert managers["creator/Update"]["time"] == NOW
    assert managers["kubectl-edit/Update"]["fieldsV1"] == {"f:data": {"f:extra": {}, "f:k": {}}}
    assert managers["kubectl-edit/Update"]["time"] == LATER
    # deleting the data map removes it from every manager; creator is left with nothing and goes
    emptied = json_merge_patch(edited, {"data": None})
    update_managed_fields(edited, emptied, "kubectl-edit", "Update", CONFIGMAP, RESOLVE, LATER)
    assert "managedFields" not in emptied["metadata"]


def test_update_without_changes_keeps_managed_fields() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    update_managed_fields(None, cm, "creator", "Update", CONFIGMAP, RESOLVE, NOW)
    same = json.loads(json.dumps(cm))
    same["metadata"]["resourceVersion"] = "99"
    update_managed_fields(cm, same, "someone", "Update", CONFIGMAP, RESOLVE, LATER)
    assert same["metadata"]["managedFields"] == cm["metadata"]["managedFields"]


def test_update_reset_with_empty_list_and_explicit_entries() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    update_managed_fields(None, cm, "creator", "Update", CONFIGMAP, RESOLVE, NOW)
    reset = json_merge_patch(cm, {"metadata": {"managedFields": []}})
    update_managed_fields(cm, reset, "cleaner", "Update", CONFIGMAP, RESOLVE, NOW)
    assert "managedFields" not in reset["metadata"]
    # a client may write managedFields explicitly (main resource): they replace the history
    mine = [{"manager": "me", "operation": "Apply", "apiVersion": "v1", "time": NOW,
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}]
    explicit = json_merge_patch(cm, {"metadata": {"managedFields": mine}})
    update_managed_fields(cm, explicit, "writer", "Update", CONFIGMAP, RESOLVE, NOW)
    assert explicit["metadata"]["managedFields"] == mine
    # ...but not through a subresource
    via_status = json_merge_patch(cm, {"metadata": {"managedFields": mine}})
    update_managed_fields(cm, via_status, "writer", "Update", CONFIGMAP, RESOLVE, NOW, subresource="status")
    assert via_status["metadata"]["managedFields"] == cm["metadata"]["managedFields"]


def test_client_side_apply_then_server_side_apply_conflicts() -> None:
    # kubectl apply (client-side) creates with fieldManager kubectl-client-side-apply
    created = deployment(replicas=2)
    update_managed_fields(None, created, "kubectl-client-side-apply", "Update", DEPLOYMENT, RESOLVE, NOW)
    # kubectl edit changes the image
    edited = strategic_merge_patch(
        created, {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:edit"}]}}}},
        DEPLOYMENT, RESOLVE)
    update_managed_fields(created, edited, "kubectl-edit", "Update", DEPLOYMENT, RESOLVE, LATER)
    with pytest.raises(APIError) as err:
        server_side_apply(edited, deployment(replicas=3, image="nginx:ssa"), "kubectl", False, DEPLOYMENT,
                          RESOLVE, LATER)
    by_field = {c.field: c.message for c in err.value.causes}
    assert by_field == {
        ".spec.replicas": 'conflict with "kubectl-client-side-apply" using apps/v1',
        '.spec.template.spec.containers[name="nginx"].image': 'conflict with "kubectl-edit" using apps/v1',
    }
    # applying the live values conflicts with nobody
    ok = server_side_apply(edited, deployment(replicas=2, image="nginx:edit"), "kubectl", False, DEPLOYMENT,
                           RESOLVE, LATER)
    assert ok["spec"] == edited["spec"]


def test_fields_set_of_pod() -> None:
    tree = fields_set(pod(), POD, RESOLVE)
    assert set(tree) == {"f:metadata", "f:spec"}
    assert set(tree["f:metadata"]) == {"f:labels", "f:finalizers"}
    assert tree["f:metadata"]["f:finalizers"] == {'v:"a.example.com/x"': {}}
    app = tree["f:spec"]["f:containers"]['k:{"name":"app"}']
    assert app["f:env"]['k:{"name":"B"}'] == {".": {}, "f:name": {}, "f:value": {}}
    assert app["f:ports"]['k:{"containerPort":8080,"protocol":"TCP"}']["f:protocol"] == {}
    assert tree["f:spec"]["f:tolerations"] == {}
    assert tree["f:spec"]["f:volumes"]['k:{"name":"data"}']["f:emptyDir"] == {}


def test_update_put_without_managed_fields_keeps_history() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    update_managed_fields(None, cm, "creator", "Update", CONFIGMAP, RESOLVE, NOW)
    put: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                           "data": {"k": "v", "n": "1"}}
    update_managed_fields(cm, put, "writer", "Update", CONFIGMAP, RESOLVE, LATER)
    managers = mf(put)
    assert managers["creator/Update"]["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
    assert managers["writer/Update"]["fieldsV1"] == {"f:data": {"f:n": {}}}
    # entries come out in kube's order: operation, then time, then manager
    assert [e["manager"] for e in put["metadata"]["managedFields"]] == ["creator", "writer"]


def test_label_removed_by_merge_patch_leaves_every_manager() -> None:
    live = server_side_apply(None, deployment(), "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    unlabeled = json_merge_patch(live, {"metadata": {"labels": {"app": None}}})
    update_managed_fields(live, unlabeled, "kubectl-label", "Update", DEPLOYMENT, RESOLVE, LATER)
    assert "f:metadata" not in mf(unlabeled)["kubectl"]["fieldsV1"]
    assert "f:spec" in mf(unlabeled)["kubectl"]["fieldsV1"]
    assert "kubectl-label/Update" not in mf(unlabeled)  # it only removed: owns nothing


def test_ssa_dropping_last_label_drops_the_empty_map() -> None:
    cfg = deployment()
    cfg["metadata"]["labels"] = {"only": "one"}
    live = server_side_apply(None, cfg, "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    cfg2 = deployment()
    del cfg2["metadata"]["labels"]
    after = server_side_apply(live, cfg2, "kubectl", False, DEPLOYMENT, RESOLVE, NOW)
    assert "labels" not in after["metadata"]


def test_smp_added_finalizer_goes_first_like_kube() -> None:
    out = strategic_merge_patch({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["z", "a"]}},
                                POD, RESOLVE)
    assert out["metadata"]["finalizers"] == ["z", "a"]
    out = strategic_merge_patch({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["z"]}},
                                POD, RESOLVE)
    assert out["metadata"]["finalizers"] == ["z", "a"]


def test_copy_is_deep_and_handles_what_orjson_cannot() -> None:
    from kokpit.apiserver.patch import deep_copy as _copy

    src = {"a": [{"b": 1}], "big": 2**70, "f": -0.0}
    out = _copy(src)
    assert out == src and out is not src and out["a"][0] is not src["a"][0]
    assert _copy([1, {"x": None}]) == [1, {"x": None}] and _copy("s") == "s"


def test_strategic_merge_patch_copies_the_original_unless_told_not_to() -> None:
    from kokpit.apiserver.patch import strategic_merge_patch
    from kokpit.apiserver.schema import resolve

    orig = {"metadata": {"labels": {"a": "1"}}}
    out = strategic_merge_patch(orig, {"metadata": {"labels": {"b": "2"}}}, None, resolve)
    assert orig == {"metadata": {"labels": {"a": "1"}}} and out["metadata"]["labels"] == {"a": "1", "b": "2"}
    body = {"metadata": {"labels": {"c": "3"}}}
    out = strategic_merge_patch(orig, body, None, resolve, copy=False)
    assert out["metadata"]["labels"] == {"a": "1", "c": "3"} and body == {"metadata": {"labels": {"c": "3"}}}


def test_field_trees_are_built_in_one_sorted_pass() -> None:
    """_tree_from_paths builds the FieldsV1 tree from the sorted paths in one pass; it must give what the
    straightforward two-pass build gave (an unordered tree, then a sorted copy), key order included, since
    managedFields are stored and served as built: random path sets with shared prefixes, members with and
    without children, and the root as a member."""
    import random

    import orjson

    from kokpit.apiserver.patch.fieldsets import _tree_from_paths

    def reference(paths: set[tuple[str, ...]]) -> dict[str, Any]:
        root: dict[str, Any] = {}
        for path in paths:
            node = root
            for element in path:
                node = node.setdefault(element, {})
            node["."] = {}

        def finish(node: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if "." in node and len(node) > 1:
                out["."] = {}
            for key in sorted(node):
                if key != ".":
                    child = node[key]
                    out[key] = {} if len(child) == 1 and "." in child else finish(child)
            return out
        return finish(root)

    rnd = random.Random(7)
    elements = ["f:a", "f:b", "f:spec", 'k:{"name":"x"}', 'k:{"name":"y"}', 'v:"s"', "f:z"]
    for _ in range(2000):
        paths = {tuple(rnd.choice(elements) for _ in range(rnd.randint(0, 4))) for _ in range(rnd.randint(0, 12))}
        if () in paths and rnd.random() < 0.7:
            paths.discard(())
        assert orjson.dumps(_tree_from_paths(paths)) == orjson.dumps(reference(paths)), paths
