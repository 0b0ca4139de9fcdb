"""Tick validation and the ingest kernel that writes the last trade into the table columns."""

from __future__ import annotations

import numpy as np

from scanner.records import TICK_CANCEL, TICK_DTYPE, TICK_NO_PRICE, TICK_NO_VOLUME

MIN_TS_NS = 631_152_000 * 1_000_000_000  # 1990-01-01 UTC: older is no data this scanner replays
MAX_AHEAD_NS = 86_400 * 1_000_000_000  # a tick more than a day past the clocks is garbage
MIN_PRICE, MAX_PRICE = 1e-4, 1e7  # USD: sub-penny quotes stop at 0.0001; the dearest share is under 1e6
MIN_SIZE, MAX_SIZE = 1e-6, 1e10  # shares in one print (0 allowed: a zero-size print)


def validate_ticks(ticks: np.ndarray, n_rows: int, max_ts_ns: int | None = None) -> tuple[np.ndarray, int]:
    """Drop malformed ticks: unknown row, price not in [MIN_PRICE, MAX_PRICE], size neither 0 nor
    in [MIN_SIZE, MAX_SIZE] (NaN and infinities included), timestamp before MIN_TS_NS or after `max_ts_ns` (the caller's
    clock + MAX_AHEAD_NS; None = no upper bound). Returns (good ticks, number dropped).

    The bounds are not cosmetic: a single tick from the far future rolls the bar aggregator to
    its day, after which every real tick is late and dropped; an absurd price times size makes
    the session's VWAP sums infinite for the rest of the day, and one that underflows makes a
    bar open at 0 (all found by tests/scanner/test_hostile_ticks.py)."""
    px, sz, ts = ticks["price"], ticks["size"], ticks["ts_ns"]
    ok = (ticks["sym"] < n_rows) & (px >= MIN_PRICE) & (px <= MAX_PRICE)  # NaN fails every comparison
    ok &= (sz == 0) | ((sz >= MIN_SIZE) & (sz <= MAX_SIZE))
    ok &= ts >= MIN_TS_NS
    if max_ts_ns is not None:
        ok &= ts <= max_ts_ns
    bad = len(ticks) - int(np.count_nonzero(ok))
    return (ticks if bad == 0 else ticks[ok]), bad


class LastTradeWriter:
    """Applies batches of ticks to the ingest-owned columns: price, last_size, last_ts_ns,
    tick_count. Vectorised; the last tick of a symbol in feed order wins for `price`, and
    odd lots / no-last / no-high-low prints count but do not set the last price (as the SIP
    tapes do), and official open/close reports (TICK_NO_VOLUME) do not either; a cancel
    (TICK_CANCEL) takes one off `tick_count` and sets nothing."""

    def __init__(self, price: np.ndarray, last_size: np.ndarray, last_ts: np.ndarray,
                 tick_count: np.ndarray) -> None:
        self.price, self.last_size, self.last_ts, self.tick_count = price, last_size, last_ts, tick_count
        n = len(price)
        self._last = np.full(n, -1, np.int64)  # scratch: index of the last qualifying tick per row

    def apply(self, ticks: np.ndarray) -> np.ndarray:
        """Write the batch; returns the rows whose last price changed (for the seqlock)."""
        sym = ticks["sym"].astype(np.intp)
        flags = ticks["flags"]
        cancel = (flags & TICK_CANCEL) != 0
        if cancel.any():  # a cancel takes its print back out of the count
            np.add.at(self.tick_count, sym, np.where(cancel, -1, 1))
        else:
            np.add.at(self.tick_count, sym, 1)
        qualifies = (flags & (TICK_NO_PRICE | TICK_NO_VOLUME | TICK_CANCEL)) == 0
        idx = np.flatnonzero(qualifies)
        if len(idx) == 0:
            return np.empty(0, np.intp)
        # ufunc.at is unbuffered with defined order: the max index per row is its last tick
        np.maximum.at(self._last, sym[idx], idx)
        rows = np.flatnonzero(self._last >= 0)
        last = self._last[rows]
        self.price[rows] = ticks["price"][last]
        self.last_size[rows] = ticks["size"][last]
        self.last_ts[rows] = ticks["ts_ns"][last]
        self._last[rows] = -1
        return rows

    def clear(self, rows: np.ndarray) -> None:
        """Forget `rows`' last trade and count (a row whose day is about to be replayed)."""
        self.price[rows] = np.nan
        self.last_size[rows] = np.nan
        self.last_ts[rows] = 0
        self.tick_count[rows] = 0


def empty_ticks(n: int = 0) -> np.ndarray:
    return np.zeros(n, TICK_DTYPE)
