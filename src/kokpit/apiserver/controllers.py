"""Controllers that run inside the embedded API server: what kube-controller-manager and the
apiextensions server do for a real cluster, and that every client silently relies on.

- CRDs: serve a custom resource as soon as its CRD is stored, report NamesAccepted/Established, and on
  deletion remove every instance before the CRD itself goes (finalizer customresourcecleanup).
- Namespaces: a deleted namespace is Terminating until its contents are gone.
- Garbage collection: dependents follow their owners by uid (background, foreground, orphan).
- Event TTL and storage compaction on timers.
Each is level-triggered: a queue of keys fed by store events plus a full scan at start, so a restart in
the middle of any of these finishes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from kokpit._lib.deadlines import Deadlines
from kokpit.apiserver import admission
from kokpit.apiserver.builtins import path_getter
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import PrinterColumn, ResourceType
from kokpit.apiserver.rest import (
    CRD_FINALIZER,
    FOREGROUND,
    NAMESPACE_FINALIZER,
    ORPHAN,
    DeleteOptions,
    Rest,
    WriteOptions,
)
from kokpit.apiserver.storage.store import DELETED, Event, Store, split_key

__all__ = ["Controllers", "crd_resource_types"]

log = logging.getLogger(__name__)

CRD_BUCKET = "/apiextensions.k8s.io/customresourcedefinitions/"
NS_BUCKET = "/core/namespaces/"
EVENT_BUCKET = "/core/events/"
_SYSTEM = WriteOptions(field_manager="kokpit-apiserver", field_validation="Ignore")


def _parse_time(s: Any) -> float | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CRD (no conversion: versions share one storage bucket)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    versions = spec.get("versions") or []
    storage = next((v.get("name") for v in versions if v.get("storage")), None)
    references = admission.parse_references(crd)
    out = []
    for v in versions:
        if not v.get("served", True):
            continue
        subs = v.get("subresources") or {}
        sub_names: list[str] = []
        if "status" in subs:
            sub_names.append("status")
        if "scale" in subs:
            sub_names.append("scale")
        cols = tuple(PrinterColumn(name=c.get("name", ""), type=c.get("type", "string"),
                                   json_path=c.get("jsonPath", ""), format=c.get("format", ""),
                                   description=c.get("description", ""), priority=int(c.get("priority", 0)))
                     for c in v.get("additionalPrinterColumns") or [])
        sch = ((v.get("schema") or {}).get("openAPIV3Schema")) or None
        # CRD selectableFields (GA in kube 1.32): `.spec.nodeName` is field selector `spec.nodeName`
        selectable = {str(f.get("jsonPath", "")).lstrip("."): path_getter(*str(f.get("jsonPath", "")).lstrip(
            ".").split(".")) for f in v.get("selectableFields") or [] if isinstance(f, dict) and f.get("jsonPath")}
        out.append(ResourceType(
            group=group, version=v.get("name", ""), kind=names.get("kind", ""), plural=names.get("plural", ""),
            singular=names.get("singular") or names.get("kind", "").lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            subresources=tuple(sub_names), schema=sch, printer_columns=cols, strategic_merge=False,
            crd_name=(crd.get("metadata") or {}).get("name"), storage_version=storage,
            has_status="status" in subs, has_generation=True, field_selectors=selectable,
            references=references))
    return out


class Controllers:
    def __init__(self, store: Store, registry: Registry, rest: Rest, *, event_ttl: float = 3600.0,
                 compaction_interval: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.registry = registry
        self.rest = rest
        self.event_ttl = event_ttl
        self.compaction_interval = compaction_interval
        self.clock = clock
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._owners: dict[str, set[str]] = {}  # owner uid -> dependent keys
        self._uids: dict[str, str] = {}  # uid -> key
        self._event_expiry = Deadlines()  # Event key -> when it expires (an hour after its last change)
        self._tasks: list[asyncio.Task[None]] = []
        rest.on_crd_change = self._crd_changed

    # ------------------------------------------------------------------ lifecycle
    def load_crds(self) -> None:
        """Serve every stored CRD before the server accepts requests."""
        _rv, items = self.store.range(CRD_BUCKET)
        for _k, e in items:
            self._crd_changed(e.obj)

    async def start(self) -> None:
        self.store.listeners.append(self._on_event)
        now = self.clock()
        for key, e in self.store.all_entries():
            self._index(key, e.obj)
            if key.startswith(EVENT_BUCKET):
                meta = e.obj.get("metadata") or {}
                t = (_parse_time(e.obj.get("lastTimestamp")) or _parse_time(e.obj.get("eventTime"))
                     or _parse_time(meta.get("creationTimestamp")) or now)
                self._event_expiry.set(key, t + self.event_ttl)
        for key, e in self.store.all_entries():
            self._consider(key, e.obj)
        self._tasks = [asyncio.create_task(self._worker(), name="kokpit-controllers"),
                       asyncio.create_task(self._timers(), name="kokpit-timers")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(self._on_event)

    # ------------------------------------------------------------------ indexing
    def _index(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if uid:
            self._uids[uid] = key
        for ref in meta.get("ownerReferences") or []:
            ou = ref.get("uid")
            if ou:
                self._owners.setdefault(ou, set()).add(key)

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if uid and self._uids.get(uid) == key:
            del self._uids[uid]
        for ref in meta.get("ownerReferences") or []:
            deps = self._owners.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._owners[ref.get("uid", "")]

    def _enqueue(self, kind: str, key: str) -> None:
        item = (kind, key)
        if item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    def _on_event(self, ev: Event) -> None:
        if ev.prev is not None:
            self._unindex(ev.key, ev.prev.obj)
        if ev.type == DELETED:
            self._unindex(ev.key, ev.entry.obj)
            self._event_expiry.discard(ev.key)
            uid = (ev.entry.obj.get("metadata") or {}).get("uid")
            if uid and uid in self._owners:
                self._enqueue("orphaned", uid)
            for ref in (ev.entry.obj.get("metadata") or {}).get("ownerReferences") or []:
                # a dependent went away: a foreground-deleting owner may now be free to go
                okey = self._uids.get(ref.get("uid", ""))
                if okey:
                    self._enqueue("object", okey)
            # a terminating namespace or CRD may be done now (any key: cluster-scoped custom resources have
            # only three slashes, and guessing from the key's shape left their CRD terminating for good)
            self._enqueue_namespace_of(ev.key)
            return
        self._index(ev.key, ev.entry.obj)
        if ev.key.startswith(EVENT_BUCKET):
            self._event_expiry.set(ev.key, self.clock() + self.event_ttl)
        self._consider(ev.key, ev.entry.obj)

    def _enqueue_namespace_of(self, key: str) -> None:
        parts = key.split("/")
        if len(parts) >= 5:
            nskey = NS_BUCKET + parts[3]
            ns = self.store.get(nskey)
            if ns is not None and (ns.obj.get("metadata") or {}).get("deletionTimestamp"):
                self._enqueue("namespace", nskey)
        if key.startswith(CRD_BUCKET):
            return
        # a custom resource went away: its terminating CRD may be done
        for crd_key, crd in self._terminating_crds():
            if key.startswith(crd):
                self._enqueue("crd", crd_key)

    def _terminating_crds(self) -> list[tuple[str, str]]:
        out = []
        _rv, items = self.store.range(CRD_BUCKET)
        for k, e in items:
            if (e.obj.get("metadata") or {}).get("deletionTimestamp"):
                spec = e.obj.get("spec") or {}
                out.append((CRD_BUCKET + k, f"/{spec.get('group')}/{(spec.get('names') or {}).get('plural')}/"))
        return out

    def _consider(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if key.startswith(CRD_BUCKET):
            self._enqueue("crd", key)
        if meta.get("deletionTimestamp"):
            if key.startswith(NS_BUCKET):
                self._enqueue("namespace", key)
            fins = meta.get("finalizers") or []
            if ORPHAN in fins or FOREGROUND in fins:
                self._enqueue("object", key)
        refs = meta.get("ownerReferences") or []
        if refs and any(r.get("uid") not in self._uids for r in refs):
            self._enqueue("dependent", key)

    # ------------------------------------------------------------------ CRDs
    def _crd_changed(self, crd: dict[str, Any]) -> None:
        name = (crd.get("metadata") or {}).get("name", "")
        self.registry.remove_crd(name)
        if crd.get("__deleted__"):
            return
        types = crd_resource_types(crd)
        for rt in types:
            existing = self.registry.get(rt.group, rt.version, rt.plural)
            if existing is not None and existing.crd_name != name:
                log.warning("CRD %s: %s/%s %s is already served; not serving it", name, rt.group, rt.version,
                            rt.plural)
                continue
            self.registry.add(rt)
        if types:
            self.registry.set_version_order(types[0].group, _version_priority([rt.version for rt in types]))

    async def _reconcile_crd(self, key: str) -> None:
        e = self.store.get(key)
        if e is None:
            return
        crd = e.obj
        meta = crd.get("metadata") or {}
        spec = crd.get("spec") or {}
        if meta.get("deletionTimestamp"):
            bucket = f"/{spec.get('group')}/{(spec.get('names') or {}).get('plural')}/"
            rts = self.registry.crd_types(meta.get("name", ""))
            if self.store.count(bucket) and rts:
                rt = rts[0]
                _rv, items = self.store.range(bucket)
                for _k, ce in list(items):
                    m = ce.obj.get("metadata") or {}
                    if m.get("deletionTimestamp"):
                        continue
                    with contextlib.suppress(APIError):
                        await self.rest.delete(rt, m.get("namespace"), m.get("name", ""), DeleteOptions())
                return
            await self._drop_finalizer(key, CRD_FINALIZER)
            return
        status = crd.get("status") or {}
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        stored = sorted({*status.get("storedVersions", []),
                         *[v.get("name") for v in spec.get("versions") or [] if v.get("storage")]})
        if (conds.get("Established", {}).get("status") == "True"
                and conds.get("NamesAccepted", {}).get("status") == "True"
                and status.get("acceptedNames") == spec.get("names") and status.get("storedVersions") == stored):
            return
        now = self.rest.now()
        new_status = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": spec.get("names") or {},
            "storedVersions": stored,
        }
        crd_rt = self.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        if crd_rt is None:
            return
        with contextlib.suppress(APIError):
            await self.rest.patch(crd_rt, None, meta.get("name", ""), "merge", {"status": new_status},
                                  WriteOptions(field_manager="kokpit-apiextensions", field_validation="Ignore",
                                               subresource="status"))

    async def _drop_finalizer(self, key: str, finalizer: str) -> None:
        e = self.store.get(key)
        if e is None:
            return
        rt = self._type_for_key(key)
        if rt is None:
            return
        meta = e.obj.get("metadata") or {}
        fins = [f for f in meta.get("finalizers") or [] if f != finalizer]
        if fins == (meta.get("finalizers") or []):
            return
        with contextlib.suppress(APIError):
            await self.rest.patch(rt, meta.get("namespace"), meta.get("name", ""), "json",
                                  [{"op": "test", "path": "/metadata/resourceVersion",
                                    "value": meta.get("resourceVersion")},
                                   {"op": "replace", "path": "/metadata/finalizers", "value": fins}],
                                  WriteOptions(field_manager="kokpit-apiserver", field_validation="Ignore"))

    def _type_for_key(self, key: str) -> ResourceType | None:
        return self.registry.storage_types().get(split_key(key)[0])

    # ------------------------------------------------------------------ namespaces
    async def _reconcile_namespace(self, key: str) -> None:
        e = self.store.get(key)
        if e is None:
            return
        meta = e.obj.get("metadata") or {}
        if not meta.get("deletionTimestamp"):
            return
        ns = meta.get("name", "")
        remaining = 0
        for bucket, rt in self.registry.storage_types().items():
            if not rt.namespaced:
                continue
            _rv, items = self.store.range(bucket, f"{ns}/")
            for _k, oe in list(items):
                remaining += 1
                om = oe.obj.get("metadata") or {}
                if om.get("deletionTimestamp"):
                    continue
                with contextlib.suppress(APIError):
                    await self.rest.delete(rt, ns, om.get("name", ""), DeleteOptions(grace_period=0))
        if remaining:
            return  # re-queued when the last object goes (DELETED events in the namespace)
        rt_ns = self.registry.get("", "v1", "namespaces")
        if rt_ns is None:
            return
        obj = e.copy()
        spec = obj.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != NAMESPACE_FINALIZER]
        with contextlib.suppress(APIError):
            await self.rest._write_update(rt_ns, key, e, obj, WriteOptions(
                field_manager="kokpit-namespace-controller", field_validation="Ignore", subresource="finalize"))

    # ------------------------------------------------------------------ garbage collection
    async def _collect_dependents_of(self, owner_uid: str) -> None:
        """The owner is gone: delete dependents no other live owner holds; drop the dangling reference
        from the rest."""
        for dkey in list(self._owners.get(owner_uid, ())):
            await self._reconcile_dependent(dkey)

    async def _reconcile_dependent(self, key: str) -> None:
        e = self.store.get(key)
        if e is None:
            return
        meta = e.obj.get("metadata") or {}
        refs = meta.get("ownerReferences") or []
        live = [r for r in refs if r.get("uid") in self._uids]
        if len(live) == len(refs):
            return
        rt = self._type_for_key(key)
        if rt is None:
            return
        try:
            if live:
                await self.rest.patch(rt, meta.get("namespace"), meta.get("name", ""), "merge",
                                      {"metadata": {"ownerReferences": live}}, _SYSTEM)
            elif not meta.get("deletionTimestamp"):
                await self.rest.delete(rt, meta.get("namespace"), meta.get("name", ""),
                                       DeleteOptions(propagation="Background"))
        except APIError as err:
            if err.code not in (404, 409):
                log.warning("garbage collection of %s failed: %s", key, err)

    async def _reconcile_owner(self, key: str) -> None:
        e = self.store.get(key)
        if e is None:
            return
        meta = e.obj.get("metadata") or {}
        if not meta.get("deletionTimestamp"):
            return
        fins = meta.get("finalizers") or []
        uid = meta.get("uid", "")
        deps = list(self._owners.get(uid, ()))
        if ORPHAN in fins:
            for dkey in deps:
                d = self.store.get(dkey)
                rt = self._type_for_key(dkey)
                if d is None or rt is None:
                    continue
                dm = d.obj.get("metadata") or {}
                refs = [r for r in dm.get("ownerReferences") or [] if r.get("uid") != uid]
                with contextlib.suppress(APIError):
                    await self.rest.patch(rt, dm.get("namespace"), dm.get("name", ""), "merge",
                                          {"metadata": {"ownerReferences": refs or None}}, _SYSTEM)
            await self._drop_finalizer(key, ORPHAN)
            return
        if FOREGROUND in fins:
            blocking = 0
            for dkey in deps:
                d = self.store.get(dkey)
                rt = self._type_for_key(dkey)
                if d is None or rt is None:
                    continue
                blocking += 1
                dm = d.obj.get("metadata") or {}
                if not dm.get("deletionTimestamp"):
                    with contextlib.suppress(APIError):
                        await self.rest.delete(rt, dm.get("namespace"), dm.get("name", ""),
                                               DeleteOptions(propagation="Foreground"))
            if not blocking:
                await self._drop_finalizer(key, FOREGROUND)

    # ------------------------------------------------------------------ loops
    async def _worker(self) -> None:
        while True:
            kind, key = await self._queue.get()
            self._queued.discard((kind, key))
            try:
                if kind == "crd":
                    await self._reconcile_crd(key)
                elif kind == "namespace":
                    await self._reconcile_namespace(key)
                elif kind == "orphaned":
                    await self._collect_dependents_of(key)
                elif kind == "dependent":
                    await self._reconcile_dependent(key)
                elif kind == "object":
                    await self._reconcile_owner(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("in-server controller failed on %s %s", kind, key)

    async def _timers(self) -> None:
        last_compact = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            for key in self._event_expiry.pop_due(now):
                e = self.store.get(key)
                if e is None:
                    continue
                with contextlib.suppress(LookupError, ValueError, APIError):
                    await self.store.delete(key, e.rv)
            if time.monotonic() - last_compact >= self.compaction_interval:
                last_compact = time.monotonic()
                try:
                    await self.store.compact()
                    # objects that survived a compaction interval are long-lived: stop scanning them (collect
                    # first: freezing moves uncollected cycles out of the collector's reach for good)
                    gc.collect()
                    gc.freeze()
                except Exception:
                    log.exception("compaction failed")


def _version_priority(versions: list[str]) -> list[str]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first, others last by name."""
    import re

    def key(v: str) -> tuple[int, int, int, str]:
        m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
        if not m:
            return (3, 0, 0, v)
        major = int(m.group(1))
        stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
        minor = int(m.group(3) or 0)
        return (stage, -major, -minor, v)

    return sorted(versions, key=key)


