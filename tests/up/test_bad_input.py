"""`kokpit up` / `status` / `kubeconfig` on bad input: one line saying what to do, exit 1, nothing started
and nothing left locked."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kokpit.cli.main import app
from kokpit.up import DATA_FORMAT, UpError, UpOptions, preflight, validate

runner = CliRunner()


def one_error_line(result: object) -> str:
    out = getattr(result, "stderr", "") or getattr(result, "output", "")
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(("args", "says"), [
    (["--clusters", "-1"], "--clusters must be between 0 and 20 (got -1)"),
    (["--clusters", "1000"], "--clusters must be between 0 and 20"),
    (["--nodes", "10000000"], "--nodes must be between 0 and 10000 per cluster (got 10000000)"),
    (["--nodes", "-5"], "--nodes must be between 0"),
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 would listen on every interface"),
    (["--host", "::"], "would listen on every interface"),
    (["--host", "my-laptop"], "--host must be an IP address of this machine"),
])
def test_nonsense_counts_fail_before_touching_the_disk(tmp_path: Path, args: list[str], says: str) -> None:
    d = tmp_path / "fleet"
    result = runner.invoke(app, ["up", "--data-dir", str(d), *args])
    assert result.exit_code == 1
    assert says in one_error_line(result)
    assert not d.exists()


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["up", "--data-dir", str(blocker / "fleet"), "--port", "1"])
    assert result.exit_code == 1
    assert "cannot write to data dir" in one_error_line(result)
    assert "writable --data-dir" in one_error_line(result)


def test_incompatible_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    d.mkdir()
    (d / "FORMAT").write_text("kokpit-up/0\n")
    result = runner.invoke(app, ["up", "--data-dir", str(d)])
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "incompatible kokpit version" in line and "'kokpit-up/0'" in line and DATA_FORMAT in line
    assert (d / "FORMAT").read_text() == "kokpit-up/0\n"  # untouched


def test_foreign_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a kokpit data dir" in one_error_line(result)
    assert not (tmp_path / "FORMAT").exists()


def test_port_in_use_releases_the_lock(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(UpError, match=rf"port {port} is not available .*; pass a free one, e.g. --port \d+"):
            preflight(UpOptions(data_dir=d, port=port))
    lock = preflight(UpOptions(data_dir=d, port=port))  # the failed attempt held nothing
    lock.close()


def test_second_up_on_a_locked_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = preflight(UpOptions(data_dir=d, port=port))
    try:
        result = runner.invoke(app, ["up", "--data-dir", str(d), "--port", str(port)])
        assert result.exit_code == 1
        assert "is in use by another kokpit up" in one_error_line(result)
    finally:
        lock.close()
    assert (d / "FORMAT").read_text().strip() == DATA_FORMAT


def test_validate_accepts_the_defaults() -> None:
    validate(UpOptions())
    validate(UpOptions(clusters=0, nodes=0, port=65535))


@pytest.mark.parametrize("cmd", [["status"], ["kubeconfig", "cluster-1"]])
def test_status_and_kubeconfig_without_a_running_fleet(tmp_path: Path, cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a kokpit data dir" in one_error_line(result)
    (tmp_path / "FORMAT").write_text(DATA_FORMAT + "\n")
    result = runner.invoke(app, [*cmd, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no kokpit up is running on" in one_error_line(result)


def test_host_that_is_not_this_machine(tmp_path: Path) -> None:
    """An address no interface holds (TEST-NET-3) is refused before anything starts."""
    with pytest.raises(UpError, match=r"--host 203\.0\.113\.7 is not an address of this machine"):
        preflight(UpOptions(data_dir=tmp_path / "fleet", host="203.0.113.7", port=6443))
