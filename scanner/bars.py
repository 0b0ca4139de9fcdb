"""The 1-minute bar aggregator: batches of ticks in, closed bars out, live bar and session in columns.

State lives in caller-provided 1-D arrays of length n_rows (the bars-owned columns of the symbol
table, plus the private `AGG_STATE` arrays and a small `meta` vector), so the bar process can
keep all of it in shared memory and a restarted process re-attaches and carries on.

Semantics (event time drives everything, so a replay at any speed gives the same bars as live):

- A bar covers one UTC-aligned minute `[m, m + 60 s)` (New York offsets are whole hours, so it is
  also a New York minute). A minute with no trades for a symbol produces *no* bar for it: no
  flat filler bars; indicators and `bars_ago` count bars, not clock minutes.
- The watermark is the largest event time seen minus `grace_ns` (or a larger value handed to
  `close_due`). A live bar closes when its minute ended at or before the watermark, or when a
  tick of a later minute arrives for the same symbol.
- A tick is *late* when its minute is older than the symbol's live bar, or its minute ended at
  or before the watermark (the bar for that minute has been, or could have been, published),
  or is not newer than the symbol's newest closed bar (a repaired bar, see below).
  Late ticks are counted in `late_ticks` and dropped, never merged: a closed bar is already in
  the history ring, the storage writer and the indicators; amending it would need a correction
  protocol through all of them, and the vendors' own bars drop them too. Both rules depend only
  on the order of ticks, not on how they are split into batches, so any batch split of the same
  tick sequence gives the same bars.
- Out-of-order ticks inside the live minute merge: open is the price of the earliest event
  time, close of the latest (ties: the later tick in feed order).
- Ticks flagged TICK_ODD_LOT, TICK_NO_LAST or TICK_NO_HIGH_LOW (`TICK_NO_PRICE`: odd-lot,
  average-price, derivatively-priced, prior-reference, out-of-sequence and sold-last prints, by
  the vendor's sale-condition table in `scanner.feeds.conditions`) count for volume, trades and
  VWAPs but do not set open/high/low/close, the day's open/high/low, the HOD or the pre-market
  high/low (as the SIP tapes do). A bar whose ticks all carry such flags closes flat at the
  symbol's previous close (or at its own VWAP when the symbol has no price yet).
- Ticks flagged TICK_NO_VOLUME (a market center's official open/close report, a corrected
  consolidated close) are not trades at all: they count nowhere (no volume, no trade, no bar)
  and only advance event time (the watermark).
- Sessions (see `scanner.session`): every tick of the trading day forms bars, after-hours
  (16:00-20:00) and overnight included. `day_open/high/low`, `hod_ts_ns`, `new_hod_count`,
  `lod_ts_ns`, `new_lod_count` and the session `vwap` are regular session only (09:30-16:00);
  `premarket_*` is 04:00-09:30;
  `day_volume` / `day_trades` count every tick of the trading day (pre-market, after-hours).
  The first regular-session print sets the high (and low) without counting as a *new* one.
- Cancels and corrections (live vendor feeds): a correction arrives as a TICK_CANCEL tick
  (the original print) followed by an ordinary tick (the corrected print, same event time). A
  cancel inside the symbol's live minute takes its size, price x size and trade back out of the
  bar, the day's volume/trades and the session VWAP sums, and counts in `cancels_applied`. It
  does not lower a high, raise a low or move an open/close the print had set: without the
  minute's ticks those cannot be recomputed (docs/operations.md). A cancel of a minute already
  closed is counted in `cancels_skipped` and changes nothing.
- Repaired bars (`insert_repaired`): closed bars from the vendor's REST minute bars after a
  reconnect go into the history ring and the day statistics like a closed bar, when their
  minute is newer than the row's newest history bar and older than its live bar.
- The trading day rolls when the first tick of a later New York date arrives (or on
  `reset_day`): live bars close, day statistics restart; ticks of the old day after that are late.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import njit

from scanner.metrics import CATALOGUE, HIST, HIST_FIELDS, Owner
from scanner.records import BAR_DTYPE, TICK_CANCEL, TICK_DTYPE, TICK_NO_PRICE, TICK_NO_VOLUME
from scanner.session import MINUTE_NS, NS, next_day, session_bounds_ns, trading_day

# float64 columns of the kernel, in kernel order: the table's bars-owned ones, then private state
_F_COLS = ("bar_open", "bar_high", "bar_low", "bar_close", "bar_volume", "bar_vwap", "day_open",
           "day_high", "day_low", "day_volume", "new_hod_count", "vwap", "premarket_high",
           "premarket_low", "premarket_volume", "bar_pv", "session_pv", "session_volume", "last_px",
           "new_lod_count")
_I_COLS = ("bar_start_ns", "bar_trades", "bars_closed", "day_trades", "hod_ts_ns", "bar_first_ts_ns",
           "bar_last_ts_ns", "day_open_ts_ns", "lod_ts_ns")

# kernel slot of each column: `f[_F_BAR_PV]` reads like the column it is (numba folds the constants)
(_F_BAR_OPEN, _F_BAR_HIGH, _F_BAR_LOW, _F_BAR_CLOSE, _F_BAR_VOLUME, _F_BAR_VWAP, _F_DAY_OPEN, _F_DAY_HIGH,
 _F_DAY_LOW, _F_DAY_VOLUME, _F_NEW_HOD_COUNT, _F_VWAP, _F_PREMARKET_HIGH, _F_PREMARKET_LOW,
 _F_PREMARKET_VOLUME, _F_BAR_PV, _F_SESSION_PV, _F_SESSION_VOLUME, _F_LAST_PX, _F_NEW_LOD_COUNT) = range(len(_F_COLS))
(_I_BAR_START, _I_BAR_TRADES, _I_BARS_CLOSED, _I_DAY_TRADES, _I_HOD_TS, _I_BAR_FIRST_TS, _I_BAR_LAST_TS,
 _I_DAY_OPEN_TS, _I_LOD_TS) = range(len(_I_COLS))

AGG_STATE: dict[str, np.dtype] = {
    "bar_pv": np.dtype(np.float64),  # sum(price * size) of the live bar
    "session_pv": np.dtype(np.float64),  # sum(price * size), regular session
    "session_volume": np.dtype(np.float64),  # regular-session volume (VWAP denominator)
    "last_px": np.dtype(np.float64),  # close of the symbol's last closed bar (NaN: none yet)
    "bar_first_ts_ns": np.dtype(np.int64),  # event time of the live bar's open print
    "bar_last_ts_ns": np.dtype(np.int64),  # event time of the live bar's close print
    "day_open_ts_ns": np.dtype(np.int64),  # event time of the day-open print
}
"""Private per-row state of the aggregator (not metrics); allocate with `BarAggregator.new_state`."""

# meta vector slots (int64); keep it in shared memory next to the state to survive a restart
META_MAX_TS, META_WATERMARK, META_TICKS, META_LATE, META_DAY, META_MIN_START = range(6)
META_LEN = 10
META_PUBLISHED = 6  # watermark whose closed bars are all in the closed-bar ring (set by the bar process)
META_CANCELS, META_CANCEL_SKIP = 7, 8  # cancels applied to a live bar / skipped (minute already closed)
# A row's state in Kafka group mode (`rows_state`, uint8): LIVE rows run on the aggregator's clock
# (every row of a fixed-range host); REBUILDING rows' day is being replayed on a clock of its own
# (`on_rebuild_ticks`), so the live watermark must not close their bars; AWAY rows belong to
# another host: no sweep touches them.
ROW_LIVE, ROW_REBUILDING, ROW_AWAY = 0, 1, 2
BAR_COLUMNS = tuple(m.name for m in CATALOGUE.owned_by(Owner.BARS))
_NO_PRICE = TICK_NO_PRICE
_CANCEL = TICK_CANCEL
_H_MIN, _H_O, _H_H, _H_L, _H_C, _H_V, _H_VW, _H_T = (HIST[k] for k in HIST_FIELDS)
_BIG = np.iinfo(np.int64).max
FCols = tuple[np.ndarray, ...]  # the float64 kernel columns, `_F_COLS` order
ICols = tuple[np.ndarray, ...]  # the int64 kernel columns, `_I_COLS` order

assert not set(BAR_COLUMNS) - set(_F_COLS) - set(_I_COLS), "a bars-owned column has no kernel slot"


@njit(cache=True, nogil=True)
def _close_row(r: int, f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, out: np.ndarray,
               n_out: int) -> int:
    """Emit row r's live bar into `out[n_out]` and the history ring; clear the live bar."""
    bo, bh, bl, bc = f[_F_BAR_OPEN], f[_F_BAR_HIGH], f[_F_BAR_LOW], f[_F_BAR_CLOSE]
    bv, bvw, last_px = f[_F_BAR_VOLUME], f[_F_BAR_VWAP], f[_F_LAST_PX]
    start, trades, closed = iv[_I_BAR_START], iv[_I_BAR_TRADES], iv[_I_BARS_CLOSED]
    vol = bv[r]
    vw = bvw[r]
    o, h, lo, c = bo[r], bh[r], bl[r], bc[r]
    # only odd lots / no-last prints: a flat bar at the previous close (else its own VWAP).
    # Scalar selects, not a branch reading arrays: such a branch defeats numba's refcount
    # pruning and costs ~0.4 us per bar in atomic increfs.
    lp = last_px[r]
    fallback = lp if lp == lp else vw
    priced = o == o
    o = o if priced else fallback
    h = h if priced else fallback
    lo = lo if priced else fallback
    c = c if priced else fallback
    last_px[r] = c
    b = out[n_out]
    b.sym = r
    b.trades = trades[r]
    b.minute_ns = start[r]
    b.open, b.high, b.low, b.close, b.volume, b.vwap = o, h, lo, c, vol, vw
    k = hist.shape[2]
    slot = head[r] % k
    hist[_H_MIN, r, slot] = start[r] // MINUTE_NS
    hist[_H_O, r, slot] = o
    hist[_H_H, r, slot] = h
    hist[_H_L, r, slot] = lo
    hist[_H_C, r, slot] = c
    hist[_H_V, r, slot] = vol
    hist[_H_VW, r, slot] = vw
    hist[_H_T, r, slot] = trades[r]
    head[r] += 1
    closed[r] += 1
    bo[r] = np.nan
    bh[r] = np.nan
    bl[r] = np.nan
    bc[r] = np.nan
    bv[r] = 0.0
    bvw[r] = np.nan
    f[_F_BAR_PV][r] = 0.0
    start[r] = 0
    trades[r] = 0
    iv[_I_BAR_FIRST_TS][r] = 0
    iv[_I_BAR_LAST_TS][r] = 0
    return n_out + 1


@njit(cache=True, nogil=True)
def _cancel(r: int, t: int, p: float, q: float, f: FCols, iv: ICols, bounds: np.ndarray) -> None:
    """Take a print back out of row r's live bar and the day's sums (module docstring)."""
    bv, bvw, d_vol, vwap = f[_F_BAR_VOLUME], f[_F_BAR_VWAP], f[_F_DAY_VOLUME], f[_F_VWAP]
    pm_vol, bpv, s_pv, s_vol = f[_F_PREMARKET_VOLUME], f[_F_BAR_PV], f[_F_SESSION_PV], f[_F_SESSION_VOLUME]
    trades, d_trades = iv[_I_BAR_TRADES], iv[_I_DAY_TRADES]
    bv[r] -= q
    bpv[r] -= p * q
    bvw[r] = bpv[r] / bv[r] if bv[r] > 0 else np.nan
    trades[r] -= 1
    d_vol[r] -= q
    d_trades[r] -= 1
    if bounds[1] <= t < bounds[2]:
        pm_vol[r] -= q
    elif bounds[2] <= t < bounds[3]:
        s_pv[r] -= p * q
        s_vol[r] -= q
        vwap[r] = s_pv[r] / s_vol[r] if s_vol[r] > 0 else np.nan


@njit(cache=True, nogil=True)
def _repair(b: np.ndarray, f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, bounds: np.ndarray,
            accepted: np.ndarray) -> int:
    """Insert repaired closed bars (BAR_DTYPE, by symbol then minute) into the history ring and
    the day statistics; `accepted[j]` says which went in. Returns how many."""
    d_open, d_high, d_low, d_vol = f[_F_DAY_OPEN], f[_F_DAY_HIGH], f[_F_DAY_LOW], f[_F_DAY_VOLUME]
    n_hod, vwap, pm_high, pm_low = f[_F_NEW_HOD_COUNT], f[_F_VWAP], f[_F_PREMARKET_HIGH], f[_F_PREMARKET_LOW]
    pm_vol, s_pv, s_vol, last_px = f[_F_PREMARKET_VOLUME], f[_F_SESSION_PV], f[_F_SESSION_VOLUME], f[_F_LAST_PX]
    start, closed, d_trades = iv[_I_BAR_START], iv[_I_BARS_CLOSED], iv[_I_DAY_TRADES]
    hod_ts, d_open_ts, lod_ts, n_lod = iv[_I_HOD_TS], iv[_I_DAY_OPEN_TS], iv[_I_LOD_TS], f[_F_NEW_LOD_COUNT]
    pre, opn, cls = bounds[1], bounds[2], bounds[3]
    k = hist.shape[2]
    n_ok = 0
    for j in range(b.shape[0]):
        r = b[j].sym
        m = b[j].minute_ns
        h = head[r]
        accepted[j] = False
        if m < bounds[0] or m >= bounds[4] or (start[r] != 0 and start[r] <= m):
            continue
        if h > 0 and np.int64(hist[_H_MIN, r, (h - 1) % k]) * MINUTE_NS >= m:
            continue
        o, hi, lo, c, v, vw = b[j].open, b[j].high, b[j].low, b[j].close, b[j].volume, b[j].vwap
        slot = h % k
        hist[_H_MIN, r, slot] = m // MINUTE_NS
        hist[_H_O, r, slot] = o
        hist[_H_H, r, slot] = hi
        hist[_H_L, r, slot] = lo
        hist[_H_C, r, slot] = c
        hist[_H_V, r, slot] = v
        hist[_H_VW, r, slot] = vw
        hist[_H_T, r, slot] = b[j].trades
        head[r] = h + 1
        closed[r] += 1
        last_px[r] = c
        d_vol[r] += v
        d_trades[r] += b[j].trades
        if pre <= m < opn:
            pm_vol[r] += v
            if np.isnan(pm_high[r]) or hi > pm_high[r]:
                pm_high[r] = hi
            if np.isnan(pm_low[r]) or lo < pm_low[r]:
                pm_low[r] = lo
        elif opn <= m < cls:
            s_pv[r] += (vw if vw == vw else c) * v
            s_vol[r] += v
            if s_vol[r] > 0:
                vwap[r] = s_pv[r] / s_vol[r]
            if np.isnan(d_open[r]) or m < d_open_ts[r]:
                d_open[r] = o
                d_open_ts[r] = m
            if np.isnan(d_high[r]):
                d_high[r] = hi
                hod_ts[r] = m
            elif hi > d_high[r]:
                d_high[r] = hi
                hod_ts[r] = m
                n_hod[r] += 1.0
            if np.isnan(d_low[r]):
                d_low[r] = lo
                lod_ts[r] = m
            elif lo < d_low[r]:
                d_low[r] = lo
                lod_ts[r] = m
                n_lod[r] += 1.0
        accepted[j] = True
        n_ok += 1
    return n_ok


@njit(cache=True, nogil=True)
def _sweep(f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, meta: np.ndarray, out: np.ndarray,
           n_out: int, rows_state: np.ndarray, which: int) -> int:
    """Close every live bar whose minute ended at or before the watermark, of the rows whose
    `rows_state` is `which` (the others run on another clock, or not at all: `ROW_*`)."""
    wm = meta[META_WATERMARK]
    if meta[META_MIN_START] > wm - MINUTE_NS:
        return n_out
    start = iv[_I_BAR_START]
    lowest = _BIG
    for r in range(start.shape[0]):
        s = start[r]
        if s != 0 and rows_state[r] == which:
            if s + MINUTE_NS <= wm:
                n_out = _close_row(r, f, iv, hist, head, out, n_out)
            elif s < lowest:
                lowest = s
    meta[META_MIN_START] = lowest
    return n_out


@njit(cache=True, nogil=True)
def _ingest(sym: np.ndarray, flags: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray, f: FCols,
            iv: ICols, hist: np.ndarray, head: np.ndarray, meta: np.ndarray, bounds: np.ndarray, grace: int,
            out: np.ndarray, rows_state: np.ndarray, which: int) -> int:
    """Merge ticks (all before bounds[4], the day's end) into live bars and day statistics;
    close bars superseded by a later minute, then those due by the watermark. Returns the
    number of bars written to `out`."""
    (bo, bh, bl, bc, bv, bvw, d_open, d_high, d_low, d_vol, n_hod, vwap, pm_high, pm_low, pm_vol, bpv, s_pv, s_vol,
     _last_px, n_lod) = f  # `_F_COLS` order
    start, trades, _closed, d_trades, hod_ts, first_ts, last_ts, d_open_ts, lod_ts = iv
    day_start, pre, opn, cls = bounds[0], bounds[1], bounds[2], bounds[3]
    n_out = 0
    wm = meta[META_WATERMARK]
    max_ts = meta[META_MAX_TS]
    late = 0
    for k in range(sym.shape[0]):
        r = sym[k]
        t = ts[k]
        m = t - t % MINUTE_NS
        s0 = start[r]
        if flags[k] & _CANCEL:
            if s0 != 0 and m == s0 and bv[r] >= sz[k] and t >= day_start:
                _cancel(r, t, px[k], sz[k], f, iv, bounds)
                meta[META_CANCELS] += 1
            else:
                meta[META_CANCEL_SKIP] += 1
            continue
        if t < day_start or m + MINUTE_NS <= wm or (s0 != 0 and m < s0):
            late += 1
            continue
        if flags[k] & TICK_NO_VOLUME:  # a report, not a trade: only event time moves
            if t > max_ts:
                max_ts = t
                if t - grace > wm:
                    wm = t - grace
                    meta[META_WATERMARK] = wm
            continue
        if s0 == 0 and head[r] > 0 and np.int64(hist[_H_MIN, r, (head[r] - 1) % hist.shape[2]]) * MINUTE_NS >= m:
            late += 1  # that minute is already closed in the history (e.g. a repaired bar): late
            continue
        if s0 != 0 and m > s0:
            n_out = _close_row(r, f, iv, hist, head, out, n_out)
            s0 = 0
        p = px[k]
        q = sz[k]
        if s0 == 0:
            start[r] = m
            if m < meta[META_MIN_START]:
                meta[META_MIN_START] = m
        trades[r] += 1
        bv[r] += q
        bpv[r] += p * q
        bvw[r] = bpv[r] / bv[r] if bv[r] > 0 else np.nan
        priced = (flags[k] & _NO_PRICE) == 0
        if priced:
            if np.isnan(bo[r]):
                bo[r], bh[r], bl[r], bc[r] = p, p, p, p
                first_ts[r] = t
                last_ts[r] = t
            else:
                if t < first_ts[r]:
                    bo[r] = p
                    first_ts[r] = t
                if t >= last_ts[r]:
                    bc[r] = p
                    last_ts[r] = t
                if p > bh[r]:
                    bh[r] = p
                if p < bl[r]:
                    bl[r] = p
        d_vol[r] += q
        d_trades[r] += 1
        if pre <= t < opn:
            pm_vol[r] += q
            if priced:
                if np.isnan(pm_high[r]) or p > pm_high[r]:
                    pm_high[r] = p
                if np.isnan(pm_low[r]) or p < pm_low[r]:
                    pm_low[r] = p
        elif opn <= t < cls:
            s_pv[r] += p * q
            s_vol[r] += q
            if s_vol[r] > 0:
                vwap[r] = s_pv[r] / s_vol[r]
            if priced:
                if np.isnan(d_open[r]) or t < d_open_ts[r]:
                    d_open[r] = p
                    d_open_ts[r] = t
                if np.isnan(d_high[r]):
                    d_high[r] = p
                    hod_ts[r] = t
                elif p > d_high[r]:
                    d_high[r] = p
                    hod_ts[r] = t
                    n_hod[r] += 1.0
                if np.isnan(d_low[r]):
                    d_low[r] = p
                    lod_ts[r] = t
                elif p < d_low[r]:
                    d_low[r] = p
                    lod_ts[r] = t
                    n_lod[r] += 1.0
        if t > max_ts:
            max_ts = t
            if t - grace > wm:
                wm = t - grace
                meta[META_WATERMARK] = wm
    meta[META_MAX_TS] = max_ts
    meta[META_TICKS] += sym.shape[0]
    meta[META_LATE] += late
    return _sweep(f, iv, hist, head, meta, out, n_out, rows_state, which)


@njit(cache=True, nogil=True)
def _close_due(f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, meta: np.ndarray, watermark: int,
               out: np.ndarray, rows_state: np.ndarray) -> int:
    if watermark > meta[META_WATERMARK]:
        meta[META_WATERMARK] = watermark
    return _sweep(f, iv, hist, head, meta, out, 0, rows_state, ROW_LIVE)


class BarAggregator:
    """1-minute bars for every row of the symbol table, fed with batches of TICK_DTYPE ticks.

    `columns`: name -> 1-D array (length n_rows, C-contiguous; float64 or int64 as the catalogue
    says) for every bars-owned catalogue column (`BAR_COLUMNS`). `hist` (len(HIST_FIELDS),
    n_rows, K) float64 and `hist_head` (n_rows,) int64 are the bar-history ring: bar j of row r
    is in slot j % K. `state` holds the `AGG_STATE` arrays and a `meta` int64 vector of
    META_LEN (from `new_state`; private arrays when omitted). `grace_ns`: how long after a
    minute ends (in event time) late ticks of that minute are still merged.

    Calls: `on_ticks(ticks) -> closed bars`, `close_due(watermark_ns) -> closed bars`,
    `close_all()`, `reset_day(day)`; counters `ticks`, `late_ticks`, `watermark_ns`, `day`.
    The kernels write the columns and the ring in place and know nothing of seqlocks: the
    caller brackets each call with its writer, for the rows in `ticks["sym"]` plus the rows
    of the returned bars (or simply every block).
    """

    def __init__(self, columns: Mapping[str, np.ndarray], hist: np.ndarray, hist_head: np.ndarray, *,
                 state: Mapping[str, np.ndarray] | None = None, grace_ns: int = 2 * NS,
                 rows_state: np.ndarray | None = None) -> None:
        if grace_ns < 0:
            raise ValueError(f"'grace_ns' must be non-negative, was {grace_ns}")
        n = len(hist_head)
        if hist.ndim != 3 or hist.shape[:2] != (len(HIST_FIELDS), n) or hist.dtype != np.float64:
            raise ValueError(f"'hist' must be float64 ({len(HIST_FIELDS)}, {n}, K), "
                             f"was {hist.dtype} {hist.shape}")
        if hist_head.dtype != np.int64:
            raise ValueError(f"'hist_head' must be int64, was {hist_head.dtype}")
        st = dict(state) if state is not None else self.new_state(n)
        cols = {**{k: columns[k] for k in BAR_COLUMNS}, **{k: st[k] for k in AGG_STATE}}
        for name, arr in cols.items():
            want = np.int64 if name in _I_COLS else np.float64
            if arr.dtype != want or arr.shape != (n,) or not arr.flags.c_contiguous:
                raise ValueError(f"column {name!r} must be C-contiguous {np.dtype(want)} ({n},), "
                                 f"was {arr.dtype} {arr.shape}")
        if rows_state is not None and (rows_state.dtype != np.uint8 or rows_state.shape != (n,)):
            raise ValueError(f"'rows_state' must be uint8 ({n},), was {rows_state.dtype} {rows_state.shape}")
        self.rows_state = rows_state if rows_state is not None else np.zeros(n, np.uint8)  # ROW_*
        self.n_rows = n
        self.columns = cols
        self.hist, self.hist_head = hist, hist_head
        self.meta: np.ndarray = st["meta"]
        self.grace_ns = int(grace_ns)
        self._f = tuple(cols[k] for k in _F_COLS)
        self._i = tuple(cols[k] for k in _I_COLS)
        self._out = np.empty(1024 + n, BAR_DTYPE)
        self._bounds = np.zeros(5, np.int64)
        if self.meta[META_DAY]:
            self._set_bounds(int(self.meta[META_DAY]))

    @staticmethod
    def new_state(n_rows: int) -> dict[str, np.ndarray]:
        """Fresh private state: `AGG_STATE` arrays plus `meta` (int64, META_LEN). To survive a
        restart, allocate the same arrays in shared memory instead and `init_state` them once."""
        st = {k: np.zeros(n_rows, dt) for k, dt in AGG_STATE.items()}
        st["meta"] = np.zeros(META_LEN, np.int64)
        BarAggregator.init_state(st)
        return st

    @staticmethod
    def init_state(state: Mapping[str, np.ndarray], rows: np.ndarray | slice = slice(None)) -> None:
        """Set state arrays (e.g. fresh shared memory) to their empty values, in place; with
        `rows`, only those rows' (the `meta` vector is left alone)."""
        for k in AGG_STATE:
            state[k][rows] = np.nan if k == "last_px" else 0
        if isinstance(rows, slice):
            state["meta"][:] = 0
            state["meta"][META_MIN_START] = _BIG

    @staticmethod
    def init_columns(columns: Mapping[str, np.ndarray], rows: np.ndarray | slice = slice(None)) -> None:
        """Set the bars-owned columns (of `rows`) to their empty values (NaN prices, zero counts)."""
        for name in BAR_COLUMNS:
            arr = columns[name]
            arr[rows] = 0 if arr.dtype == np.int64 or name.endswith(("volume", "count")) else np.nan

    # ---- counters
    @property
    def ticks(self) -> int:
        """Ticks offered (late ones included)."""
        return int(self.meta[META_TICKS])

    @property
    def late_ticks(self) -> int:
        return int(self.meta[META_LATE])

    @property
    def cancels_applied(self) -> int:
        return int(self.meta[META_CANCELS])

    @property
    def cancels_skipped(self) -> int:
        return int(self.meta[META_CANCEL_SKIP])

    @property
    def watermark_ns(self) -> int:
        return int(self.meta[META_WATERMARK])

    @property
    def day(self) -> int:
        """Current trading day (yyyymmdd), 0 before the first tick."""
        return int(self.meta[META_DAY])

    # ---- work
    def on_ticks(self, ticks: np.ndarray) -> np.ndarray:
        """Aggregate a batch (any order; rows must be < n_rows). Returns a copy of the bars it
        closed: superseded by a later minute, due by the watermark, or ended by a day roll."""
        if ticks.dtype != TICK_DTYPE:
            raise TypeError(f"'ticks' must be TICK_DTYPE, was {ticks.dtype}")
        if len(ticks) and int(ticks["sym"].max()) >= self.n_rows:
            raise ValueError(f"tick row {int(ticks['sym'].max())} is outside the table ({self.n_rows} rows)")
        done: list[np.ndarray] = []
        while len(ticks):
            ts = ticks["ts_ns"]
            if not self.meta[META_DAY]:
                done.append(self.reset_day(trading_day(int(ts[0]))))
            beyond = ts >= self._bounds[4]
            cut = int(np.argmax(beyond)) if beyond.any() else len(ticks)
            done.append(self._run(ticks[:cut]))
            ticks = ticks[cut:]
            if len(ticks):  # the first tick of a later day: roll to its day
                day = self.day
                while session_bounds_ns(day)["day_end"] <= int(ticks["ts_ns"][0]):
                    day = next_day(day)
                done.append(self.reset_day(day))
        return _concat(done)

    def _run(self, t: np.ndarray, meta: np.ndarray | None = None, which: int = ROW_LIVE,
             grace_ns: int | None = None) -> np.ndarray:
        if len(t) == 0:
            return np.empty(0, BAR_DTYPE)
        if len(self._out) < len(t) + self.n_rows:
            self._out = np.empty(len(t) + self.n_rows, BAR_DTYPE)
        n = _ingest(t["sym"], t["flags"], t["ts_ns"], t["price"], t["size"], self._f, self._i, self.hist,
                    self.hist_head, meta if meta is not None else self.meta, self._bounds,
                    self.grace_ns if grace_ns is None else grace_ns, self._out,
                    self.rows_state, which)
        return self._out[:n].copy()

    def on_rebuild_ticks(self, ticks: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """Aggregate a batch of a rebuild: ticks of ROW_REBUILDING rows only, a replay of their day
        in feed order, counted in `meta` (a META_LEN vector from `reset_rows`). No watermark runs
        here: the live one is past all of them, and partitions replay at different paces, so a
        clock shared by the rows being rebuilt would make the slower ones late. A rebuilt bar
        closes on its row's next minute, or on the live watermark once the row is live (`set_live`);
        for a feed without late ticks these are the bars a live run closed. Ticks of another day
        than the aggregator's are late. Returns the bars it closed."""
        if len(ticks) == 0:
            return np.empty(0, BAR_DTYPE)
        if not self.meta[META_DAY]:  # the first ticks this host sees are a rebuild's
            self.reset_day(trading_day(int(ticks["ts_ns"][-1])))
        beyond = ticks["ts_ns"] >= self._bounds[4]
        if beyond.any():
            meta[META_LATE] += int(beyond.sum())
            ticks = ticks[~beyond]
        meta[META_DAY] = self.meta[META_DAY]
        return self._run(ticks, meta, ROW_REBUILDING, _BIG)

    def reset_rows(self, rows: np.ndarray, meta: np.ndarray) -> None:
        """Empty `rows` (live bar, day statistics, private state, bar history) before a rebuild
        replays their day, mark them ROW_REBUILDING and start the rebuild counters `meta` over."""
        self.init_columns(self.columns, rows)
        self.init_state(self.columns, rows)
        self.hist[:, rows, :] = np.nan
        self.hist_head[rows] = 0
        self.rows_state[rows] = ROW_REBUILDING
        meta[:] = 0
        meta[META_MIN_START] = _BIG

    def set_live(self, rows: np.ndarray) -> None:
        """Rebuilt `rows` join the live clock (their open bars close on the live watermark)."""
        self.rows_state[rows] = ROW_LIVE
        self.meta[META_MIN_START] = 0  # their live bars may start before the live rows' earliest

    def close_due(self, watermark_ns: int) -> np.ndarray:
        """Raise the watermark to `watermark_ns` (e.g. from the wall clock while the feed is
        quiet) and close every live bar whose minute ended at or before it."""
        n = _close_due(self._f, self._i, self.hist, self.hist_head, self.meta, int(watermark_ns), self._out,
                       self.rows_state)
        return self._out[:n].copy()

    def insert_repaired(self, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Insert repaired closed bars (BAR_DTYPE) of the current day: first close every live bar
        up to the earliest of their minutes (what came after was missed), then put
        each bar newer than its row's history and older than its live bar into the history ring
        and the day statistics. Returns (live bars this closed, repaired bars taken by symbol
        then minute); both belong in the closed-bar ring, in that order."""
        empty = np.empty(0, BAR_DTYPE)
        if len(bars) == 0 or not self.meta[META_DAY]:
            return empty, empty
        if int(bars["sym"].max()) >= self.n_rows:
            raise ValueError(f"bar row {int(bars['sym'].max())} is outside the table ({self.n_rows} rows)")
        b = bars[np.lexsort((bars["minute_ns"], bars["sym"]))]
        closed = self.close_due(int(b["minute_ns"].min()) + MINUTE_NS)
        ok = np.zeros(len(b), np.bool_)
        _repair(b, self._f, self._i, self.hist, self.hist_head, self._bounds, ok)
        return closed, b[ok]

    def close_all(self) -> np.ndarray:
        """Close every live bar now (end of data or of the day); later ticks of those minutes
        are late."""
        wm = max(self.watermark_ns, int(self.meta[META_MAX_TS]) - int(self.meta[META_MAX_TS]) % MINUTE_NS
                 + MINUTE_NS)
        return self.close_due(wm)

    def reset_day(self, day: int) -> np.ndarray:
        """Start trading day `day` (yyyymmdd): close all live bars (returned), clear the day
        statistics and `bars_closed`. History, watermark and counters carry on."""
        closed = self.close_all() if self.meta[META_DAY] else np.empty(0, BAR_DTYPE)
        c = self.columns
        for name in ("day_open", "day_high", "day_low", "vwap", "premarket_high", "premarket_low"):
            c[name][:] = np.nan
        for name in ("day_volume", "new_hod_count", "premarket_volume", "session_pv", "session_volume",
                     "day_trades", "hod_ts_ns", "day_open_ts_ns", "bars_closed", "new_lod_count", "lod_ts_ns"):
            c[name][:] = 0
        self.meta[META_DAY] = day
        self._set_bounds(day)
        return closed

    def _set_bounds(self, day: int) -> None:
        b = session_bounds_ns(day)
        self._bounds[:] = (b["day_start"], b["premarket"], b["open"], b["close"], b["day_end"])


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty(0, BAR_DTYPE)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def new_columns(n_rows: int) -> dict[str, np.ndarray]:
    """Private bars-owned columns with empty values (tests, benchmarks, offline replays)."""
    cols = {m.name: np.zeros(n_rows, np.int64 if m.dtype == "i8" else np.float64)
            for m in CATALOGUE.owned_by(Owner.BARS)}
    BarAggregator.init_columns(cols)
    return cols


def new_history(n_rows: int, depth: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Private bar-history ring (NaN) and head counts."""
    return np.full((len(HIST_FIELDS), n_rows, depth), np.nan), np.zeros(n_rows, np.int64)


def warm_up() -> None:
    """Compile (the first time on a machine) or load from numba's cache every bar kernel, with
    the argument kinds the bar process passes (table columns, a TICK_DTYPE batch's fields, the
    history ring), so a process pays for it before its first heartbeat instead of stalling its
    loop at the first tick or minute close (issue 10.1)."""
    agg = BarAggregator(new_columns(2), *new_history(2, 4), grace_ns=0)
    open_ns = session_bounds_ns(20260105)["open"]
    t = np.zeros(2, TICK_DTYPE)
    t["sym"], t["ts_ns"], t["price"], t["size"] = [0, 1], [open_ns + 1, open_ns + 2], 10.0, 100.0
    agg.on_ticks(t)
    agg.close_due(open_ns + 2 * MINUTE_NS)
