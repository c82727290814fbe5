"""What the nodes report, fetched in batches: the machine operator's view of every node it manages.

Nodes are pushed to, never watching the API server (the seed's scaling lesson), so the operator must ask
them how an action is going.  One poller asks the driver for many nodes per call (``NodeDriver.states``):
nodes with work in flight every ``fast_interval``, every node every ``slow_interval``; a node whose report
changed wakes its Machine's reconcile.  Reconciles read the cached report and never wait for a poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kokpit._lib.clock import Clock, RealClock
from kokpit.nodes import ComponentState, DriverError, NodeDriver, NodeState

__all__ = ["NodeStatePoller"]

log = logging.getLogger("kokpit.operators.machine.poller")


class NodeStatePoller:
    """A cache of node reports kept fresh by batched driver calls."""

    def __init__(
        self,
        driver: NodeDriver,
        on_change: Callable[[str], None],
        *,
        fast_interval: float = 0.5,
        slow_interval: float = 10.0,
        batch_size: int = 1000,
        clock: Clock | None = None,
    ) -> None:
        self.driver = driver
        self.on_change = on_change
        self.fast_interval = fast_interval
        self.slow_interval = slow_interval
        self.batch_size = batch_size
        self._clock: Clock = clock or RealClock()
        self.states: dict[str, NodeState] = {}
        self.tracked: set[str] = set()
        self.active: set[str] = set()
        self.calls = 0  # driver batch calls made (tests and metrics)
        self._last_full = float("-inf")
        self._fetch_lock = asyncio.Lock()

    def track(self, node: str, *, active: bool) -> None:
        """Poll ``node`` (every fast tick when ``active``, i.e. its Machine has not converged)."""
        self.tracked.add(node)
        if active:
            self.active.add(node)
        else:
            self.active.discard(node)

    def untrack(self, node: str) -> None:
        self.tracked.discard(node)
        self.active.discard(node)
        self.states.pop(node, None)

    def put_component(self, node: str, comp: ComponentState) -> None:
        """Record what ``driver.start`` answered, so the next reconcile does not start it again."""
        cur = self.states.get(node)
        if cur is None:
            return
        comps = dict(cur.components)
        comps[comp.name] = comp
        self.states[node] = NodeState(cur.node, cur.reachable, comps, cur.message)

    async def get(self, node: str) -> NodeState:
        """The cached report; a node never polled is fetched together with every other tracked node not
        yet polled (one batch call, not one call per Machine when an operator starts over 10,000 nodes)."""
        st = self.states.get(node)
        if st is not None:
            return st
        async with self._fetch_lock:
            st = self.states.get(node)
            if st is not None:
                return st
            others = [n for n in sorted(self.tracked) if n not in self.states and n != node]
            want = [node, *others[:max(0, self.batch_size - 1)]]
            self.calls += 1
            got = await self.driver.states(want)
            for name, s in got.items():
                if name == node or name in self.tracked:
                    self.states[name] = s
            st = self.states.get(node)
            if st is None:
                st = NodeState(node, False, {}, "the node driver did not report this node")
            return st

    async def poll_once(self, *, full: bool = False) -> list[str]:
        """One polling round; returns the nodes whose report changed (their Machines are woken)."""
        now = self._clock.monotonic()
        if full or now - self._last_full >= self.slow_interval:
            self._last_full = now
            nodes = sorted(self.tracked)
        else:
            nodes = sorted(self.active & self.tracked)
        changed: list[str] = []
        for i in range(0, len(nodes), self.batch_size):
            chunk = nodes[i:i + self.batch_size]
            try:
                self.calls += 1
                got = await self.driver.states(chunk)
            except DriverError as e:
                log.warning("driver states for %d nodes failed: %s", len(chunk), e)
                continue
            for name, st in got.items():
                if name not in self.tracked:
                    continue
                if self.states.get(name) != st:
                    self.states[name] = st
                    changed.append(name)
        for name in changed:
            self.on_change(name)
        return changed

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self.fast_interval)
            try:
                await self.poll_once()
            except Exception:  # a poller that dies silently would freeze every Machine
                log.exception("node state poll failed")
