"""Reference values of a trading day from past daily bars: previous close and average volume.

Pure numpy over daily records (symbol index, day start in epoch ns, close, volume), from any
source: the vendor's REST daily bars or daily roll-ups of our own PostgreSQL minute bars. The
I/O (REST, database, the per-day cache file) is in `procs.reference`.
"""

from __future__ import annotations

import numpy as np

ADV_DAYS = 20  # "20-day average volume"


def daily_reference(sym: np.ndarray, day_ns: np.ndarray, close: np.ndarray, volume: np.ndarray, n_syms: int,
                    before_ns: int, days: int = ADV_DAYS) -> tuple[np.ndarray, np.ndarray]:
    """(previous close, average daily volume of the last `days` days) per symbol, from daily
    records strictly before `before_ns` (the trading day's start). Symbols without a record get
    NaN; a symbol with fewer days averages those it has. Non-finite or non-positive closes and
    negative volumes are ignored."""
    if days <= 0:
        raise ValueError(f"'days' must be positive, was {days}")
    sym = np.asarray(sym, np.int64)
    ok = (np.asarray(day_ns) < before_ns) & (sym >= 0) & (sym < n_syms)
    ok &= np.isfinite(close) & (np.asarray(close) > 0) & np.isfinite(volume) & (np.asarray(volume) >= 0)
    sym, day_ns = sym[ok], np.asarray(day_ns)[ok]
    close, volume = np.asarray(close, np.float64)[ok], np.asarray(volume, np.float64)[ok]
    prev = np.full(n_syms, np.nan)
    adv = np.full(n_syms, np.nan)
    if len(sym) == 0:
        return prev, adv
    order = np.lexsort((day_ns, sym))  # by symbol, then day: each symbol's last record is its newest
    sym, close, volume = sym[order], close[order], volume[order]
    last = np.ones(len(sym), bool)
    last[:-1] = sym[1:] != sym[:-1]
    prev[sym[last]] = close[last]
    counts = np.bincount(sym, minlength=n_syms)
    ends = np.cumsum(counts)
    rank_from_end = ends[sym] - 1 - np.arange(len(sym))  # 0 = newest day of the symbol
    recent = rank_from_end < days
    sums = np.bincount(sym[recent], weights=volume[recent], minlength=n_syms)
    n = np.minimum(counts, days)
    with np.errstate(invalid="ignore", divide="ignore"):
        adv = np.where(n > 0, sums / n, np.nan)
    return prev, adv
