"""How a Rollout asks the risk center: one Permit per business cluster (or per target Cluster) and batch,
through :class:`kokpit.runtime.permits.PermitClient`, read back from the controller's one Permit informer.

Permits are named from (operation, targets, intent) — intent is the Rollout's uid, revision and direction —
so a restarted controller finds the permit it asked for instead of asking twice.  Asked for with
``partial: true``: the risk center grants the longest prefix its budgets allow, the rest is asked for again
once the granted targets are done.  A permit is renewed while held and released with the outcome
(Succeeded, or Failed when a target failed) when every target it covered is finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kokpit._lib.clock import Clock, parse_time
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.client import ApiError, Client, TransportError
from kokpit.runtime import Store
from kokpit.runtime.permits import PERMIT, PermitClient, PermitView

__all__ = ["Asked", "RolloutPermits"]

Obj = dict[str, Any]
TTL = 300


@dataclass(frozen=True)
class Asked:
    """The answer to one ask: the permit's key, its granted targets (empty while not granted) and, while it
    waits, the risk center's words."""

    key: str  # namespace/name
    granted: tuple[str, ...]
    waiting: str = ""
    denied: bool = False


class RolloutPermits:
    """Permits of Rollouts: asks, renewals and releases; ``store`` is the Permit informer's cache."""

    def __init__(self, client: Client, store: Store, clock: Clock) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self._clients: dict[tuple[str, str, str], PermitClient] = {}

    def _pc(self, namespace: str, cluster: str, holder: str) -> PermitClient:
        key = (namespace, cluster, holder)
        pc = self._clients.get(key)
        if pc is None:
            pc = self._clients[key] = PermitClient(self.client, namespace=namespace, cluster=cluster,
                                                   holder=holder, ttl_seconds=TTL, clock=self.clock)
        return pc

    def view(self, key: str) -> PermitView | None:
        obj = self.store.get(key)
        return PermitView(obj) if obj is not None else None

    async def ask(self, op: OperationType, namespace: str, cluster: str, targets: Sequence[str], *,
                  holder: str, intent: str, reason: str, repair: bool = False) -> Asked:
        pc = self._pc(namespace, cluster, holder)
        name = pc.name_for(op, targets, intent)
        key = f"{namespace}/{name}"
        view = self.view(key)
        if view is None or view.released:
            if view is not None:  # an earlier ask for the same targets is over: ask anew
                with contextlib.suppress(ApiError):
                    await self.client.delete(PERMIT, name, namespace)
            view = await pc.ensure(op, targets, intent=intent, partial=True, reason=reason, repair=repair)
            if view.released:
                return Asked(key, (), f"permit {name} is being replaced")
        if view.granted:
            return Asked(key, tuple(view.granted_targets))
        state = view.state
        text = view.summary() if state is not None else f"permit {name} is waiting for the risk center"
        return Asked(key, (), text, denied=state is not None and state.value == "Denied")

    async def renew(self, key: str, now: dt.datetime) -> None:
        """Renew a held permit once a third of its TTL went by (a holder that dies stops renewing)."""
        view = self.view(key)
        if view is None or view.released:
            return
        renewed = (view.obj.get("spec") or {}).get("renewTime")
        age = (now - parse_time(renewed)).total_seconds() if renewed else float("inf")
        if age > TTL / 3:
            ns, name = key.split("/", 1)
            pc = self._pc(ns, str(view.obj["spec"]["cluster"]), str(view.obj["spec"]["holder"]))
            with contextlib.suppress(ApiError, TransportError):
                await pc.renew(name)

    async def release(self, key: str, outcome: PermitOutcome, message: str) -> None:
        view = self.view(key)
        if view is not None and view.released:
            return
        ns, name = key.split("/", 1)
        try:
            await self.client.patch(PERMIT, name, {"status": {"outcome": outcome.value, "message": message[:1024]}},
                                    ns, subresource="status")
        except ApiError as e:
            if e.code != 404:
                raise
