"""The pure rules mapping a container spec to a local process (images, command line, mounts, backoff)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kokpit.kubelet import (
    IMAGE_NOT_RUNNABLE,
    ContainerConfigError,
    Mount,
    container_args,
    crash_backoff,
    hostpath_folder,
    is_kokpit_image,
    mount_env_name,
    rewrite_paths,
)
from kokpit.kubelet._http import tail_bytes
from kokpit.kubelet._procs import ProcessHandle, StateFile, process_start_time
from kokpit.kubelet._spec import upstream_argv


@pytest.mark.parametrize("image", ["kokpit", "kokpit:v0.3.1", "registry.example:5000/org/kokpit:v1",
                                   "ghcr.io/kokpit", "kokpit@sha256:abc"])
def test_kokpit_images(image: str) -> None:
    assert is_kokpit_image(image)


@pytest.mark.parametrize("image", ["nginx", "kokpit-agent:v1", "kokpit/other:v1", "registry/kokpitx", ""])
def test_other_images(image: str) -> None:
    assert not is_kokpit_image(image)


def test_container_args() -> None:
    assert container_args({"image": "kokpit", "args": ["apiserver", "--port", "1"]}) == ["apiserver", "--port", "1"]
    assert container_args({"image": "kokpit:v1", "command": ["kokpit", "apiserver"], "args": ["-v"]}) == [
        "apiserver", "-v"]
    assert container_args({"image": "kokpit", "command": ["/usr/bin/kokpit"]}) == []
    with pytest.raises(ContainerConfigError) as e:
        container_args({"image": "nginx:1.27"})
    assert e.value.reason == IMAGE_NOT_RUNNABLE and "only kokpit images" in e.value.message
    with pytest.raises(ContainerConfigError) as e:
        container_args({"image": "kokpit", "command": ["/bin/sh", "-c", "x"]})
    assert e.value.reason == "CreateContainerError"


def test_upstream_images_run_the_local_binary() -> None:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler images run the installed binary with
    the same arguments; without one the container waits with ImageNotRunnable naming the binary."""
    found = {"etcd": "/usr/bin/etcd"}.get
    got = upstream_argv({"image": "registry.k8s.io/etcd:3.5.21-0", "command": ["etcd", "--name=a"],
                         "args": ["--x=1"]}, found)
    assert got == ["/usr/bin/etcd", "--name=a", "--x=1"]
    assert upstream_argv({"image": "kokpit:v1", "args": ["apiserver"]}, found) is None
    assert upstream_argv({"image": "nginx"}, found) is None
    with pytest.raises(ContainerConfigError) as e:
        upstream_argv({"image": "registry.k8s.io/kube-apiserver:v1.37.0", "command": ["kube-apiserver"]}, found)
    assert e.value.reason == IMAGE_NOT_RUNNABLE and "kube-apiserver binary" in e.value.message


def test_mount_rewrite(tmp_path: Path) -> None:
    mounts = [Mount("data", "/var/lib/kokpit", tmp_path / "d"), Mount("pki", "/var/lib/kokpit/pki", tmp_path / "p")]
    assert rewrite_paths(["--data-dir", "/var/lib/kokpit", "/var/lib/kokpit/x/y", "--ca=/var/lib/kokpit/pki/ca.crt",
                          "/var/lib/kokpitx", "plain"], mounts) == [
        "--data-dir", str(tmp_path / "d"), str(tmp_path / "d" / "x" / "y"), f"--ca={tmp_path / 'p' / 'ca.crt'}",
        "/var/lib/kokpitx", "plain"]
    assert mount_env_name("etcd-data.v1") == "KOKPIT_MOUNT_ETCD_DATA_V1"


def test_hostpath_folder(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert hostpath_folder(root, "/srv/data") == root / "hostpath" / "srv" / "data"
    assert hostpath_folder(root, "/srv/../../etc") == root / "hostpath" / "srv" / "etc"
    assert hostpath_folder(root, str(root / "clusters" / "a")) == root / "clusters" / "a"
    assert hostpath_folder(root, "relative/x") == root / "hostpath" / "relative" / "x"


def test_crash_backoff_like_kubelet() -> None:
    assert [crash_backoff(n, 10, 300) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert crash_backoff(10_000, 10, 300) == 300


def test_tail_bytes() -> None:
    assert tail_bytes(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail_bytes(b"a\nb\nc", None) == b"a\nb\nc"
    assert tail_bytes(b"a\n", 0) == b""


def test_process_identity_survives_only_with_same_start_time(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = process_start_time(p.pid)
        assert st is not None
        assert ProcessHandle.adopt(p.pid, st) is not None
        assert ProcessHandle.adopt(p.pid, st + 1) is None  # a reused pid is not our process
        state = StateFile(tmp_path / "state.json")
        assert state.load() == {}
    finally:
        p.kill()
        p.wait()
    assert process_start_time(p.pid) is None
    assert not os.path.exists(f"/proc/{p.pid}") or process_start_time(p.pid) is None
