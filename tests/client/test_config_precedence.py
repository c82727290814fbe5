"""Which cluster a process talks to when it is given no --kubeconfig: $KUBECONFIG before the Pod's own
ServiceAccount (client-go's order), the ServiceAccount before nothing — a business cluster's component run as
a Pod of the meta cluster must reach its business cluster, not the meta cluster it runs in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kokpit.client import load_config


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def _service_account(folder: Path) -> Path:
    folder.mkdir()
    (folder / "token").write_text("sa-token")
    (folder / "namespace").write_text("team")
    (folder / "ca.crt").write_text("")
    return folder


def test_kubeconfig_env_wins_over_the_pods_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = _service_account(tmp_path / "sa")
    monkeypatch.setenv("KOKPIT_SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "business.kubeconfig", "https://business:1")))
    assert load_config().cluster.server == "https://business:1"
    monkeypatch.delenv("KUBECONFIG")
    assert load_config().cluster.server == "https://127.0.0.1:6443"  # in-cluster, from the mapped folder
    explicit = _kubeconfig(tmp_path / "explicit.kubeconfig", "https://explicit:2")
    assert load_config(explicit).cluster.server == "https://explicit:2"
