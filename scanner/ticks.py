"""Tick validation and the ingest kernel that writes the last trade into the table columns."""

from __future__ import annotations

import numpy as np

from scanner.records import TICK_DTYPE, TICK_NO_PRICE, TICK_NO_VOLUME


def validate_ticks(ticks: np.ndarray, n_rows: int) -> tuple[np.ndarray, int]:
    """Drop malformed ticks (unknown row, non-finite or non-positive price, negative or
    non-finite size, non-positive timestamp). Returns (good ticks, number dropped)."""
    px, sz = ticks["price"], ticks["size"]
    ok = (ticks["sym"] < n_rows) & np.isfinite(px) & (px > 0) & np.isfinite(sz) & (sz >= 0)
    ok &= ticks["ts_ns"] > 0
    bad = len(ticks) - int(np.count_nonzero(ok))
    return (ticks if bad == 0 else ticks[ok]), bad


class LastTradeWriter:
    """Applies batches of ticks to the ingest-owned columns: price, last_size, last_ts_ns,
    tick_count. Vectorised; the last tick of a symbol in feed order wins for `price`, and
    odd lots / no-last / no-high-low prints count but do not set the last price (as the SIP
    tapes do), and official open/close reports (TICK_NO_VOLUME) do not either."""

    def __init__(self, price: np.ndarray, last_size: np.ndarray, last_ts: np.ndarray,
                 tick_count: np.ndarray) -> None:
        self.price, self.last_size, self.last_ts, self.tick_count = price, last_size, last_ts, tick_count
        n = len(price)
        self._last = np.full(n, -1, np.int64)  # scratch: index of the last qualifying tick per row

    def apply(self, ticks: np.ndarray) -> np.ndarray:
        """Write the batch; returns the rows whose last price changed (for the seqlock)."""
        sym = ticks["sym"].astype(np.intp)
        np.add.at(self.tick_count, sym, 1)
        qualifies = (ticks["flags"] & (TICK_NO_PRICE | TICK_NO_VOLUME)) == 0
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


def empty_ticks(n: int = 0) -> np.ndarray:
    return np.zeros(n, TICK_DTYPE)
