"""Keys with deadlines, due in deadline order: what a timer loop asks every tick without scanning every key.

Why: the API server expires Events an hour after their last change.  Asking "which are due?" by scanning a
dict of every Event's deadline once a second costs time in proportion to the Events kept — 50,000 after a
few 10,000-node upgrades, a few percent of the server's CPU and growing as a run goes on.  A heap answers in
proportion to what is due.  Moving or dropping a key leaves its old heap entry behind (skipped when it
surfaces); the heap is rebuilt when such leftovers outnumber the live keys, so memory stays in proportion
to the keys.
"""

from __future__ import annotations

import heapq

__all__ = ["Deadlines"]


class Deadlines:
    """``key -> deadline``; :meth:`pop_due` removes and returns the keys whose deadline has passed."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def get(self, key: str) -> float | None:
        return self._at.get(key)

    def set(self, key: str, deadline: float) -> None:
        """Give ``key`` this deadline (replacing any earlier one)."""
        self._at[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(t, k) for k, t in self._at.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        self._at.pop(key, None)

    def pop_due(self, now: float) -> list[str]:
        """The keys whose deadline is ``now`` or earlier, earliest first; they are forgotten."""
        due: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, key = heapq.heappop(heap)
            if self._at.get(key) == t:  # else moved (a later entry stands for it) or discarded
                del self._at[key]
                due.append(key)
        return due
