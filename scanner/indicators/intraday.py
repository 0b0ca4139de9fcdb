"""Rolling moves over the last minutes and the day's landmarks (issue 15), for every symbol.

State per row, in preallocated arrays (rebuilt from the bar-history ring by `warm_up`):

- a ring of the last `WINDOW` minutes, indexed by the minute itself (its number modulo
  `WINDOW`), up to the row's last closed 1-minute bar: the close of the newest bar at or before
  that minute (carried over the minutes the row did not trade), the row's volume through that
  minute (a running total, carried likewise), and that minute's bar high and low (NaN: no bar).
  A bar fills the minutes since the row's previous one as it is folded;
- the opening-range highs and lows of today's 09:30-09:35/09:45/10:00 bars and the open they
  belong to (a bar of a later day resets them).

Indexed by minute, every row's value for "the minute n back" sits in the same slot, so the live
values read a few contiguous slot rows across all symbols instead of walking each symbol's
bars back (which cost ~300 ns per row at every new minute, in scattered reads).

Live values (`update_live`) include the live 1-minute bar:

- `change_<n>m_pct`: the last price against the close of the last bar that started at or
  before the live minute minus n (the price as the minute n minutes ago ended, i.e. the window
  is the live bar plus the n - 1 closed minutes before it); NaN without such a bar.
- `volume_5m`, `volume_15m`, `range_5m_pct`: live bar plus closed bars of the previous 4 (14, 4)
  minutes.
- `rel_volume_5m/15m`: against the volume profile's same minutes of the day, else the average
  daily volume spread over the session minutes the window overlaps.
- `or_<high|low>_<n>m`: NaN until the window has ended (event time), then fixed for the day.

A minute more than `WINDOW` - 1 minutes before the row's last closed bar is forgotten: only a
clock gone back that far (the closed bars newer than the live minute) reads one, and gets NaN.
A bar's volume that is NaN adds nothing to the running total.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from scanner.indicators import session as sm
from scanner.indicators.volume import SESSION_MINUTES, expected_volume_profile, relative_volume
from scanner.metrics import HIST, OPENING_RANGES, ROLLING_MINUTES
from scanner.session import DAY_NS, MINUTE_NS, local_ns, session_open_ns

WINDOW = 64  # minutes kept per row: >= 61, so the minute 60 back is in the ring; a power of two (`_MASK`)
_MASK = WINDOW - 1  # a minute's slot is its number's low bits
_ROLL = np.array(ROLLING_MINUTES, np.int64)
_OR = np.array(OPENING_RANGES, np.int64)
# columns the live kernel writes, in kernel order
KERNEL_OUT = (*(f"change_{n}m_pct" for n in ROLLING_MINUTES), "volume_5m", "volume_15m", "range_5m_pct",
              *(f"or_{s}_{n}m" for n in OPENING_RANGES for s in ("high", "low")))
ROW_INPUTS = ("price", "bar_start_ns", "bar_high", "bar_low", "bar_volume")  # what `_live` reads per row
COLUMNS = (*KERNEL_OUT, "rel_volume_5m", "rel_volume_15m", "velocity_5m", "minutes_since_lod", "above_or_high",
           "below_or_low", "gap_filled", "pct_from_high_52w", "pct_from_low_52w")
Arr = np.ndarray
Rows = tuple[np.ndarray, ...]  # 1-D arrays handed to a kernel as one tuple


@njit(cache=True, nogil=True)
def _fold(sym: Arr, minute_ns: Arr, open_ns: Arr, high: Arr, low: Arr, close: Arr, volume: Arr, last_min: Arr,
          ring: Arr, or_open: Arr, or_hl: Arr, or_n: Arr) -> None:
    """Fold closed bars (feed order) into the minute ring and the opening ranges; a bar not newer
    than the row's last one, or without a close, is skipped (as the indicator engine does). A
    bar first fills the minutes since the row's last bar (at most the ring's) with that bar's
    close and running volume and no high or low."""
    for k in range(sym.shape[0]):
        r = np.uint64(sym[k])  # unsigned: numba adds no negative-index wraparound to each access
        mn = minute_ns[k]
        last = last_min[r]
        if np.isnan(close[k]) or mn <= last:
            continue
        m = mn // MINUTE_NS
        cum = 0.0
        if last != 0:
            li = last // MINUTE_NS
            ls = np.uint64(li & _MASK)
            carry = ring[0, ls, r]
            cum = ring[3, ls, r]
            for t in range(max(li + 1, m - _MASK), m):
                s = np.uint64(t & _MASK)
                ring[0, s, r] = carry
                ring[1, s, r] = np.nan
                ring[2, s, r] = np.nan
                ring[3, s, r] = cum
        s = np.uint64(m & _MASK)
        ring[0, s, r] = close[k]
        ring[1, s, r] = high[k]
        ring[2, s, r] = low[k]
        ring[3, s, r] = cum + volume[k] if volume[k] == volume[k] else cum
        last_min[r] = mn
        op = open_ns[k]
        if mn < op:
            continue
        if or_open[r] != op:
            or_open[r] = op
            or_hl[:, r] = np.nan
        for j in range(or_n.shape[0]):
            if mn < op + or_n[j] * MINUTE_NS:
                if not high[k] <= or_hl[2 * j, r]:
                    or_hl[2 * j, r] = high[k]
                if not low[k] >= or_hl[2 * j + 1, r]:
                    or_hl[2 * j + 1, r] = low[k]


@njit(cache=True, nogil=True, inline="always")
def _minute_of(last: int) -> int:
    """The minute number of a row's last bar (`last_min`, epoch ns; 0: none) for `_at`, -1 for none."""
    return last // MINUTE_NS if last != 0 else -1


@njit(cache=True, nogil=True, inline="always")
def _widen(hi: float, lo: float, h: float, lw: float) -> tuple[float, float]:
    """(hi, lo) widened by a bar's high `h` and low `lw`; a NaN on either side counts as none."""
    if h == h and not h <= hi:
        hi = h
    if lw == lw and not lw >= lo:
        lo = lw
    return hi, lo


@njit(cache=True, nogil=True, inline="always")
def _at(ring: Arr, f: int, t: int, li: int, r: np.uint64, before: float) -> float:
    """Field `f` of the ring (0 close, 3 running volume: carried) as of minute `t` for a row whose
    last bar is minute `li` (-1: none): `before` when the row has no bar yet, NaN when the ring
    has forgotten `t`."""
    if li < 0:
        return before
    if t >= li:
        return ring[f, np.uint64(li & _MASK), r]
    if t > li - WINDOW:
        return ring[f, np.uint64(t & _MASK), r]
    return np.nan


@njit(cache=True, nogil=True)
def _live(price: Arr, bar_start: Arr, bar_high: Arr, bar_low: Arr, bar_volume: Arr, event_ns: int, open_ns: int,
          last_min: Arr, ring: Arr, or_open: Arr, or_hl: Arr, or_n: Arr, roll: Arr, rows: Arr, out: Rows) -> None:
    """Live values of `KERNEL_OUT` (the columns `out`, in that order) for the rows `rows`, from
    the minute ring and the live bar. They depend on the minute of `event_ns` only, not on the
    seconds in it. `volume_5m` and `volume_15m` are differences of running totals plus the
    live bar's volume (exact for whole-share volumes). One pass over the rows per output column: a pass reads a
    few arrays in step, which the prefetcher follows (all columns in one pass over the rows read
    some 30 arrays at once and took twice as long at a minute close, its data out of cache)."""
    n_roll = roll.shape[0]
    o_v5, o_v15, o_r5, o_or = n_roll, n_roll + 1, n_roll + 2, n_roll + 3
    now_min = event_ns - event_ns % MINUTE_NS
    now = now_min // MINUTE_NS
    from15 = now_min - 14 * MINUTE_NS
    from5 = now_min - 4 * MINUTE_NS
    nq = rows.shape[0]
    for k in range(n_roll):
        o = out[k]
        t = now - roll[k]
        for q in range(nq):
            r = np.uint64(rows[q])
            x = _at(ring, 0, t, _minute_of(last_min[r]), r, np.nan)
            o[r] = (price[r] - x) / x * 100.0 if x > 0 else np.nan
    o5, o15 = out[o_v5], out[o_v15]  # one pass: both read the same inputs
    for q in range(nq):
        r = np.uint64(rows[q])
        last = last_min[r]
        li = _minute_of(last)
        to = _at(ring, 3, now - 1, li, r, 0.0)
        v5 = to - _at(ring, 3, now - 5, li, r, 0.0)
        v15 = to - _at(ring, 3, now - 15, li, r, 0.0)
        bs = bar_start[r]
        if bs != 0 and bs > last:
            v5 += bar_volume[r] if bs >= from5 else 0.0
            v15 += bar_volume[r] if bs >= from15 else 0.0
        o5[r] = v5
        o15[r] = v15
    o = out[o_r5]
    for q in range(nq):
        r = np.uint64(rows[q])
        last = last_min[r]
        li = _minute_of(last)
        hi = np.nan
        lo = np.nan
        for t in range(max(now - 4, li - _MASK), min(now, li + 1)):
            s = np.uint64(t & _MASK)
            hi, lo = _widen(hi, lo, ring[1, s, r], ring[2, s, r])
        bs = bar_start[r]
        if bs != 0 and bs > last and bs >= from5:
            hi, lo = _widen(hi, lo, bar_high[r], bar_low[r])
        o[r] = (hi - lo) / lo * 100.0 if lo > 0 else np.nan
    for j in range(or_n.shape[0]):
        end = open_ns + or_n[j] * MINUTE_NS
        oh, ol = out[o_or + 2 * j], out[o_or + 2 * j + 1]
        if event_ns < end:
            for q in range(nq):
                r = np.uint64(rows[q])
                oh[r] = np.nan
                ol[r] = np.nan
            continue
        for q in range(nq):
            r = np.uint64(rows[q])
            today = or_open[r] == open_ns
            h = or_hl[2 * j, r] if today else np.nan
            lw = or_hl[2 * j + 1, r] if today else np.nan
            bs = bar_start[r]
            if bs != 0 and bs > last_min[r] and open_ns <= bs < end and bar_high[r] == bar_high[r]:
                h = bar_high[r] if not bar_high[r] <= h else h
                lw = bar_low[r] if not bar_low[r] >= lw else lw
            oh[r] = h
            ol[r] = lw


class Intraday:
    """Rolling-move and landmark state for `n_rows` symbols (private; see the module doc)."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.last_min = np.zeros(n_rows, np.int64)  # the last folded bar's minute, epoch ns (0: none)
        # [field, minute slot, row]; fields: close and running volume (both carried), high, low
        self.ring = np.empty((4, WINDOW, n_rows))
        self.or_open = np.zeros(n_rows, np.int64)
        self.or_hl = np.full((2 * len(OPENING_RANGES), n_rows), np.nan)
        self._all_rows = np.arange(n_rows, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self.last_min[:] = 0
        self.or_open[:] = 0
        self.ring[:3] = np.nan
        self.ring[3] = 0.0  # a row's volume before its first bar
        self.or_hl[:] = np.nan

    def on_bars_closed(self, sym: Arr, minute_ns: Arr, high: Arr, low: Arr, close: Arr, volume: Arr) -> None:
        """Fold closed bars (feed order)."""
        _fold(sym, minute_ns, session_open_ns(minute_ns), high, low, close, volume, self.last_min, self.ring,
              self.or_open, self.or_hl, _OR)

    def warm_up(self, hist: np.ndarray, head: np.ndarray) -> None:
        """Rebuild from the bar-history ring `hist[field, row, slot]` (every row, oldest first)."""
        self.reset()
        self.fold_history(hist, head)

    def fold_history(self, hist: np.ndarray, head: np.ndarray, row0: int = 0) -> None:
        """Fold history rows `hist[field, i, slot]` into rows `row0 + i`, oldest first (a chunk
        of rows after `reset`: see `IndicatorEngine.fold_history`)."""
        k = hist.shape[2]
        j = head[:, None] - k + np.arange(k)[None, :]  # record numbers, oldest first
        rows, cols = np.nonzero(j >= 0)
        slots = j[rows, cols] % k
        mn = hist[HIST["minute"], rows, slots]
        ok = ~np.isnan(mn)
        rows, slots = rows[ok], slots[ok]
        minute_ns = hist[HIST["minute"], rows, slots].astype(np.int64) * MINUTE_NS
        self.on_bars_closed(rows.astype(np.int64) + row0, minute_ns, hist[HIST["high"], rows, slots],
                            hist[HIST["low"], rows, slots], hist[HIST["close"], rows, slots],
                            hist[HIST["volume"], rows, slots])

    def update_live(self, c: Mapping[str, np.ndarray], event_ns: int, open_ns: int,
                    profile: np.ndarray | None, rows: np.ndarray | None = None) -> None:
        """Write every column of `COLUMNS` into `c` for event time `event_ns` (the day's 09:30 is
        `open_ns`). Reads price, the live bar, day_open/high/low, lod_ts_ns, prev_close,
        avg_daily_volume and the daily reference columns.
        `rows` (None = all): the `KERNEL_OUT` columns are written for these rows only, the
        others keep their values (see `IndicatorEngine.update_live`). It reads no column the
        engine writes, so it may run beside the engine's own part."""
        _live(c["price"], c["bar_start_ns"], c["bar_high"], c["bar_low"], c["bar_volume"], int(event_ns),
              int(open_ns), self.last_min, self.ring, self.or_open, self.or_hl, _OR, _ROLL,
              self._all_rows if rows is None else rows, tuple(c[k] for k in KERNEL_OUT))
        for n in (5, 15):
            expected = expected_window_volume(c["avg_daily_volume"], profile, event_ns, open_ns, n)
            relative_volume(c[f"volume_{n}m"], expected, c[f"rel_volume_{n}m"])
        np.divide(c["change_5m_pct"], 5.0, out=c["velocity_5m"])
        sm.minutes_since(event_ns, c["lod_ts_ns"], c["minutes_since_lod"])
        price = c["price"]
        _flag(price, c["or_high_5m"], True, c["above_or_high"])
        _flag(price, c["or_low_5m"], False, c["below_or_low"])
        gap_filled(c["day_open"], c["day_high"], c["day_low"], c["prev_close"], c["gap_filled"])
        sm.change_pct(price, c["high_52w"], c["pct_from_high_52w"])
        sm.change_pct(price, c["low_52w"], c["pct_from_low_52w"])


@njit(cache=True, nogil=True)
def _flag(a: Arr, b: Arr, above: bool, out: Arr) -> None:
    """1.0 where a > b (`above`, else a < b), 0.0 where not, NaN where either is NaN."""
    for i in range(out.shape[0]):
        if np.isnan(a[i]) or np.isnan(b[i]):
            out[i] = np.nan
        else:
            out[i] = 1.0 if (a[i] > b[i] if above else a[i] < b[i]) else 0.0


@njit(cache=True, nogil=True)
def _gap_filled(day_open: Arr, day_high: Arr, day_low: Arr, prev_close: Arr, out: Arr) -> None:
    for i in range(out.shape[0]):
        o, pc = day_open[i], prev_close[i]
        if np.isnan(o) or not pc > 0:
            out[i] = np.nan
        elif o > pc:
            out[i] = 1.0 if day_low[i] <= pc else 0.0
        elif o < pc:
            out[i] = 1.0 if day_high[i] >= pc else 0.0
        else:
            out[i] = 1.0


def gap_filled(day_open: Arr, day_high: Arr, day_low: Arr, prev_close: Arr, out: Arr) -> Arr:
    """1 once the regular session traded back to the previous close (gap up: low <= previous
    close; gap down: high >= it; no gap: 1), else 0; NaN without an open or previous close."""
    _gap_filled(day_open, day_high, day_low, prev_close, out)
    return out


def expected_window_volume(avg_daily_volume: Arr, profile: np.ndarray | None, event_ns: int, open_ns: int,
                           n: int) -> Arr:
    """Volume expected in the window of `volume_<n>m` (the live minute so far plus the n - 1
    minutes before it): the profile's same minutes of the day, else the average daily volume
    per session minute times the minutes of the window inside the regular session."""
    frac = (event_ns % MINUTE_NS) / MINUTE_NS
    if profile is not None:
        minute = int(np.mod(local_ns(np.array([event_ns])), DAY_NS)[0] // MINUTE_NS)
        before = minute - n
        start = profile[:, before] if before >= 0 else np.zeros(len(profile))
        return expected_volume_profile(profile, minute, frac) - start
    now = (event_ns - open_ns) / MINUTE_NS
    start = now - frac - (n - 1)
    overlap = min(now, SESSION_MINUTES) - max(start, 0.0)
    if not overlap > 0:
        return np.full(len(avg_daily_volume), np.nan)
    return avg_daily_volume * (overlap / SESSION_MINUTES)
