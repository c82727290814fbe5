"""Two portal replicas behind no sticky sessions (what deploy/portal.yaml runs): a session made by one is
opened by the other (the key comes from the shared Secret, mounted as a file), a CSRF token rendered by one is
accepted by the other, and only the replica holding the Lease carries changes forward — the other takes over
when it stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from tests.operators.risk.conftest import eventually
from tests.portal.conftest import Fleet, Running, login, person
from tests.portal.test_changes import api

from kokpit.client import NotFoundError
from kokpit.portal import PortalOptions, PortalServer
from kokpit.portal._extensions import default_extensions
from kokpit.portal._kinds import NODE_FAULT, RISK_POLICY
from kokpit.portal._session import load_or_create_key


def _replica(fleet: Fleet, tmp: Path, name: str, key: Path) -> PortalServer:
    return PortalServer(PortalOptions(kubeconfig=fleet.meta.kubeconfig, port=0, data_dir=tmp / name,
                                      session_key_file=key, extensions=default_extensions(), business_interval=0.2,
                                      leader_elect=True, lease_namespace="fleet", lease_name="test-portal"))


async def _fault(fleet: Fleet, name: str) -> dict[str, Any] | None:
    try:
        return dict(await fleet.biz.get(NODE_FAULT, name))
    except NotFoundError:
        return None


async def test_two_replicas_share_sessions_and_one_engine(fleet: Fleet, tmp_path: Path) -> None:
    key = tmp_path / "session-secret" / "session.key"  # the mounted kokpit-portal-session Secret
    load_or_create_key(key)
    a_srv, b_srv = _replica(fleet, tmp_path, "a", key), _replica(fleet, tmp_path, "b", key)
    a = Running(await a_srv.start(), a_srv, fleet)
    b = Running(await b_srv.start(), b_srv, fleet)
    stopped: list[PortalServer] = []
    try:
        async with a.http() as on_a:
            await login(on_a, fleet.meta.admin_token)
            cookies = dict(on_a.cookies)
            csrf = (await on_a.get("/risk")).text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # the next request lands on the other replica: same session, same CSRF token
        async with b.http(cookies=cookies) as on_b:
            page = await on_b.get("/fleet")
            assert page.status_code == 200 and 'id="whoami">kokpit-admin<' in page.text
            assert (await on_b.post("/risk/pause", data={"csrf": "forged"})).status_code == 403
            assert (await on_b.post("/risk/pause", data={"csrf": csrf})).status_code == 303
            assert (await fleet.admin.get(RISK_POLICY, "kokpit-emergency-stop"))["spec"]["paused"] is True
            assert (await on_b.post("/risk/resume", data={"csrf": csrf})).status_code == 303

        engines = [s.portal.changes.engine for s in (a_srv, b_srv) if s.portal is not None]

        async def one_leader() -> bool:
            return sum(1 for e in engines if e.elector is not None and e.elector.is_leader) == 1
        await eventually(one_leader, what="exactly one replica to lead the change engine")
        leader = a_srv if engines[0].elector is not None and engines[0].elector.is_leader else b_srv
        other = b_srv if leader is a_srv else a_srv

        try:
            await fleet.admin.create(RISK_POLICY, {"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
                                                   "metadata": {"name": "one-reboot-at-a-time"},
                                                   "spec": {"operations": ["node-reboot"],
                                                            "scope": {"allClusters": True}, "maxConcurrent": 1}})
        except Exception:
            pass
        alice = await person(fleet.admin, "alice")
        async with api(Running(other.url, other, fleet), alice) as on_other:
            async def planned() -> bool:
                r = await on_other.post("/api/v1/legacy", json={"command": "reboot node n0,n1 in cluster fleet/c1"})
                return r.status_code == 201
            await eventually(planned, what="the reboot change, made through the replica that does not lead")
        await eventually(lambda: _fault(fleet, "n0.reboot-requested"), what="the leader to ask for n0")
        await leader.stop()
        stopped.append(leader)
        other_engine = other.portal.changes.engine if other.portal is not None else None
        assert other_engine is not None and other_engine.elector is not None

        async def took_over() -> bool:
            return bool(other_engine.elector.is_leader)
        await eventually(took_over, what="the other replica to take the Lease over", timeout=40)
        await fleet.biz.patch_status(NODE_FAULT, "n0.reboot-requested", {"status": {
            "state": "Resolved", "resolution": {"by": "maintenance-flow", "at": "2026-12-07T05:00:00Z"}}})
        await eventually(lambda: _fault(fleet, "n1.reboot-requested"), what="the new leader to ask for n1")
        async with httpx.AsyncClient(base_url=other.url, verify=False, cookies=cookies) as still:
            assert (await still.get("/fleet")).status_code == 200  # logged in across the failover
    finally:
        for s in (a_srv, b_srv):
            if s not in stopped:
                await s.stop()
