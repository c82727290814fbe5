"""The revision-log store on its own: revisions, optimistic concurrency, group commit, snapshots,
watch backlog, compaction and reload from disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kokpit.apiserver.errors import APIError
from kokpit.apiserver.storage.store import ADDED, DELETED, MODIFIED, Store

B = "/core/configmaps/"


def cm(name: str, v: str = "1") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"},
            "data": {"v": v}}


async def open_store(path: Path, **kw: int) -> Store:
    s = Store(path / "state.db", **kw)
    await s.open()
    return s


async def test_revisions_are_global_and_monotonic(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        e1 = await s.create(B + "ns/a", cm("a"))
        e2 = await s.create(B + "ns/b", cm("b"))
        e3 = await s.update(B + "ns/a", cm("a", "2"), e1.rv)
        assert (e1.rv, e2.rv, e3.rv) == (1, 2, 3)
        assert e3.obj["metadata"]["resourceVersion"] == "3"
        assert s.revision == 3
        got = s.get(B + "ns/a")
        assert got is not None and got.obj["data"] == {"v": "2"}
    finally:
        await s.close()


async def test_optimistic_concurrency_and_existence(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        e1 = await s.create(B + "ns/a", cm("a"))
        with pytest.raises(KeyError):
            s.create(B + "ns/a", cm("a"))
        await s.update(B + "ns/a", cm("a", "2"), e1.rv)
        with pytest.raises(ValueError):
            s.update(B + "ns/a", cm("a", "3"), e1.rv)  # stale
        with pytest.raises(LookupError):
            s.update(B + "ns/zz", cm("zz"), None)
    finally:
        await s.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        futs = [s.create(B + f"ns/o{i:04d}", cm(f"o{i:04d}")) for i in range(500)]
        entries = await asyncio.gather(*futs)
        assert sorted(e.rv for e in entries) == list(range(1, 501))
        assert s.rows_written == 500
        assert s.commits < 50, "500 queued writes must be group-committed, not one fsync each"
    finally:
        await s.close()


async def test_list_is_sorted_paginates_and_snapshots(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        for n in ("c", "a", "b"):
            await s.create(B + f"ns/{n}", cm(n))
        rv, items = s.range(B, "ns/")
        assert [k for k, _ in items] == ["ns/a", "ns/b", "ns/c"]
        _, page2 = s.range(B, "ns/", start_after="ns/a", at_revision=rv)
        # changes after the snapshot revision must not show in later pages
        await s.create(B + "ns/bb", cm("bb"))
        cur = s.get(B + "ns/c")
        assert cur is not None
        await s.delete(B + "ns/c", cur.rv)
        _, snap = s.range(B, "ns/", start_after="ns/a", at_revision=rv)
        assert [k for k, _ in snap] == ["ns/b", "ns/c"]
        _, now = s.range(B, "ns/")
        assert [k for k, _ in now] == ["ns/a", "ns/b", "ns/bb"]
        assert [k for k, _ in page2] == ["ns/b", "ns/c"]
    finally:
        await s.close()


async def test_watch_backlog_live_events_and_prev(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    try:
        e1 = await s.create(B + "ns/a", cm("a"))
        w, backlog = s.watch(B, "ns/", from_revision=0)
        assert [(ev.type, ev.rv) for ev in backlog] == [(ADDED, e1.rv)]
        e2 = await s.update(B + "ns/a", cm("a", "2"), e1.rv)
        await s.delete(B + "ns/a", e2.rv)
        ev = await asyncio.wait_for(w.next(), 2)
        assert ev is not None and ev.type == MODIFIED and ev.prev is not None and ev.prev.rv == e1.rv
        ev = await asyncio.wait_for(w.next(), 2)
        assert ev is not None and ev.type == DELETED and ev.entry.obj["data"] == {"v": "2"}
        w.close()
        assert s.watcher_count() == 0
        # rv=None: synthetic ADDED for current objects only
        await s.create(B + "ns/b", cm("b"))
        w2, initial = s.watch(B, "", from_revision=None)
        assert [ev.key for ev in initial] == [B + "ns/b"]
        w2.close()
    finally:
        await s.close()


async def test_compaction_expires_old_revisions(tmp_path: Path) -> None:
    s = await open_store(tmp_path, compaction_window=0)
    try:
        e = await s.create(B + "ns/a", cm("a"))
        for i in range(5):
            e = await s.update(B + "ns/a", cm("a", str(i)), e.rv)
        target = await s.compact()
        assert target == s.revision == 6
        with pytest.raises(APIError) as err:
            s.watch(B, "", from_revision=2)
        assert err.value.code == 410 and err.value.reason == "Expired"
        with pytest.raises(APIError):
            s.range(B, "", at_revision=3)
        # the current object survives compaction and a reload
    finally:
        await s.close()
    s2 = await open_store(tmp_path)
    try:
        got = s2.get(B + "ns/a")
        assert got is not None and got.obj["data"] == {"v": "4"} and got.rv == 6
        assert s2.compact_revision == 6
        e = await s2.update(B + "ns/a", cm("a", "x"), 6)
        assert e.rv == 7, "revisions continue after the compacted one"
    finally:
        await s2.close()


async def test_reload_rebuilds_state_and_history(tmp_path: Path) -> None:
    s = await open_store(tmp_path)
    a = await s.create(B + "ns/a", cm("a"))
    await s.create(B + "ns/b", cm("b"))
    await s.delete(B + "ns/a", a.rv)
    await s.close()
    s2 = await open_store(tmp_path)
    try:
        assert s2.get(B + "ns/a") is None
        assert s2.get(B + "ns/b") is not None
        assert s2.revision == 3
        w, backlog = s2.watch(B, "", from_revision=1)
        assert [(ev.type, ev.key) for ev in backlog] == [(ADDED, B + "ns/b"), (DELETED, B + "ns/a")]
        w.close()
    finally:
        await s2.close()


async def test_superseded_revisions_drop_their_parsed_form_but_read_the_same(tmp_path: Path) -> None:
    s = await open_store(tmp_path, release_lag=3)
    try:
        first = await s.create("/core/configmaps/ns/a", cm("a", "0"))
        for i in range(1, 6):
            await s.update("/core/configmaps/ns/a", cm("a", str(i)), None)
        await s.create("/core/configmaps/ns/b", cm("b"))
        gone = await s.delete("/core/configmaps/ns/b", None)
        for i in range(4):  # push the horizon past everything above
            await s.create(f"/core/configmaps/ns/x{i}", cm(f"x{i}"))
        live = s.get("/core/configmaps/ns/a")
        assert live is not None and live._obj is not None  # live objects stay parsed
        assert first._obj is None and gone._obj is None  # superseded / deleted: cold
        assert first.obj["data"] == {"v": "0"} and gone.obj["metadata"]["name"] == "b"
        # a watch resuming from the first revision and a snapshot at it read the old versions intact
        w, backlog = s.watch("/core/configmaps/", from_revision=first.rv)
        w.close()
        assert [e.entry.obj["data"]["v"] for e in backlog if e.key.endswith("/a")] == ["1", "2", "3", "4", "5"]
        assert [e.prev.obj["data"]["v"] for e in backlog if e.key.endswith("/a") and e.prev] == [
            "0", "1", "2", "3", "4"]
        _, items = s.range("/core/configmaps/", at_revision=first.rv)
        assert [(k, e.obj["data"]) for k, e in items] == [("ns/a", {"v": "0"})]
    finally:
        await s.close()
    # after a restart, history read from disk is cold at once and still reads the same
    s = await open_store(tmp_path)
    try:
        _, items = s.range("/core/configmaps/", at_revision=first.rv)
        assert [(k, e.obj["data"]) for k, e in items] == [("ns/a", {"v": "0"})]
        assert all(e._obj is None for k, e in items)
        assert s.get("/core/configmaps/ns/a")._obj is not None  # type: ignore[union-attr]
    finally:
        await s.close()
