"""The one backoff: growth, cap, jitter bounds, reset, and the notifier's schedule built on it."""

from __future__ import annotations

import random

import pytest

from scanner.backoff import Backoff, jittered_delay
from scanner.notify.limits import RetrySchedule


def test_delays_grow_double_and_cap_with_equal_jitter() -> None:
    rng = random.Random(1)
    for n in range(1, 12):
        d = min(5.0, 0.1 * 2 ** (n - 1))
        for _ in range(50):
            assert d / 2 <= jittered_delay(n, 0.1, 5.0, rng) <= d
    assert jittered_delay(0, 0.1, 5.0) == 0.0
    spread = {round(jittered_delay(6, 0.1, 5.0, rng), 6) for _ in range(20)}
    assert len(spread) > 10  # clients that failed together do not come back in lockstep


def test_backoff_paces_attempts_and_resets_on_success() -> None:
    b = Backoff(rng=random.Random(2))
    assert b.ready(0.0) and not b.failing
    d1 = b.failed(now=100.0)
    assert 0.05 <= d1 <= 0.1 and b.retry_at == 100.0 + d1
    assert not b.ready(100.0) and b.ready(100.0 + d1)
    for _ in range(10):
        b.failed(now=100.0)
    assert 2.5 <= b.delay <= 5.0  # capped
    assert b.succeeded() is True and not b.failing and b.ready(0.0)
    assert b.succeeded() is False  # nothing to announce twice


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0.0)
    with pytest.raises(ValueError, match="cap_s"):
        Backoff(base_s=2.0, cap_s=1.0)


def test_retry_schedule_uses_the_same_curve() -> None:
    sched = RetrySchedule(base_s=1.0, cap_s=8.0, max_attempts=5)
    assert sched.delay(4, random.Random(3)) == jittered_delay(4, 1.0, 8.0, random.Random(3))
