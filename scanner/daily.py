"""Daily reference values (previous session, 52 weeks) from past daily bars.

One implementation for every source of daily history (Lean daily files for replays, the
synthetic universe's generated history): the bars go into right-aligned matrices
`(n_rows, n_days)`, the last column being the session before today, NaN where a symbol has no
bar, and `reference_columns` reduces them column-wise. Everything is as of the previous close:
today's session is not in it. The same matrices seed the daily timeframe's history (its
indicators, `sma_50_1d` ...: `scanner.timeframes`). `day` is yyyymmdd (NaN: no bar).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

YEAR_DAYS = 252  # sessions in 52 weeks
ADV_DAYS = 20  # sessions averaged for avg_daily_volume
DAILY_FIELDS = ("day", "open", "high", "low", "close", "volume")
REFERENCE_COLUMNS = ("prev_close", "avg_daily_volume", "prev_high", "prev_low", "high_52w", "low_52w")


def daily_matrix(per_symbol: Sequence[np.ndarray | None], day: int, n_days: int = YEAR_DAYS) -> dict[str, np.ndarray]:
    """Right-aligned `(n_rows, n_days)` matrices of DAILY_FIELDS from one DAILY_DTYPE array per
    symbol (None: no history), keeping the last `n_days` bars before trading day `day`."""
    out = {f: np.full((len(per_symbol), n_days), np.nan) for f in DAILY_FIELDS}
    for i, bars in enumerate(per_symbol):
        if bars is None:
            continue
        past = bars[bars["day"] < day]
        past = past[np.argsort(past["day"], kind="stable")][-n_days:]
        for f in DAILY_FIELDS:
            out[f][i, n_days - len(past):] = past[f]
    return out


def reference_columns(m: dict[str, np.ndarray], adv_days: int = ADV_DAYS) -> dict[str, np.ndarray]:
    """The REFERENCE columns from right-aligned daily matrices (see `daily_matrix`): previous
    close/high/low, average volume of the last `adv_days` sessions present, 52-week high/low over
    the sessions present among the last YEAR_DAYS."""
    high, low, close, vol = m["high"], m["low"], m["close"], m["volume"]
    n = close.shape[0]
    if close.shape[1] == 0:
        return {k: np.full(n, np.nan) for k in REFERENCE_COLUMNS}
    present = ~np.isnan(close[:, -adv_days:])
    with np.errstate(invalid="ignore", divide="ignore"):
        adv = np.where(present, vol[:, -adv_days:], 0.0).sum(axis=1) / present.sum(axis=1)
    year_h, year_l = high[:, -YEAR_DAYS:], low[:, -YEAR_DAYS:]
    any_year = ~np.all(np.isnan(year_h), axis=1)
    out = {
        "prev_close": close[:, -1].copy(),
        "avg_daily_volume": adv,
        "prev_high": high[:, -1].copy(),
        "prev_low": low[:, -1].copy(),
        "high_52w": np.where(any_year, np.fmax.reduce(year_h, axis=1), np.nan),
        "low_52w": np.where(any_year, np.fmin.reduce(year_l, axis=1), np.nan),
    }
    return out
