"""A refresh restricted to the changed rows (`scanner.indicators.live_rows`) gives, bit for bit,
what a refresh of every row gives: real ticks (Lean US equities, October 2013, four symbols)
through the bar aggregator and the higher timeframes as the processes run them, the indicators
refreshed at every event second from 09:27 to 10:01 (pre-market, the open, the opening ranges,
5/15/60-minute closes), once over every row and once over the rows `ChangedRows` gives."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.bars import BarAggregator, new_history
from scanner.feeds.common import SymbolMap
from scanner.feeds.lean import lean_tick_files, read_lean_ticks
from scanner.indicators.engine import INDICATOR_COLUMNS, IndicatorEngine
from scanner.indicators.live_rows import ChangedRows
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.indicators.volume import MINUTES_PER_DAY
from scanner.metrics import CATALOGUE, Owner
from scanner.session import MINUTE_NS, NS, session_bounds_ns
from scanner.ticks import LastTradeWriter
from scanner.timeframes import TimeframeBars
from tests.scanner.helpers import data_path, table_columns

DAY = 20131008
OPEN = session_bounds_ns(DAY)["open"]
GRACE = 2 * NS


class _Stack:
    """The indicators process's state: engine, higher timeframes, output columns of its own
    over the shared input columns."""

    def __init__(self, inputs: dict[str, np.ndarray], n: int, profile: np.ndarray | None) -> None:
        self.engine = IndicatorEngine(n)
        self.engine.load_volume_profile(profile)
        self.tfb, self.tfi = TimeframeBars(n), TimeframeIndicators(n)
        self.cols = {**inputs, **{k: np.full(n, np.nan) for k in INDICATOR_COLUMNS}}

    def fold(self, closed: np.ndarray, wm: int) -> list[np.ndarray]:
        self.engine.on_bars_closed(closed)
        parts = self.tfb.on_bars_closed(closed)
        self.tfi.on_bars_closed(parts)
        due = self.tfb.close_due(wm)
        self.tfi.on_bars_closed(due)
        return parts + due

    def bits(self) -> np.ndarray:
        """Every output column's bit patterns (NaN equals NaN), one row per column."""
        return np.stack([self.cols[k] for k in INDICATOR_COLUMNS]).view(np.int64)

    def refresh(self, event_ns: int, rows: np.ndarray | None) -> None:
        self.engine.update_live(self.cols, event_ns, rows)
        self.tfi.update_live(self.cols, self.tfb, event_ns, rows)


@pytest.fixture(scope="module")
def ticks() -> tuple[np.ndarray, int]:
    syms = SymbolMap()
    files = lean_tick_files(data_path("lean-us-equity"), days=[DAY])
    t = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, batch_size=100_000)])
    t = t[t["ts_ns"] < OPEN + 35 * MINUTE_NS]
    # two symbols go quiet for whole minutes (at random, and all but every 7th minute), so that
    # higher-timeframe bars close on the watermark alone and rows skip refreshes
    minute = t["ts_ns"] // MINUTE_NS
    quiet = np.random.default_rng(4).random(minute.max() - minute.min() + 1) < 0.6
    keep = ~((t["sym"] == 0) & quiet[minute - minute.min()]) & ~((t["sym"] == 2) & (minute % 7 != 0))
    return t[keep], len(syms.names)


def test_changed_rows_refresh_equals_a_full_refresh(ticks: tuple[np.ndarray, int]) -> None:
    t, n = ticks
    table = table_columns(n)
    BarAggregator.init_columns(table)
    table["prev_close"][:] = t["price"][:n] * 0.99  # any positive reference will do
    table["prev_close"][1] = np.nan
    table["avg_daily_volume"][:] = 5e6
    table["high_52w"][:], table["low_52w"][:] = 200.0, 10.0
    table["halted"][:] = 0.0
    agg = BarAggregator(table, *new_history(n), grace_ns=GRACE)
    last = LastTradeWriter(table["price"], table["last_size"], table["last_ts_ns"], table["tick_count"])
    inputs = {m.name: table[m.name] for m in CATALOGUE.metrics if m.owner != Owner.INDICATORS}
    rng = np.random.default_rng(5)
    profile = np.cumsum(rng.uniform(0, 1e4, (n, MINUTES_PER_DAY)), axis=1)
    full, part = _Stack(inputs, n, profile), _Stack(inputs, n, profile)
    changed = ChangedRows(n)
    ts = t["ts_ns"]
    start = OPEN - 3 * MINUTE_NS
    i = int(np.searchsorted(ts, start))
    agg.on_ticks(t[:i])  # pre-market before the window: bars, no refresh
    last.apply(t[:i])
    restricted = boundaries = 0
    for b in range(start, OPEN + 31 * MINUTE_NS, NS):
        j = int(np.searchsorted(ts, b, side="right"))
        closed = [agg.on_ticks(t[i:j])]
        last.apply(t[i:j])
        i = j
        closed.append(agg.close_due(b - GRACE))
        bars = np.concatenate(closed)
        full.fold(bars, b - GRACE)
        changed.mark(bars["sym"])
        for p in part.fold(bars, b - GRACE):
            changed.mark(p["sym"])
        rows = changed.take(part.cols, b)
        full.refresh(b, None)
        part.refresh(b, rows)
        restricted += len(rows) < n
        boundaries += 1
        got, want = part.bits(), full.bits()
        if not np.array_equal(got, want):
            bad = [k for k, x, y in zip(INDICATOR_COLUMNS, got, want, strict=True) if not np.array_equal(x, y)]
            pytest.fail(f"{bad} differ at {(b - OPEN) / NS:+.0f} s from the open (rows {rows})")
    assert boundaries == 34 * 60
    assert restricted > boundaries // 2, "most refreshes must skip a quiet row, else nothing is tested"


def test_changed_rows_take_marks_inputs_and_minutes() -> None:
    cols = {"x": np.array([1.0, np.nan, 3.0]), "k": np.array([0, 5, 7], np.int64)}
    c = ChangedRows(3, ("x", "k", "x"))
    m0 = session_bounds_ns(DAY)["open"]
    assert c.take(cols, m0 + NS).tolist() == [0, 1, 2]  # the first refresh takes every row
    assert c.take(cols, m0 + 2 * NS).tolist() == []  # NaN equals NaN
    cols["x"][2] = 4.0
    cols["k"][0] = 1
    c.mark(np.array([1]))
    assert c.take(cols, m0 + 3 * NS).tolist() == [0, 1, 2]
    assert c.take(cols, m0 + 4 * NS).tolist() == []  # marks are cleared by a take
    cols["x"][1] = -0.0
    cols["x"][0] = 1.0  # unchanged value written again
    assert c.take(cols, m0 + 5 * NS).tolist() == [1]
    assert c.take(cols, m0 + MINUTE_NS).tolist() == [0, 1, 2]  # a new minute takes every row
    with pytest.raises(ValueError, match="'n_rows' must be positive, was 0"):
        ChangedRows(0, ("x",))
