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

The numba kernels that do the per-tick work are in `scanner.bar_kernels`; this module holds the
Python side: argument checks, state allocation, day rolls and the warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from scanner.bar_kernels import (
    F_COLS,
    I_COLS,
    META_CANCEL_SKIP,
    META_CANCELS,
    META_DAY,
    META_LATE,
    META_LEN,
    META_MAX_TS,
    META_MIN_START,
    META_TICKS,
    META_WATERMARK,
    NO_LIVE_BAR,
    ROW_LIVE,
    ROW_REBUILDING,
    close_due,
    ingest,
    repair,
)
from scanner.metrics import CATALOGUE, HIST_FIELDS, Owner
from scanner.records import BAR_DTYPE, TICK_DTYPE
from scanner.session import MINUTE_NS, NS, next_day, session_bounds_ns, trading_day
from shm.history import records
from shm.records import concat, copied

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

BAR_COLUMNS = tuple(m.name for m in CATALOGUE.owned_by(Owner.BARS))

assert not set(BAR_COLUMNS) - set(F_COLS) - set(I_COLS), "a bars-owned column has no kernel slot"


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
            want = np.int64 if name in I_COLS else np.float64
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
        self._f = tuple(cols[k] for k in F_COLS)
        self._i = tuple(cols[k] for k in I_COLS)
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
            state["meta"][META_MIN_START] = NO_LIVE_BAR

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
        n = ingest(t["sym"], t["flags"], t["ts_ns"], t["price"], t["size"], self._f, self._i, self.hist,
                   self.hist_head, meta if meta is not None else self.meta, self._bounds,
                   self.grace_ns if grace_ns is None else grace_ns, self._out, self.rows_state, which)
        return copied(self._out[:n])

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
        return self._run(ticks, meta, ROW_REBUILDING, NO_LIVE_BAR)

    def reset_rows(self, rows: np.ndarray, meta: np.ndarray) -> None:
        """Empty `rows` (live bar, day statistics, private state, bar history) before a rebuild
        replays their day, mark them ROW_REBUILDING and start the rebuild counters `meta` over."""
        self.init_columns(self.columns, rows)
        self.init_state(self.columns, rows)
        self.hist[:, rows, :] = np.nan
        self.hist_head[rows] = 0
        self.rows_state[rows] = ROW_REBUILDING
        meta[:] = 0
        meta[META_MIN_START] = NO_LIVE_BAR

    def set_live(self, rows: np.ndarray) -> None:
        """Rebuilt `rows` join the live clock (their open bars close on the live watermark)."""
        self.rows_state[rows] = ROW_LIVE
        self.meta[META_MIN_START] = 0  # their live bars may start before the live rows' earliest

    def close_due(self, watermark_ns: int) -> np.ndarray:
        """Raise the watermark to `watermark_ns` (e.g. from the wall clock while the feed is
        quiet) and close every live bar whose minute ended at or before it."""
        n = close_due(self._f, self._i, self.hist, self.hist_head, self.meta, int(watermark_ns), self._out,
                      self.rows_state)
        return copied(self._out[:n])

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
        repair(b, self._f, self._i, self.hist, self.hist_head, self._bounds, ok)
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
    return parts[0] if len(parts) == 1 else concat(parts)


def new_columns(n_rows: int) -> dict[str, np.ndarray]:
    """Private bars-owned columns with empty values (tests, benchmarks, offline replays)."""
    cols = {m.name: np.zeros(n_rows, np.int64 if m.dtype == "i8" else np.float64)
            for m in CATALOGUE.owned_by(Owner.BARS)}
    BarAggregator.init_columns(cols)
    return cols


def new_history(n_rows: int, depth: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Private bar-history ring (NaN; laid out as the shared one, `shm.history.records`) and
    head counts."""
    hist = records(len(HIST_FIELDS), n_rows, depth)
    hist[:] = np.nan
    return hist, np.zeros(n_rows, np.int64)


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
    # one tick: numpy marks a one-element field view C-contiguous, another signature than a
    # longer batch's strided views, which would otherwise compile at the first lone tick
    one = t[:1].copy()
    one["ts_ns"] = open_ns + 3
    agg.on_ticks(one)
    agg.close_due(open_ns + 2 * MINUTE_NS)
