"""Keys due in deadline order, with moves and drops (the API server's Event expiry)."""

from __future__ import annotations

import random

from kokpit._lib.deadlines import Deadlines


def test_keys_come_due_in_order_and_a_moved_or_dropped_key_only_when_it_should() -> None:
    d = Deadlines()
    d.set("a", 10.0)
    d.set("b", 5.0)
    d.set("c", 7.0)
    d.set("a", 20.0)  # an Event updated: its hour starts again
    d.discard("c")  # an Event deleted
    assert d.pop_due(4.9) == []
    assert d.pop_due(10.0) == ["b"]  # not a (moved to 20), not c (gone)
    assert "a" in d and len(d) == 1 and d.get("a") == 20.0
    assert d.pop_due(25.0) == ["a"] and len(d) == 0
    assert d.pop_due(1e9) == []


def test_against_a_dict_scan_under_random_moves_and_the_heap_stays_small() -> None:
    """The same answers as scanning every deadline (the code it replaced), and leftovers do not pile up."""
    rng = random.Random(14)
    d, ref = Deadlines(), {}
    now = 0.0
    for _ in range(20_000):
        key = f"e{rng.randrange(500)}"
        op = rng.random()
        if op < 0.7:
            t = now + rng.uniform(0, 50)
            d.set(key, t)
            ref[key] = t
        elif op < 0.8:
            d.discard(key)
            ref.pop(key, None)
        else:
            now += rng.uniform(0, 5)
            want = sorted((t, k) for k, t in ref.items() if t <= now)
            assert d.pop_due(now) == [k for _t, k in want]
            for _t, k in want:
                del ref[k]
        assert len(d._heap) <= 2 * len(ref) + 64 + 1
    assert len(d) == len(ref)
