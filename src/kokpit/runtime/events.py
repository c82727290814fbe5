"""Kubernetes Events (core/v1) for what a person should see in ``kubectl describe``.

Controllers repeat themselves (a failing reconcile emits the same warning every retry); like client-go's
event correlator, repeats of the same involvedObject + type + reason + message bump ``count`` and
``lastTimestamp`` on one Event instead of creating thousands.  Repeats recorded concurrently (two workers, or
a status write waking the next reconcile before the first returns) wait for each other per key, so they
still land on one Event; the memory of recent Events is a bounded LRU, as client-go's (4,096 entries).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from typing import Any, Protocol

from kokpit._lib.clock import Clock, RealClock, format_micro_time, format_time
from kokpit.client import EVENT, ApiError, CanCreate, CanPatch, NotFoundError, TransportError

__all__ = ["EventClient", "EventRecorder"]

log = logging.getLogger("kokpit.runtime.events")

Obj = dict[str, Any]


class EventClient(CanCreate, CanPatch, Protocol):
    """What recording Events takes: create one, patch its count."""


class EventRecorder:
    """Records Events about objects on behalf of one component; never raises (events are best effort)."""

    MAX_REMEMBERED = 4096

    def __init__(
        self, client: EventClient, component: str, *, host: str = "", clock: Clock | None = None
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._clock: Clock = clock or RealClock()
        # key -> (namespace, name, count), most recent last
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()
        self._busy: dict[tuple[str, ...], tuple[asyncio.Lock, list[int]]] = {}  # key -> (lock, [users])

    @staticmethod
    def _involved(obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        ref = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        return {k: v for k, v in ref.items() if v}

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> Obj | None:
        """Record (or aggregate) an event; ``type_`` is ``Normal`` or ``Warning``."""
        involved = self._involved(obj)
        ns = involved.get("namespace") or "default"
        key = (
            involved.get("kind", ""),
            ns,
            involved.get("name", ""),
            involved.get("uid", ""),
            type_,
            reason,
            message,
        )
        lock, users = self._busy.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._record(key, involved, ns, type_, reason, message)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._busy[key]

    async def _record(self, key: tuple[str, ...], involved: Obj, ns: str, type_: str, reason: str,
                      message: str) -> Obj | None:
        now = self._clock.now()
        seen = self._seen.get(key)
        try:
            if seen is not None:
                ev_ns, ev_name, count = seen
                patch = {"count": count + 1, "lastTimestamp": format_time(now)}
                try:
                    out = await self.client.patch(EVENT, ev_name, patch, ev_ns)
                    self._remember(key, (ev_ns, ev_name, count + 1))
                    return out
                except NotFoundError:
                    del self._seen[key]
            name = f"{involved.get('name', 'object')}.{uuid.uuid4().hex[:16]}"
            body: Obj = {
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": format_time(now),
                "lastTimestamp": format_time(now),
                "eventTime": format_micro_time(now),
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "reportingComponent": self.component,
                "reportingInstance": self.host or self.component,
                "action": reason,
            }
            out = await self.client.create(EVENT, body, ns)
            self._remember(key, (ns, name, 1))
            return out
        except (ApiError, TransportError) as e:
            log.warning("could not record event %s on %s: %s", reason, involved.get("name"), e)
            return None

    def _remember(self, key: tuple[str, ...], value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > self.MAX_REMEMBERED:
            self._seen.popitem(last=False)

    async def normal(self, obj: Obj, reason: str, message: str) -> Obj | None:
        return await self.event(obj, "Normal", reason, message)

    async def warning(self, obj: Obj, reason: str, message: str) -> Obj | None:
        return await self.event(obj, "Warning", reason, message)
