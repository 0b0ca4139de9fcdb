"""The synthetic market's history and pace: what the demo needs to look like a market."""

from __future__ import annotations

import numpy as np

from scanner.feeds.synthetic import SyntheticTape, activity, make_universe, volume_profile
from scanner.indicators.volume import expected_volume_profile
from scanner.session import OPEN_MIN, session_bounds_ns

NS = 1_000_000_000


def test_profile_spreads_average_volume_over_the_session() -> None:
    u = make_universe(50, seed=3, rate=8000)
    prof = volume_profile(u, np.arange(50), OPEN_MIN)
    assert prof.shape == (50, 1440)
    assert np.all(prof[:, OPEN_MIN - 1] == 0)  # nothing expected before the open
    np.testing.assert_allclose(prof[:, OPEN_MIN + 389], u.avg_daily_volume)  # all of it by the close
    first = expected_volume_profile(prof, OPEN_MIN, 1.0)
    assert np.all(first > u.avg_daily_volume / 390)  # the open's minute weighs more than an average one
    assert np.all(np.diff(prof, axis=1) >= 0)


def test_pre_market_is_thin_and_the_open_surges() -> None:
    assert activity(-3) < 0.1 < 1 < activity(0)
    u = make_universe(200, seed=3, rate=10_000)
    open_ns = session_bounds_ns(20261127)["open"]
    tape = SyntheticTape(u, np.arange(200), 10_000, 1, open_ns)
    pre = len(tape.generate(open_ns - 60 * NS, open_ns - 50 * NS))
    at_open = len(tape.generate(open_ns, open_ns + 10 * NS))
    assert at_open > 10 * pre
    assert at_open > 20 * 10_000  # tens of thousands of ticks a second at the open
