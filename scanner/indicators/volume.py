"""Volume metrics that need no bar state: relative volume and the intraday volume profile.

A *volume profile* is, per symbol, the average cumulative volume by New York minute of day
over past days: `profile[row, m]` = average volume traded from 00:00 up to the end of minute
`m` (0-1439), float64 (n_rows, 1440). Build it from past 1-minute bars with
`volume_profile` and hand it to `IndicatorEngine.load_volume_profile` at start.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MINUTES_PER_DAY = 1440
SESSION_MINUTES = 390.0


def volume_profile(rows: np.ndarray, days: np.ndarray, minute_of_day: np.ndarray, volume: np.ndarray,
                   n_rows: int) -> np.ndarray:
    """Profile from past 1-minute bars (one entry per bar: table row, trading day, minute of
    day, volume). Averages over the distinct days in the input: a day on which a symbol did not
    trade counts as a day of zero volume for it. Rows without bars get NaN."""
    rows = np.asarray(rows, np.intp)
    mod = np.asarray(minute_of_day, np.intp)
    if len(mod) and (mod.min() < 0 or mod.max() >= MINUTES_PER_DAY):
        raise ValueError("'minute_of_day' must be in 0..1439")
    n_days = max(1, len(np.unique(days)))
    prof = np.zeros((n_rows, MINUTES_PER_DAY))
    np.add.at(prof, (rows, mod), np.asarray(volume, np.float64))
    prof = np.cumsum(prof, axis=1) / n_days
    seen = np.zeros(n_rows, bool)
    seen[rows] = True
    prof[~seen] = np.nan
    return prof


def expected_volume_profile(profile: np.ndarray, minute: int, frac: float) -> np.ndarray:
    """Average volume up to `minute` of day plus `frac` (0-1) of that minute, per row."""
    before = profile[:, minute - 1] if minute > 0 else np.zeros(len(profile))
    return before + frac * (profile[:, minute] - before)


def expected_volume_flat(avg_daily_volume: np.ndarray, minutes_since_open: float) -> np.ndarray:
    """Average daily volume spread evenly over the 390-minute session, up to now; NaN before
    the open."""
    if not minutes_since_open > 0:
        return np.full(len(avg_daily_volume), np.nan)
    return avg_daily_volume * (min(minutes_since_open, SESSION_MINUTES) / SESSION_MINUTES)


@njit(cache=True, nogil=True)
def _ratio(num: np.ndarray, den: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        out[i] = num[i] / den[i] if den[i] > 0 else np.nan


@njit(cache=True, nogil=True)
def _per_bar(day_volume: np.ndarray, live_volume: np.ndarray, bars: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        out[i] = (day_volume[i] - live_volume[i]) / bars[i] if bars[i] > 0 else np.nan


def relative_volume(day_volume: np.ndarray, expected: np.ndarray, out: np.ndarray) -> np.ndarray:
    """day_volume / expected; NaN where nothing is expected (one numba loop over the column; a
    float32 profile's expectation is widened first, exactly, as numpy's division would)."""
    _ratio(np.asarray(day_volume, np.float64), np.asarray(expected, np.float64), out)
    return out


def average_bar_volume(day_volume: np.ndarray, live_volume: np.ndarray, bars_closed: np.ndarray,
                       out: np.ndarray) -> np.ndarray:
    """Average volume of today's closed 1-minute bars: (day volume - live bar volume) / bars
    closed today; NaN before the first close (one numba loop over the column)."""
    _per_bar(day_volume, live_volume, bars_closed, out)
    return out
