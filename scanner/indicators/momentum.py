"""Momentum: RSI with Wilder smoothing as an O(1) scalar step (numba).

Warm-up as TA-Lib: the first `period` close-to-close changes are averaged plainly, later ones
smoothed as avg = (avg * (period - 1) + change) / period. `count` is the number of closes
already folded into the state; the first close only sets the previous close.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def rsi_next(gain: float, loss: float, count: int, period: int, prev: float, x: float) -> tuple[float, float]:
    """(average gain, average loss) state after close `x`; during the warm-up they are sums.
    `prev` is the previous close (ignored when count == 0)."""
    if count == 0:
        return 0.0, 0.0
    d = x - prev
    g = d if d > 0 else 0.0
    lo = -d if d < 0 else 0.0
    if count < period:
        return gain + g, loss + lo
    if count == period:
        return (gain + g) / period, (loss + lo) / period
    return (gain * (period - 1) + g) / period, (loss * (period - 1) + lo) / period


@njit(cache=True, nogil=True)
def rsi_value(gain: float, loss: float, count: int, period: int) -> float:
    """RSI 0-100 of a state holding `count` closes; NaN until `period` changes (period + 1
    closes). No movement at all gives 50 (TA-Lib returns 0 there, which reads as oversold)."""
    if count <= period:
        return np.nan
    s = gain + loss
    return 50.0 if s == 0 else 100.0 * gain / s
