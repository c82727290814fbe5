"""Shared informers: one list+watch per kind per process, feeding an indexed local cache and event handlers.

Controllers read from the cache instead of the server (a reconcile should cost zero reads) and react to
handler callbacks that only enqueue keys.  The informer owns the hard parts of watching: a paginated list,
a watch with bookmarks resumed from the last resourceVersion after any disconnect (reconnecting with
backoff), a relist on 410 Expired that diffs the cache so handlers see exactly the changes they missed, and
periodic resync.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock, RealClock
from kokpit.client import ApiError, Client, Kind, ObjectList, ResourceExpiredError, TransportError, WatchEvent

__all__ = [
    "EventHandler",
    "Handlers",
    "IndexFunc",
    "Informer",
    "InformerFactory",
    "ListWatch",
    "Source",
    "Store",
    "Transform",
    "field_indexer",
    "object_key",
    "strip_managed_fields",
]

log = logging.getLogger("kokpit.runtime.informer")

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]
Transform = Callable[[Obj], Obj]


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones (client-go's key)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def strip_managed_fields(obj: Obj) -> Obj:
    """A cache transform dropping ``metadata.managedFields``: reconciles never read them, and on a cache of
    tens of thousands of objects they are a large share of the memory (client-go's
    TransformStripManagedFields)."""
    meta = obj.get("metadata")
    if meta is not None:
        meta.pop("managedFields", None)
    return obj


def _namespace_index(obj: Obj) -> list[str]:
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def _label_index(obj: Obj) -> list[str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return [f"{k}={v}" for k, v in labels.items()]


def field_indexer(path: str) -> IndexFunc:
    """An index function on a dotted field path, e.g. ``field_indexer("spec.nodeName")``."""
    parts = path.split(".")

    def fn(obj: Obj) -> list[str]:
        cur: Any = obj
        for p in parts:
            if not isinstance(cur, dict):
                return []
            cur = cur.get(p)
        if cur is None:
            return []
        if isinstance(cur, list):
            return [str(v) for v in cur]
        return [str(cur)]

    return fn


class Store:
    """The informer's cache: objects by key plus secondary indexes (``namespace``, ``label``, custom)."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {"namespace": _namespace_index, "label": _label_index}
        self._indexers.update(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._keys_of: dict[str, dict[str, list[str]]] = {name: {} for name in self._indexers}

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = fn
        self._indices[name] = {}
        self._keys_of[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def _index_one(self, name: str, key: str, obj: Obj) -> None:
        values = list(dict.fromkeys(self._indexers[name](obj)))
        self._keys_of[name][key] = values
        idx = self._indices[name]
        for v in values:
            idx.setdefault(v, set()).add(key)

    def _unindex(self, key: str) -> None:
        for name, keys_of in self._keys_of.items():
            idx = self._indices[name]
            for v in keys_of.pop(key, ()):
                s = idx.get(v)
                if s is not None:
                    s.discard(key)
                    if not s:
                        del idx[v]

    def put(self, obj: Obj) -> Obj | None:
        """Insert or replace; returns the previous object."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        return old

    def delete(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key)
        return old

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def get_by_name(self, name: str, namespace: str | None = None) -> Obj | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def keys(self) -> list[str]:
        return list(self._items)

    def list(self) -> builtins.list[Obj]:
        return builtins.list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def index_keys(self, index: str, value: str) -> builtins.list[str]:
        return sorted(self._indices[index].get(value, ()))

    def by_index(self, index: str, value: str) -> builtins.list[Obj]:
        return [self._items[k] for k in self.index_keys(index, value)]

    def by_namespace(self, namespace: str) -> builtins.list[Obj]:
        return self.by_index("namespace", namespace)

    def by_label(self, key: str, value: str) -> builtins.list[Obj]:
        return self.by_index("label", f"{key}={value}")


class EventHandler(Protocol):
    """What an informer calls; implementations only enqueue work (level-triggered)."""

    def on_add(self, obj: Obj) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...


@dataclass
class Handlers:
    """An :class:`EventHandler` from optional functions."""

    add: Callable[[Obj], None] | None = None
    update: Callable[[Obj, Obj], None] | None = None
    delete: Callable[[Obj], None] | None = None

    def on_add(self, obj: Obj) -> None:
        if self.add:
            self.add(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if self.update:
            self.update(old, new)

    def on_delete(self, obj: Obj) -> None:
        if self.delete:
            self.delete(obj)


class Source(Protocol):
    """Anything a controller can watch: an informer, or an in-memory fake in tests."""

    def add_event_handler(self, handler: EventHandler) -> None: ...

    async def wait_synced(self) -> None: ...

    def objects(self) -> list[Obj]: ...


class ListWatch(Protocol):
    """What an informer needs of :class:`kokpit.client.Client`: paginated lists and a resumable watch."""

    def list_pages(self, kind: Kind, namespace: str | None = None, *,
                   label_selector: Mapping[str, str] | str | None = None, field_selector: str | None = None,
                   limit: int | None = 500,
                   resource_version: str | None = None) -> AsyncGenerator[ObjectList, None]: ...

    def watch_resumable(self, kind: Kind, namespace: str | None = None, *, resource_version: str,
                        label_selector: Mapping[str, str] | str | None = None, field_selector: str | None = None,
                        timeout_seconds: int = 300) -> AsyncGenerator[WatchEvent, None]: ...


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """List+watch of one kind (optionally one namespace / selector) into a :class:`Store`."""

    def __init__(
        self,
        client: ListWatch,
        kind: Kind,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_period: float | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        clock: Clock | None = None,
        backoff: ExponentialBackoff | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.transform = transform  # applied to every object before it enters the cache
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.store = Store(indexers)
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self._clock: Clock = clock or RealClock()
        self._backoff = backoff or ExponentialBackoff(base=0.2, cap=30.0, jitter=0.2)
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self.last_resource_version = ""
        self.lists = 0  # how many full lists were done (1 + relists)

    def __repr__(self) -> str:
        return f"Informer({self.kind.kind}, ns={self.namespace!r})"

    # ------------------------------------------------------------------ registration
    def add_event_handler(self, handler: EventHandler) -> None:
        """Register a handler; if the cache is already filled it first gets an add for every object."""
        self._handlers.append(handler)
        if self._synced.is_set():
            for obj in self.store.list():
                self._call(handler.on_add, obj)

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        self.store.add_indexer(name, fn)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    def objects(self) -> list[Obj]:
        return self.store.list()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=repr(self))
        return self._task

    async def stop(self) -> None:
        for t in (self._task, self._resync_task):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._task = self._resync_task = None

    async def run(self) -> None:
        if self.resync_period:
            self._resync_task = asyncio.get_running_loop().create_task(self._resync_loop())
        failures = 0
        # a restarted informer resumes from where it stopped (its cache is still valid up to that version);
        # if that version is compacted away the watch answers 410 and we relist
        resume_rv = self.last_resource_version if self._synced.is_set() else ""
        while True:
            try:
                if resume_rv:
                    rv, resume_rv = resume_rv, ""
                else:
                    rv = await self._list_and_replace()
                failures = 0
                self._synced.set()
                events = self.client.watch_resumable(
                    self.kind,
                    self.namespace,
                    resource_version=rv,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.watch_timeout,
                )
                async with contextlib.aclosing(events):
                    async for ev in events:
                        self._apply(ev)
            except ResourceExpiredError as e:
                log.info("%r: %s; relisting", self, e)
            except (TransportError, ApiError) as e:
                delay = self._backoff.delay(failures)
                failures += 1
                log.warning("%r: list/watch failed (%s); retrying in %.2fs", self, e, delay)
                await self._clock.sleep(delay)

    async def _list_and_replace(self) -> str:
        items: list[Obj] = []
        rv = ""
        async for page in self.client.list_pages(
            self.kind,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=self.page_size,
        ):
            # transform page by page: the whole list untransformed would set the process's peak memory
            items.extend(page.items if self.transform is None else map(self.transform, page.items))
            rv = rv or page.resource_version
        self.lists += 1
        self._replace(items)
        self.last_resource_version = rv
        return rv

    def _replace(self, items: list[Obj]) -> None:
        """Make the cache equal to a fresh list, telling handlers only about real differences."""
        seen: set[str] = set()
        for obj in items:
            key = object_key(obj)
            seen.add(key)
            old = self.store.put(obj)
            if old is None:
                self._dispatch_add(obj)
            elif _rv(old) != _rv(obj):
                self._dispatch_update(old, obj)
        for key in [k for k in self.store.keys() if k not in seen]:
            gone = self.store.delete(key)
            if gone is not None:
                self._dispatch_delete(gone)

    def _apply(self, ev: WatchEvent) -> None:
        if ev.resource_version:
            self.last_resource_version = ev.resource_version
        if ev.type == "BOOKMARK":
            return
        obj = ev.object if self.transform is None else self.transform(ev.object)
        if ev.type in ("ADDED", "MODIFIED"):
            old = self.store.get(object_key(obj))
            if old is not None and _rv(old) == _rv(obj):
                return  # replayed after a resume: nothing new
            self.store.put(obj)
            if old is None:
                self._dispatch_add(obj)
            else:
                self._dispatch_update(old, obj)
        elif ev.type == "DELETED":
            gone = self.store.delete(object_key(obj))
            if gone is not None:
                self._dispatch_delete(obj)

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await self._clock.sleep(self.resync_period)
            if self._synced.is_set():
                for obj in self.store.list():
                    self._dispatch_update(obj, obj)

    # ------------------------------------------------------------------ dispatch
    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%r: event handler failed", self)

    def _dispatch_add(self, obj: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_add, obj)

    def _dispatch_update(self, old: Obj, new: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_update, old, new)

    def _dispatch_delete(self, obj: Obj) -> None:
        for h in self._handlers:
            self._call(h.on_delete, obj)


class InformerFactory:
    """One informer per (kind, namespace, selectors) per process, however many controllers ask for it."""

    def __init__(
        self,
        client: Client,
        *,
        resync_period: float | None = None,
        clock: Clock | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.client = client
        self.resync_period = resync_period
        self._clock = clock
        self.transform = transform
        self._informers: dict[tuple[Kind, str | None, str | None, str | None], Informer] = {}
        self._running = False

    def informer(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        key = (kind, namespace, label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(
                self.client,
                kind,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resync_period=self.resync_period,
                clock=self._clock,
                transform=self.transform,
            )
            self._informers[key] = inf
            if self._running:
                inf.start()
        return inf

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        self._running = True
        for inf in self._informers.values():
            inf.start()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers.values()))

    @property
    def has_synced(self) -> bool:
        return all(inf.has_synced for inf in self._informers.values())

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(inf.stop() for inf in self._informers.values()))
