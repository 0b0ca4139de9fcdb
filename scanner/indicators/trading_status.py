"""Trading-status metrics: time since a halt ended and the distance to the LULD bands.

One numba loop per metric over whole columns (the same operations as numpy's array
expressions, see `session`), no state; missing inputs give NaN. Percentages are percent.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.session import NS


@njit(cache=True, nogil=True)
def _since_resume(event_ns: int, resume_ts_ns: np.ndarray, halted: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        out[i] = (event_ns - resume_ts_ns[i]) / NS if resume_ts_ns[i] != 0 and halted[i] != 1 else np.nan


@njit(cache=True, nogil=True)
def _to_band(price: np.ndarray, band: np.ndarray, upper: bool, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        p = price[i]
        out[i] = ((band[i] - p) if upper else (p - band[i])) / p * 100.0 if p > 0 else np.nan


def seconds_since_resume(event_ns: int, resume_ts_ns: np.ndarray, halted: np.ndarray,
                         out: np.ndarray) -> np.ndarray:
    """Seconds from the last resume (0 = none) to `event_ns`; NaN while halted or with no resume."""
    _since_resume(int(event_ns), resume_ts_ns, halted, out)
    return out


def pct_to_band(price: np.ndarray, band: np.ndarray, out: np.ndarray, *, upper: bool) -> np.ndarray:
    """Distance from the price to a LULD band, percent of the price: positive inside the band
    (upper: band above the price; lower: price above the band), negative outside it."""
    _to_band(price, band, upper, out)
    return out
