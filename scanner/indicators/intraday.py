"""Rolling moves over the last minutes and the day's landmarks (issue 15), for every symbol.

State per row, in preallocated arrays (rebuilt from the bar-history ring by `warm_up`):

- a ring of the last `WINDOW` closed 1-minute bars (minute, close, high, low, volume): enough
  for the price 60 minutes ago, since bars of distinct minutes older than that always remain;
- the opening-range highs and lows of today's 09:30-09:35/09:45/10:00 bars and the open they
  belong to (a bar of a later day resets them).

Live values (`update_live`) include the live 1-minute bar, like `volume_5m`:

- `change_<n>m_pct`: the last price against the close of the last bar that started at or
  before the live minute minus n (the price as the minute n minutes ago ended, i.e. the window
  is the live bar plus the n - 1 closed minutes before it); NaN without such a bar.
- `volume_15m`, `range_5m_pct`: live bar plus closed bars of the previous 14 (4) minutes.
- `rel_volume_5m/15m`: against the volume profile's same minutes of the day, else the average
  daily volume spread over the session minutes the window overlaps.
- `or_<high|low>_<n>m`: NaN until the window has ended (event time), then fixed for the day.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from scanner.indicators import session as sm
from scanner.indicators.volume import SESSION_MINUTES, expected_volume_profile, relative_volume
from scanner.metrics import HIST, OPENING_RANGES, ROLLING_MINUTES
from scanner.session import DAY_NS, MINUTE_NS, OPEN_MIN, local_ns

WINDOW = 61  # closed bars kept: the price 60 minutes ago always remains in the ring
_ROLL = np.array(ROLLING_MINUTES, np.int64)
_OR = np.array(OPENING_RANGES, np.int64)
_OPEN_TOD_NS = OPEN_MIN * MINUTE_NS
# columns the live kernel writes, in kernel order
KERNEL_OUT = (*(f"change_{n}m_pct" for n in ROLLING_MINUTES), "volume_15m", "range_5m_pct",
              *(f"or_{s}_{n}m" for n in OPENING_RANGES for s in ("high", "low")))
ROW_INPUTS = ("price", "bar_start_ns", "bar_high", "bar_low", "bar_volume")  # what `_live` reads per row
COLUMNS = (*KERNEL_OUT, "rel_volume_5m", "rel_volume_15m", "velocity_5m", "minutes_since_lod", "above_or_high",
           "below_or_low", "gap_filled", "pct_from_high_52w", "pct_from_low_52w")
Arr = np.ndarray
Rows = tuple[np.ndarray, ...]  # 1-D arrays handed to a kernel as one tuple


def session_open_ns(minute_ns: np.ndarray) -> np.ndarray:
    """09:30 New York of each timestamp's local day, epoch ns (vectorised; exact for times
    after 02:00 local, as every bar of a regular session is)."""
    m = np.asarray(minute_ns, np.int64)
    return m + (_OPEN_TOD_NS - np.mod(local_ns(m), DAY_NS))


@njit(cache=True, nogil=True)
def _fold(sym: Arr, minute_ns: Arr, open_ns: Arr, high: Arr, low: Arr, close: Arr, volume: Arr, count: Arr,
          last_min: Arr, ring_m: Arr, ring_v: Arr, or_open: Arr, or_hl: Arr, or_n: Arr, dirty: Arr) -> None:
    """Fold closed bars (feed order) into the ring and the opening ranges; a bar not newer than
    the row's last one, or without a close, is skipped (as the indicator engine does). Rows
    that took a bar are marked `dirty` (their cached walk, `_walk`, is stale)."""
    w = WINDOW  # a constant: numba turns the modulos into multiplications (ring_m.shape[0] is WINDOW)
    for k in range(sym.shape[0]):
        r = sym[k]
        mn = minute_ns[k]
        if np.isnan(close[k]) or mn <= last_min[r]:
            continue
        dirty[r] = True
        s = count[r] % w
        ring_m[s, r] = mn
        ring_v[0, s, r] = close[k]
        ring_v[1, s, r] = high[k]
        ring_v[2, s, r] = low[k]
        ring_v[3, s, r] = volume[k]
        count[r] += 1
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


@njit(cache=True, nogil=True)
def _walk(rows: Arr, now_min: int, count: Arr, ring_m: Arr, ring_v: Arr, roll: Arr, ref: Arr, v15: Arr,
          hl5: Arr, ptr: Arr) -> None:
    """For each row in `rows`, what the live values need from its closed bars, which only changes
    when the minute or the row's ring does (`Intraday` caches it): `ref[k]` the close of the
    newest bar that started at or before the live minute minus roll[k] (NaN without one in the
    ring); `v15` the volume of the bars that started within the last 15 minutes, `hl5[0]` /
    `hl5[1]` the highest high / lowest low of those within the last 5 (NaN without one). `_live`
    adds the live bar to them.

    The references come from `ptr[k]`, the bar number (0 = the row's first bar) of the newest bar
    at or before the minute roll[k] back, kept from the last walk: minutes grow with bar numbers
    and the reference minute only moves forward (`Intraday.update_live` resets `ptr` when the
    minute goes back), so each walk moves a pointer forward by the bars since (usually zero or
    one) instead of reading back 60 minutes of bars: 2.6 ms for 10,000 symbols with full rings.
    Only the last 15 minutes are read back, for `v15` and `hl5`."""
    w = WINDOW  # a constant: numba turns the modulos into multiplications (ring_m.shape[0] is WINDOW)
    n_roll = roll.shape[0]
    from15 = now_min - 14 * MINUTE_NS
    from5 = now_min - 4 * MINUTE_NS
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])  # unsigned: numba adds no negative-index wraparound to each read (jsonbytes.at)
        c = count[r]
        gone = c - w - 1  # bar numbers up to this one are overwritten (or, below 0, never were)
        if gone < -1:
            gone = -1
        for k in range(n_roll):
            p = ptr[k, r]
            if p < gone:
                p = gone
            thr = now_min - roll[k] * MINUTE_NS
            if p + 1 < c:
                nxt = (p + 1) % w  # the next bar's slot, stepped without a division
                while ring_m[np.uint64(nxt), r] <= thr:
                    p += 1
                    if p + 1 >= c:
                        break
                    nxt = nxt + 1 if nxt + 1 < w else 0
            ptr[k, r] = p
            ref[k, r] = ring_v[0, np.uint64(p % w), r] if p > gone else np.nan
        vol = 0.0
        hi = np.nan
        lo = np.nan
        s = (c - 1) % w  # slot of the newest bar, then one back per step (no division per step)
        for _ in range(min(c, w)):
            su = np.uint64(s)
            mn = ring_m[su, r]
            if mn < from15:
                break
            vol += ring_v[3, su, r]
            if mn >= from5:
                if not ring_v[1, su, r] <= hi:
                    hi = ring_v[1, su, r]
                if not ring_v[2, su, r] >= lo:
                    lo = ring_v[2, su, r]
            s = s - 1 if s > 0 else w - 1
        v15[r] = vol
        hl5[0, r] = hi
        hl5[1, r] = lo


@njit(cache=True, nogil=True)
def _live(price: Arr, bar_start: Arr, bar_high: Arr, bar_low: Arr, bar_volume: Arr, event_ns: int, open_ns: int,
          last_min: Arr, or_open: Arr, or_hl: Arr, or_n: Arr, ref: Arr, v15c: Arr, hl5: Arr, rows: Arr,
          out: Rows) -> None:
    """Live values of `KERNEL_OUT` (the columns `out`, in that order) for the rows `rows`, from
    the cached walk (`_walk` at this minute) and the live bar. They depend on the minute of
    `event_ns` only, not on the seconds in it. `volume_15m` is the closed bars' sum plus the
    live bar's volume (exact for whole-share volumes; the walk used to add the live bar first)."""
    n_roll = ref.shape[0]
    o_v15, o_r5, o_or = n_roll, n_roll + 1, n_roll + 2
    now_min = event_ns - event_ns % MINUTE_NS
    from15 = now_min - 14 * MINUTE_NS
    from5 = now_min - 4 * MINUTE_NS
    for q in range(rows.shape[0]):
        r = np.uint64(rows[q])
        bs = bar_start[r]
        live = bs != 0 and bs > last_min[r]
        v15 = v15c[r] + (bar_volume[r] if live and bs >= from15 else 0.0)
        hi = hl5[0, r]
        lo = hl5[1, r]
        if live and bs >= from5:  # the live bar's high and low join the closed bars' (NaN ones ignored)
            h1, l1 = bar_high[r], bar_low[r]
            if not h1 == h1 or hi > h1:
                h1 = hi
            if not l1 == l1 or lo < l1:
                l1 = lo
            hi, lo = h1, l1
        for k in range(n_roll):
            x = ref[k, r]
            out[k][r] = (price[r] - x) / x * 100.0 if x > 0 else np.nan
        out[o_v15][r] = v15
        out[o_r5][r] = (hi - lo) / lo * 100.0 if lo > 0 else np.nan
        today = or_open[r] == open_ns
        for j in range(or_n.shape[0]):
            end = open_ns + or_n[j] * MINUTE_NS
            h = or_hl[2 * j, r] if today else np.nan
            lw = or_hl[2 * j + 1, r] if today else np.nan
            if live and open_ns <= bs < end and bar_high[r] == bar_high[r]:
                h = bar_high[r] if not bar_high[r] <= h else h
                lw = bar_low[r] if not bar_low[r] >= lw else lw
            out[o_or + 2 * j][r] = h if event_ns >= end else np.nan
            out[o_or + 2 * j + 1][r] = lw if event_ns >= end else np.nan


class Intraday:
    """Rolling-move and landmark state for `n_rows` symbols (private; see the module doc)."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.count = np.zeros(n_rows, np.int64)
        self.last_min = np.zeros(n_rows, np.int64)
        self.ring_m = np.zeros((WINDOW, n_rows), np.int64)
        self.ring_v = np.zeros((4, WINDOW, n_rows))  # close, high, low, volume
        self.or_open = np.zeros(n_rows, np.int64)
        self.or_hl = np.full((2 * len(OPENING_RANGES), n_rows), np.nan)
        self._all_rows = np.arange(n_rows, dtype=np.int64)
        # the walk over each row's closed bars at minute `_walk_min` (`_walk`), redone for the rows
        # that took a bar since (`_dirty`) and for every row when the minute changes
        self._ref = np.full((len(ROLLING_MINUTES), n_rows), np.nan)
        self._v15 = np.zeros(n_rows)
        self._hl5 = np.full((2, n_rows), np.nan)
        self._dirty = np.ones(n_rows, np.bool_)
        self._walk_min = -1
        self._ptr = np.full((len(ROLLING_MINUTES), n_rows), -1, np.int64)  # `_walk`'s reference bars

    def reset(self) -> None:
        for a in (self.count, self.last_min, self.ring_m, self.ring_v, self.or_open):
            a[:] = 0
        self.or_hl[:] = np.nan
        self._walk_min = -1
        self._ptr[:] = -1

    def on_bars_closed(self, sym: Arr, minute_ns: Arr, high: Arr, low: Arr, close: Arr, volume: Arr) -> None:
        """Fold closed bars (feed order)."""
        _fold(sym, minute_ns, session_open_ns(minute_ns), high, low, close, volume, self.count, self.last_min,
              self.ring_m, self.ring_v, self.or_open, self.or_hl, _OR, self._dirty)

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
        `open_ns`). Reads price, the live bar, day_open/high/low, lod_ts_ns, volume_5m (written
        before by the engine), prev_close, avg_daily_volume and the daily reference columns.
        `rows` (None = all): the `KERNEL_OUT` columns are written for these rows only, the
        others keep their values (see `IndicatorEngine.update_live`)."""
        now_min = int(event_ns) - int(event_ns) % MINUTE_NS
        if now_min != self._walk_min:
            self._dirty[:] = True
            if now_min < self._walk_min:  # the reference bars only move forward (`_walk`)
                self._ptr[:] = -1
            self._walk_min = now_min
        stale = np.flatnonzero(self._dirty)
        if len(stale):
            _walk(stale, now_min, self.count, self.ring_m, self.ring_v, _ROLL, self._ref, self._v15, self._hl5,
                  self._ptr)
            self._dirty[:] = False
        _live(c["price"], c["bar_start_ns"], c["bar_high"], c["bar_low"], c["bar_volume"], int(event_ns),
              int(open_ns), self.last_min, self.or_open, self.or_hl, _OR, self._ref, self._v15, self._hl5,
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
