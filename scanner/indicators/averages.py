"""Moving averages of closes: SMA and EMA as O(1) scalar steps (numba).

Calling contract (both): `count` is the number of closes already folded into the state, `x`
the next close. The functions return the new state and never write anything, so the engine
uses them for finalised and for live values alike.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def sma_next(total: float, count: int, period: int, leaving: float, x: float) -> float:
    """Running sum of the last `period` closes after adding `x`; `leaving` is the close that
    drops out of the window (read only when count >= period)."""
    if count >= period:
        return total + x - leaving
    return total + x


@njit(cache=True, nogil=True)
def sma_value(total: float, count: int, period: int) -> float:
    """SMA from the running sum of a state holding `count` closes; NaN before `period` closes."""
    return total / period if count >= period else np.nan


@njit(cache=True, nogil=True)
def ema_next(state: float, count: int, period: int, x: float, k: float) -> float:
    """EMA state after `x`, seeded like TA-Lib: the state is the running sum of the first
    closes until the `period`-th, which turns it into their mean; then ema += k * (x - ema)
    with k = `ema_k(period)`, computed once by the caller (a division per bar otherwise)."""
    c1 = count + 1
    if c1 < period:
        return state + x
    if c1 == period:
        return (state + x) / period
    return state + k * (x - state)


def ema_k(period: np.ndarray) -> np.ndarray:
    """The smoothing factor of each EMA period, 2 / (period + 1) (TA-Lib's PER_TO_K)."""
    return 2.0 / (np.asarray(period, np.float64) + 1.0)


@njit(cache=True, nogil=True)
def ema_value(state: float, count: int, period: int) -> float:
    """EMA of a state holding `count` closes; NaN during the warm-up (count < period)."""
    return state if count >= period else np.nan
