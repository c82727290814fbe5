"""Secret ``stringData`` is a write-only convenience: kube-apiserver merges it into ``data`` (base64, stringData
winning over data for the same key) and never stores it.  Checked with real kubectl: apply, patch, and what a
read returns."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from kokpit.apiserver.testing import ApiServerProcess


def _kubectl(kubectl_bin: str, srv: ApiServerProcess, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([kubectl_bin, "--kubeconfig", str(srv.kubeconfig), *args], input=stdin, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_string_data_becomes_data_on_every_write(apiserver: ApiServerProcess, kubectl_bin: str, tmp_path: Path) -> None:
    manifest = tmp_path / "s.yaml"
    manifest.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\n"
                        "data: {kept: a2VwdA==, over: b2xk}\nstringData: {token: 'héllo wörld', over: new}\n")
    _kubectl(kubectl_bin, apiserver, "apply", "-f", str(manifest))
    got = json.loads(_kubectl(kubectl_bin, apiserver, "get", "secret", "s", "-o", "json"))
    assert "stringData" not in got
    data = {k: base64.b64decode(v).decode() for k, v in got["data"].items()}
    assert data == {"kept": "kept", "over": "new", "token": "héllo wörld"}
    # a strategic merge patch with stringData adds to data the same way
    _kubectl(kubectl_bin, apiserver, "patch", "secret", "s", "-p", '{"stringData": {"more": "x"}}')
    got = json.loads(_kubectl(kubectl_bin, apiserver, "get", "secret", "s", "-o", "json"))
    assert "stringData" not in got and base64.b64decode(got["data"]["more"]) == b"x"
    assert base64.b64decode(got["data"]["token"]).decode() == "héllo wörld"
    # the value kubectl reads back with jsonpath is the encoded one, as on a real cluster
    assert _kubectl(kubectl_bin, apiserver, "get", "secret", "s", "-o", "jsonpath={.data.more}") == "eA=="


def test_bad_string_data_is_refused_naming_the_field(apiserver: ApiServerProcess, kubectl_bin: str) -> None:
    r = subprocess.run([kubectl_bin, "--kubeconfig", str(apiserver.kubeconfig), "apply", "-f", "-"],
                       input="apiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: default}\n"
                             "stringData: {'no/slash': x}\n", capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "data" in r.stderr, r.stderr
