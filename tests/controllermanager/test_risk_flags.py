"""The controller-manager's risk-center identity flags: ``--risk-kubeconfig`` (a kubeconfig of the meta cluster)
or ``--risk-in-cluster`` (the Pod's own ServiceAccount in the meta cluster, what the cluster operator gives an
actor), both with ``--risk-cluster``/``--risk-namespace``; bad combinations are refused with what to fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.cli.main import app
from kokpit.client import NAMESPACE
from kokpit.controllermanager import RiskAccess


async def test_in_cluster_risk_access_uses_the_pods_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    shared_apiserver: ApiServerProcess) -> None:
    """The meta cluster reached as a Pod reaches it: service host/port and the mounted token and CA."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(shared_apiserver.admin_token)
    (sa / "namespace").write_text("default")
    (sa / "ca.crt").write_bytes(shared_apiserver.ca_file.read_bytes())
    monkeypatch.setenv("KOKPIT_SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(shared_apiserver.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    client = await asyncio.to_thread(RiskAccess(None, "c1").client)
    try:
        assert client.server == f"https://127.0.0.1:{shared_apiserver.port}"
        assert (await client.get(NAMESPACE, "default"))["metadata"]["name"] == "default"
    finally:
        await client.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--risk-in-cluster"], "--risk-in-cluster needs --risk-cluster NAME and no --risk-kubeconfig"),
    (["--risk-kubeconfig", "/nonexistent", "--risk-cluster", "c1"],
     "--risk-kubeconfig needs an existing file and --risk-cluster NAME"),
])
def test_bad_risk_flags_say_what_to_fix(tmp_path: Path, args: list[str], message: str) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    result = CliRunner().invoke(app, ["controller-manager", "--kubeconfig", str(kc), *args])
    assert result.exit_code != 0 and message in result.output
