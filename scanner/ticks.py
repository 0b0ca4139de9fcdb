"""Tick validation and the ingest kernel that writes the last trade into the table columns.

Both are one numba pass over a batch (ingest calls them for every batch it publishes: numpy's
eight masks for the validation and `ufunc.at` for the last trade cost ~50 ns a tick, a quarter
of a millisecond at each scan boundary of the backtest bench, 5,000 ticks a boundary)."""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.records import TICK_CANCEL, TICK_DTYPE, TICK_NO_PRICE, TICK_NO_VOLUME

MIN_TS_NS = 631_152_000 * 1_000_000_000  # 1990-01-01 UTC: older is no data this scanner replays
MAX_AHEAD_NS = 86_400 * 1_000_000_000  # a tick more than a day past the clocks is garbage
MIN_PRICE, MAX_PRICE = 1e-4, 1e7  # USD: sub-penny quotes stop at 0.0001; the dearest share is under 1e6
MIN_SIZE, MAX_SIZE = 1e-6, 1e10  # shares in one print (0 allowed: a zero-size print)
_NO_MAX_TS = np.iinfo(np.int64).max
_NO_LAST = TICK_NO_PRICE | TICK_NO_VOLUME  # counted, but no last price


@njit(cache=True, nogil=True)
def _valid(sym: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray, n_rows: int, max_ts: int,
           ok: np.ndarray) -> int:
    """ok[k] = tick k passes every bound of `validate_ticks` (NaN fails every comparison);
    returns how many fail."""
    bad = 0
    for k in range(sym.shape[0]):
        p, q, t = px[k], sz[k], ts[k]
        good = (sym[k] < n_rows and p >= MIN_PRICE and p <= MAX_PRICE
                and (q == 0 or (q >= MIN_SIZE and q <= MAX_SIZE)) and MIN_TS_NS <= t <= max_ts)
        ok[k] = good
        bad += not good
    return bad


@njit(cache=True, nogil=True)
def _last_trade(sym: np.ndarray, flags: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray,
                price: np.ndarray, last_size: np.ndarray, last_ts: np.ndarray, tick_count: np.ndarray) -> None:
    """`LastTradeWriter.apply`'s writes, tick by tick in feed order (so the last one wins)."""
    for k in range(sym.shape[0]):
        r = sym[k]
        f = flags[k]
        if f & TICK_CANCEL:
            tick_count[r] -= 1
            continue
        tick_count[r] += 1
        if (f & _NO_LAST) == 0:
            price[r] = px[k]
            last_size[r] = sz[k]
            last_ts[r] = ts[k]


def validate_ticks(ticks: np.ndarray, n_rows: int, max_ts_ns: int | None = None) -> tuple[np.ndarray, int]:
    """Drop malformed ticks: unknown row, price not in [MIN_PRICE, MAX_PRICE], size neither 0 nor
    in [MIN_SIZE, MAX_SIZE] (NaN and infinities included), timestamp before MIN_TS_NS or after `max_ts_ns` (the caller's
    clock + MAX_AHEAD_NS; None = no upper bound). Returns (good ticks, number dropped).

    The bounds are not cosmetic: a single tick from the far future rolls the bar aggregator to
    its day, after which every real tick is late and dropped; an absurd price times size makes
    the session's VWAP sums infinite for the rest of the day, and one that underflows makes a
    bar open at 0 (all found by tests/scanner/test_hostile_ticks.py)."""
    ok = np.empty(len(ticks), np.bool_)
    bad = _valid(ticks["sym"], ticks["ts_ns"], ticks["price"], ticks["size"], n_rows,
                 _NO_MAX_TS if max_ts_ns is None else max_ts_ns, ok)
    return (ticks if bad == 0 else ticks[ok]), bad


class LastTradeWriter:
    """Applies batches of ticks to the ingest-owned columns: price, last_size, last_ts_ns,
    tick_count, in one numba pass. The last tick of a symbol in feed order wins for `price`;
    odd lots / no-last / no-high-low prints count but do not set the last price (as the SIP
    tapes do), and official open/close reports (TICK_NO_VOLUME) do not either; a cancel
    (TICK_CANCEL) takes one off `tick_count` and sets nothing."""

    def __init__(self, price: np.ndarray, last_size: np.ndarray, last_ts: np.ndarray,
                 tick_count: np.ndarray) -> None:
        self.price, self.last_size, self.last_ts, self.tick_count = price, last_size, last_ts, tick_count

    def apply(self, ticks: np.ndarray) -> None:
        """Write the batch (TICK_DTYPE) into the columns."""
        _last_trade(ticks["sym"], ticks["flags"], ticks["ts_ns"], ticks["price"], ticks["size"], self.price,
                    self.last_size, self.last_ts, self.tick_count)

    def clear(self, rows: np.ndarray) -> None:
        """Forget `rows`' last trade and count (a row whose day is about to be replayed)."""
        self.price[rows] = np.nan
        self.last_size[rows] = np.nan
        self.last_ts[rows] = 0
        self.tick_count[rows] = 0


def empty_ticks(n: int = 0) -> np.ndarray:
    return np.zeros(n, TICK_DTYPE)


def warm_up() -> None:
    """Compile (first time on a machine) or load both kernels with the argument kinds ingest
    passes: the strided field views of a batch, and those of a one-tick or empty batch (numpy
    marks such a view C-contiguous: another signature)."""
    n = 2
    cols = (np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.int64), np.zeros(n, np.int64))
    w = LastTradeWriter(*cols)
    t = np.zeros(2, TICK_DTYPE)
    t["sym"], t["ts_ns"], t["price"], t["size"] = [0, 1], MIN_TS_NS, 1.0, 100.0
    for batch in (t, t[:1].copy(), t[:0]):
        good, _ = validate_ticks(batch, n, MIN_TS_NS + MAX_AHEAD_NS)
        validate_ticks(batch, n)
        w.apply(good)
