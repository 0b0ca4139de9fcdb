"""The bar aggregator's numba kernels: ticks merged into live bars, bars closed into the history
ring, cancels and repaired bars applied, all in place over the caller's 1-D column arrays.

The semantics (minutes, watermark, late ticks, sessions, cancels, repairs) are stated once, in
`scanner.bars`, whose `BarAggregator` owns the arrays and calls `ingest`, `close_due` and
`repair`. The columns are passed as two tuples in the order of `F_COLS` (float64) and `I_COLS`
(int64); `meta` is the int64 vector of the `META_*` slots. The kernels know nothing of seqlocks:
the caller brackets each call with its writer.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.metrics import HIST, HIST_FIELDS
from scanner.prefetch import prefetch, ring_slot
from scanner.records import TICK_CANCEL, TICK_NO_PRICE, TICK_NO_VOLUME
from scanner.session import MINUTE_NS
from scanner.ticks import MAX_PRICE, MIN_PRICE

# float64 columns of the kernel, in kernel order: the table's bars-owned ones, then private state
F_COLS = ("bar_open", "bar_high", "bar_low", "bar_close", "bar_volume", "bar_vwap", "day_open",
          "day_high", "day_low", "day_volume", "new_hod_count", "vwap", "premarket_high",
          "premarket_low", "premarket_volume", "bar_pv", "session_pv", "session_volume", "last_px",
          "new_lod_count")
I_COLS = ("bar_start_ns", "bar_trades", "bars_closed", "day_trades", "hod_ts_ns", "bar_first_ts_ns",
          "bar_last_ts_ns", "day_open_ts_ns", "lod_ts_ns")

# kernel slot of each column: `f[_F_BAR_PV]` reads like the column it is (numba folds the constants)
(_F_BAR_OPEN, _F_BAR_HIGH, _F_BAR_LOW, _F_BAR_CLOSE, _F_BAR_VOLUME, _F_BAR_VWAP, _F_DAY_OPEN, _F_DAY_HIGH,
 _F_DAY_LOW, _F_DAY_VOLUME, _F_NEW_HOD_COUNT, _F_VWAP, _F_PREMARKET_HIGH, _F_PREMARKET_LOW,
 _F_PREMARKET_VOLUME, _F_BAR_PV, _F_SESSION_PV, _F_SESSION_VOLUME, _F_LAST_PX, _F_NEW_LOD_COUNT) = range(len(F_COLS))
(_I_BAR_START, _I_BAR_TRADES, _I_BARS_CLOSED, _I_DAY_TRADES, _I_HOD_TS, _I_BAR_FIRST_TS, _I_BAR_LAST_TS,
 _I_DAY_OPEN_TS, _I_LOD_TS) = range(len(I_COLS))

# meta vector slots (int64); keep it in shared memory next to the state to survive a restart
META_MAX_TS, META_WATERMARK, META_TICKS, META_LATE, META_DAY, META_MIN_START = range(6)
META_LEN = 10
META_PUBLISHED = 6  # watermark whose closed bars are all in the closed-bar ring (set by the bar process)
META_CANCELS, META_CANCEL_SKIP = 7, 8  # cancels applied to a live bar / skipped (minute already closed)
_NO_PRICE = TICK_NO_PRICE
_CANCEL = TICK_CANCEL
_H_MIN, _H_O, _H_H, _H_L, _H_C, _H_V, _H_VW, _H_T = (HIST[k] for k in HIST_FIELDS)
_AHEAD = 8  # rows ahead whose history record a close asks for (`scanner.prefetch`)
NO_LIVE_BAR = np.iinfo(np.int64).max  # META_MIN_START when no row has a live bar
# A row's state in Kafka group mode (`rows_state`, uint8): LIVE rows run on the aggregator's
# watermark (every row of a fixed-range host); REBUILDING rows' day is being replayed
# (`BarAggregator.on_rebuild_ticks`), so the live watermark must not close their bars; AWAY rows
# belong to another host: no sweep touches them.
ROW_LIVE, ROW_REBUILDING, ROW_AWAY = 0, 1, 2
FCols = tuple[np.ndarray, ...]  # the float64 kernel columns, `F_COLS` order
ICols = tuple[np.ndarray, ...]  # the int64 kernel columns, `I_COLS` order


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
    # (the VWAP of in-range prices is in range, but its rounding can step an ulp outside it)
    lp = last_px[r]
    vw_in = MIN_PRICE if vw < MIN_PRICE else (MAX_PRICE if vw > MAX_PRICE else vw)  # NaN stays NaN
    fallback = lp if lp == lp else vw_in
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
def repair(b: np.ndarray, f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, bounds: np.ndarray,
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
    `rows_state` is `which` (the others are being rebuilt, or belong to another host: `ROW_*`)."""
    wm = meta[META_WATERMARK]
    if meta[META_MIN_START] > wm - MINUTE_NS:
        return n_out
    start = iv[_I_BAR_START]
    lowest = NO_LIVE_BAR
    n = start.shape[0]
    k = hist.shape[2]
    inv_k = 1.0 / k
    for r in range(n):
        ahead = r + _AHEAD
        if ahead < n and start[ahead] != 0:  # its history record, at a slot of the row's own
            prefetch(hist, np.uint64(0), np.uint64(ahead), np.uint64(ring_slot(head[ahead], k, inv_k)))
        s = start[r]
        if s != 0 and rows_state[r] == which:
            if s + MINUTE_NS <= wm:
                n_out = _close_row(r, f, iv, hist, head, out, n_out)
            elif s < lowest:
                lowest = s
    meta[META_MIN_START] = lowest
    return n_out


@njit(cache=True, nogil=True)
def ingest(sym: np.ndarray, flags: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray, f: FCols,
            iv: ICols, hist: np.ndarray, head: np.ndarray, meta: np.ndarray, bounds: np.ndarray, grace: int,
            out: np.ndarray, rows_state: np.ndarray, which: int) -> int:
    """Merge ticks (all before bounds[4], the day's end) into live bars and day statistics;
    close bars superseded by a later minute, then those due by the watermark. Returns the
    number of bars written to `out`."""
    (bo, bh, bl, bc, bv, bvw, d_open, d_high, d_low, d_vol, n_hod, vwap, pm_high, pm_low, pm_vol, bpv, s_pv, s_vol,
     _last_px, n_lod) = f  # `F_COLS` order
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
def close_due(f: FCols, iv: ICols, hist: np.ndarray, head: np.ndarray, meta: np.ndarray, watermark: int,
               out: np.ndarray, rows_state: np.ndarray) -> int:
    """Raise the watermark to `watermark` (never lower it) and close the due bars of ROW_LIVE rows."""
    if watermark > meta[META_WATERMARK]:
        meta[META_WATERMARK] = watermark
    return _sweep(f, iv, hist, head, meta, out, 0, rows_state, ROW_LIVE)
