"""Quotes, statuses and LULD bands into the table columns: last record per symbol wins, halts
and resumes, bad values, and the derived trading-status metrics."""

from __future__ import annotations

import numpy as np

from scanner.feeds.frames import LULD_DTYPE, QUOTE_DTYPE, STATUS_DTYPE, pack_code, unpack_code
from scanner.indicators.engine import IndicatorEngine
from scanner.market_state import MarketStateWriter, last_per_symbol
from scanner.session import NS, session_bounds_ns
from tests.scanner.helpers import table_columns

B = session_bounds_ns(20131008)


def _rec(dtype: np.dtype, rows: list[tuple]) -> np.ndarray:
    return np.array(rows, dtype)


def test_last_per_symbol_is_feed_order() -> None:
    rows, last = last_per_symbol(np.array([3, 1, 3, 2, 1, 3], np.uint32))
    assert rows.tolist() == [1, 2, 3]
    assert last.tolist() == [4, 3, 5]


def test_quotes_last_wins_and_spread() -> None:
    c = table_columns(4)
    w = MarketStateWriter(c)
    q = _rec(QUOTE_DTYPE, [(0, 1, 9.0, 9.5, 100, 200), (1, 2, 20.0, 20.1, 1, 2), (0, 3, 10.0, 10.1, 300, 400),
                           (2, 4, 5.0, 4.9, 1, 1), (3, 5, np.nan, 7.0, 1, 1), (9, 6, 1.0, 1.1, 1, 1)])
    rows = w.apply_quotes(q)
    assert rows.tolist() == [0, 1, 2, 3]  # row 9 is outside the table: ignored
    assert (c["bid"][0], c["ask"][0], c["bid_size"][0], c["ask_size"][0]) == (10.0, 10.1, 300, 400)
    np.testing.assert_allclose(c["spread_pct"][:2], [0.1 / 10.05 * 100, 0.1 / 20.05 * 100])
    assert np.isnan(c["spread_pct"][2])  # crossed
    assert np.isnan(c["bid"][3]) and np.isnan(c["spread_pct"][3])  # one-sided
    assert w.quotes == 5


def test_halt_then_resume_across_batches_and_within_one() -> None:
    c = table_columns(3)
    w = MarketStateWriter(c)
    luld = pack_code("LUDP")
    w.apply_statuses(_rec(STATUS_DTYPE, [(0, 100, 1, luld), (1, 110, 0, 0), (0, 120, 1, luld)]))
    assert c["halted"][:2].tolist() == [1.0, 0.0] and np.isnan(c["halted"][2])
    assert c["halt_ts_ns"][0] == 100  # a repeated halt message keeps the halt's start
    assert unpack_code(int(c["halt_reason"][0])) == "LUDP"
    assert c["resume_ts_ns"][1] == 0  # trading without a halt before is no resume
    w.apply_statuses(_rec(STATUS_DTYPE, [(0, 400, 0, 0), (2, 500, 1, pack_code("T1")), (2, 700, 0, 0),
                                         (1, 800, 1, pack_code("H10"))]))
    assert c["halted"].tolist() == [0.0, 1.0, 0.0]
    assert c["resume_ts_ns"].tolist() == [400, 0, 700]
    assert c["halt_ts_ns"].tolist() == [100, 800, 500]
    assert (w.halts, w.resumes) == (3, 2)


def test_luld_bands_and_bad_values() -> None:
    c = table_columns(2)
    w = MarketStateWriter(c)
    w.apply_lulds(_rec(LULD_DTYPE, [(0, 1, 11.0, 9.0), (1, 1, -1.0, np.inf), (0, 2, 10.5, 9.5)]))
    assert (c["luld_upper"][0], c["luld_lower"][0]) == (10.5, 9.5)
    assert np.isnan(c["luld_upper"][1]) and np.isnan(c["luld_lower"][1])


def test_derived_status_metrics() -> None:
    c = table_columns(3)
    for k in ("bar_start_ns", "bars_closed"):
        c[k][:] = 0
    c["bar_volume"][:] = 0.0
    c["day_volume"][:] = 0.0
    now = B["open"] + 600 * NS
    c["price"][:] = [10.0, 10.0, np.nan]
    c["luld_upper"][:] = [10.5, np.nan, 11.0]
    c["luld_lower"][:] = [9.5, 9.0, 9.0]
    c["halted"][:] = [0.0, 1.0, 0.0]
    c["resume_ts_ns"][:] = [now - 90 * NS, now - 30 * NS, 0]
    IndicatorEngine(3).update_live(c, now)
    np.testing.assert_allclose(c["seconds_since_resume"], [90.0, np.nan, np.nan])
    np.testing.assert_allclose(c["pct_to_luld_upper"], [5.0, np.nan, np.nan])
    np.testing.assert_allclose(c["pct_to_luld_lower"], [5.0, 10.0, np.nan])
