"""Tick validation and the last-trade kernel of the ingest process."""

from __future__ import annotations

import numpy as np

from scanner.records import TICK_CANCEL, TICK_DTYPE, TICK_NO_LAST, TICK_NO_PRICE, TICK_NO_VOLUME, TICK_ODD_LOT
from scanner.ticks import (
    MAX_PRICE,
    MAX_SIZE,
    MIN_PRICE,
    MIN_SIZE,
    MIN_TS_NS,
    LastTradeWriter,
    validate_ticks,
)


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


def numpy_reference(t: np.ndarray, n_rows: int, max_ts: int, cols: tuple[np.ndarray, ...]) -> int:
    """The numpy formulation the kernels replaced (masks, `ufunc.at`): the same results."""
    px, sz, ts = t["price"], t["size"], t["ts_ns"]
    ok = (t["sym"] < n_rows) & (px >= MIN_PRICE) & (px <= MAX_PRICE)
    ok &= (sz == 0) | ((sz >= MIN_SIZE) & (sz <= MAX_SIZE))
    ok &= (ts >= MIN_TS_NS) & (ts <= max_ts)
    good = t[ok]
    price, size, last_ts, count = cols
    sym, flags = good["sym"].astype(np.intp), good["flags"]
    cancel = (flags & TICK_CANCEL) != 0
    np.add.at(count, sym, np.where(cancel, -1, 1))
    last = np.full(n_rows, -1, np.int64)
    idx = np.flatnonzero((flags & (TICK_NO_PRICE | TICK_NO_VOLUME | TICK_CANCEL)) == 0)
    np.maximum.at(last, sym[idx], idx)
    rows = np.flatnonzero(last >= 0)
    at = last[rows]
    price[rows], size[rows], last_ts[rows] = good["price"][at], good["size"][at], good["ts_ns"][at]
    return len(t) - len(good)


def test_kernels_equal_the_numpy_formulation_on_random_hostile_batches() -> None:
    rng = np.random.default_rng(11)
    n_rows, t0 = 50, 1_700_000_000 * 10**9
    mine = (np.full(n_rows, np.nan), np.full(n_rows, np.nan), np.zeros(n_rows, np.int64), np.zeros(n_rows, np.int64))
    ref = tuple(c.copy() for c in mine)
    w = LastTradeWriter(*mine)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, MIN_PRICE, MAX_PRICE, MAX_PRICE * 2, 1e-9, MAX_SIZE,
                         MAX_SIZE * 10, MIN_SIZE])
    for size in (0, 1, 2, 7, 300, 2000):
        t = np.zeros(size, TICK_DTYPE)
        t["sym"] = rng.integers(0, n_rows + 3, size)  # some rows outside the table
        t["flags"] = rng.choice([0, 0, 0, TICK_ODD_LOT, TICK_NO_LAST, TICK_NO_VOLUME, TICK_CANCEL, 3], size)
        t["ts_ns"] = t0 + rng.integers(-5, 5, size) * 10**9
        t["ts_ns"][rng.random(size) < 0.05] = 0
        t["price"] = rng.uniform(1, 100, size)
        t["size"] = rng.integers(0, 1000, size).astype(float)
        for f in ("price", "size"):
            hit = rng.random(size) < 0.1
            t[f][hit] = rng.choice(specials, int(hit.sum()))
        good, bad = validate_ticks(t, n_rows, t0 + 2 * 10**9)
        w.apply(good)
        assert bad == numpy_reference(t, n_rows, t0 + 2 * 10**9, ref)
        for a, b in zip(mine, ref, strict=True):
            assert np.array_equal(a, b, equal_nan=True)
