"""Volatility: true range and ATR with Wilder smoothing as O(1) scalar steps (numba).

Warm-up as TA-Lib: the first bar only sets the previous close; the first ATR is the mean of
the next `period` true ranges, later ones atr = (atr * (period - 1) + tr) / period.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def true_range(high: float, low: float, prev_close: float) -> float:
    """max(high - low, |high - prev_close|, |low - prev_close|)."""
    return max(high - low, abs(high - prev_close), abs(low - prev_close))


@njit(cache=True, nogil=True)
def atr_next(atr: float, count: int, period: int, high: float, low: float, prev_close: float) -> float:
    """ATR state after a bar; `count` bars were folded in before it (the state is the sum of
    true ranges during the warm-up)."""
    if count == 0:
        return 0.0
    tr = true_range(high, low, prev_close)
    if count < period:
        return atr + tr
    if count == period:
        return (atr + tr) / period
    return (atr * (period - 1) + tr) / period


@njit(cache=True, nogil=True)
def atr_value(atr: float, count: int, period: int) -> float:
    """ATR of a state holding `count` bars; NaN until period + 1 bars."""
    return atr if count > period else np.nan
