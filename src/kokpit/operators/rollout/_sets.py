"""Per-target records of a Rollout in RolloutTargetSets, so the Rollout's own status stays small.

A revision's frozen targets (in the order they are taken, each with its previous version, state, permit and
times) are cut into slices of :data:`~kokpit.api.rollout.TARGETS_PER_SET`; slice ``i`` is the
RolloutTargetSet ``<rollout>-r<revision>-<i>``, owned by the Rollout (deleted with it by the garbage
collector).  The Rollout's status says how many there are (``targetSets``), so the names are known without a
list.  The controller reads them, works on the whole list in memory for one reconcile, and writes back only
the slices that changed — *before* the Rollout's status and before any target is changed, so a mark is
durable before the change it allows (kill -9 at any line loses no mark and repeats no change).

What a process has read or written is kept (the object and its records as JSON) and reused while it is the
only writer: every write is guarded by the resourceVersion it read, so a write by anyone else makes the next
write a 409 — the cached copy is dropped and the reconcile fails, to start again from the API.  A restarted
controller starts with nothing cached and reads every slice from the API.  After a reconcile that wrote
everything it changed, its record objects are kept too (:meth:`TargetSets.keep`) and handed to the next
reconcile instead of parsing the JSON again — once: a reconcile that fails leaves nothing to reuse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from kokpit.api.machine import GROUP, VERSION
from kokpit.api.rollout import TARGETS_PER_SET
from kokpit.client import AlreadyExistsError, Client, ConflictError, Kind, NotFoundError

__all__ = ["TARGET_SET", "LoadedTargets", "TargetSets", "read_targets", "set_name"]

log = logging.getLogger("kokpit.operators.rollout")

Obj = dict[str, Any]
TARGET_SET = Kind(GROUP, VERSION, "RolloutTargetSet", "rollouttargetsets")
IO_CONCURRENCY = 8


def set_name(rollout: str, revision: int, index: int) -> str:
    """``<rollout>-r<revision>-<index>``; a Rollout name too long for that is cut and given a hash."""
    tail = f"-r{revision}-{index}"
    if len(rollout) + len(tail) <= 253:
        return rollout + tail
    digest = hashlib.sha256(rollout.encode()).hexdigest()[:10]
    return f"{rollout[:253 - len(tail) - 11].rstrip('-.')}-{digest}{tail}"


def _place(rollout: Obj) -> tuple[str, str, int]:
    """(namespace, name, revision in its status) of a Rollout: where its current sets are."""
    meta = rollout["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"]), int((rollout.get("status") or {}).get("revision") or 0)


def _dump(targets: list[Obj]) -> bytes:
    return orjson.dumps(targets)


@dataclass
class LoadedTargets:
    """One revision's targets as read: the whole list (fresh copies the reconcile may change) and each slice's
    records as last written, to see which slices changed."""

    targets: list[Obj]
    written: list[bytes]


@dataclass
class _Cached:
    obj: Obj  # metadata and spec without targets
    raw: bytes  # spec.targets as JSON
    parsed: list[Obj] | None = None  # the same records as objects, kept by keep(), handed out by load() once


class TargetSets:
    """Reads and writes the RolloutTargetSets of the Rollouts this process reconciles."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._cache: dict[tuple[str, str], _Cached] = {}

    # ------------------------------------------------------------------------------ reading
    async def load(self, rollout: Obj) -> LoadedTargets:
        """The frozen targets of the Rollout's current revision (empty when not frozen).  A slice that is
        missing is an error: the records of targets already touched cannot be guessed."""
        meta, st = rollout["metadata"], rollout.get("status") or {}
        count, revision = int(st.get("targetSets") or 0), int(st.get("revision") or 0)
        if not count:
            return LoadedTargets([], [])
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        slots = asyncio.Semaphore(IO_CONCURRENCY)

        async def one(i: int) -> tuple[bytes, list[Obj] | None]:
            key = (ns, set_name(name, revision, i))
            hit = self._cache.get(key)
            if hit is not None and hit.obj["metadata"].get("ownerReferences", [{}])[0].get("uid") == meta.get("uid"):
                parsed, hit.parsed = hit.parsed, None  # whoever takes them may change them
                return hit.raw, parsed
            async with slots:
                try:
                    obj = await self.client.get(TARGET_SET, key[1], ns)
                except NotFoundError:
                    raise RuntimeError(f"RolloutTargetSet {ns}/{key[1]} is missing: the per-target records of "
                                       f"revision {revision} of Rollout {ns}/{name} are lost") from None
            return self._remember(obj), None

        got = await asyncio.gather(*(one(i) for i in range(count)))
        targets: list[Obj] = []
        for raw, parsed in got:
            targets += parsed if parsed is not None else orjson.loads(raw)
        return LoadedTargets(targets, [raw for raw, _ in got])

    def keep(self, rollout: Obj, loaded: LoadedTargets) -> None:
        """``loaded`` is written (every slice as it is in memory): keep its objects for the next load."""
        ns, name, revision = _place(rollout)
        for i, raw in enumerate(loaded.written):
            hit = self._cache.get((ns, set_name(name, revision, i)))
            if hit is not None and hit.raw == raw:  # else the server stored something else: parse what it has
                hit.parsed = loaded.targets[i * TARGETS_PER_SET:(i + 1) * TARGETS_PER_SET]

    def _remember(self, obj: Obj) -> bytes:
        spec = dict(obj.get("spec") or {})
        raw = _dump(spec.pop("targets", None) or [])
        meta = obj["metadata"]
        self._cache[(str(meta.get("namespace") or ""), str(meta["name"]))] = _Cached({**obj, "spec": spec}, raw)
        return raw

    # ------------------------------------------------------------------------------ writing
    def _body(self, rollout: Obj, revision: int, index: int, targets: list[Obj], rv: str | None) -> Obj:
        meta = rollout["metadata"]
        name = str(meta["name"])
        md: Obj = {"name": set_name(name, revision, index), "namespace": meta.get("namespace"),
                   "labels": {"kokpit.io/rollout-uid": str(meta.get("uid") or "")},
                   "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "name": name,
                                        "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": False}]}
        if rv:
            md["resourceVersion"] = rv
        return {"apiVersion": TARGET_SET.api_version, "kind": TARGET_SET.kind, "metadata": md,
                "spec": {"rollout": name, "revision": revision, "index": index, "targets": targets}}

    async def freeze(self, rollout: Obj, revision: int, targets: list[Obj]) -> int:
        """Write a new revision's targets (replacing what an attempt that crashed before the Rollout's status
        was written left); the number of slices."""
        ns = str(rollout["metadata"].get("namespace") or "")
        slices = [targets[i:i + TARGETS_PER_SET] for i in range(0, len(targets), TARGETS_PER_SET)]
        slots = asyncio.Semaphore(IO_CONCURRENCY)

        async def one(i: int, part: list[Obj]) -> None:
            async with slots:
                body = self._body(rollout, revision, i, part, None)
                try:
                    self._remember(await self.client.create(TARGET_SET, body, ns))
                except AlreadyExistsError:
                    old = await self.client.get(TARGET_SET, body["metadata"]["name"], ns)
                    body = self._body(rollout, revision, i, part, old["metadata"].get("resourceVersion"))
                    self._remember(await self._update(body))

        await asyncio.gather(*(one(i, part) for i, part in enumerate(slices)))
        return len(slices)

    async def save(self, rollout: Obj, loaded: LoadedTargets) -> int:
        """Write the slices whose records changed since they were read; how many were written."""
        ns, name, revision = _place(rollout)
        slots = asyncio.Semaphore(IO_CONCURRENCY)
        todo: list[tuple[int, list[Obj], bytes]] = []
        for i, old in enumerate(loaded.written):
            part = loaded.targets[i * TARGETS_PER_SET:(i + 1) * TARGETS_PER_SET]
            raw = _dump(part)
            if raw != old:
                todo.append((i, part, raw))

        async def one(i: int, part: list[Obj], raw: bytes) -> None:
            hit = self._cache.get((ns, set_name(name, revision, i)))
            rv = hit.obj["metadata"].get("resourceVersion") if hit is not None else None
            async with slots:
                self._remember(await self._update(self._body(rollout, revision, i, part, rv)))
            loaded.written[i] = raw

        await asyncio.gather(*(one(*x) for x in todo))
        return len(todo)

    async def _update(self, body: Obj) -> Obj:
        try:
            return await self.client.update(TARGET_SET, body)
        except ConflictError:
            # someone else wrote it: what this process holds is not the truth any more
            self._cache.pop((str(body["metadata"]["namespace"]), str(body["metadata"]["name"])), None)
            raise

    async def drop(self, rollout: Obj, revision: int, count: int) -> None:
        """Delete an ended revision's slices (its history entry keeps the counts)."""
        ns, name = str(rollout["metadata"].get("namespace") or ""), str(rollout["metadata"]["name"])
        for i in range(count):
            self._cache.pop((ns, set_name(name, revision, i)), None)
            try:
                await self.client.delete(TARGET_SET, set_name(name, revision, i), ns)
            except NotFoundError:
                pass

    def forget(self, namespace: str, rollout: str) -> None:
        """The Rollout is gone (its slices go with it, by the garbage collector)."""
        for key in [k for k, c in self._cache.items() if k[0] == namespace and c.obj["spec"].get("rollout") == rollout]:
            del self._cache[key]


async def read_targets(client: Client, rollout: Obj) -> list[Obj]:
    """Every target record of a Rollout's current revision, in the order they are taken (for tools: the CLI,
    benchmarks, tests)."""
    return (await TargetSets(client).load(rollout)).targets
