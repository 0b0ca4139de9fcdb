"""The indicator engine: per-symbol bar state in preallocated arrays, finalised on bar close,
live values for every indicator-owned column of the symbol table.

- `on_bars_closed(bars)` folds closed bars into the state, O(1) per bar (a numba loop in feed
  order, so several bars of one symbol in a batch are fine). A bar not newer than the symbol's
  last finalised bar is ignored, so replaying bars already seen (after `warm_up`) is harmless.
- `update_live(columns, event_ns)` writes every Owner.INDICATORS column. RSI, SMA and EMA
  include the live bar as if it closed now (computed by the same step functions on copies);
  ATR, the consecutive counts and `avg_volume_1m` use closed bars only. The rolling moves and
  the day's landmarks (`volume_5m` among them) are `Intraday`'s (`scanner.indicators.intraday`).
- `warm_up(hist, hist_head)` rebuilds the state from the bar-history ring (start / restart);
  `fold_history(hist, hist_head, row0)` does it a chunk of rows at a time after `reset`.
  With the default K = 400 bars the EMA/RSI/ATR seeds are forgotten to ~1e-12, and SMA(200)
  is defined.

Bars whose close is NaN (no price at all) are skipped. The SMA running sums are re-added from
the ring of closes (the power of two at least as long as the longest SMA) once per turn of it,
so that rounding cannot drift over long runs.

A higher timeframe's engine (`intraday=False`, `scanner.indicators.timeframes`) keeps only what
its columns need: no rolling moves, and its own SMA periods (`sma_periods`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
from numba import njit

from scanner.indicators import session as sm
from scanner.indicators import trading_status as ts
from scanner.indicators.averages import ema_k, ema_next, ema_value, sma_next, sma_value
from scanner.indicators.intraday import ROW_INPUTS as intraday_inputs
from scanner.indicators.intraday import Intraday
from scanner.indicators.momentum import rsi_next, rsi_value
from scanner.indicators.volatility import atr_next, atr_value
from scanner.indicators.volume import (
    MINUTES_PER_DAY,
    average_bar_volume,
    expected_volume_flat,
    expected_volume_profile,
    relative_volume,
)
from scanner.metrics import CATALOGUE, HIST, Owner
from scanner.prefetch import cache_rows, prefetch
from scanner.session import DAY_NS, MINUTE_NS, local_ns, session_bounds_ns, trading_day

SMA_PERIODS = (20, 50, 200)
EMA_PERIODS = (9, 20)
RSI_PERIOD = 14
ATR_PERIOD = 14
PREFETCH = 8  # rows ahead whose ring lines a kernel asks for (`scanner.prefetch`)

# columns the numba live kernel writes, in kernel order
Arr = np.ndarray
Rows = tuple[np.ndarray, ...]  # 1-D arrays handed to a kernel as one tuple
VOLUME_OUT = ("volume_1m", "consecutive_up", "consecutive_down")  # the 1-minute engine's only


def kernel_out(sma_periods: tuple[int, ...] = SMA_PERIODS, *, volumes: bool = True) -> tuple[str, ...]:
    """The columns `_live` writes, in its order, for an engine with these SMA periods."""
    return ("rsi_14", *(f"sma_{p}" for p in sma_periods), *(f"ema_{p}" for p in EMA_PERIODS), "atr_14",
            *(VOLUME_OUT if volumes else ()))


KERNEL_OUT = _KERNEL_OUT = kernel_out()  # the 1-minute engine's (the longest)
INDICATOR_COLUMNS = tuple(m.name for m in CATALOGUE.owned_by(Owner.INDICATORS))
# the input columns the per-row kernels of `update_live` read (`_live` here, then `Intraday`'s)
ROW_INPUTS = tuple(dict.fromkeys(("bar_start_ns", "bar_close", "bar_volume", *intraday_inputs)))
assert set(_KERNEL_OUT) <= set(INDICATOR_COLUMNS)
_H_MIN, _H_H, _H_L, _H_C = HIST["minute"], HIST["high"], HIST["low"], HIST["close"]


@njit(cache=True, nogil=True, inline="always")
def _prefetch_row(row: int, st_f: Rows, st_i: Rows, ring: Arr, sma_sum: Arr, leave: Arr, ema: Arr,
                  sma_p: Arr) -> None:
    """Ask for the lines a bar of `row` touches: its state (views of one row-major buffer, so
    these are the row's two lines, asked for field by field, which measured faster than two
    prefetches or none), the ring slot it writes, the closes that leave the SMA windows after it
    (`leave`)."""
    r = np.uint64(row)
    for a in st_i:
        prefetch(a, r)
    for a in st_f:
        prefetch(a, r)
    for j in range(sma_p.shape[0]):
        prefetch(sma_sum, np.uint64(j), r)
        prefetch(leave, np.uint64(j), r)
    for j in range(ema.shape[0]):
        prefetch(ema, np.uint64(j), r)
    c = st_i[0][r]
    mask = ring.shape[1] - 1
    prefetch(ring, r, np.uint64(c & mask))
    for j in range(sma_p.shape[0]):
        if c + 1 >= sma_p[j]:  # a window not full after the bar reads nothing
            prefetch(ring, r, np.uint64((c + 1 - sma_p[j]) & mask))


@njit(cache=True, nogil=True)
def _fold_bars(sym: Arr, minute_ns: Arr, high: Arr, low: Arr, close: Arr, st_f: Rows, st_i: Rows,
               ring: Arr, sma_sum: Arr, leave: Arr, ema: Arr, sma_p: Arr, ema_p: Arr, ema_f: Arr) -> None:
    """Fold closed bars, in order, into the state (one loop, no call per bar: a call with this
    many array arguments costs ten times the work). The previous close (`st_f[3]`) and the
    close each SMA window drops with the next bar (`leave`) are kept per row, so the live
    values read no ring; the fold reads the ring (a power of two at least as long as the
    longest window: a slot is a mask, not a division) at slots of the row's own (its bar
    count), so the ring lines of the bar `PREFETCH` ahead are asked for first
    (`scanner.prefetch`). `ema_f`: each EMA's smoothing factor (`ema_k`)."""
    count, last_min, up, down = st_i[0], st_i[1], st_i[2], st_i[3]
    gain, loss, atr, last_close = st_f[0], st_f[1], st_f[2], st_f[3]
    n = sym.shape[0]
    mask = ring.shape[1] - 1
    for k in range(n):
        if k + PREFETCH < n:
            _prefetch_row(sym[k + PREFETCH], st_f, st_i, ring, sma_sum, leave, ema, sma_p)
        r = np.uint64(sym[k])  # unsigned: numba adds no negative-index wraparound to each access
        x = close[k]
        mn = minute_ns[k]
        if np.isnan(x) or mn <= last_min[r]:
            continue
        c = count[r]
        prev = last_close[r] if c > 0 else np.nan
        for j in range(sma_p.shape[0]):
            sma_sum[j, r] = sma_next(sma_sum[j, r], c, sma_p[j], leave[j, r], x)
        for j in range(ema_p.shape[0]):
            ema[j, r] = ema_next(ema[j, r], c, ema_p[j], x, ema_f[j])
        gain[r], loss[r] = rsi_next(gain[r], loss[r], c, RSI_PERIOD, prev, x)
        atr[r] = atr_next(atr[r], c, ATR_PERIOD, high[k], low[k], prev)
        if c > 0 and x > prev:
            up[r] += 1
            down[r] = 0
        elif c > 0 and x < prev:
            down[r] += 1
            up[r] = 0
        else:
            up[r] = 0
            down[r] = 0
        slot = c & mask
        ring[r, np.uint64(slot)] = x
        last_close[r] = x
        for j in range(sma_p.shape[0]):  # what leaves each window with the next bar (0: not full)
            p = sma_p[j]
            leave[j, r] = ring[r, np.uint64((c + 1 - p) & mask)] if c + 1 >= p else 0.0
        count[r] = c + 1
        last_min[r] = mn
        if slot == mask:  # re-add the windows exactly: no rounding drift over long runs
            for j in range(sma_p.shape[0]):
                p = sma_p[j]
                s = 0.0
                for i in range(c + 1 - p, c + 1):
                    s += ring[r, np.uint64(i & mask)]
                sma_sum[j, r] = s


@njit(cache=True, nogil=True)
def _fold_history(hist: Arr, head: Arr, row0: int, st_f: Rows, st_i: Rows, ring: Arr, sma_sum: Arr, leave: Arr,
                  ema: Arr, sma_p: Arr, ema_p: Arr, ema_f: Arr) -> None:
    """Fold the bars of history rows `hist[:, i]` (state row `row0 + i`), oldest first (one
    `_fold_bars` per row): the whole ring with `row0` 0, or a chunk of its rows."""
    k = hist.shape[2]
    sym = np.empty(k, np.int64)
    mn = np.empty(k, np.int64)
    for r in range(head.shape[0]):
        h = head[r]
        j0 = max(0, h - k)
        m = h - j0
        slots = np.arange(j0, h) % k
        sym[:m] = row0 + r
        for i in range(m):
            mn[i] = np.int64(hist[_H_MIN, r, slots[i]]) * MINUTE_NS
        _fold_bars(sym[:m], mn[:m], hist[_H_H, r][slots], hist[_H_L, r][slots], hist[_H_C, r][slots], st_f, st_i,
                   ring, sma_sum, leave, ema, sma_p, ema_p, ema_f)


@njit(cache=True, nogil=True)
def _live(bar_start: Arr, bar_close: Arr, bar_volume: Arr, st_f: Rows, st_i: Rows, ring: Arr,
          sma_sum: Arr, leave: Arr, ema: Arr, sma_p: Arr, ema_p: Arr, ema_f: Arr, rows: Arr, bar_only: bool,
          out: Rows) -> None:
    """Live values of the kernel columns (the engine's `kernel_out` order) for the rows `rows`;
    with `bar_only`, the volume and streak rows of `out` (`VOLUME_OUT`) are left alone (a
    higher timeframe has none). Reads no ring (`ring` is unused): the previous close
    and the closes that leave the SMA windows are kept per row by the fold."""
    count, last_min, up, down = st_i[0], st_i[1], st_i[2], st_i[3]
    gain, loss, atr, last_close = st_f[0], st_f[1], st_f[2], st_f[3]
    n_sma = sma_p.shape[0]
    n_ema = ema_p.shape[0]
    o_atr = 1 + n_sma + n_ema
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])  # unsigned: numba adds no negative-index wraparound to each read (jsonbytes.at)
        c = count[r]
        x = bar_close[r]
        live = bar_start[r] != 0 and bar_start[r] > last_min[r] and not np.isnan(x)
        if live:
            prev = last_close[r] if c > 0 else np.nan
            g, lo = rsi_next(gain[r], loss[r], c, RSI_PERIOD, prev, x)
            out[0][r] = rsi_value(g, lo, c + 1, RSI_PERIOD)
            for j in range(n_sma):
                p = sma_p[j]
                out[1 + j][r] = sma_value(sma_next(sma_sum[j, r], c, p, leave[j, r], x), c + 1, p)
            for j in range(n_ema):
                out[1 + n_sma + j][r] = ema_value(ema_next(ema[j, r], c, ema_p[j], x, ema_f[j]), c + 1, ema_p[j])
        else:
            out[0][r] = rsi_value(gain[r], loss[r], c, RSI_PERIOD)
            for j in range(n_sma):
                out[1 + j][r] = sma_value(sma_sum[j, r], c, sma_p[j])
            for j in range(n_ema):
                out[1 + n_sma + j][r] = ema_value(ema[j, r], c, ema_p[j])
        out[o_atr][r] = atr_value(atr[r], c, ATR_PERIOD)
        if bar_only:
            continue
        out[o_atr + 1][r] = bar_volume[r] if bar_start[r] != 0 else 0.0
        out[o_atr + 2][r] = up[r]
        out[o_atr + 3][r] = down[r]


class IndicatorEngine:
    """Indicator state for `n_rows` symbols (private arrays: rebuilt by `warm_up` on restart)."""

    def __init__(self, n_rows: int, *, intraday: bool = True, sma_periods: tuple[int, ...] = SMA_PERIODS) -> None:
        """`intraday`: the 1-minute engine (rolling moves and landmarks, the volume and streak
        columns); else a higher timeframe's, whose `update_kernel` writes the bar indicators only."""
        if n_rows <= 0:
            raise ValueError(f"'n_rows' must be positive, was {n_rows}")
        if not sma_periods or min(sma_periods) <= 0 or len(sma_periods) > len(SMA_PERIODS):
            raise ValueError(f"'sma_periods' must be 1 to {len(SMA_PERIODS)} positive periods, was {sma_periods}")
        self.n_rows = n_rows
        self.kernel_out = kernel_out(sma_periods, volumes=intraday)
        self._sma_p = np.array(sma_periods, np.int64)
        self._ema_p = np.array(EMA_PERIODS, np.int64)
        self._ema_k = ema_k(self._ema_p)
        # the rings are [row, slot], unlike the field-major rest: rows' bar counts differ, so a fold
        # reads each row at slots of its own, and a row's slots then share lines and pages. Written
        # now (`full`, not `zeros`): a row's first bar would fault in a page per row, 20-30 ms at
        # the 16:00 close that gives every row its first daily bar. The power of two at least as
        # long as the longest SMA (a slot is a mask): a higher timeframe's 64 closes for SMA(50)
        # take a quarter of the memory (and cache) of 256 for SMA(200)
        self.ring = np.full((n_rows, 1 << (max(sma_periods) - 1).bit_length()), 0.0)
        # the per-row state: field-major views (`state_i[f]`, `sma_sum[j]` ...) of one row-major
        # buffer, so a row's state is two cache lines that a fold or a live refresh reads together
        # (as separate arrays a fold read some twenty streams at once, more than the hardware
        # prefetchers follow)
        n_sma, n_ema = len(sma_periods), len(EMA_PERIODS)
        assert 8 + 2 * n_sma + n_ema <= 16
        self._state = cache_rows((n_rows, 16))  # two whole lines a row
        self.state_i = self._state.view(np.int64)[:, 0:4].T  # closes folded, last bar minute_ns, up, down
        self.state_f = self._state[:, 4:8].T  # rsi avg gain, rsi avg loss, atr, last close
        self.sma_sum = self._state[:, 8:8 + n_sma].T
        self.sma_leave = self._state[:, 8 + n_sma:8 + 2 * n_sma].T  # the close each window drops with the next bar
        self.ema = self._state[:, 8 + 2 * n_sma:8 + 2 * n_sma + n_ema].T
        self.profile: np.ndarray | None = None
        self._scratch = np.zeros(n_rows)
        self._day = (0, 0)  # (trading day, open_ns) cache for update_live
        self._all_rows = np.arange(n_rows, dtype=np.int64)
        # rolling moves and the day's landmarks (1-minute engine only; not for higher timeframes)
        self.intraday = Intraday(n_rows) if intraday else None

    def reset(self) -> None:
        """Forget every bar."""
        for a in (self.ring, self._state):
            a[:] = 0
        if self.intraday is not None:
            self.intraday.reset()

    @property
    def bars_seen(self) -> np.ndarray:
        """Closed bars folded in, per row."""
        return self.state_i[0]

    def _args(self) -> tuple:
        return (tuple(self.state_f), tuple(self.state_i), self.ring, self.sma_sum, self.sma_leave, self.ema,
                self._sma_p, self._ema_p, self._ema_k)

    def warm_up(self, hist: np.ndarray, hist_head: np.ndarray) -> None:
        """Rebuild the state from the bar-history ring `hist[field, row, slot]` (HIST_FIELDS
        order) with `hist_head[row]` bars written per row."""
        if hist.shape[1] != self.n_rows or len(hist_head) != self.n_rows:
            raise ValueError(f"history holds {hist.shape[1]} rows, the engine {self.n_rows}")
        self.reset()
        self.fold_history(hist, hist_head)

    def fold_history(self, hist: np.ndarray, hist_head: np.ndarray, row0: int = 0) -> None:
        """Fold history rows `hist[field, i, slot]` (`hist_head[i]` bars written) into rows
        `row0 + i`, oldest first. Rows are independent, so after `reset`, folding every row
        chunk by chunk is `warm_up` without a whole copy of the ring (`History.chunks`)."""
        n = hist.shape[1]
        if len(hist_head) != n or row0 < 0 or row0 + n > self.n_rows:
            raise ValueError(f"history rows {row0}..{row0 + n} ({len(hist_head)} heads) are outside the engine "
                             f"({self.n_rows} rows)")
        _fold_history(hist, hist_head, row0, *self._args())
        if self.intraday is not None:
            self.intraday.fold_history(hist, hist_head, row0)

    def on_bars_closed(self, bars: np.ndarray) -> None:
        """Fold closed bars (BAR_DTYPE, feed order) into the finalised state."""
        for task in self.fold_tasks(bars):
            task()

    def fold_tasks(self, bars: np.ndarray) -> list[Callable[[], None]]:
        """`on_bars_closed` in parts that share no state (the bar indicators, the rolling moves),
        so they may run on different threads at once; each must run once, in any order."""
        if len(bars) == 0:
            return []
        if int(bars["sym"].max()) >= self.n_rows:
            raise ValueError(f"bar row {int(bars['sym'].max())} is outside the engine ({self.n_rows} rows)")
        cols = (bars["sym"], bars["minute_ns"], bars["high"], bars["low"], bars["close"], bars["volume"])
        tasks = [partial(_fold_bars, *cols[:5], *self._args())]
        if self.intraday is not None:
            tasks.append(partial(self.intraday.on_bars_closed, *cols))
        return tasks

    def load_volume_profile(self, profile: np.ndarray | None) -> None:
        """Use an intraday volume profile (see `indicators.volume.volume_profile`, shape
        (n_rows, 1440)) for `relative_volume`; None goes back to the flat daily average."""
        if profile is not None and profile.shape != (self.n_rows, MINUTES_PER_DAY):
            raise ValueError(f"'profile' must be ({self.n_rows}, {MINUTES_PER_DAY}), was {profile.shape}")
        self.profile = profile

    def _open_ns(self, event_ns: int) -> int:
        day = trading_day(event_ns)
        if self._day[0] != day:
            self._day = (day, session_bounds_ns(day)["open"])
        return self._day[1]

    def update_live(self, columns: Mapping[str, np.ndarray], event_ns: int, rows: np.ndarray | None = None) -> None:
        """Write every indicator-owned column of `columns` for event time `event_ns`. Reads
        price, bar_start_ns, bar_close, bar_volume, bars_closed, day_open/high/low/volume,
        hod_ts_ns, prev_close, avg_daily_volume, halted, resume_ts_ns,
        luld_upper/lower (and what `Intraday.update_live` reads) from the
        same mapping.

        `rows` (ascending int64, None = all): the per-row kernels (`KERNEL_OUT` here and in
        `Intraday`) run for these rows only, and the other rows keep what `columns` holds. For a
        caller that knows nothing those kernels read changed for the other rows since its last
        call (`scanner.indicators.live_rows`): their `ROW_INPUTS`, their closed bars, the minute.
        The other columns, which move with the clock, are recomputed for every row."""
        for task in self.live_tasks(columns, event_ns, rows):
            task()

    def live_tasks(self, columns: Mapping[str, np.ndarray], event_ns: int,
                   rows: np.ndarray | None = None) -> list[Callable[[], None]]:
        """`update_live` in parts that read no column another writes (this engine's; the rolling
        moves', `Intraday.update_live`), so they may run on different threads at once."""
        if self.intraday is None:
            raise ValueError("a higher timeframe's engine has no update_live; see update_kernel")
        rows = self._all_rows if rows is None else rows
        open_ns = self._open_ns(event_ns)  # here: the cache is not for two threads
        return [partial(self._live_columns, columns, event_ns, open_ns, rows),
                partial(self.intraday.update_live, columns, event_ns, open_ns, self.profile, rows)]

    def _live_columns(self, c: Mapping[str, np.ndarray], event_ns: int, open_ns: int, rows: np.ndarray) -> None:
        """This engine's part of `update_live` (every column but the rolling moves')."""
        out = tuple(c[k] for k in _KERNEL_OUT)
        _live(c["bar_start_ns"], c["bar_close"], c["bar_volume"], *self._args(), rows, False, out)
        price, high, low, day_open = c["price"], c["day_high"], c["day_low"], c["day_open"]
        sm.change_pct(price, c["prev_close"], c["change_pct"])
        sm.change_pct(price, day_open, c["change_from_open_pct"])
        sm.change_pct(day_open, c["prev_close"], c["gap_pct"])
        sm.dist_from_hod_pct(price, high, c["dist_from_hod_pct"])
        sm.minutes_since(event_ns, c["hod_ts_ns"], c["minutes_since_hod"])
        sm.range_pct(high, low, c["range_pct"])
        sm.range_position(price, high, low, c["range_position"])
        since_open = (event_ns - open_ns) / MINUTE_NS
        c["minutes_since_open"][:] = since_open
        ts.seconds_since_resume(event_ns, c["resume_ts_ns"], c["halted"], c["seconds_since_resume"])
        ts.pct_to_band(price, c["luld_upper"], c["pct_to_luld_upper"], upper=True)
        ts.pct_to_band(price, c["luld_lower"], c["pct_to_luld_lower"], upper=False)
        average_bar_volume(c["day_volume"], c["bar_volume"], c["bars_closed"], c["avg_volume_1m"])
        if self.profile is not None:
            local = int(local_ns(np.array([event_ns]))[0]) % DAY_NS
            minute, frac = divmod(local, MINUTE_NS)
            expected = expected_volume_profile(self.profile, minute, frac / MINUTE_NS)
        else:
            expected = expected_volume_flat(c["avg_daily_volume"], since_open)
        relative_volume(c["day_volume"], expected, c["relative_volume"])

    def update_kernel(self, bar_start: np.ndarray, bar_close: np.ndarray, out: Rows,
                      rows: np.ndarray | None = None) -> None:
        """Only the bar indicators (`kernel_out` order: RSI, SMAs, EMAs, ATR; `out`'s further rows
        are not written) for a live bar of this engine's timeframe:
        `bar_start` (0 = none, else newer than the last folded bar) and its close; for `rows`
        only (None = all), as in `update_live`."""
        rows = self._all_rows if rows is None else rows
        _live(bar_start, bar_close, self._scratch, *self._args(), rows, True, out)


def warm_kernels() -> None:
    """Compile (the first time on a machine) or load from numba's cache every indicator kernel,
    with the argument kinds the indicator process passes (rows of its column buffers, a
    BAR_DTYPE batch's fields, chunks of the history ring as `shm.history.History.chunks`
    gives them), before its first heartbeat (issue 10.1)."""
    from scanner.bars import new_history
    from scanner.records import BAR_DTYPE

    n = 2
    e = IndicatorEngine(n)
    e.warm_up(*new_history(n, 4))  # the history's layout (`History.chunks`, the segment)
    open_ns = session_bounds_ns(20260105)["open"]
    bars = np.zeros(2, BAR_DTYPE)
    bars["sym"], bars["minute_ns"] = [0, 1], open_ns
    bars["high"], bars["low"], bars["close"], bars["volume"] = 11.0, 9.0, 10.0, 100.0
    e.on_bars_closed(bars)
    one = bars[:1].copy()  # a one-bar batch: C-contiguous field views, another signature (see bars.warm_up)
    one["minute_ns"] = open_ns + MINUTE_NS
    e.on_bars_closed(one)
    f8 = [m.name for m in CATALOGUE.metrics if m.dtype == "f8"]
    i8 = [m.name for m in CATALOGUE.metrics if m.dtype == "i8"]
    buf_f8, buf_i8 = np.zeros((len(f8), n)), np.zeros((len(i8), n), np.int64)
    cols = {**{name: buf_f8[i] for i, name in enumerate(f8)}, **{name: buf_i8[i] for i, name in enumerate(i8)}}
    e.update_live(cols, open_ns + MINUTE_NS + 1)
