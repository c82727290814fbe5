"""The legacy adapter: imperative commands become ChangeRequests, the answer and the audit show the
translation, and ambiguous or invalid commands are refused with what to fix (HTTP and `kokpit legacy`)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Running, cpv, person
from tests.portal.test_changes import api, mpv

from kokpit.portal._adapter import parse_command
from kokpit.portal._kinds import CPV, MPV
from kokpit.portal._plan import BadChange


def test_grammar() -> None:
    assert parse_command("reboot node n1,n2 in cluster fleet/c1") == {"verb": "reboot-node", "nodes": ["n1", "n2"],
                                                                      "cluster": "fleet/c1"}
    assert parse_command("reinstall node n3") == {"verb": "reinstall-node", "nodes": ["n3"], "cluster": ""}
    assert parse_command("upgrade component kubelet to 1.37.1 on nodes n1 n2 in cluster c1") == {
        "verb": "upgrade-component", "component": "kubelet", "version": "1.37.1", "nodes": ["n1", "n2"],
        "cluster": "c1"}
    assert parse_command("restart control-plane component kube-apiserver of cluster c1") == {
        "verb": "restart-control-plane", "component": "kube-apiserver", "cluster": "c1"}
    assert parse_command("release cluster c1 to v2") == {"verb": "release-cluster", "cluster": "c1", "version": "v2"}
    assert parse_command("create cluster c9 version v1 nodes 5") == {"verb": "create-cluster", "cluster": "c9",
                                                                     "version": "v1", "nodes": "5"}
    with pytest.raises(BadChange, match="the adapter understands"):
        parse_command("format disk sda")
    with pytest.raises(BadChange, match="cannot read"):
        parse_command('reboot node "n1')


async def test_commands_translate_refuse_and_audit(portal: Running) -> None:
    admin, biz = portal.fleet.admin, portal.fleet.biz
    for body in (cpv("v2b", "v1.37.2"), cpv("v2c", "v1.37.2")):
        try:
            await admin.create(CPV, body)
        except Exception:
            pass
    for name, v in (("kubelet-v1.37.0", "v1.37.0"), ("kubelet-v1.37.1", "v1.37.1")):
        try:
            await biz.create(MPV, mpv(name, v))
        except Exception:
            pass
    alice = await person(admin, "alice")
    async with api(portal, alice) as a:
        async def ready() -> bool:
            r = await a.post("/api/v1/legacy", json={"command": "upgrade component kubelet to 1.37.1 on nodes n0,n1"})
            return r.status_code == 201
        await eventually(ready, what="the adapter to resolve kubelet 1.37.1 in c1")
        r = await a.get("/api/v1/changes")
        made = [c for c in r.json()["changes"] if c["operation"] == "component-upgrade"]
        assert made and made[0]["cluster"] == "c1" and made[0]["author"].endswith(":alice")

        r = await a.post("/api/v1/legacy", json={"command": "release cluster c2 to v1.37.1"})
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["translation"]["changeRequest"]["spec"] == {"operation": "control-plane-release", "cluster": "c2",
                                                               "version": "v2"}
        assert out["approvalsRequired"] == 1 and "release Cluster c2 to v2" in out["message"]
        # ambiguous and invalid: refused, saying what to fix
        r = await a.post("/api/v1/legacy", json={"command": "release cluster c2 to 1.37.2"})
        assert r.status_code == 422 and "v2b, v2c" in r.json()["message"] and "name one" in r.json()["message"]
        r = await a.post("/api/v1/legacy", json={"command": "upgrade component kubelet to 9.9 on nodes n0"})
        assert r.status_code == 422 and "v1.37.1 (kubelet-v1.37.1)" in r.json()["message"]
        r = await a.post("/api/v1/legacy", json={"command": "reboot node ghost"})
        assert r.status_code == 422 and "ghost" in r.json()["message"]
        r = await a.post("/api/v1/legacy/release-cluster", json={"cluster": "nope", "version": "v2"})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "cluster"
        r = await a.post("/api/v1/legacy/explode", json={})
        assert r.status_code == 422 and "one of" in r.json()["message"]
        r = await a.post("/api/v1/legacy", content=b"[1,2]", headers={"content-type": "application/json"})
        assert r.status_code == 400

        async def audited() -> list[dict[str, object]] | None:
            recs = [x for x in (await a.get("/api/v1/audit")).json()["records"] if x["via"] == "adapter"]
            return recs if len(recs) >= 6 else None
        recs = await eventually(audited, what="the adapter's audit records")
        ok = [x for x in recs if x["action"] == "legacy.release-cluster" and x["outcome"] == "Succeeded"]
        assert ok and ok[0]["request"] == "release cluster c2 to v1.37.1"
        assert ok[0]["translation"][0]["kind"] == "ChangeRequest"
        assert any(x["outcome"] == "Refused" and "v2b" in x["message"] for x in recs)

    # the CLI sends the same to the portal, with the token of a kubeconfig-less user given on the command line
    assert portal.server.portal is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kokpit", "legacy", "release-cluster", "fleet/c1", "v2", "--portal", portal.url,
        "--token", alice, "--ca-file", str(portal.server.opts.data_dir / "pki" / "ca.crt"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err_b.decode()
    answer = json.loads(out_b)
    assert answer["translation"]["changeRequest"]["spec"]["cluster"] == "c1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kokpit", "legacy", "run", "release cluster c1 to nothing", "--portal", portal.url,
        "--token", alice, "--ca-file", str(portal.server.opts.data_dir / "pki" / "ca.crt"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err_b = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "no release 'nothing'" in err_b.decode()


async def test_restart_control_plane_becomes_a_restartedat_patch(portal: Running) -> None:
    """"restart control-plane component C of cluster X" is a ChangeRequest that, once approved, sets the
    Cluster's spec.controlPlane.restartedAt[C] to the change's creation time (with the approver's token); the
    answer, the approval and the audit show that patch; an unknown component or cluster is refused naming
    the field and listing what exists; the change closes when the cluster operator's row says every replica
    runs the restart (the operator's part runs for real in test_restart_control_plane_e2e.py)."""
    from kokpit.portal._kinds import CLUSTER

    admin = portal.fleet.admin
    alice, bob = await person(admin, "alice"), await person(admin, "bob")
    async with api(portal, alice) as a, api(portal, bob) as b:
        r = await a.post("/api/v1/legacy", json={"command": "restart control-plane component kube-scheduler of "
                                                            "cluster c1"})
        assert r.status_code == 422, r.text
        assert r.json()["details"]["causes"][0]["field"] == "spec.component"
        assert "runs no control-plane component 'kube-scheduler'" in r.json()["message"]
        assert "kube-apiserver" in r.json()["message"]
        r = await a.post("/api/v1/legacy/restart-control-plane", json={"component": "kube-apiserver",
                                                                        "cluster": "ghost"})
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "cluster"
        assert "fleet/c1" in r.json()["message"]
        r = await a.post("/api/v1/legacy", json={"command": "restart control-plane c1"})  # no component
        assert r.status_code == 422, r.text
        await admin.patch(CLUSTER, "c2", {"spec": {"paused": True}}, "fleet")
        try:
            async def paused_refused() -> bool:
                r = await a.post("/api/v1/legacy", json={"command": "restart control-plane component kube-apiserver "
                                                                    "of cluster c2"})
                return r.status_code == 422 and "is paused" in r.json()["message"]
            await eventually(paused_refused, what="a restart of a paused Cluster refused")
        finally:
            await admin.patch(CLUSTER, "c2", {"spec": {"paused": False}}, "fleet")

        r = await a.post("/api/v1/legacy", json={"command": "restart control-plane component kube-apiserver of "
                                                            "cluster fleet/c1"})
        assert r.status_code == 201, r.text
        out = r.json()
        name = out["translation"]["changeRequest"]["name"]
        assert out["translation"]["changeRequest"]["spec"] == {"operation": "control-plane-restart", "cluster": "c1",
                                                               "component": "kube-apiserver"}
        assert "spec.controlPlane.restartedAt.kube-apiserver" in out["message"]
        assert out["plan"]["budget"].startswith("control-plane-release") and out["approvalsRequired"] == 1
        before = (await admin.get(CLUSTER, "c1", "fleet"))["spec"].get("controlPlane", {}).get("restartedAt", {})
        assert "kube-apiserver" not in before  # nothing happens before the approval

        r = await b.post(f"/api/v1/changes/fleet/{name}/approve", json={"comment": "go"})
        assert r.status_code == 200, r.text
        created = r.json()["metadata"]["creationTimestamp"]
        patched = [o for o in r.json()["status"]["objects"] if o["kind"] == "Cluster"]
        assert [{k: v for k, v in o.items() if v} for o in patched] == [{"kind": "Cluster", "name": "c1", "namespace": "fleet", "verb": "patch", "patch": json.dumps(
            {"spec": {"controlPlane": {"restartedAt": {"kube-apiserver": created}}}}, separators=(",", ":"))}]
        c1 = await admin.get(CLUSTER, "c1", "fleet")
        assert c1["spec"]["controlPlane"]["restartedAt"] == {"kube-apiserver": created}
        assert "kokpit-portal" in {m["manager"] for m in c1["metadata"].get("managedFields") or []}

        async def approval_audited() -> list[dict[str, object]] | None:
            recs = [x for x in (await a.get("/api/v1/audit")).json()["records"]
                    if x["action"] == "changerequest.approve" and x["target"].endswith(name)]
            return recs or None
        rec = (await eventually(approval_audited, what="the approval's audit record"))[0]
        assert rec["outcome"] == "Succeeded" and rec["translation"] == patched

        # the cluster operator reports the restart done (its row); the change closes with it
        rows = [{**row, "restartedAt": created, "healthy": True} if row["name"] == "kube-apiserver" else row
                for row in c1["status"]["components"]]
        await admin.patch_status(CLUSTER, "c1", {"status": {"components": rows}}, "fleet")

        async def closed() -> dict[str, object] | None:
            cr = (await a.get(f"/api/v1/changes/fleet/{name}")).json()
            return cr if cr["status"].get("outcome") else None
        cr = await eventually(closed, what="the restart change to close")
        assert cr["status"]["outcome"] == "Succeeded"
        view = (await a.get("/api/v1/clusters/fleet/c1")).json()  # the Cluster page says when it restarted
        assert next(x for x in view["components"] if x["name"] == "kube-apiserver")["restartedAt"] == created

    # the CLI: the same refusal, said on stderr with exit code 1
    assert portal.server.portal is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kokpit", "legacy", "restart-control-plane", "kube-nothing", "--cluster", "fleet/c1",
        "--portal", portal.url, "--token", alice, "--ca-file", str(portal.server.opts.data_dir / "pki" / "ca.crt"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err_b = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "runs no control-plane component 'kube-nothing'" in err_b.decode(), err_b

    # written by hand (kubectl), a restartedAt that is not a component name and a time is refused, naming it
    from kokpit.client import ApiError

    for bad in ({"kube-apiserver": "yesterday"}, {"Kube_APIServer": "2026-12-07T08:00:00Z"}):
        with pytest.raises(ApiError) as e:
            await admin.patch(CLUSTER, "c2", {"spec": {"controlPlane": {"restartedAt": bad}}}, "fleet")
        assert e.value.code == 422 and "spec.controlPlane.restartedAt" in str(e.value), str(e.value)
