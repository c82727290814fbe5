"""lightkube's AsyncClient against the embedded server, unmodified.

lightkube is kokpit's own wire client (see DESIGN.md), so everything the operators will do through it is
exercised here end to end: typed CRUD, watch resume from a resourceVersion, the four patch types (merge,
JSON, strategic, server-side apply with field managers and force), status patches, optimistic concurrency,
and generic resources for a CRD once the server reports it Established.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, KubeConfig, operators
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.apiextensions_v1 import (
    CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion,
    CustomResourceValidation,
    JSONSchemaProps,
)
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, NodeCondition, NodeStatus, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node
from lightkube.types import PatchType

from kokpit.apiserver.rbac_admission import ROOT_CA
from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
async def kube(shared_apiserver: ApiServerProcess) -> AsyncIterator[AsyncClient]:
    c = AsyncClient(KubeConfig.from_file(shared_apiserver.kubeconfig), field_manager="e2e-lightkube")
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def ns(kube: AsyncClient) -> str:
    name = f"lk-{uuid.uuid4().hex[:8]}"
    await kube.create(Namespace(metadata=ObjectMeta(name=name)))
    deadline = time.monotonic() + 15  # settled: the namespace's root CA ConfigMap exists (as in kube)
    while not [c async for c in kube.list(ConfigMap, namespace=name, fields={"metadata.name": ROOT_CA})]:
        assert time.monotonic() < deadline, f"no {ROOT_CA} in {name}"
        await asyncio.sleep(0.05)
    return name


async def take(stream: Any, n: int, timeout: float = 15.0) -> list[tuple[str, Any]]:
    """The first `n` events of a lightkube watch, then close the stream."""
    out: list[tuple[str, Any]] = []

    async def run() -> None:
        async with contextlib.aclosing(stream) as it:
            async for ev in it:
                out.append(ev)
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


def rv_of(obj: Any) -> int:
    return int(obj.metadata.resourceVersion)


# ------------------------------------------------------------------------------------------ CRUD
async def test_create_get_list_delete(kube: AsyncClient, ns: str) -> None:
    made = await kube.create(ConfigMap(metadata=ObjectMeta(name="lk", labels={"app": "lk"}), data={"a": "1"}),
                             namespace=ns)
    assert made.metadata.uid and made.metadata.namespace == ns and made.data == {"a": "1"}
    got = await kube.get(ConfigMap, "lk", namespace=ns)
    assert got.metadata.uid == made.metadata.uid and got.metadata.labels == {"app": "lk"}
    for i in range(3):
        await kube.create(ConfigMap(metadata=ObjectMeta(name=f"other-{i}")), namespace=ns)
    names = [o.metadata.name async for o in kube.list(ConfigMap, namespace=ns)]
    assert sorted(names) == [ROOT_CA, "lk", "other-0", "other-1", "other-2"]
    selected = [o.metadata.name async for o in kube.list(ConfigMap, namespace=ns, labels={"app": "lk"})]
    assert selected == ["lk"]
    # lightkube pages with limit/continue when chunk_size is set
    paged = [o.metadata.name async for o in kube.list(ConfigMap, namespace=ns, chunk_size=1)]
    assert sorted(paged) == sorted(names)
    await kube.delete(ConfigMap, "lk", namespace=ns)
    with pytest.raises(ApiError) as ei:
        await kube.get(ConfigMap, "lk", namespace=ns)
    assert ei.value.status.code == 404 and ei.value.status.reason == "NotFound"


async def test_create_existing_and_stale_replace(kube: AsyncClient, ns: str) -> None:
    first = await kube.create(ConfigMap(metadata=ObjectMeta(name="c"), data={"v": "0"}), namespace=ns)
    with pytest.raises(ApiError) as ei:
        await kube.create(ConfigMap(metadata=ObjectMeta(name="c")), namespace=ns)
    assert ei.value.status.code == 409 and ei.value.status.reason == "AlreadyExists"
    fresh = await kube.get(ConfigMap, "c", namespace=ns)
    fresh.data = {"v": "1"}
    replaced = await kube.replace(fresh)
    assert rv_of(replaced) > rv_of(first)
    first.data = {"v": "lost"}
    with pytest.raises(ApiError) as ei:
        await kube.replace(first)
    assert ei.value.status.code == 409 and ei.value.status.reason == "Conflict"
    assert "the object has been modified" in (ei.value.status.message or "")
    assert (await kube.get(ConfigMap, "c", namespace=ns)).data == {"v": "1"}


# ------------------------------------------------------------------------------------------ watch
async def test_watch_resume_from_resource_version(kube: AsyncClient, ns: str) -> None:
    start = await kube.create(ConfigMap(metadata=ObjectMeta(name="w-start")), namespace=ns)
    rv0 = start.metadata.resourceVersion
    for i in range(3):
        await kube.create(ConfigMap(metadata=ObjectMeta(name=f"w{i}")), namespace=ns)
    first = await take(kube.watch(ConfigMap, namespace=ns, resource_version=rv0, server_timeout=10), 2)
    assert [(t, o.metadata.name) for t, o in first] == [("ADDED", "w0"), ("ADDED", "w1")]
    resume = first[-1][1].metadata.resourceVersion
    await kube.patch(ConfigMap, "w0", {"data": {"k": "v"}}, namespace=ns, patch_type=PatchType.MERGE)
    await kube.delete(ConfigMap, "w1", namespace=ns)
    second = await take(kube.watch(ConfigMap, namespace=ns, resource_version=resume, server_timeout=10), 3)
    assert [(t, o.metadata.name) for t, o in second] == [("ADDED", "w2"), ("MODIFIED", "w0"), ("DELETED", "w1")]
    assert second[1][1].data == {"k": "v"}
    rvs = [rv_of(o) for _t, o in first + second]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)


async def test_watch_live_events(kube: AsyncClient, ns: str) -> None:
    """A watch without resourceVersion: synthetic ADDEDs for what exists, then the writes made meanwhile."""
    await kube.create(ConfigMap(metadata=ObjectMeta(name="pre")), namespace=ns)
    stream = kube.watch(ConfigMap, namespace=ns, server_timeout=10, fields={"metadata.name": operators.not_equal(ROOT_CA)})

    async def writer() -> None:
        await kube.create(ConfigMap(metadata=ObjectMeta(name="live")), namespace=ns)

    task = asyncio.create_task(writer())
    try:
        events = await take(stream, 2)
    finally:
        await task
    # the write may land before or after the watch starts: ADDED either way, each exactly once
    assert sorted((t, o.metadata.name) for t, o in events) == [("ADDED", "live"), ("ADDED", "pre")]


# ------------------------------------------------------------------------------------------ patches
def _deployment(name: str) -> Deployment:
    return Deployment(
        metadata=ObjectMeta(name=name),
        spec=DeploymentSpec(
            replicas=1, selector=LabelSelector(matchLabels={"app": name}),
            template=PodTemplateSpec(metadata=ObjectMeta(labels={"app": name}), spec=PodSpec(containers=[
                Container(name="main", image="busybox:1", args=["a"]),
                Container(name="side", image="busybox:1")]))))


async def test_patch_merge_json_strategic(kube: AsyncClient, ns: str) -> None:
    await kube.create(ConfigMap(metadata=ObjectMeta(name="p"), data={"a": "1", "b": "2"}), namespace=ns)
    merged = await kube.patch(ConfigMap, "p", {"data": {"b": None, "c": "3"}}, namespace=ns,
                              patch_type=PatchType.MERGE)
    assert merged.data == {"a": "1", "c": "3"}
    jsonp = await kube.patch(ConfigMap, "p", [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "one"},
        {"op": "add", "path": "/metadata/labels", "value": {"patched": "json"}}],
        namespace=ns, patch_type=PatchType.JSON)
    assert jsonp.data == {"a": "one", "c": "3"} and jsonp.metadata.labels == {"patched": "json"}
    with pytest.raises(ApiError) as ei:
        await kube.patch(ConfigMap, "p", [{"op": "test", "path": "/data/a", "value": "1"}], namespace=ns,
                         patch_type=PatchType.JSON)
    assert ei.value.status.code == 422

    await kube.create(_deployment("sm"), namespace=ns)
    # strategic: containers merge by name, so only "main" changes and "side" stays
    dep = await kube.patch(Deployment, "sm", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox:2"}]}}}}, namespace=ns, patch_type=PatchType.STRATEGIC)
    cs = {c.name: c for c in dep.spec.template.spec.containers}
    assert set(cs) == {"main", "side"}
    assert cs["main"].image == "busybox:2" and cs["main"].args == ["a"] and cs["side"].image == "busybox:1"
    assert dep.metadata.generation == 2
    # the same body as a merge patch replaces the whole list
    dep = await kube.patch(Deployment, "sm", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox:3"}]}}}}, namespace=ns, patch_type=PatchType.MERGE)
    assert [c.name for c in dep.spec.template.spec.containers] == ["main"]


async def test_server_side_apply_managers_and_force(kube: AsyncClient, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns},
            "data": {"owned": "by-a", "shared": "a"}}
    made = await kube.patch(ConfigMap, "ssa", body, namespace=ns, patch_type=PatchType.APPLY,
                            field_manager="manager-a")
    assert made.data == {"owned": "by-a", "shared": "a"}
    managers = {m.manager: m.operation for m in made.metadata.managedFields}
    assert managers == {"manager-a": "Apply"}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns},
             "data": {"shared": "b"}}
    with pytest.raises(ApiError) as ei:
        await kube.patch(ConfigMap, "ssa", other, namespace=ns, patch_type=PatchType.APPLY,
                         field_manager="manager-b")
    assert ei.value.status.code == 409 and ei.value.status.reason == "Conflict"
    assert "manager-a" in (ei.value.status.message or "") and "data.shared" in (ei.value.status.message or "")
    forced = await kube.patch(ConfigMap, "ssa", other, namespace=ns, patch_type=PatchType.APPLY,
                              field_manager="manager-b", force=True)
    assert forced.data == {"owned": "by-a", "shared": "b"}
    assert {m.manager for m in forced.metadata.managedFields} == {"manager-a", "manager-b"}
    # manager-a re-applies without "shared": it gives the field up; manager-b keeps it
    again = await kube.patch(ConfigMap, "ssa", {**body, "data": {"owned": "by-a"}}, namespace=ns,
                             patch_type=PatchType.APPLY, field_manager="manager-a")
    assert again.data == {"owned": "by-a", "shared": "b"}


async def test_node_status_patch(kube: AsyncClient) -> None:
    name = f"lk-node-{uuid.uuid4().hex[:6]}"
    await kube.create(Node(metadata=ObjectMeta(name=name, labels={"role": "e2e"})))
    try:
        ready = NodeCondition(type="Ready", status="True", reason="KubeletReady", message="kubelet is posting",
                              lastHeartbeatTime=None, lastTransitionTime=None)
        patched = await kube.patch(Node.Status, name, {"status": {"conditions": [ready.to_dict()],
                                                                  "capacity": {"cpu": "4"}},
                                                       "metadata": {"labels": {"role": "changed-by-status"}},
                                                       "spec": {"unschedulable": True}},
                                   patch_type=PatchType.MERGE)
        assert isinstance(patched.status, NodeStatus)
        assert [(c.type, c.status) for c in patched.status.conditions] == [("Ready", "True")]
        node = await kube.get(Node, name)
        assert str(node.status.capacity["cpu"]) == "4"
        assert not node.spec or not node.spec.unschedulable  # /status ignores spec
        # the main endpoint ignores status
        node = await kube.patch(Node, name, {"status": {"capacity": {"cpu": "64"}}, "spec": {"unschedulable": True}},
                                patch_type=PatchType.MERGE)
        assert str(node.status.capacity["cpu"]) == "4" and node.spec.unschedulable is True
        status_only = await kube.get(Node.Status, name)
        assert [c.type for c in status_only.status.conditions] == ["Ready"]
    finally:
        await kube.delete(Node, name)


# ------------------------------------------------------------------------------------------ CRDs
async def _wait_established(kube: AsyncClient, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        crd = await kube.get(CustomResourceDefinition, name)
        conds = {c.type: c.status for c in (crd.status.conditions if crd.status else None) or []}
        if conds.get("Established") == "True" and conds.get("NamesAccepted") == "True":
            return
        assert time.monotonic() < deadline, f"CRD {name} not established: {conds}"
        await asyncio.sleep(0.05)


async def test_generic_resource_for_crd(kube: AsyncClient, ns: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    group = f"e2e{suffix}.example.com"
    plural = "gadgets"
    schema = JSONSchemaProps(type="object", properties={
        "spec": JSONSchemaProps(type="object", properties={
            "size": JSONSchemaProps(type="integer", minimum=1), "color": JSONSchemaProps(type="string")}),
        "status": JSONSchemaProps(type="object", properties={"phase": JSONSchemaProps(type="string")})})
    crd = CustomResourceDefinition(
        metadata=ObjectMeta(name=f"{plural}.{group}"),
        spec=CustomResourceDefinitionSpec(
            group=group, scope="Namespaced",
            names=CustomResourceDefinitionNames(kind="Gadget", plural=plural, singular="gadget", listKind="GadgetList"),
            versions=[CustomResourceDefinitionVersion(name="v1", served=True, storage=True,
                                                      schema=CustomResourceValidation(openAPIV3Schema=schema),
                                                      subresources={"status": {}})]))
    await kube.create(crd)
    await _wait_established(kube, f"{plural}.{group}")
    Gadget = create_namespaced_resource(group, "v1", "Gadget", plural)
    g = await kube.create(Gadget(metadata=ObjectMeta(name="g1"), spec={"size": 3, "color": "red"}), namespace=ns)
    assert g.spec == {"size": 3, "color": "red"} and g.metadata.generation == 1
    assert g.apiVersion == f"{group}/v1" and g.kind == "Gadget"
    listed = [o.metadata.name async for o in kube.list(Gadget, namespace=ns)]
    assert listed == ["g1"]
    patched = await kube.patch(Gadget, "g1", {"spec": {"size": 4}}, namespace=ns, patch_type=PatchType.MERGE)
    assert patched.spec == {"size": 4, "color": "red"} and patched.metadata.generation == 2
    st = await kube.patch(Gadget.Status, "g1", {"status": {"phase": "Ready"}}, namespace=ns,
                          patch_type=PatchType.MERGE)
    assert st.status == {"phase": "Ready"} and st.metadata.generation == 2
    with pytest.raises(ApiError) as ei:
        await kube.create(Gadget(metadata=ObjectMeta(name="g2"), spec={"size": 0}), namespace=ns)
    assert ei.value.status.code == 422 and "spec.size" in (ei.value.status.message or "")
    with pytest.raises(ApiError) as ei:
        await kube.patch(Gadget, "g1", {"spec": {"size": 5}}, namespace=ns, patch_type=PatchType.STRATEGIC)
    assert ei.value.status.code == 415  # kube: no strategic merge for custom resources
    applied = await kube.patch(Gadget, "g1", {"apiVersion": f"{group}/v1", "kind": "Gadget",
                                              "metadata": {"name": "g1", "namespace": ns},
                                              "spec": {"color": "blue"}},
                               namespace=ns, patch_type=PatchType.APPLY, field_manager="painter", force=True)
    assert applied.spec == {"size": 4, "color": "blue"}
    await kube.delete(Gadget, "g1", namespace=ns)
    with pytest.raises(ApiError) as ei:
        await kube.get(Gadget, "g1", namespace=ns)
    assert ei.value.status.code == 404
    await kube.delete(CustomResourceDefinition, f"{plural}.{group}")
