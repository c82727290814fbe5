"""The etcd walk's decisions without processes (the e2e runs real etcd): bootstrap, a release as add-then-remove
one change at a time, a repair that removes the broken member first only while quorum holds, and a roster entry
left by a kill -9 between the roster write and `member add` being finished."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import FakeClock, format_time
from kokpit.client import SECRET
from kokpit.operators.cluster import OperatorOptions
from kokpit.operators.cluster._etcd import EtcdTLS, EtcdWalker, LiveMember, RosterMember, read_roster
from kokpit.operators.cluster._plan import Names
from kokpit.operators.cluster._resources import INDEXERS_PORTS, PortAllocator, b64
from kokpit.operators.cluster._upstream import UpstreamSpec, secret_key, upstream_pki
from kokpit.runtime import FailureMemory, Store

from .conftest import StoreClient
from .test_risk import FakeGate

Obj = dict[str, Any]
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
NAMES = Names("team-a", "c1")


class FakeEtcd:
    """Members by peer URL; a member counts as started once its Pod is Ready."""

    def __init__(self) -> None:
        self.by_url: dict[str, LiveMember] = {}
        self.ids = itertools.count(1)
        self.sizes: list[int] = []
        self.calls: list[str] = []

    async def members(self, endpoints: Sequence[str], tls: EtcdTLS) -> list[LiveMember] | None:
        return list(self.by_url.values()) if self.by_url else None

    async def add(self, endpoints: Sequence[str], tls: EtcdTLS, peer_url: str) -> None:
        self.calls.append("add")
        self.by_url[peer_url] = LiveMember(next(self.ids), "", (peer_url,))
        self.sizes.append(len(self.by_url))

    async def remove(self, endpoints: Sequence[str], tls: EtcdTLS, member_id: int) -> None:
        self.calls.append("remove")
        self.by_url = {u: m for u, m in self.by_url.items() if m.id != member_id}
        self.sizes.append(len(self.by_url))


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(wall=NOW)
        self.pods, self.secrets = Store(), Store()
        self.client = StoreClient({"pods": self.pods, "secrets": self.secrets}, self.clock)
        self.nodes = Store()
        self.nodes.put({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"}]}})
        self.ports = PortAllocator(self.client, Store(INDEXERS_PORTS), Store({"nodeport": lambda o: []}),
                                   OperatorOptions(port_range=(30000, 30999)), is_free=lambda p: True)
        self.etcd = FakeEtcd()
        self.gate: FakeGate | None = None  # the risk center, when the operator asks it
        self.broken: set[str] = set()
        self.cluster: Obj = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster",
                             "metadata": {"name": "c1", "namespace": "team-a", "uid": "u"}, "status": {}}
        spec = UpstreamSpec("c1", "team-a", "v1.37.0", (), "127.0.0.1")
        data = {secret_key(k): b64(v) for k, v in upstream_pki(spec).items()}
        self.secrets.put({"metadata": {"name": "c1-pki", "namespace": "team-a"}, "data": data})

    def kubelet(self) -> None:
        """Pods Ready unless broken; a Ready member has started in etcd."""
        for p in self.pods.list():
            name = p["metadata"]["name"]
            ready = name not in self.broken
            p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready),
                                                               "lastTransitionTime": format_time(NOW)}]}
            m = read_roster(self.secret()).get(name)
            if ready and m is not None and m.member.peer_url in self.etcd.by_url:
                lm = self.etcd.by_url[m.member.peer_url]
                self.etcd.by_url[m.member.peer_url] = LiveMember(lm.id, name, lm.peer_urls)

    def secret(self) -> Obj:
        s = self.secrets.get_by_name("c1-pki", "team-a")
        assert s is not None
        return s

    async def step(self, version: str, args: list[str], *, releasing: bool = False) -> Any:
        memory = FailureMemory(self.cluster, ExponentialBackoff(base=1, cap=10))
        risk = (lambda ns, cluster: self.gate) if self.gate is not None else None
        out = await EtcdWalker(
            self.client, OperatorOptions(unhealthy_timeout=30, release_timeout=60, risk=risk), self.etcd, names=NAMES,
            owner=self.cluster, spec=UpstreamSpec("c1", "team-a", "v1.37.0", (), "127.0.0.1"),
            component={"name": "etcd", "image": "registry.k8s.io/etcd:3.5", "replicas": 3, "args": args},
            target_name=version, pods=self.pods.list(), secret=self.secret(), nodes=self.nodes, ports=self.ports,
            memory=memory, now=self.clock.now(), releasing=releasing, may_roll_back=False).run()
        self.kubelet()
        return out

    async def converge(self, version: str, args: list[str], steps: int = 40, **kw: Any) -> None:
        for _ in range(steps):
            out = await self.step(version, args, **kw)
            if out.converged:
                return
        raise AssertionError(f"not converged: {out.row}")


def _quorum_kept(w: World) -> bool:
    started = [m for m in w.etcd.by_url.values() if m.name and m.name not in w.broken]
    return len(started) >= len(w.etcd.by_url) // 2 + 1


async def test_bootstrap_then_release_one_membership_change_at_a_time() -> None:
    w = World()
    out = await w.step("u1", [])
    assert len(w.pods.list()) == 3 and all(m.state == "new" for m in read_roster(w.secret()).values())
    assert "bootstrapping etcd with 3 member(s)" in out.actions
    for m in read_roster(w.secret()).values():  # a new cluster's members know each other from the start
        w.etcd.by_url[m.member.peer_url] = LiveMember(next(w.etcd.ids), "", (m.member.peer_url,))
    w.kubelet()
    await w.converge("u1", [])
    first = {p["metadata"]["name"] for p in w.pods.list()}
    sizes: list[int] = []
    for _ in range(40):
        out = await w.step("u2", ["--heartbeat-interval=150"], releasing=True)
        sizes.append(len(w.etcd.by_url))
        assert _quorum_kept(w) or len(w.etcd.by_url) == 4, w.etcd.by_url
        if out.converged:
            break
    assert out.converged
    assert w.etcd.calls == ["add", "remove"] * 3  # surge of one, then the old one goes; three times
    assert max(sizes) == 4 and min(sizes) == 3
    now = {p["metadata"]["name"] for p in w.pods.list()}
    assert len(now) == 3 and not now & first
    assert set(read_roster(w.secret())) == now
    assert all(m.state == "existing" for m in read_roster(w.secret()).values())


async def _running(w: World) -> None:
    await w.step("u1", [])
    for m in read_roster(w.secret()).values():
        w.etcd.by_url[m.member.peer_url] = LiveMember(next(w.etcd.ids), "", (m.member.peer_url,))
    w.kubelet()
    await w.converge("u1", [])
    w.etcd.calls.clear()


async def test_a_broken_member_is_removed_first_then_replaced_and_never_below_quorum() -> None:
    w = World()
    await _running(w)
    names = sorted(read_roster(w.secret()))
    # two of three broken: removing either would leave one healthy of two (no quorum): nothing is removed
    w.broken = {names[0], names[1]}
    w.kubelet()
    await w.clock.advance(120)
    out = await w.step("u1", [])
    assert w.etcd.calls == [] and "would not keep quorum" in out.row["message"]
    # one broken: removed first (2 healthy of 2 keep quorum), then a replacement is added
    w.broken = {names[0]}
    w.kubelet()
    await w.converge("u1", [])
    assert w.etcd.calls == ["remove", "add"]
    assert names[0] not in read_roster(w.secret()) and len(read_roster(w.secret())) == 3
    assert w.pods.get_by_name(names[0], "team-a") is None


async def test_a_provisioned_member_etcd_never_heard_of_is_added_then_started() -> None:
    """A kill -9 after the roster write and before `member add`: the next pass adds it, then creates its Pod."""
    w = World()
    await _running(w)
    roster = read_roster(w.secret())
    extra = RosterMember("c1-etcd-abcdef", "n1", "10.0.0.1", 30901, 30902, 30903, "existing", "x")
    roster[extra.name] = extra
    await w.client.patch(SECRET, "c1-pki", {"data": {
        "etcd-members.json": b64(json.dumps([asdict(m) for m in roster.values()]))}}, "team-a")
    await w.step("u1", [])
    assert w.etcd.calls == ["add"] and extra.member.peer_url in w.etcd.by_url
    assert w.pods.get_by_name(extra.name, "team-a") is not None


async def test_a_release_changes_membership_only_with_control_plane_release_permits() -> None:
    """Issue 14: each surge-then-remove of a release asks control-plane-release for the member it replaces
    (the add and the removal under the same permit) before the roster is written; queued, etcd is untouched
    and the outcome says why."""
    w = World()
    await _running(w)
    first = sorted(read_roster(w.secret()))
    w.gate = FakeGate(grant=False)
    out = await w.step("u2", ["--heartbeat-interval=150"], releasing=True)
    assert w.etcd.calls == [] and sorted(read_roster(w.secret())) == first
    assert w.gate.asked == [("control-plane-release", (first[0],), "u2")]
    assert out.risk is not None and out.risk[0] == "RiskQueued" and "waits for the risk center" in out.row["message"]
    w.gate.grant = True
    await w.converge("u2", ["--heartbeat-interval=150"], releasing=True)
    assert w.etcd.calls == ["add", "remove"] * 3
    assert sorted(set(w.gate.asked)) == [
        ("control-plane-release", (m,), "u2") for m in first]
    assert not any(r for r in w.gate.repair_flags)


async def test_a_broken_member_is_replaced_only_with_a_control_plane_repair_permit() -> None:
    """The repair of a broken member asks control-plane-repair (repair=True: its pre-check is the failure)
    before it is marked for removal; the replacement added after the removal goes under the same permit."""
    w = World()
    await _running(w)
    names = sorted(read_roster(w.secret()))
    w.gate = FakeGate(grant=False)
    w.broken = {names[0]}
    w.kubelet()
    await w.clock.advance(120)
    out = await w.step("u1", [])
    assert w.etcd.calls == [] and not read_roster(w.secret())[names[0]].removing
    assert w.gate.asked == [("control-plane-repair", (names[0],), "repair-1")] and w.gate.repair_flags == [True]
    assert out.risk is not None and out.risk[0] == "RiskQueued"
    w.gate.grant = True
    await w.converge("u1", [])
    assert w.etcd.calls == ["remove", "add"] and len(read_roster(w.secret())) == 3
    assert {a[0] for a in w.gate.asked} == {"control-plane-repair"}  # the replacement asked nothing more
