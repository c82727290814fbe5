"""A broken etcd member of an Upstream control plane is replaced outside any release (issue 18): its data
folder is corrupted (garbage over its WAL and backend database) and its process killed, so the kubelet
restarts it into a crash loop.  Past the unhealthy timeout the cluster operator removes it from etcd first
(the two healthy members keep quorum of the smaller cluster), then adds a new member on a fresh folder: one
membership change at a time, every sample of the membership has a healthy quorum, and a key written before
is read back, linearizably, after.  Real processes: Debian's etcd run by the local kubelet for each member."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, NAMESPACE, POD
from kokpit.kubelet import hostpath_folder
from kokpit.operators.cluster import CLUSTER, CPV

from ._e2e import pids, until
from ._etcd_e2e import NEEDS_ETCD, NS, Etcdctl, QuorumWatch, converged, cpv, etcd_pods, roster, stack

pytestmark = [NEEDS_ETCD, pytest.mark.timeout(900)]


def _corrupt(folder: Path) -> list[Path]:
    """Garbage over every WAL segment and the backend database of a member's data folder."""
    hit = [*sorted((folder / "member" / "wal").glob("*.wal")), folder / "member" / "snap" / "db"]
    for f in hit:
        size = max(f.stat().st_size, 4096)
        with f.open("r+b") as out:
            out.write(os.urandom(min(size, 1 << 20)))
    return hit


async def test_broken_etcd_member_is_replaced_one_membership_change_at_a_time(
        apiserver: ApiServerProcess, tmp_path: Path) -> None:
    async with stack(apiserver, tmp_path) as c:
        await c.create(NAMESPACE, {"metadata": {"name": NS}})
        await c.create(CPV, cpv("u1", []))
        await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": NS}, "spec": {"packageVersion": "u1"}}, NS)
        ctl = Etcdctl(c, tmp_path)
        await until(lambda: converged(c, ctl, "u1"), "3 etcd members of u1 healthy over mTLS", 240)
        eps = await ctl.refresh()
        assert ctl.run(eps, "put", "/registry/kokpit", "survives").returncode == 0
        first = {p["metadata"]["name"] for p in await etcd_pods(c)}
        victim = sorted(first)[0]
        folder = hostpath_folder(tmp_path / "kubelet", f"/clusters/{NS}/c1/etcd-{victim}")
        assert (folder / "member" / "wal").is_dir(), f"no etcd data folder at {folder}"

        async with QuorumWatch(c, ctl) as watch:
            pid = pids(tmp_path / "kubelet")[victim]
            os.killpg(pid, signal.SIGSTOP)  # frozen: it writes nothing over the garbage before it dies
            assert _corrupt(folder)
            os.killpg(pid, signal.SIGKILL)

            async def replaced() -> bool:
                names = {p["metadata"]["name"] for p in await etcd_pods(c)}
                return victim not in names and victim not in await roster(c) and await converged(c, ctl, "u1")
            await until(replaced, "the corrupted member removed and a new one added in its place", 300)

        now = {p["metadata"]["name"] for p in await etcd_pods(c)}
        assert now - first and len(now - first) == 1, (first, now)  # the two healthy members were kept
        assert set(await roster(c)) == now
        assert watch.provisioned == first | now, watch.provisioned  # exactly one replacement provisioned
        # removed first, then added: an add before the removal would list four members for the seconds the new
        # one takes to start (the two-member moment between the removal and the add may fall between samples)
        assert watch.sizes <= {2, 3}, watch.sizes
        said = " | ".join(str(e.get("message")) for e in (await c.list(EVENT, NS)).items)
        assert f"etcd member {victim} removed from the cluster" in said, said
        assert f"added etcd member {sorted(now - first)[0]}" in said, said
        assert not watch.violations, watch.violations
        members = ctl.members(await ctl.refresh())
        assert members is not None and {m["name"] for m in members} == now
        got = ctl.run(await ctl.refresh(), "get", "/registry/kokpit", "--print-value-only", "--consistency=l")
        assert got.stdout.strip() == "survives", got.stderr
        assert (await c.get(POD, sorted(now - first)[0], NS))["spec"]["nodeName"]
