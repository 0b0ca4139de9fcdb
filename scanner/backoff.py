"""One way to retry: exponential backoff with "equal jitter".

Every reconnect loop (Redis publisher, notifier, storage sinks, gateway pub/sub, vendor feeds)
and the supervisor's restarts pace themselves with `Backoff`; the notifier's per-delivery
retries use the same `jittered_delay` through `RetrySchedule`. After n consecutive failures the
wait is d/2 + U(0, d/2) with d = min(cap, base * 2^(n-1)): half of it fixed, so waits still
grow, and half random, so many clients that failed together (a Redis restart) do not all come
back in the same millisecond.
"""

from __future__ import annotations

import random
import time


def jittered_delay(failures: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Wait after `failures` (>= 1) consecutive failures; 0 when there were none."""
    if failures <= 0:
        return 0.0
    d = min(cap_s, base_s * 2.0 ** (failures - 1))
    return d / 2 + (rng or random).random() * d / 2


class Backoff:
    """Pacing of one reconnect loop: call `failed()` after a failure, `succeeded()` after a
    success, and try again only when `ready()`. Defaults: 0.1 s doubling to 5 s, jittered."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, was base_s={base_s} cap_s={cap_s}")
        self.base_s, self.cap_s, self.rng = base_s, cap_s, rng
        self.failures = 0  # consecutive failures since the last success
        self.delay = 0.0  # the wait chosen after the last failure
        self.retry_at = 0.0  # time.monotonic() before which no attempt should be made

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, now: float | None = None) -> float:
        """Count a failure; returns the wait before the next attempt (also in `retry_at`)."""
        self.failures += 1
        self.delay = jittered_delay(self.failures, self.base_s, self.cap_s, self.rng)
        self.retry_at = (time.monotonic() if now is None else now) + self.delay
        return self.delay

    def succeeded(self) -> bool:
        """Reset after a success; True when this ends a run of failures (worth a log line)."""
        was = self.failures > 0
        self.failures, self.delay, self.retry_at = 0, 0.0, 0.0
        return was

    def ready(self, now: float | None = None) -> bool:
        """True when the wait after the last failure is over."""
        return (time.monotonic() if now is None else now) >= self.retry_at
