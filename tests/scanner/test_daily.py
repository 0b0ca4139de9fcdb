"""Daily reference values: the one reduction over right-aligned daily matrices, and the synthetic
universe's generated daily history."""

from __future__ import annotations

import numpy as np

from scanner.daily import DAILY_FIELDS, REFERENCE_COLUMNS, daily_matrix, reference_columns
from scanner.feeds.lean import DAILY_DTYPE
from scanner.feeds.synthetic import daily_history, make_universe


def _bars(n: int, first_day: int = 20200101) -> np.ndarray:
    b = np.zeros(n, DAILY_DTYPE)
    b["day"] = first_day + np.arange(n)
    b["close"] = b["open"] = 10.0 + np.arange(n)
    b["high"], b["low"], b["volume"] = b["close"] + 1, b["close"] - 1, 100.0 * (np.arange(n) + 1)
    return b


def test_reference_columns_short_and_missing_histories() -> None:
    long, short = _bars(300), _bars(30)
    m = daily_matrix([long, short, None], day=20200101 + 300)
    assert all(m[f].shape == (3, 252) for f in DAILY_FIELDS)
    ref = reference_columns(m)
    assert set(ref) == set(REFERENCE_COLUMNS)
    assert ref["prev_close"].tolist()[:2] == [309.0, 39.0]
    assert ref["high_52w"][0] == 310.0 and ref["low_52w"][0] == 300.0 - 252 + 10 - 1
    assert ref["low_52w"][1] == 9.0 and ref["avg_daily_volume"][1] == np.mean(long["volume"][10:30])
    assert m["day"][0, -1] == 20200101 + 299 and np.isnan(m["day"][1, :-30]).all()
    assert all(np.isnan(v[2]) for v in ref.values())
    # the day itself and later days are not history
    assert reference_columns(daily_matrix([long], day=20200101 + 5))["prev_close"][0] == 14.0


def test_synthetic_daily_history_ends_at_the_previous_close() -> None:
    u = make_universe(500, seed=3)
    h = daily_history(u, 20131008, seed=3)
    assert h["close"].shape == (500, 252)
    assert h["day"][0, -1] == 20131007 and h["day"][0, -2] == 20131004 and (np.diff(h["day"][0]) > 0).all()
    np.testing.assert_allclose(h["close"][:, -1], u.prev_close, rtol=1e-12)
    assert (h["high"] >= h["close"]).all() and (h["low"] <= h["close"]).all() and (h["low"] > 0).all()
    ref = reference_columns(h)
    assert (ref["high_52w"] >= ref["prev_high"]).all() and (ref["low_52w"] <= ref["prev_low"]).all()
    assert not np.isnan(ref["low_52w"]).any()
    np.testing.assert_array_equal(daily_history(u, 20131008, seed=3)["high"], h["high"])  # deterministic
    part = daily_history(u, 20131008, seed=3, rows=(100, 450))  # a host's range: the same values
    for k in ("day", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(part[k], h[k][100:450], err_msg=k)
