"""Delivery pacing: a token bucket per destination and the jittered exponential retry schedule.

Both take the time (or a random source) from the caller, so they are deterministic under test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scanner.backoff import jittered_delay


class TokenBucket:
    """`capacity` tokens, refilled at `rate` tokens per second; one token per send.

    Over any window of t seconds at most `capacity + rate * t` sends pass.
    """

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"'rate' must be positive, was {rate}")
        if capacity < 1:
            raise ValueError(f"'capacity' must be at least 1, was {capacity}")
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.t = now

    def _refill(self, now: float) -> None:
        if now > self.t:
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now

    def take(self, now: float) -> bool:
        """Spend a token if one is there."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until the next token (0 if one is there)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class RetrySchedule:
    """Per-delivery retries: attempt n waits `scanner.backoff.jittered_delay` (d/2 + U(0, d/2),
    d = min(cap, base * 2^(n-1))).

    Half the delay is fixed, so waits still grow; the random half spreads retries of many alerts
    that failed together (a destination outage) instead of hammering it in lockstep.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    max_attempts: int = 6

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, was base_s={self.base_s} cap_s={self.cap_s}")
        if self.max_attempts < 1:
            raise ValueError(f"'max_attempts' must be at least 1, was {self.max_attempts}")

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Wait before the next attempt after `failed_attempts` (>= 1) failures."""
        return jittered_delay(max(1, failed_attempts), self.base_s, self.cap_s, rng)
