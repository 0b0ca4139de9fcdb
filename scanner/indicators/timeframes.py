"""Indicators of the higher timeframes: one indicator engine per timeframe, fed with the bars
`scanner.timeframes.TimeframeBars` closes, written as `<indicator>_<tf>` columns.

The same step functions as the 1-minute indicators (so the same TA-Lib agreement). Live values
take the timeframe's live bar as if it closed now, its close being the newest price in it: the
live 1-minute bar's close when that bar belongs to the bucket (or starts a newer one, for the few
seconds until the 1-minute watermark closes the older bucket), else the close of the last
1-minute bar folded into it. `vwap_<tf>`: VWAP of the live intraday bar, live 1-minute bar
included. After the daily values, `pct_from_sma_50_1d` / `pct_from_sma_200_1d`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
from numba import njit

from scanner.indicators import session as sm
from scanner.indicators.engine import KERNEL_OUT, IndicatorEngine
from scanner.metrics import TIMEFRAME_INDICATORS
from scanner.session import MINUTE_NS, session_bounds_ns, trading_day
from scanner.timeframes import LIVE_FIELDS, TF_MINUTES, TIMEFRAMES, TimeframeBars, day_bucket

_C, _V, _PV = LIVE_FIELDS.index("close"), LIVE_FIELDS.index("volume"), LIVE_FIELDS.index("pv")
TF_MINUTES_1D = TF_MINUTES["1d"]
ROW_INPUTS = ("bar_start_ns", "bar_close", "bar_volume", "bar_vwap")  # what the per-row kernels read
COLUMNS = tuple([f"{k}_{tf}" for tf in TIMEFRAMES for k in TIMEFRAME_INDICATORS]
                + ["sma_200_1d"] + [f"vwap_{tf}" for tf in TIMEFRAMES if tf != "1d"]
                + ["pct_from_sma_50_1d", "pct_from_sma_200_1d"])


def _has_column(tf: str, k: str) -> bool:
    """Whether the 1-minute indicator `k` has a column for timeframe `tf`."""
    return k in TIMEFRAME_INDICATORS or (tf == "1d" and k == "sma_200")


def sma_periods(tf: str) -> tuple[int, ...]:
    """The SMA periods timeframe `tf` has columns for: its engine keeps no other (a ring of 64
    closes for the intraday timeframes, 256 for the day's)."""
    return tuple(int(k[4:]) for k in KERNEL_OUT if k.startswith("sma_") and _has_column(tf, k))


def _out_names(tf: str, engine: IndicatorEngine) -> list[str | None]:
    """Column of each of `engine`'s kernel output rows for timeframe `tf` (None: discarded),
    as many as the 1-minute engine has (one `_live` signature for every engine)."""
    names: list[str | None] = [f"{k}_{tf}" if _has_column(tf, k) else None for k in engine.kernel_out]
    return names + [None] * (len(KERNEL_OUT) - len(names))


@njit(cache=True, nogil=True)
def _buckets(bs1: np.ndarray, bc1: np.ndarray, period_ns: int, day_open: int, rows: np.ndarray,
             b1: np.ndarray) -> int:
    """For each row of `rows`, the bucket of its live 1-minute bar (start `bs1`, close `bc1`)
    into `b1`: -1 without one (no start, or no close), the clock-aligned bucket of `period_ns`,
    or with `period_ns` 0 the daily bucket when the bar lies in the session that opens at
    `day_open`; -2 where the daily bucket needs `day_bucket` (another day, outside the session).
    Returns how many -2."""
    n_day = 0
    day_end = day_open + TF_MINUTES_1D * MINUTE_NS
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])  # unsigned: numba adds no negative-index wraparound to each read (jsonbytes.at)
        m = bs1[r]
        if m == 0 or np.isnan(bc1[r]):
            b1[r] = -1
        elif period_ns > 0:
            b1[r] = m - m % period_ns
        elif day_open <= m < day_end:
            b1[r] = day_open
        else:
            b1[r] = -2
            n_day += 1
    return n_day


@njit(cache=True, nogil=True)
def _live_bar(b1: np.ndarray, s_tf: np.ndarray, bc1: np.ndarray, live_close: np.ndarray, rows: np.ndarray,
              start: np.ndarray, close: np.ndarray) -> None:
    """Each row's (of `rows`) live bar of the timeframe: the live 1-minute bar's bucket `b1`
    and close when that bar belongs to the timeframe's live bucket `s_tf` or starts a newer
    one, else the timeframe's own live bar (start `s_tf`, close `live_close`)."""
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])
        use1 = b1[r] > 0 and b1[r] >= s_tf[r]
        start[r] = b1[r] if use1 else s_tf[r]
        close[r] = bc1[r] if use1 else live_close[r]


@njit(cache=True, nogil=True)
def _live_vwap(b1: np.ndarray, s_tf: np.ndarray, volume1: np.ndarray, vwap1: np.ndarray, live_v: np.ndarray,
               live_pv: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """VWAP of each row's (of `rows`) live intraday bar of the timeframe, the live 1-minute bar
    included when it belongs to it; NaN without volume."""
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])
        use1 = b1[r] > 0 and b1[r] >= s_tf[r]
        v1 = volume1[r] if use1 else 0.0
        pv1 = vwap1[r] * v1 if use1 and v1 > 0 else 0.0
        own = s_tf[r] != 0 and (not use1 or b1[r] == s_tf[r])
        vol = live_v[r] if own else 0.0
        pv = live_pv[r] if own else 0.0
        den = vol + v1
        out[r] = (pv + pv1) / den if den > 0 else np.nan


class TimeframeIndicators:
    """One `IndicatorEngine` per higher timeframe over `n_rows` symbols."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.engines = {tf: IndicatorEngine(n_rows, intraday=False, sma_periods=sma_periods(tf)) for tf in TIMEFRAMES}
        self._names = {tf: _out_names(tf, self.engines[tf]) for tf in TIMEFRAMES}
        self._scratch = np.empty((len(KERNEL_OUT), n_rows))
        # per timeframe (their live parts may run at once): the live bar's start and close, and
        # each row's live 1-minute bar's bucket (`_buckets`)
        self._start = np.empty((len(TIMEFRAMES), n_rows), np.int64)
        self._close = np.empty((len(TIMEFRAMES), n_rows))
        self._b1 = np.empty((len(TIMEFRAMES), n_rows), np.int64)
        self._day = (0, 0)  # (trading day, its 09:30) for `_day_open`
        self._all_rows = np.arange(n_rows, dtype=np.int64)

    def warm_up(self, hists: list[np.ndarray], heads: list[np.ndarray]) -> None:
        """Rebuild every engine from its timeframe's ring `[slot, row, field]` (TF_FIELDS share the
        1-minute ring's first six fields, so the engine reads the field-major view alike)."""
        for tf, h, hd in zip(TIMEFRAMES, hists, heads, strict=True):
            self.engines[tf].warm_up(h.transpose(2, 1, 0), hd)

    def on_bars_closed(self, parts: list[np.ndarray]) -> None:
        """Fold the bars each timeframe closed (as `TimeframeBars` returns them)."""
        for tf, bars in zip(TIMEFRAMES, parts, strict=True):
            self.engines[tf].on_bars_closed(bars)

    def update_live(self, c: Mapping[str, np.ndarray], tfb: TimeframeBars, event_ns: int,
                    rows: np.ndarray | None = None) -> None:
        """Write every column of `COLUMNS` into `c`; reads the live 1-minute bar (bar_start_ns,
        bar_close, bar_volume, bar_vwap) and price from `c`. `rows` (None = all): the per-row
        kernels run for these rows only, the others keep their values; for a caller that knows
        that nothing they read changed for the other rows since its last call: their
        `ROW_INPUTS`, their timeframe bars (`tfb`, the engines), the minute."""
        for task in self.live_tasks(c, tfb, event_ns, rows):
            task()

    def live_tasks(self, c: Mapping[str, np.ndarray], tfb: TimeframeBars, event_ns: int,
                   rows: np.ndarray | None = None) -> list[Callable[[], None]]:
        """`update_live` in parts, one per timeframe (disjoint columns and scratch), so they may
        run on different threads at once."""
        rows = self._all_rows if rows is None else rows
        day_open = self._day_open(event_ns)  # here: the cache is not for two threads
        return [partial(self._live_tf, j, c, tfb, day_open, rows) for j in range(len(TIMEFRAMES))]

    def _live_tf(self, j: int, c: Mapping[str, np.ndarray], tfb: TimeframeBars, day_open: int,
                 rows: np.ndarray) -> None:
        """Timeframe j's columns (`update_live`)."""
        tf = TIMEFRAMES[j]
        bs1, bc1 = c["bar_start_ns"], c["bar_close"]
        b1, start, close = self._b1[j], self._start[j], self._close[j]
        if tf == "1d":
            if _buckets(bs1, bc1, 0, day_open, rows, b1):
                other = rows[b1[rows] == -2]
                b1[other] = day_bucket(bs1[other])
        else:
            _buckets(bs1, bc1, TF_MINUTES[tf] * MINUTE_NS, 0, rows, b1)
        s_tf, live = tfb.start[j], tfb.live[j]
        _live_bar(b1, s_tf, bc1, live[_C], rows, start, close)
        out = tuple(c[n] if n is not None else self._scratch[i] for i, n in enumerate(self._names[tf]))
        self.engines[tf].update_kernel(start, close, out, rows)
        if tf != "1d":
            _live_vwap(b1, s_tf, c["bar_volume"], c["bar_vwap"], live[_V], live[_PV], rows, c[f"vwap_{tf}"])
        else:  # the distances from the daily SMAs this wrote
            sm.change_pct(c["price"], c["sma_50_1d"], c["pct_from_sma_50_1d"])
            sm.change_pct(c["price"], c["sma_200_1d"], c["pct_from_sma_200_1d"])

    def _day_open(self, event_ns: int) -> int:
        """09:30 New York of the trading day of `event_ns` (cached per day): the daily bucket of
        every 1-minute bar of that day's session."""
        day = trading_day(int(event_ns))
        if self._day[0] != day:
            self._day = (day, session_bounds_ns(day)["open"])
        return self._day[1]


def warm_kernels() -> None:
    """Compile (first time on a machine) or load every higher-timeframe kernel with the argument
    kinds the indicator process passes, before its first heartbeat: bars of a BAR_DTYPE batch,
    the close, the rings' field-major views, the live update."""
    from scanner.records import BAR_DTYPE
    from scanner.session import session_bounds_ns

    n = 2
    tfb, tfi = TimeframeBars(n), TimeframeIndicators(n)
    open_ns = session_bounds_ns(20260105)["open"]
    bars = np.zeros(2, BAR_DTYPE)
    bars["sym"], bars["minute_ns"] = [0, 1], open_ns
    bars["open"] = bars["high"] = bars["low"] = bars["close"] = bars["vwap"] = 10.0
    bars["volume"] = 100.0
    tfi.on_bars_closed(tfb.on_bars_closed(bars))
    one = bars[:1].copy()  # a one-bar batch: C-contiguous field views, another signature (see bars.warm_up)
    one["minute_ns"] = open_ns + MINUTE_NS
    tfi.on_bars_closed(tfb.on_bars_closed(one))
    tfi.on_bars_closed(tfb.close_due(open_ns + 400 * MINUTE_NS))
    tfi.warm_up(tfb.hists, tfb.heads)
    names = ("bar_start_ns", "bar_close", "bar_volume", "bar_vwap", "price", *COLUMNS)
    c = {k: (np.zeros(n, np.int64) if k == "bar_start_ns" else np.full(n, 10.0)) for k in names}
    tfi.update_live(c, tfb, open_ns + 401 * MINUTE_NS)
