"""The gateway's poll schedule of the feed ring (`procs.gateway.poll_delay`)."""

from __future__ import annotations

import numpy as np

from procs.gateway import FAST_WINDOW_S, POLL_S, SLOW_POLL_S, poll_delay


def test_fast_after_a_boundary_and_while_alerts_flow() -> None:
    period = 1.0
    for phase in np.linspace(0.0, FAST_WINDOW_S * 0.99, 20):
        assert poll_delay(1000.0 + phase, period, False) == POLL_S
    for phase in np.linspace(0.0, 0.999, 50):
        assert poll_delay(1000.0 + phase, period, True) == POLL_S  # more of the same cycle may follow
    assert poll_delay(1000.7, 0.0, False) == POLL_S  # no wall-clock cadence (a replay): always fast


def test_slow_in_the_rest_of_a_period_but_never_past_the_next_boundary() -> None:
    for period in (0.05, 0.1, 1.0):
        window = min(FAST_WINDOW_S, period / 2)
        for phase in np.linspace(window, period * 0.999, 97):
            now = 5000.0 + phase
            d = poll_delay(now, period, False)
            assert POLL_S <= d <= SLOW_POLL_S
            # the wake-up lands before the next boundary's fast window has gone by
            assert now + d <= 5000.0 + period + POLL_S


def test_fewer_wakeups_than_fixed_polling_at_the_default_cadence() -> None:
    now, polls = 0.0, 0
    while now < 10.0:
        now += poll_delay(now, 1.0, False)
        polls += 1
    assert polls < 0.3 * 10.0 / POLL_S
