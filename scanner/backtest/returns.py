"""Forward returns of alerts, from one trading day's 1-minute bars.

Definitions (all prices from the replay itself; nothing looked up elsewhere):

* **entry** `p0`: the alert's `price`, the symbol's last trade price in the scan's snapshot at
  the alert's event time T (exact, not a bar value).
* **forward price at T + h** (h = 1, 5, 15, 30, 60 min): the close of the symbol's bar of the
  minute holding T + h, or of its last bar before that minute when it did not trade then: the
  last trade by the end of that minute. NaN when T + h is past the end of the data (the day's
  after-hours close, or where an interrupted replay stopped).
* **session close**: the close of the last bar starting before 16:00 New York for an alert
  before 16:00, else the day's last bar.
* **return** `p / p0 - 1`; for a rule with `side = "short"` its negative.
* **MFE / MAE** over 30 min: the highest high and lowest low of the bars of the 30 minutes after
  the alert's minute (minute of T excluded: part of it is before the alert), as returns from
  `p0`; for a short the favourable one is the low. NaN when no bar traded in that window.

Bars are looked up by the key `symbol * 1440 + minute of the day`, sorted once per day, so every
lookup is one `searchsorted` over all alerts at once.
"""

from __future__ import annotations

import numpy as np

from scanner.session import MINUTE_NS, session_bounds_ns

HORIZONS_MIN = (1, 5, 15, 30, 60)
HORIZONS = (*(f"{h}m" for h in HORIZONS_MIN), "close")
EXCURSION_MIN = 30
DAY_MINUTES = 1440
# time-of-day buckets (New York): name, start, end (minutes of the day)
BUCKETS = (("premarket", 4 * 60, 9 * 60 + 30), ("open", 9 * 60 + 30, 10 * 60 + 30),
           ("midday", 10 * 60 + 30, 15 * 60), ("close", 15 * 60, 16 * 60), ("after_hours", 16 * 60, 20 * 60))
BUCKET_NAMES = tuple(b[0] for b in BUCKETS)
DAY_BARS_DTYPE = np.dtype([("sym", "<i8"), ("minute_ns", "<i8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8")])


def bucket_of(minute_of_day: np.ndarray) -> np.ndarray:
    """Index into BUCKET_NAMES per minute of the New York day (-1: overnight, outside all)."""
    out = np.full(len(minute_of_day), -1, np.int64)
    for i, (_, lo, hi) in enumerate(BUCKETS):
        out[(minute_of_day >= lo) & (minute_of_day < hi)] = i
    return out


class DayBars:
    """One trading day's bars of every symbol, sorted for lookups by (symbol, minute)."""

    def __init__(self, day: int, bars: np.ndarray) -> None:
        """`bars`: DAY_BARS_DTYPE (or any array with those fields) of trading day `day`."""
        self.day = day
        self.bounds = session_bounds_ns(day)
        self.day_start = self.bounds["day_start"]
        minute = (bars["minute_ns"] - self.day_start) // MINUTE_NS
        key = bars["sym"].astype(np.int64) * DAY_MINUTES + minute
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.high = bars["high"][order].astype(np.float64)
        self.low = bars["low"][order].astype(np.float64)
        self.close = bars["close"][order].astype(np.float64)

    def minute(self, t_ns: np.ndarray) -> np.ndarray:
        return (t_ns - self.day_start) // MINUTE_NS

    def close_at_or_before(self, sym: np.ndarray, minute: np.ndarray) -> np.ndarray:
        """Close of each symbol's last bar with minute <= `minute` (NaN if none that day)."""
        want = sym * DAY_MINUTES + minute
        i = np.searchsorted(self.key, want, side="right") - 1
        ok = (i >= 0) & (minute >= 0)
        i = np.maximum(i, 0)
        ok &= (self.key[i] // DAY_MINUTES) == sym if len(self.key) else np.zeros(len(sym), bool)
        out = np.full(len(sym), np.nan)
        if len(self.key):
            out[ok] = self.close[i[ok]]
        return out

    def extremes(self, sym: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Highest high and lowest low of each symbol's bars with minute in [first, last]
        (NaN where none), for windows of at most EXCURSION_MIN + 1 minutes."""
        lo = np.searchsorted(self.key, sym * DAY_MINUTES + first, side="left")
        hi = np.searchsorted(self.key, sym * DAY_MINUTES + last, side="right")
        width = EXCURSION_MIN + 1
        idx = lo[:, None] + np.arange(width)
        inside = idx < hi[:, None]
        idx = np.minimum(idx, max(len(self.key) - 1, 0))
        if not len(self.key):
            nan = np.full(len(sym), np.nan)
            return nan, nan.copy()
        h = np.where(inside, self.high[idx], -np.inf).max(axis=1)
        lw = np.where(inside, self.low[idx], np.inf).min(axis=1)
        any_ = inside.any(axis=1)
        return np.where(any_, h, np.nan), np.where(any_, lw, np.nan)


def forward_returns(bars: DayBars, sym: np.ndarray, event_ns: np.ndarray, price: np.ndarray,
                    short: np.ndarray, data_end_ns: int | None = None) -> dict[str, np.ndarray]:
    """Per alert: `ret_<h>` for every HORIZONS entry, `mfe_30m`, `mae_30m` (module docstring).
    `short`: bool per alert (the rule's side). `data_end_ns`: the replayed data stops there
    (default: the day's after-hours close); horizons past it are NaN."""
    sym = np.asarray(sym, np.int64)
    event_ns = np.asarray(event_ns, np.int64)
    p0 = np.asarray(price, np.float64)
    sign = np.where(np.asarray(short, bool), -1.0, 1.0)
    end = bars.bounds["after_close"] if data_end_ns is None else min(data_end_ns, bars.bounds["after_close"])
    out: dict[str, np.ndarray] = {}
    for name, h in zip(HORIZONS, HORIZONS_MIN, strict=False):
        t = event_ns + h * MINUTE_NS
        p = bars.close_at_or_before(sym, bars.minute(t))
        p[t > end] = np.nan
        out[f"ret_{name}"] = sign * (p / p0 - 1.0)
    close_min = bars.minute(np.array([bars.bounds["close"]]))[0] - 1
    before_close = event_ns < bars.bounds["close"]
    p = bars.close_at_or_before(sym, np.where(before_close, close_min, DAY_MINUTES - 1))
    p[np.where(before_close, bars.bounds["close"], bars.bounds["after_close"]) > end] = np.nan
    out["ret_close"] = sign * (p / p0 - 1.0)
    m = bars.minute(event_ns)
    last = bars.minute(event_ns + EXCURSION_MIN * MINUTE_NS)
    hi, lo = bars.extremes(sym, m + 1, last)
    window_open = event_ns + EXCURSION_MIN * MINUTE_NS > end
    hi[window_open], lo[window_open] = np.nan, np.nan
    up, down = hi / p0 - 1.0, lo / p0 - 1.0
    is_short = sign < 0
    out["mfe_30m"] = np.where(is_short, -down, up)
    out["mae_30m"] = np.where(is_short, -up, down)
    return out
