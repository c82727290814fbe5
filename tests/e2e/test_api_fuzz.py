"""Schemathesis against the real server's own OpenAPI v3 documents: core kinds and every kokpit CRD.

A fixed seed and a bounded number of cases (bench/fuzz.py runs the long version, bench/_apifuzz.py says what
is generated and checked). What must hold: no 5xx, no response that contradicts the served schema, no
dropped connection or hang, the server alive throughout, and every object created before the run identical
afterwards, and again after the server is killed (-9) and restarted.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from kokpit.api import crds
from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e

CASES = 3000
SEED = 13
BUDGET_S = 150.0  # a run cut short by a loaded machine still covers every operation (round-robin)


def load_fuzz() -> ModuleType:
    """bench/ is a folder of scripts, not a package on the test path: load the module from its file."""
    path = Path(__file__).resolve().parents[2] / "bench" / "_apifuzz.py"
    spec = importlib.util.spec_from_file_location("_apifuzz", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_apifuzz"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(BUDGET_S + 240)  # the budget, then the seeded objects checked, a kill -9 and a restart
def test_schemathesis_against_own_openapi(tmp_path: Path) -> None:
    fuzz = load_fuzz()
    srv = ApiServerProcess(tmp_path / "fuzzed").start()
    try:
        server = fuzz.Server(srv.url, str(srv.ca_file), srv.admin_token)
        fuzz.install_crds(server, crds())
        before = fuzz.seed(server)
        assert all(isinstance(v, dict) for v in before.values()), before
        docs = fuzz.documents(server, fuzz.GROUPS)
        assert set(docs) == set(fuzz.GROUPS)
        assert {p.rsplit("/", 1)[-1] for p in docs["apis/kokpit.io/v1alpha1"]["paths"]} >= {
            "clusters", "clusterpackageversions", "machines", "machinepackageversions"}

        report = fuzz.run(server, docs, CASES, SEED, deadline=time.monotonic() + BUDGET_S)
        print(report.summary())

        assert srv.proc is not None and srv.proc.poll() is None, srv.log_tail()
        assert report.cases >= min(CASES, 2 * report.operations), report.summary()
        assert not report.server_errors, "\n".join(report.server_errors[:10])
        assert not report.schema_violations, "\n".join(report.schema_violations[:10])
        assert not report.transport_errors, "\n".join(report.transport_errors[:10])
        assert sum(n for c, n in report.codes.items() if c < 300) > report.cases // 10, report.codes
        # generated writes get past validation to the storage: creates, and updates of what was created
        writes = report.writes()
        assert writes["created"] > 0 and writes["replaced"] + writes["patched"] > 0, report.by_method_text()
        assert srv.request("GET", "/readyz", auth=False) == (200, b"ok")
        assert fuzz.snapshot(server) == before

        srv.kill()
        srv.start()
        assert fuzz.snapshot(server) == before
    finally:
        srv.stop()
