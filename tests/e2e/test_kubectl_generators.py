"""kubectl's imperative generators send protobuf bodies; what the server stores must equal what the same
generator prints with --dry-run=client (JSON), field for field."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import orjson
import pytest

from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e

GENERATORS = [
    ["create", "configmap", "cm1", "--from-literal=a=1", "--from-literal=b=two"],
    ["create", "secret", "generic", "s1", "--from-literal=password=hunter2", "--type=Opaque"],
    ["create", "serviceaccount", "robot"],
    ["create", "deployment", "web", "--image=nginx:1.27", "--port=8080", "--replicas=3"],
    ["create", "service", "clusterip", "svc1", "--tcp=80:8080"],
    ["create", "service", "nodeport", "svc2", "--tcp=443:8443", "--node-port=30443"],
    ["create", "poddisruptionbudget", "pdb1", "--selector=app=x", "--min-available=2"],
    ["create", "poddisruptionbudget", "pdb2", "--selector=app=y", "--max-unavailable=30%"],
]


@pytest.fixture
def kube(shared_apiserver: ApiServerProcess, kubectl_bin: str) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**os.environ, "KUBECONFIG": str(shared_apiserver.kubeconfig)}
    yield kubectl_bin, env


def _run(kube: tuple[str, dict[str, str]], *args: str) -> subprocess.CompletedProcess[bytes]:
    binary, env = kube
    return subprocess.run([binary, *args], env=env, capture_output=True, timeout=30)


def _spec_of(obj: dict) -> dict:
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    meta = obj.get("metadata", {})
    out["labels"] = meta.get("labels")
    return out


@pytest.mark.parametrize("args", GENERATORS, ids=lambda a: "-".join(a[1:3]))
def test_generator_objects_arrive_intact(kube: tuple[str, dict[str, str]], args: list[str]) -> None:
    ns = "gen-" + "-".join(args[1:3]).replace("generic", "g")[:40]
    _run(kube, "create", "namespace", ns)
    expected = orjson.loads(_run(kube, *args, "-n", ns, "--dry-run=client", "-o", "json").stdout)
    created = _run(kube, *args, "-n", ns, "-o", "json")
    assert created.returncode == 0, created.stderr.decode()
    stored = orjson.loads(created.stdout)
    assert stored["metadata"]["uid"]
    # every field the generator set is stored unchanged (the server may add defaults, never drop or alter)
    want = _spec_of(expected)

    def contains(have: object, exp: object, path: str) -> None:
        if isinstance(exp, dict):
            assert isinstance(have, dict), f"{path}: expected an object, got {have!r}"
            for k, v in exp.items():
                if v in ({}, None, []):
                    continue
                contains(have.get(k), v, f"{path}.{k}")
        elif isinstance(exp, list):
            assert isinstance(have, list) and len(have) == len(exp), f"{path}: {have!r} != {exp!r}"
            for i, (h, e) in enumerate(zip(have, exp, strict=True)):
                contains(h, e, f"{path}[{i}]")
        else:
            assert have == exp, f"{path}: stored {have!r}, generator sent {exp!r}"

    contains(_spec_of(stored), want, args[1])


def test_unsupported_protobuf_kind_is_refused_clearly(kube: tuple[str, dict[str, str]]) -> None:
    _run(kube, "create", "namespace", "gen-job")
    res = _run(kube, "create", "job", "j1", "--image=busybox", "-n", "gen-job")
    assert res.returncode != 0
    err = res.stderr.decode()
    assert "protobuf request bodies are decoded only for" in err and "kubectl create -f" in err
    assert _run(kube, "get", "job", "j1", "-n", "gen-job").returncode != 0, "nothing half-stored"


def test_auth_can_i_answers_per_token(kube: tuple[str, dict[str, str]],
                                       shared_apiserver: ApiServerProcess) -> None:
    binary, env = kube
    admin = _run(kube, "auth", "can-i", "create", "pods")
    assert admin.stdout.decode().strip() == "yes"
    viewer_env = {**env, "KUBECONFIG": str(shared_apiserver.data_dir / "viewer.kubeconfig")}
    no = subprocess.run([binary, "auth", "can-i", "create", "pods"], env=viewer_env, capture_output=True,
                        timeout=30)
    assert no.stdout.decode().startswith("no") and no.returncode == 1
    yes = subprocess.run([binary, "auth", "can-i", "list", "pods"], env=viewer_env, capture_output=True,
                         timeout=30)
    assert yes.stdout.decode().strip() == "yes"
