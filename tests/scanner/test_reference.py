"""Previous close and 20-day average volume from daily records, against real Lean daily bars."""

from __future__ import annotations

import numpy as np

from scanner.feeds.lean import read_lean_daily
from scanner.feeds.replay import reference as lean_reference
from scanner.reference import daily_reference
from scanner.session import session_bounds_ns
from tests.scanner.helpers import data_path

DAY = 1_000_000_000 * 86_400


def test_hand_made_records() -> None:
    sym = np.array([1, 0, 0, 1, 0, 2])
    day = np.array([3, 1, 2, 2, 9, 1]) * DAY
    close = np.array([11.0, 5.0, 6.0, 10.0, 99.0, -1.0])
    vol = np.array([300.0, 100.0, 200.0, 100.0, 1e9, 5.0])
    prev, adv = daily_reference(sym, day, close, vol, 4, before_ns=5 * DAY, days=20)
    assert prev[:2].tolist() == [6.0, 11.0]  # day 9 is not before the trading day
    assert adv[:2].tolist() == [150.0, 200.0]
    assert np.isnan(prev[2]) and np.isnan(prev[3]) and np.isnan(adv[3])  # bad close; no records
    prev, adv = daily_reference(sym, day, close, vol, 4, before_ns=5 * DAY, days=1)
    assert adv[:2].tolist() == [200.0, 300.0]


def test_matches_lean_daily_reference() -> None:
    """Same answer as the replay's Lean reference (which reads the same daily files its own way)."""
    daily = data_path("lean-us-equity", "daily")
    syms = ["aig", "bac", "ibm", "spy"]
    bars = [read_lean_daily(daily / f"{s}.zip") for s in syms]
    sym = np.concatenate([np.full(len(b), i) for i, b in enumerate(bars)])
    b = np.concatenate(bars)
    day_ns = np.array([session_bounds_ns(int(d))["day_start"] for d in b["day"]], np.int64)
    day = 20131008
    prev, adv = daily_reference(sym, day_ns, b["close"], b["volume"], 4, session_bounds_ns(day)["day_start"])
    ref_prev, ref_adv, found = lean_reference([s.upper() for s in syms], day, daily)
    assert found == 4
    np.testing.assert_allclose(prev, ref_prev)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-9)
