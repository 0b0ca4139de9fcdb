"""Session metrics: price against the previous close, the day's open/high/low and the clock.

Vectorised numpy over whole columns, no state. Missing inputs (NaN prices, a zero `hod_ts_ns`)
give NaN. Percentages are percent (1.5 = 1.5 %).
"""

from __future__ import annotations

import numpy as np

from scanner.session import MINUTE_NS


def _pct(num: np.ndarray, den: np.ndarray, out: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(num, den, out=out)
    out *= 100.0
    out[~(den > 0)] = np.nan
    return out


def change_pct(price: np.ndarray, ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(price - ref) / ref in percent: change from the previous close (`change_pct`), from the
    day open (`change_from_open_pct`), or the open against the previous close (`gap_pct`)."""
    return _pct(price - ref, ref, out)


def dist_from_hod_pct(price: np.ndarray, day_high: np.ndarray, out: np.ndarray) -> np.ndarray:
    """How far the price is below the high of day, percent of the high (negative above it,
    e.g. after hours)."""
    return _pct(day_high - price, day_high, out)


def minutes_since(event_ns: int, ts_ns: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Minutes from `ts_ns` (0 = never) to `event_ns`."""
    np.divide(event_ns - ts_ns, MINUTE_NS, out=out)
    out[ts_ns == 0] = np.nan
    return out


def range_pct(day_high: np.ndarray, day_low: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Day range as a percent of the low."""
    return _pct(day_high - day_low, day_low, out)


def range_position(price: np.ndarray, day_high: np.ndarray, day_low: np.ndarray,
                   out: np.ndarray) -> np.ndarray:
    """Where the price sits in the day's range: 0 at the low, 100 at the high; outside 0-100
    when the price left the regular-session range (pre-market, after-hours); NaN for an empty
    range."""
    return _pct(price - day_low, day_high - day_low, out)
