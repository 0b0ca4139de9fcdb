"""Tick validation and the last-trade kernel of the ingest process."""

from __future__ import annotations

import numpy as np

from scanner.records import TICK_DTYPE, TICK_NO_LAST, TICK_ODD_LOT
from scanner.ticks import LastTradeWriter, validate_ticks


def ticks(rows: list[tuple[int, int, int, float, float]]) -> np.ndarray:
    return np.array(rows, TICK_DTYPE)


def test_malformed_ticks_are_dropped_and_counted() -> None:
    t0 = 1_700_000_000 * 10**9
    t = ticks([(0, 0, t0, 1.0, 100), (9, 0, t0, 1.0, 100), (1, 0, t0, float("nan"), 100), (1, 0, t0, -2.0, 100),
               (1, 0, t0, 2.0, -5), (1, 0, 0, 2.0, 5), (2, 0, t0 + 1, 3.0, float("inf")), (2, 0, t0 + 2, 3.0, 0)])
    good, bad = validate_ticks(t, n_rows=5)
    assert bad == 6
    assert good["sym"].tolist() == [0, 2] and good["price"].tolist() == [1.0, 3.0]


def test_last_trade_wins_in_feed_order_and_odd_lots_only_count() -> None:
    n = 4
    price, size = np.full(n, np.nan), np.full(n, np.nan)
    ts, count = np.zeros(n, np.int64), np.zeros(n, np.int64)
    w = LastTradeWriter(price, size, ts, count)
    w.apply(ticks([(1, 0, 5, 10.0, 100), (1, 0, 6, 11.0, 200), (2, TICK_ODD_LOT, 7, 99.0, 5),
                   (1, TICK_NO_LAST, 8, 50.0, 100), (3, 0, 9, 7.0, 300), (1, 0, 4, 12.0, 100)]))
    # row 1: the last qualifying tick in feed order (12.0), the no-last print only counts
    assert price[1] == 12.0 and size[1] == 100 and ts[1] == 4
    assert np.isnan(price[2]) and count[2] == 1  # odd lot: counted, does not set the last price
    assert price[3] == 7.0
    assert count.tolist() == [0, 4, 1, 1]
    w.apply(ticks([(2, 0, 20, 98.0, 100)]))
    assert price[2] == 98.0 and count[2] == 2
