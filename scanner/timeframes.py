"""Higher-timeframe bars (5, 15, 60 minutes and the day) built from closed 1-minute bars.

Fed with the closed 1-minute bars in feed order (`on_bars_closed`) and the 1-minute watermark
(`close_due`), so event time drives everything, as for the 1-minute bars:

- An intraday bar covers a clock-aligned bucket `[b, b + P)` (UTC-aligned; New York offsets are
  whole hours, so the buckets are New York clock multiples: 5/15 minutes ... 09:25, 09:30, 09:45 ...;
  60 minutes 04:00, 05:00 ... 09:00, 10:00, not anchored at the 09:30 open), like
  `pandas.resample("5min")`. Every 1-minute bar feeds it (pre-market and after-hours included:
  the 09:00 hour bar holds 09:00-09:29 pre-market and the session's first half hour).
- The daily bar is the regular session (09:30-16:00 New York): only 1-minute bars of that
  window feed it, like the vendors' daily bars (and the Lean daily files that seed its history).
- A timeframe bar closes when the bucket's last 1-minute bar is folded (a symbol's bars come in
  minute order, so no other can follow: the 16:00 close of every timeframe happens inside the
  fold, while the live bars are in cache, instead of in a second pass over every row), when a
  1-minute bar of a later bucket arrives for the symbol, or when the 1-minute watermark passes
  the bucket's end (every 1-minute bar of the bucket has closed by then). A 1-minute bar of an
  already closed bucket is late: counted, never merged.
- A 1-minute bar not newer than the last one folded for its symbol is a re-delivery, skipped
  and not counted: after a restart the closed-bar ring replays bars that `resume` may already
  have taken from the 1-minute ring (merged twice, they would double a live bar's volume).
- OHLC from the 1-minute bars, volume and trades summed, VWAP from sum(vwap * volume).

Closed bars go into one history ring per timeframe, `ring[slot, row, field]` with TF_FIELDS
(float64: exact prices and minutes; the depth is chosen per timeframe for the memory budget,
see TF_DEPTH), and are returned per timeframe for the indicator engines. Slot-major, unlike the
1-minute ring: a close writes one 48-byte record, and the closes of every row at one slot (the
16:00 close of 10,000 symbols) are one sequential run of memory instead of a page per row
(field-major was ~50x slower than row-major `[row, slot, field]`; that took 2.0 ms against 1.5
for this close of four timeframes, same box). `ring.transpose(2, 1, 0)` is the field-major
`[field, row, slot]` view the indicator engine's warm-up reads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from scanner.bar_kernels import ROW_LIVE
from scanner.prefetch import prefetch, ring_slot
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS, session_bounds_ns, session_open_ns
from shm.records import concat, copied

TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "60m", "1d")
TF_MINUTES: dict[str, int] = {"5m": 5, "15m": 15, "60m": 60, "1d": 390}
TF_DEPTH: dict[str, int] = {"5m": 160, "15m": 160, "60m": 160, "1d": 260}
"""History depth per timeframe: 160 bars warm the RSI/EMA/ATR seeds out (to ~1e-5 after a
restart) and hold SMA(50); 260 daily bars hold 52 weeks and SMA(200). 6 fields x 10,000 rows x
(3 x 160 + 260) x 8 bytes = 355 MB in all (the instance stays under 1.5 GB at 10,000 symbols)."""
TF_FIELDS: tuple[str, ...] = ("minute", "open", "high", "low", "close", "volume")
TF = {name: i for i, name in enumerate(TF_FIELDS)}
_DAY = TIMEFRAMES.index("1d")
_AHEAD = 8  # rows ahead whose ring record a close asks for (`scanner.prefetch`)
# live-bar state rows of `TimeframeBars.live`, per timeframe
LIVE_FIELDS = ("open", "high", "low", "close", "volume", "pv", "trades")
_L_O, _L_H, _L_L, _L_C, _L_V, _L_PV, _L_T = range(len(LIVE_FIELDS))


def day_bucket(minute_ns: np.ndarray) -> np.ndarray:
    """The daily bucket (09:30 New York of the day, epoch ns) of each 1-minute bar start, or -1
    when the bar is outside the regular session (vectorised)."""
    return session_open_ns(minute_ns, regular_only=True)


@njit(cache=True, nogil=True, inline="always")
def _close(j: int, r: int, s: int, live: np.ndarray, last: np.ndarray, start: np.ndarray, hist: np.ndarray,
           head: np.ndarray, k: int, out: np.ndarray, n_out: np.ndarray) -> None:
    """Emit row r's live bar of timeframe j (bucket start `s` = start[j, r]) into `out[j]` and
    its history ring of depth `k`. Measured, not reasoned: with `s` and `k` read here, or the
    arguments in another order (start before live), numba's code for the 16:00 close of every
    timeframe (40,000 bars) took 1.4-1.5 ms of CPU instead of 0.63 (same run, same arrays)."""
    slot = head[r] % k
    hist[slot, r, 0] = s // MINUTE_NS
    for f in range(5):
        hist[slot, r, 1 + f] = live[j, f, r]
    head[r] += 1
    b = out[j, n_out[j]]
    n_out[j] += 1
    b.sym = r
    b.minute_ns = s
    b.trades = np.uint32(live[j, _L_T, r])
    b.open, b.high, b.low, b.close = live[j, _L_O, r], live[j, _L_H, r], live[j, _L_L, r], live[j, _L_C, r]
    b.volume = live[j, _L_V, r]
    b.vwap = live[j, _L_PV, r] / live[j, _L_V, r] if live[j, _L_V, r] > 0 else np.nan
    last[j, r] = s
    start[j, r] = 0


@njit(cache=True, nogil=True)
def _close_ended(j: int, n: int, rows: np.ndarray, buckets: np.ndarray, live: np.ndarray, last: np.ndarray,
                 start: np.ndarray, hist: np.ndarray, head: np.ndarray, out: np.ndarray, n_out: np.ndarray) -> None:
    """Close timeframe j's buckets `buckets[:n]` of rows `rows[:n]` whose last minute a fold
    took, unless a later bar of the same batch closed one already. A call of its own: the same
    loop inside `_fold` took 1.9 instead of 0.3 ms for the 16:00 close of 10,000 symbols."""
    k = hist.shape[0]
    inv_k = 1.0 / k
    for i in range(n):
        if i + _AHEAD < n:  # the history record of the row ahead, at a slot of its own
            a = rows[i + _AHEAD]
            prefetch(hist, np.uint64(ring_slot(head[a], k, inv_k)), np.uint64(a), np.uint64(0))
        r = rows[i]
        s = buckets[i]
        if start[j, r] == s:
            _close(j, r, s, live, last, start, hist, head, k, out, n_out)


@njit(cache=True, nogil=True)
def _mark_new(sym: np.ndarray, minute_ns: np.ndarray, last_1m: np.ndarray, keep: np.ndarray) -> None:
    """Mark the bars to fold (`keep`): a 1-minute bar not newer than the row's last folded one
    was re-delivered after `resume`, and is skipped (not late)."""
    for k in range(sym.shape[0]):
        r = sym[k]
        m = minute_ns[k]
        keep[k] = m > last_1m[r]
        if keep[k]:
            last_1m[r] = m


@njit(cache=True, nogil=True)
def _fold(j: int, sym: np.ndarray, minute_ns: np.ndarray, dbucket: np.ndarray, o: np.ndarray, h: np.ndarray,
          lo: np.ndarray, c: np.ndarray, v: np.ndarray, vw: np.ndarray, trades: np.ndarray, p: int,
          start: np.ndarray, live: np.ndarray, last: np.ndarray, ring: np.ndarray, hd: np.ndarray,
          out: np.ndarray, n_out: np.ndarray, late: np.ndarray, keep: np.ndarray, todo_r: np.ndarray,
          todo_b: np.ndarray) -> None:
    """Fold the marked bars (`keep`) into timeframe j (bucket `p` ns), in feed order: a pass
    touches that timeframe's nine field-major columns only (one pass over all four timeframes at
    once touched 36 columns per bar, more streams than the prefetchers follow: 2.0 against 0.75
    ms for 10,000 bars, same run), and passes of different timeframes share no state, so they
    may run on different threads."""
    depth = ring.shape[0]
    n_todo = 0
    for k in range(sym.shape[0]):
        if not keep[k]:
            continue
        r = sym[k]
        m = minute_ns[k]
        if j == _DAY:
            b = dbucket[k]
            if b < 0:
                continue
        else:
            b = m - m % p
        s = start[j, r]
        if s != 0 and b > s:
            _close(j, r, s, live, last, start, ring, hd, depth, out, n_out)
            s = 0
        if b <= last[j, r] or (s != 0 and b < s):
            late[j] += 1
            continue
        pv = vw[k] * v[k] if v[k] > 0 and vw[k] == vw[k] else 0.0
        if s == 0:
            start[j, r] = b
            live[j, _L_O, r], live[j, _L_H, r], live[j, _L_L, r], live[j, _L_C, r] = o[k], h[k], lo[k], c[k]
            live[j, _L_V, r], live[j, _L_PV, r], live[j, _L_T, r] = v[k], pv, trades[k]
        else:
            if h[k] > live[j, _L_H, r]:
                live[j, _L_H, r] = h[k]
            if lo[k] < live[j, _L_L, r]:
                live[j, _L_L, r] = lo[k]
            live[j, _L_C, r] = c[k]
            live[j, _L_V, r] += v[k]
            live[j, _L_PV, r] += pv
            live[j, _L_T, r] += trades[k]
        if m + MINUTE_NS >= b + p:  # the bucket's last minute: no later 1-minute bar can fall in it
            todo_r[n_todo] = r
            todo_b[n_todo] = b
            n_todo += 1
    _close_ended(j, n_todo, todo_r, todo_b, live, last, start, ring, hd, out, n_out)


@njit(cache=True, nogil=True)
def _close_due(j: int, watermark: int, p: int, start: np.ndarray, live: np.ndarray, last: np.ndarray,
               h: np.ndarray, hd: np.ndarray, out: np.ndarray, n_out: np.ndarray, rows_state: np.ndarray) -> None:
    """Close timeframe j's (bucket `p` ns) bars that ended at or before `watermark`, of ROW_LIVE rows."""
    k = h.shape[0]
    inv_k = 1.0 / k
    n = start.shape[1]
    for r in range(n):
        a = r + _AHEAD
        if a < n and start[j, a] != 0:  # the history record of the row ahead, at a slot of its own
            prefetch(h, np.uint64(ring_slot(hd[a], k, inv_k)), np.uint64(a), np.uint64(0))
        s = start[j, r]
        if s != 0 and s + p <= watermark and rows_state[r] == ROW_LIVE:
            _close(j, r, s, live, last, start, h, hd, k, out, n_out)


class TimeframeBars:
    """Live and closed higher-timeframe bars for `n_rows` symbols.

    `hists[j]` (depth, n_rows, len(TF_FIELDS)) float64 and `heads[j]` (n_rows,) int64 are the
    ring of timeframe `TIMEFRAMES[j]` (private when omitted; pass shared-memory views, see
    `ring_spec`, to keep them across restarts). `on_bars_closed(bars)` and `close_due(watermark_ns)` return the bars
    they closed, one BAR_DTYPE array per timeframe.
    """

    def __init__(self, n_rows: int, hists: list[np.ndarray] | None = None,
                 heads: list[np.ndarray] | None = None) -> None:
        self.n_rows = n_rows
        if hists is None:
            hists = [np.full((TF_DEPTH[tf], n_rows, len(TF_FIELDS)), np.nan) for tf in TIMEFRAMES]
        if heads is None:
            heads = [np.zeros(n_rows, np.int64) for _ in TIMEFRAMES]
        for tf, h, hd in zip(TIMEFRAMES, hists, heads, strict=True):
            if (h.ndim != 3 or h.shape[1] != n_rows or h.shape[2] != len(TF_FIELDS) or h.dtype != np.float64
                    or not h.flags.c_contiguous or hd.shape != (n_rows,)):
                raise ValueError(f"history of {tf} must be C-contiguous float64 (K, {n_rows}, {len(TF_FIELDS)}), "
                                 f"was {h.dtype} {h.shape}")
        self.hists, self.heads = hists, heads
        self.period = np.array([TF_MINUTES[tf] for tf in TIMEFRAMES], np.int64)
        # per timeframe, field-major like the table (the indicators read whole columns of them):
        # the live bucket's start (0 = none), the live bar (LIVE_FIELDS), the last closed start
        self.start = np.zeros((len(TIMEFRAMES), n_rows), np.int64)
        self.live = np.full((len(TIMEFRAMES), len(LIVE_FIELDS), n_rows), np.nan)
        self.last = np.zeros((len(TIMEFRAMES), n_rows), np.int64)
        # the newest 1-minute bar folded per row: the bar process closes a row's bars in minute
        # order (repaired ones too), so an older or equal one is a re-delivery and is skipped
        self.last_1m = np.zeros(n_rows, np.int64)
        self.late = np.zeros(len(TIMEFRAMES), np.int64)
        self._out = np.empty((len(TIMEFRAMES), 2 * n_rows + 1024), BAR_DTYPE)
        self._n_out = np.zeros(len(TIMEFRAMES), np.int64)
        self._keep = np.empty(self._out.shape[1], np.bool_)  # `_mark_new`'s marks for `_fold`
        self._todo_r = np.empty((len(TIMEFRAMES), self._out.shape[1]), np.int64)  # `_fold`'s scratch
        self._todo_b = np.empty((len(TIMEFRAMES), self._out.shape[1]), np.int64)
        self.watermark_ns = 0  # the largest watermark handed to close_due
        # every bucket ends on a whole minute, so what is due changes only when the watermark
        # enters a new minute or a fold opens a bucket: `close_due` skips its pass over every
        # row and timeframe (~0.1 ms at 10,000 rows) until then. The minute it last closed up to.
        self._closed_to = -1
        self._all_live = np.full(n_rows, ROW_LIVE, np.uint8)  # `close_due` without a `rows_state`

    def _result(self) -> list[np.ndarray]:
        return [self._taken(j) for j in range(len(TIMEFRAMES))]

    def _taken(self, j: int, copy: bool = True) -> np.ndarray:
        """The bars timeframe j closed since the last call: a copy, or (not `copy`) a view valid
        until its next fold or close."""
        res = self._out[j, :self._n_out[j]]
        self._n_out[j] = 0
        return copied(res) if copy else res

    @property
    def max_fold_bars(self) -> int:
        """The most bars `fold_tasks` takes at once."""
        return self._out.shape[1] - self.n_rows

    def on_bars_closed(self, bars: np.ndarray, watermark_ns: int | None = None,
                       rows_state: np.ndarray | None = None) -> list[np.ndarray]:
        """Fold closed 1-minute bars (feed order, each symbol's in minute order); returns the bars
        each timeframe closed. With `watermark_ns`, then `close_due(watermark_ns, rows_state)`,
        its bars in the same lists."""
        if len(bars) == 0:
            return (self.close_due(watermark_ns, rows_state) if watermark_ns is not None
                    else [np.empty(0, BAR_DTYPE) for _ in TIMEFRAMES])
        if len(bars) > self.max_fold_bars:
            parts = [self.on_bars_closed(piece, wm, rows_state) for piece, wm in self.pieces(bars, watermark_ns)]
            return [concat([p[j] for p in parts]) for j in range(len(TIMEFRAMES))]
        return [copied(task()) for task in self.fold_tasks(bars, watermark_ns, rows_state)]

    def pieces(self, bars: np.ndarray, watermark_ns: int | None) -> list[tuple[np.ndarray, int | None]]:
        """A batch larger than `max_fold_bars` as pieces of `n_rows` bars (each within a fold's
        bound), the watermark given with the last piece only: its close must follow every bar."""
        n = self.n_rows
        return [(bars[i:i + n], watermark_ns if i + n >= len(bars) else None) for i in range(0, len(bars), n)]

    def fold_tasks(self, bars: np.ndarray, watermark_ns: int | None = None,
                   rows_state: np.ndarray | None = None) -> list[Callable[[], np.ndarray]]:
        """`on_bars_closed` in parts: marks the bars to fold here, and returns one call per
        timeframe (TIMEFRAMES order) that folds them into it (then, with `watermark_ns`, closes
        its bars due then, as `close_due`) and returns the bars it closed, as a view valid until
        the next fold or close (at 16:00 a copy of 10,000 bars per timeframe that the caller folds
        into its engine and drops). The calls share no state, so they may run on different
        threads at once; each must run once, before the next fold or close. At most
        `max_fold_bars` bars.

        The watermark's close in the same calls: at 16:00 it closes the buckets of the rows
        without a bar in the last minute (a third of them, every timeframe), which in a pass of
        its own after the folds took both threads' time on one."""
        if len(bars) > self.max_fold_bars:
            raise ValueError(f"at most {self.max_fold_bars} bars at once, got {len(bars)}")
        # a fold may open a bucket that is already due (a repaired bar): the watermark's close
        # must look again, unless these calls do it after their fold
        self._closed_to = -1 if watermark_ns is None else self._due_minute(watermark_ns)
        states = self._all_live if rows_state is None else rows_state
        sym, mn = bars["sym"].astype(np.int64), bars["minute_ns"]
        _mark_new(sym, mn, self.last_1m, self._keep)
        keep = self._keep[:len(bars)]
        cols = (bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"], bars["vwap"],
                bars["trades"].astype(np.float64))

        def task(j: int) -> np.ndarray:
            dbucket = day_bucket(mn) if j == _DAY else mn
            _fold(j, sym, mn, dbucket, *cols, int(self.period[j]) * MINUTE_NS, self.start, self.live, self.last,
                  self.hists[j], self.heads[j], self._out, self._n_out, self.late, keep, self._todo_r[j],
                  self._todo_b[j])
            if watermark_ns is not None:
                self._close_due_tf(j, int(watermark_ns), states)
            return self._taken(j, copy=False)

        return [lambda j=j: task(j) for j in range(len(TIMEFRAMES))]

    def close_due(self, watermark_ns: int, rows_state: np.ndarray | None = None) -> list[np.ndarray]:
        """Close every timeframe bar whose bucket ended at or before the 1-minute watermark.
        `rows_state` (Kafka group mode, the bar process's `rows_state`): only ROW_LIVE rows close
        on the watermark. A row being rebuilt gets its day's bars far behind it, a batch at a
        time, so a bucket cut at a batch's end would close with part of its bars (and the rest
        counted late); its buckets close in the fold, on their last minute or a later bucket's
        bar, and on the watermark once the row is live. A row the group moved away keeps its
        open bucket for the day it comes back (the rebuild skips the bars folded already). Call
        `rows_changed` when `rows_state` changes, so the next call looks at every row again."""
        wm = int(watermark_ns)
        due = self._due_minute(wm)
        if due <= self._closed_to:
            return [np.empty(0, BAR_DTYPE) for _ in TIMEFRAMES]  # nothing fell due since that pass
        states = self._all_live if rows_state is None else rows_state
        for j in range(len(TIMEFRAMES)):
            self._close_due_tf(j, wm, states)
        self._closed_to = due
        return self._result()

    def _due_minute(self, watermark_ns: int) -> int:
        """Raise `self.watermark_ns` to `watermark_ns`; returns the minute a close at it covers (a
        bucket end, a whole minute, is <= the watermark iff <= that minute)."""
        wm = int(watermark_ns)
        self.watermark_ns = max(self.watermark_ns, wm)
        return wm - wm % MINUTE_NS

    def _close_due_tf(self, j: int, watermark_ns: int, rows_state: np.ndarray) -> None:
        _close_due(j, watermark_ns, int(self.period[j]) * MINUTE_NS, self.start, self.live, self.last, self.hists[j],
                   self.heads[j], self._out, self._n_out, rows_state)

    def rows_changed(self) -> None:
        """The rows that may close on the watermark changed (`close_due`'s `rows_state`)."""
        self._closed_to = -1

    def resume(self, hist: np.ndarray, head: np.ndarray, chunk: int = 1024) -> list[np.ndarray]:
        """After a (re)start over rings that survived: `resume_rows` over every row of the
        1-minute ring `hist[HIST field, row, slot]`, `chunk` rows at a time. Returns the bars it
        closed."""
        done = [self.resume_rows(hist[:, r0:r0 + chunk], head[r0:r0 + chunk], r0)
                for r0 in range(0, self.n_rows, chunk)]
        return [concat([d[i] for d in done]) if done else np.empty(0, BAR_DTYPE)
                for i in range(len(TIMEFRAMES))]

    def resume_rows(self, hist: np.ndarray, head: np.ndarray, row0: int = 0) -> list[np.ndarray]:
        """Resume rows `row0 + i` from 1-minute ring rows `hist[HIST field, i, slot]` (`head[i]`
        bars written): each timeframe's last closed bucket from its ring, then the 1-minute bars
        folded in (those of closed buckets are skipped, not counted late). Rows are independent:
        the rows of a chunk need no other. Returns the bars it closed."""
        from scanner.metrics import HIST  # the 1-minute ring's fields

        n = hist.shape[1]
        if len(head) != n or row0 < 0 or row0 + n > self.n_rows:
            raise ValueError(f"history rows {row0}..{row0 + n} ({len(head)} heads) are outside the "
                             f"timeframe bars ({self.n_rows} rows)")
        rows = np.arange(row0, row0 + n)
        for j, (h, hd) in enumerate(zip(self.hists, self.heads, strict=True)):
            k = h.shape[0]
            last = h[(hd[rows] - 1) % k, rows, TF["minute"]]
            self.last[j, rows] = np.where(hd[rows] > 0, np.nan_to_num(last) * MINUTE_NS, 0).astype(np.int64)
        late = self.late.copy()
        k = hist.shape[2]
        j = head[:, None] - k + np.arange(k)[None, :]
        rows, cols = np.nonzero(j >= 0)
        slots = j[rows, cols] % k
        b = np.zeros(len(rows), BAR_DTYPE)
        b["sym"] = rows + row0
        b["minute_ns"] = hist[HIST["minute"], rows, slots].astype(np.int64) * MINUTE_NS
        for f in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            b[f] = hist[HIST[f], rows, slots]
        done = self.on_bars_closed(b)
        self.late[:] = late
        return done

    def live_bar(self, tf: str) -> dict[str, np.ndarray]:
        """Views of the live bar of timeframe `tf`: start (0 = none), open ... trades."""
        j = TIMEFRAMES.index(tf)
        return {"start": self.start[j], **{f: self.live[j, i] for i, f in enumerate(LIVE_FIELDS)}}


def ring_spec(n_rows: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Arrays of a shared-memory segment holding every timeframe's ring and head."""
    spec: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for tf in TIMEFRAMES:
        spec[f"ring_{tf}"] = (np.dtype(np.float64), (TF_DEPTH[tf], n_rows, len(TF_FIELDS)))
        spec[f"head_{tf}"] = (np.dtype(np.int64), (n_rows,))
    return spec


def seed_daily(hist: np.ndarray, head: np.ndarray, m: dict[str, np.ndarray]) -> None:
    """Fill the daily ring `hist[slot, row, field]` (rows: a slice of the whole ring's, as
    `ring[:, a:b]`) from right-aligned daily matrices (`scanner.daily.daily_matrix`: day, open,
    high, low, close, volume; NaN day = no bar), oldest first; rows restart empty."""
    days = m["day"]
    k = hist.shape[0]
    opens = {int(d): session_bounds_ns(int(d))["open"] // MINUTE_NS for d in np.unique(days[~np.isnan(days)])}
    hist[:] = np.nan
    head[:] = 0
    for r in range(days.shape[0]):
        ok = np.flatnonzero(~np.isnan(days[r]))[-k:]
        if len(ok) == 0:
            continue
        hist[:len(ok), r, TF["minute"]] = [opens[int(d)] for d in days[r, ok]]
        for f in TF_FIELDS[1:]:
            hist[:len(ok), r, TF[f]] = m[f][r, ok]
        head[r] = len(ok)
