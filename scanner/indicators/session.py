"""Session metrics: price against the previous close, the day's open/high/low and the clock.

Over whole columns, no state; one numba loop per metric (a refresh runs them for every row
at every scan boundary, where numpy's 4-6 passes with temporaries per metric cost ~5x more),
computing each value with the operations, in the order, that numpy's array expressions would:
`(a - b) / den * 100` and so on. Missing inputs (NaN prices, a zero `hod_ts_ns`) give NaN.
Percentages are percent (1.5 = 1.5 %).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.session import MINUTE_NS

Arr = np.ndarray


@njit(cache=True, nogil=True)
def _pct_diff(a: Arr, b: Arr, c: Arr, d: Arr, out: Arr) -> None:
    """out = (a - b) / (c - d) in percent, NaN where c - d is not positive."""
    for i in range(out.shape[0]):
        den = c[i] - d[i]
        out[i] = (a[i] - b[i]) / den * 100.0 if den > 0 else np.nan


@njit(cache=True, nogil=True)
def _pct_of(a: Arr, b: Arr, den: Arr, out: Arr) -> None:
    """out = (a - b) / den in percent, NaN where den is not positive."""
    for i in range(out.shape[0]):
        out[i] = (a[i] - b[i]) / den[i] * 100.0 if den[i] > 0 else np.nan


@njit(cache=True, nogil=True)
def _since(event_ns: int, ts_ns: Arr, unit: int, out: Arr) -> None:
    for i in range(out.shape[0]):
        out[i] = (event_ns - ts_ns[i]) / unit if ts_ns[i] != 0 else np.nan


def change_pct(price: np.ndarray, ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(price - ref) / ref in percent: change from the previous close (`change_pct`), from the
    day open (`change_from_open_pct`), or the open against the previous close (`gap_pct`)."""
    _pct_of(price, ref, ref, out)
    return out


def dist_from_hod_pct(price: np.ndarray, day_high: np.ndarray, out: np.ndarray) -> np.ndarray:
    """How far the price is below the high of day, percent of the high (negative above it,
    e.g. after hours)."""
    _pct_of(day_high, price, day_high, out)
    return out


def minutes_since(event_ns: int, ts_ns: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Minutes from `ts_ns` (0 = never) to `event_ns`."""
    _since(int(event_ns), ts_ns, MINUTE_NS, out)
    return out


def range_pct(day_high: np.ndarray, day_low: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Day range as a percent of the low."""
    _pct_of(day_high, day_low, day_low, out)
    return out


def range_position(price: np.ndarray, day_high: np.ndarray, day_low: np.ndarray,
                   out: np.ndarray) -> np.ndarray:
    """Where the price sits in the day's range: 0 at the low, 100 at the high; outside 0-100
    when the price left the regular-session range (pre-market, after-hours); NaN for an empty
    range."""
    _pct_diff(price, day_low, day_high, day_low, out)
    return out
