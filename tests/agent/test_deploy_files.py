"""The shipped ways to run the agent (deploy/node-agent/): a DaemonSet manifest valid for Kubernetes 1.37 and
a systemd unit, both using only options ``kokpit node-agent`` really has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "node-agent"


def _agent_options() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "kokpit.cli.main", "node-agent", "--help"], capture_output=True,
                         text=True, check=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    return set(re.findall(r"(--[a-z][a-z-]+)", out))


def test_daemonset_manifest_is_valid_and_uses_real_options() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]
    for d in docs:
        kubernetes_validate.validate(d, "1.37", strict=True)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["containers"][0]["securityContext"]["privileged"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    args = pod["containers"][0]["args"]
    options = _agent_options()
    assert {a.split("=")[0] for a in args} <= options, options
    assert "--root=/host" in args and any(a.startswith("--tls-dir=") for a in args)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    verbs = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert ("nodes", "list") not in verbs and ("nodes", "watch") not in verbs  # no list/watch load from nodes


def test_systemd_unit_is_valid_and_uses_real_options(tmp_path: Path) -> None:
    unit = (DEPLOY / "kokpit-node-agent.service").read_text()
    exec_start = " ".join(ln.strip().rstrip("\\") for ln in unit.split("ExecStart=", 1)[1].split("\n")[:2])
    assert set(re.findall(r"(--[a-z][a-z-]+)", exec_start)) <= _agent_options()
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (package systemd) is needed to check the unit"
    # verify the unit as written, with its ExecStart pointing at a program that exists here
    (tmp_path / "kokpit-node-agent.service").write_text(unit.replace("/opt/kokpit/bin/kokpit", sys.executable))
    (tmp_path / "default").write_text("KOKPIT_NODE_NAME=n1\nKOKPIT_AGENT_ADDRESS=127.0.0.1\n")
    text = (tmp_path / "kokpit-node-agent.service").read_text().replace("/etc/default/kokpit-node-agent",
                                                                        str(tmp_path / "default"))
    (tmp_path / "kokpit-node-agent.service").write_text(text)
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "kokpit-node-agent.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Unknown" not in r.stdout + r.stderr, r.stdout + r.stderr
