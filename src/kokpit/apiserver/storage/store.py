"""The revisioned object store: a SQLite revision log (kine's model) with an in-memory watch cache.

Why this shape:
- Every write is one row in an append-only log whose row id *is* the global resourceVersion, so optimistic
  concurrency, consistent snapshots for paginated lists and resumable watches all fall out of one integer.
- Writes are group-committed: requests enqueue rows, one flusher writes every queued row in a single
  transaction with `synchronous=FULL`, and only then answers the requests. Thirty-two concurrent writers pay
  one fsync, and an acknowledged write survives kill -9.
- The whole current state and the uncompacted event history live in memory (like kube-apiserver's watch
  cache), so reads, lists and watches never touch the disk. Clients only ever see committed data: writes
  in flight sit in a pending overlay that is used for conflict checks only.
- Compaction deletes superseded rows older than a window of revisions; a watch or continue token from
  before it is answered with 410 Expired.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kokpit.apiserver import errors

__all__ = ["ADDED", "DELETED", "MODIFIED", "Entry", "Event", "Store", "Watcher", "split_key"]

log = logging.getLogger(__name__)

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def split_key(key: str) -> tuple[str, str]:
    """`/core/pods/ns/name` → (`/core/pods/`, `ns/name`): the resource bucket and the key within it."""
    i = key.index("/", key.index("/", 1) + 1)
    return key[: i + 1], key[i + 1 :]


class Entry:
    """A stored object at one revision. `obj` and `raw` are shared and must be treated as immutable;
    callers that modify an object work on `copy()`.

    Only live objects keep their parsed form: once a revision has been superseded (or deleted) for a while,
    the store calls `release()` and `obj` is parsed from `raw` on each use.  Parsed dicts cost several times
    their JSON, and the history (50,000 revisions by default) is mostly superseded versions that only a
    watch resuming from an old revision, or a paginated snapshot, ever reads again."""

    __slots__ = ("_obj", "raw", "rv")

    def __init__(self, rv: int, obj: dict[str, Any] | None, raw: bytes) -> None:
        """``obj`` None: a cold entry from the start (parsed on use), as history read from disk is."""
        self.rv = rv
        self._obj: dict[str, Any] | None = obj
        self.raw = raw

    @property
    def obj(self) -> dict[str, Any]:
        o = self._obj
        if o is None:
            parsed: dict[str, Any] = orjson.loads(self.raw)
            return parsed
        return o

    def release(self) -> None:
        self._obj = None

    def warm(self) -> None:
        """Keep the parsed form (a live object)."""
        if self._obj is None:
            self._obj = orjson.loads(self.raw)

    def copy(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.raw)
        return result


@dataclass(slots=True)
class Event:
    """One change in the log. `prev` is the object before the change (None for ADDED), which watchers
    with selectors need to turn "stopped matching" into DELETED."""

    rv: int
    type: str
    key: str
    entry: Entry
    prev: Entry | None


@dataclass(slots=True)
class _Op:
    rv: int
    key: str
    created: bool
    deleted: bool
    prev_rv: int
    entry: Entry
    prev: Entry | None
    future: asyncio.Future[Entry]


class Watcher:
    """A subscription to one resource bucket. Events arrive in revision order; `closed` is set when the
    store ends the watch (shutdown, or the consumer fell too far behind — it then re-watches from its last
    revision, as clients do after any dropped stream)."""

    def __init__(self, store: Store, bucket: str, sub_prefix: str, limit: int) -> None:
        self._store = store
        self.bucket = bucket
        self.sub_prefix = sub_prefix
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.limit = limit
        self.closed = False

    def _offer(self, ev: Event) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.limit:
            log.warning("watch on %s%s fell %d events behind; closing it", self.bucket, self.sub_prefix,
                        self.limit)
            self.close()
            return
        self.queue.put_nowait(ev)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._unregister(self)
            self.queue.put_nowait(None)

    async def next(self) -> Event | None:
        """The next event, or None once the watch is closed."""
        return await self.queue.get()


class _Range:
    """A range's keys and entries as two lists, iterated as pairs: a 50k-object list then allocates no
    per-object tuples, which would otherwise survive into the oldest GC generation and trigger a full
    collection (hundreds of ms with a large store) every few lists."""

    __slots__ = ("entries", "keys")

    def __init__(self, keys: list[str], entries: list[Entry]) -> None:
        self.keys = keys
        self.entries = entries

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        return zip(self.keys, self.entries, strict=True)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _Bucket:
    """All objects of one resource (e.g. every Pod), keyed by `ns/name` or `name`."""

    items: dict[str, Entry] = field(default_factory=dict)
    _sorted: list[str] | None = None

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.items)
        return self._sorted

    def put(self, sub: str, entry: Entry) -> None:
        if sub not in self.items:
            self._sorted = None
        self.items[sub] = entry

    def remove(self, sub: str) -> None:
        if self.items.pop(sub, None) is not None:
            self._sorted = None


class Store:
    """See the module docstring. All methods run on the event loop except the SQLite work, which runs on
    one dedicated thread (the connection never crosses threads)."""

    def __init__(self, path: Path, *, compaction_window: int = 50_000, watch_queue_limit: int = 200_000,
                 synchronous: str = "FULL", release_lag: int = 2_000) -> None:
        self.path = Path(path)
        self.compaction_window = compaction_window
        self.watch_queue_limit = watch_queue_limit
        self._synchronous = synchronous
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kokpit-store")
        self._db: sqlite3.Connection | None = None
        self._buckets: dict[str, _Bucket] = {}
        self._pending: dict[str, tuple[int, Entry | None]] = {}
        self._queue: list[_Op] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._history: deque[Event] = deque()
        self._history_rvs: deque[int] = deque()
        # (superseded_at_revision, row_id): rows compaction may delete once past that revision
        self._superseded: deque[tuple[int, int]] = deque()
        # entries no longer live, oldest first: their parsed form is dropped once `release_lag` revisions
        # later (by then the watchers that got them live have long serialized them)
        self._cooling: deque[tuple[int, Entry]] = deque()
        self.release_lag = release_lag
        self._watchers: dict[str, set[Watcher]] = {}
        # in-server controllers (garbage collector, namespaces, CRDs) see every committed event
        self.listeners: list[Callable[[Event], None]] = []
        self._next_rv = 0
        self.revision = 0  # last committed revision
        self.compact_revision = 0
        self._failed: str | None = None
        self.commits = 0
        self.rows_written = 0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._exec, self._open_db)
        self._flusher = loop.create_task(self._flush_loop(), name="kokpit-store-flusher")

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-65536")
        db.executescript(_SCHEMA)
        self._db = db
        row = db.execute("SELECT value FROM meta WHERE name='compact_revision'").fetchone()
        self.compact_revision = int(row[0]) if row else 0
        latest: dict[str, Entry] = {}
        rv = 0
        for rid, key, created, deleted, _prev, value in db.execute(
                "SELECT id, key, created, deleted, prev_revision, value FROM log ORDER BY id"):
            entry = Entry(rid, None, bytes(value))  # parsed below only if it is still live at the end
            prev = latest.get(key)
            if prev is not None:
                self._superseded.append((rid, prev.rv))
            if deleted:
                latest.pop(key, None)
                self._superseded.append((rid, rid))
            else:
                latest[key] = entry
            if rid > self.compact_revision:
                etype = DELETED if deleted else (ADDED if created else MODIFIED)
                self._history.append(Event(rid, etype, key, entry, prev))
                self._history_rvs.append(rid)
            rv = rid
        for key, entry in latest.items():
            entry.warm()
            bucket, sub = split_key(key)
            self._bucket(bucket).put(sub, entry)
        self.revision = max(rv, self.compact_revision)
        self._next_rv = self.revision

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_watchers()
        if self._flusher is not None:
            self._wake.set()  # the flusher writes what is queued, sees _closed and returns
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._exec, self._close_db)
        self._exec.shutdown(wait=True)

    def close_watchers(self) -> None:
        """End every watch (shutdown): clients re-watch from their last revision elsewhere or later."""
        for ws in list(self._watchers.values()):
            for w in list(ws):
                w.close()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def failed(self) -> str | None:
        return self._failed

    # ------------------------------------------------------------------ reads (committed view)
    def _bucket(self, name: str) -> _Bucket:
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = _Bucket()
        return b

    def get(self, key: str) -> Entry | None:
        bucket, sub = split_key(key)
        b = self._buckets.get(bucket)
        return b.items.get(sub) if b else None

    def get_latest(self, key: str) -> Entry | None:
        """The newest version including writes not yet committed: the base for read-modify-write."""
        p = self._pending.get(key)
        if p is not None:
            return p[1]
        return self.get(key)

    def count(self, bucket: str) -> int:
        b = self._buckets.get(bucket)
        return len(b.items) if b else 0

    def range(self, bucket: str, sub_prefix: str = "", *, start_after: str = "",
             at_revision: int | None = None) -> tuple[int, Iterable[tuple[str, Entry]]]:
        """Objects of a bucket in key order, optionally under a namespace (`sub_prefix` = `ns/`) and after a
        key (pagination). With `at_revision`, the snapshot as of that revision (410 if compacted)."""
        rev = self.revision
        b = self._buckets.get(bucket)
        if at_revision is not None and at_revision < rev:
            return at_revision, self._list_at(bucket, sub_prefix, start_after, at_revision)
        if b is None:
            return rev, ()
        keys = b.sorted_keys()
        lo = bisect.bisect_left(keys, sub_prefix) if sub_prefix else 0
        if start_after:
            lo = max(lo, bisect.bisect_right(keys, start_after))
        # keys under the prefix sort in [prefix, prefix with its last character bumped): slice, no per-key test
        hi = bisect.bisect_left(keys, sub_prefix[:-1] + chr(ord(sub_prefix[-1]) + 1), lo) if sub_prefix \
            else len(keys)
        ks = keys[lo:hi]  # sorted keys are exactly the bucket's keys (rebuilt after any add or remove)
        return rev, _Range(ks, list(map(b.items.__getitem__, ks)))

    def _list_at(self, bucket: str, sub_prefix: str, start_after: str, rv: int) -> list[tuple[str, Entry]]:
        if rv < self.compact_revision:
            raise errors.expired(f"The provided continue parameter is too old to display a consistent list "
                                 f"result. You can start a new list without the continue parameter, or use "
                                 f"the continue token in this response to retrieve the remainder of the "
                                 f"results (revision {rv} is older than the compacted revision "
                                 f"{self.compact_revision}).")
        # state at rv = current state with every later event undone (walk back from newest)
        b = self._buckets.get(bucket)
        view: dict[str, Entry | None] = {}
        i = len(self._history_rvs)
        while i > 0 and self._history_rvs[i - 1] > rv:
            i -= 1
            ev = self._history[i]
            eb, sub = split_key(ev.key)
            if eb == bucket:
                view[sub] = ev.prev
        merged: dict[str, Entry] = dict(b.items) if b else {}
        for sub, e in view.items():
            if e is None:
                merged.pop(sub, None)
            else:
                merged[sub] = e
        out = []
        for k in sorted(merged):
            if sub_prefix and not k.startswith(sub_prefix):
                continue
            if start_after and k <= start_after:
                continue
            out.append((k, merged[k]))
        return out

    # ------------------------------------------------------------------ writes
    def _check_writable(self) -> None:
        if self._failed:
            raise errors.internal(f"storage failed: {self._failed}")
        if self._closed:
            raise errors.APIError(503, "ServiceUnavailable", "the server is shutting down")

    def _enqueue(self, key: str, obj: dict[str, Any], *, created: bool, deleted: bool,
                 prev: Entry | None) -> asyncio.Future[Entry]:
        self._next_rv += 1
        rv = self._next_rv
        obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
        raw = orjson.dumps(obj)
        entry = Entry(rv, obj, raw)
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._queue.append(_Op(rv, key, created, deleted, prev.rv if prev else 0, entry, prev, fut))
        self._pending[key] = (rv, None if deleted else entry)
        self._wake.set()
        return fut

    def create(self, key: str, obj: dict[str, Any]) -> asyncio.Future[Entry]:
        """Store a new object; raises `KeyError(key)` when the key exists (the caller words the
        AlreadyExists error). `obj` is owned by the store afterwards."""
        self._check_writable()
        if self.get_latest(key) is not None:
            raise KeyError(key)
        return self._enqueue(key, obj, created=True, deleted=False, prev=None)

    def update(self, key: str, obj: dict[str, Any], expected_rv: int | None) -> asyncio.Future[Entry]:
        """Replace an object. Raises `LookupError` if it does not exist and `ValueError` if `expected_rv`
        is given and is not the latest revision of the key (optimistic concurrency)."""
        self._check_writable()
        cur = self.get_latest(key)
        if cur is None:
            raise LookupError(key)
        if expected_rv is not None and expected_rv != cur.rv:
            raise ValueError(key)
        return self._enqueue(key, obj, created=False, deleted=False, prev=cur)

    def delete(self, key: str, expected_rv: int | None, final: dict[str, Any] | None = None
               ) -> asyncio.Future[Entry]:
        """Remove an object; the tombstone row keeps its final state (what DELETED watch events carry)."""
        self._check_writable()
        cur = self.get_latest(key)
        if cur is None:
            raise LookupError(key)
        if expected_rv is not None and expected_rv != cur.rv:
            raise ValueError(key)
        obj = final if final is not None else cur.copy()
        return self._enqueue(key, obj, created=False, deleted=True, prev=cur)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed or self._queue:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await loop.run_in_executor(self._exec, self._write_batch, batch)
                except Exception as exc:  # disk full, I/O error: stop accepting writes, never diverge
                    log.critical("storage write failed: %s", exc)
                    self._failed = str(exc)
                    err = errors.internal(f"storage write failed: {exc}")
                    for op in batch + self._queue:
                        if not op.future.done():
                            op.future.set_exception(err)
                    self._queue = []
                    self._pending.clear()
                    return
                self._apply(batch)

    def _write_batch(self, batch: list[_Op]) -> None:
        db = self._db
        assert db is not None
        rows = [(op.rv, op.key, int(op.created), int(op.deleted), op.prev_rv, op.entry.raw) for op in batch]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO log(id, key, created, deleted, prev_revision, value) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _apply(self, batch: list[_Op]) -> None:
        self.commits += 1
        self.rows_written += len(batch)
        for op in batch:
            bucket, sub = split_key(op.key)
            b = self._bucket(bucket)
            if op.deleted:
                b.remove(sub)
                etype = DELETED
                self._superseded.append((op.rv, op.rv))
                self._cooling.append((op.rv, op.entry))
            else:
                b.put(sub, op.entry)
                etype = ADDED if op.created else MODIFIED
            if op.prev is not None:
                self._superseded.append((op.rv, op.prev.rv))
                self._cooling.append((op.rv, op.prev))
            p = self._pending.get(op.key)
            if p is not None and p[0] == op.rv:
                del self._pending[op.key]
            self.revision = op.rv
            ev = Event(op.rv, etype, op.key, op.entry, op.prev)
            self._history.append(ev)
            self._history_rvs.append(op.rv)
            ws = self._watchers.get(bucket)
            if ws:
                for w in tuple(ws):
                    if not w.sub_prefix or sub.startswith(w.sub_prefix):
                        w._offer(ev)
            for listener in self.listeners:
                try:
                    listener(ev)
                except Exception:
                    log.exception("store listener failed on %s", op.key)
            if not op.future.done():
                op.future.set_result(op.entry)
        cooling, horizon = self._cooling, self.revision - self.release_lag
        while cooling and cooling[0][0] <= horizon:
            cooling.popleft()[1].release()

    # ------------------------------------------------------------------ watch
    def watch(self, bucket: str, sub_prefix: str = "", *, from_revision: int | None,
              initial: Callable[[Entry], bool] | None = None) -> tuple[Watcher, list[Event]]:
        """Register a watcher. Returns it and the backlog to send first: events after `from_revision`
        (410 if compacted), or, with `from_revision=None`, synthetic ADDED events for every current object
        (those passing `initial`). Registration and snapshot happen without yielding to the loop, so no
        event falls between them."""
        backlog: list[Event] = []
        if from_revision is None:
            _, items = self.range(bucket, sub_prefix)
            for _k, e in items:
                if initial is None or initial(e):
                    backlog.append(Event(e.rv, ADDED, bucket + _k, e, None))
        else:
            if from_revision < self.compact_revision:
                raise errors.expired(f"too old resource version: {from_revision} "
                                     f"({self.compact_revision + 1})")
            i = bisect.bisect_right(self._history_rvs, from_revision)
            for j in range(i, len(self._history)):
                ev = self._history[j]
                if ev.key.startswith(bucket) and (not sub_prefix or ev.key.startswith(bucket + sub_prefix)):
                    backlog.append(ev)
        w = Watcher(self, bucket, sub_prefix, self.watch_queue_limit)
        self._watchers.setdefault(bucket, set()).add(w)
        return w, backlog

    def _unregister(self, w: Watcher) -> None:
        ws = self._watchers.get(w.bucket)
        if ws is not None:
            ws.discard(w)

    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())

    # ------------------------------------------------------------------ compaction
    async def compact(self, target: int | None = None) -> int:
        """Forget history up to `target` (default: keep `compaction_window` revisions). Returns the new
        compacted revision. Watches and continue tokens from before it get 410 Expired."""
        if target is None:
            target = self.revision - self.compaction_window
        target = min(target, self.revision)
        if target <= self.compact_revision:
            return self.compact_revision
        ids: list[tuple[int]] = []
        while self._superseded and self._superseded[0][0] <= target:
            ids.append((self._superseded.popleft()[1],))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._exec, self._compact_db, ids, target)
        self.compact_revision = target
        while self._history_rvs and self._history_rvs[0] <= target:
            self._history_rvs.popleft()
            self._history.popleft()
        return target

    def _compact_db(self, ids: list[tuple[int]], target: int) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM log WHERE id = ?", ids)
            db.execute("INSERT INTO meta(name, value) VALUES ('compact_revision', ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (str(target),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(str(self.path) + suffix)
        return total

    def all_entries(self) -> Iterable[tuple[str, Entry]]:
        """Every current object with its full key (for controllers rebuilding indexes at start)."""
        for bucket, b in list(self._buckets.items()):
            for sub, e in list(b.items.items()):
                yield bucket + sub, e
