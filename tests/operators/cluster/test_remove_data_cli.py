"""`kokpit remove-cluster-data`, what the operator's cleanup Pod runs: removes exactly ROOT/NAME, refuses
anything that is not a Cluster name (no path tricks), and is idempotent (a retried Pod succeeds)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kokpit.cli.main import app


def test_removes_the_cluster_folder_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "c1" / "apiserver").mkdir(parents=True)
    (tmp_path / "c1" / "apiserver" / "state.db").write_bytes(b"x")
    (tmp_path / "c10").mkdir()
    out = CliRunner().invoke(app, ["remove-cluster-data", "--root", str(tmp_path), "--name", "c1"])
    assert out.exit_code == 0, out.output
    assert "removed" in out.output and not (tmp_path / "c1").exists() and (tmp_path / "c10").is_dir()
    again = CliRunner().invoke(app, ["remove-cluster-data", "--root", str(tmp_path), "--name", "c1"])
    assert again.exit_code == 0 and "nothing to remove" in again.output


def test_refuses_names_that_are_not_cluster_names(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    for bad in ("..", "../keep", "a/b", "UPPER", "", "-x"):
        out = CliRunner().invoke(app, ["remove-cluster-data", "--root", str(tmp_path / "keep"), "--name", bad])
        assert out.exit_code != 0, bad
        assert "--name must be a Cluster name" in out.output, (bad, out.output)
    assert (tmp_path / "keep").is_dir()
    missing = CliRunner().invoke(app, ["remove-cluster-data", "--root", str(tmp_path / "nope"), "--name", "c1"])
    assert missing.exit_code != 0 and "is not a folder" in missing.output
