"""Backoff and rate limiting shared by the client (retries, QPS) and the work queue (per-item retries).

Both follow client-go's arithmetic so operators behave like the Go controllers people already know:
exponential per-item delays capped at a maximum, and a token bucket that turns bursts into waiting time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from kokpit._lib.clock import Clock, RealClock

__all__ = ["ExponentialBackoff", "TokenBucket"]


@dataclass
class ExponentialBackoff:
    """``base * factor**attempt`` capped at ``cap``, with optional multiplicative jitter in [1, 1+jitter)."""

    base: float = 0.005
    cap: float = 1000.0
    factor: float = 2.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based)."""
        exp = min(attempt, 1024)
        try:
            d = self.base * (self.factor**exp)
        except OverflowError:
            d = self.cap
        d = min(d, self.cap)
        if self.jitter > 0:
            d = min(d * (1.0 + self.rng.random() * self.jitter), self.cap * (1.0 + self.jitter))
        return d


class TokenBucket:
    """A token bucket that answers "how long must I wait" and reserves the token (like Go's rate.Reserve).

    Reserving always succeeds; the caller waits the returned delay.  Tokens refill at ``rate`` per second up
    to ``burst``; a negative balance is debt that later callers wait out.
    """

    def __init__(self, rate: float, burst: int, clock: Clock | None = None) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock: Clock = clock or RealClock()
        self._tokens = float(burst)
        self._last = self._clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self) -> float:
        """Take one token and return how many seconds the caller must wait before using it."""
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    async def wait(self) -> None:
        """Take one token and sleep until it is usable."""
        d = self.reserve()
        if d > 0:
            await self._clock.sleep(d)
