"""Live-feed additions to the bar aggregator: cancels inside the live minute, and repaired bars
from a gap repair going into history and the day in order, against bars built from real ticks."""

from __future__ import annotations

import numpy as np

from scanner.bars import BarAggregator, new_columns, new_history
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.lean import lean_tick_files, read_lean_ticks
from scanner.metrics import HIST
from scanner.records import TICK_CANCEL, TICK_DTYPE, TICK_NO_LAST
from scanner.session import MINUTE_NS, NS, session_bounds_ns
from tests.scanner.helpers import data_path

B = session_bounds_ns(20131008)


def _agg(n: int) -> tuple[BarAggregator, dict[str, np.ndarray]]:
    cols = new_columns(n)
    hist, head = new_history(n, 50)
    return BarAggregator(cols, hist, head), cols


def _ticks(rows: list[tuple[int, int, float, float, int]]) -> np.ndarray:
    t = np.zeros(len(rows), TICK_DTYPE)
    for i, (sym, ts, px, size, flags) in enumerate(rows):
        t[i] = (sym, flags, ts, px, size)
    return t


def test_cancel_in_live_minute_and_after_close() -> None:
    agg, c = _agg(1)
    m = B["open"] + 5 * MINUTE_NS
    agg.on_ticks(_ticks([(0, m + NS, 10.0, 100, 0), (0, m + 2 * NS, 10.2, 300, 0), (0, m + 3 * NS, 10.1, 100, 0)]))
    # cancel the 300 @ 10.2 print; a correction = cancel + the corrected print at the same time
    agg.on_ticks(_ticks([(0, m + 2 * NS, 10.2, 300, TICK_CANCEL | TICK_NO_LAST), (0, m + 2 * NS, 10.15, 200, 0)]))
    assert c["bar_volume"][0] == 400.0 and c["bar_trades"][0] == 3 and c["day_volume"][0] == 400.0
    np.testing.assert_allclose(c["bar_vwap"][0], (10.0 * 100 + 10.15 * 200 + 10.1 * 100) / 400)
    np.testing.assert_allclose(c["vwap"][0], c["bar_vwap"][0])
    assert c["bar_close"][0] == 10.1  # the close print stands
    assert agg.cancels_applied == 1
    bars = agg.on_ticks(_ticks([(0, m + MINUTE_NS + NS, 10.0, 100, 0),
                                (0, m + NS, 10.0, 100, TICK_CANCEL | TICK_NO_LAST)]))  # minute closed: skipped
    assert len(bars) == 1 and bars["volume"][0] == 400.0
    assert agg.cancels_skipped == 1 and agg.late_ticks == 0


def test_repaired_bars_fill_the_gap_like_the_real_ticks() -> None:
    """Drop 10 minutes of real SPY ticks, give the aggregator those minutes as repaired bars (the
    bars a full run built): history and day statistics end as in the full run."""
    lean = data_path("lean-us-equity")
    f = lean_tick_files(lean, ["SPY"], [20131008])
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(f, SymbolMap(["SPY"], grow=False), stats=FeedStats())])
    gap_lo, gap_hi = B["open"] + 60 * MINUTE_NS, B["open"] + 70 * MINUTE_NS
    full, fc = _agg(1)
    full_bars = np.concatenate([full.on_ticks(ticks), full.close_all()])
    part, pc = _agg(1)
    m = ticks["ts_ns"] - ticks["ts_ns"] % MINUTE_NS
    before, after = ticks[m < gap_lo], ticks[m >= gap_hi]
    out = [part.on_ticks(before)]
    missing = full_bars[(full_bars["minute_ns"] >= gap_lo) & (full_bars["minute_ns"] < gap_hi)]
    closed, taken = part.insert_repaired(missing)
    assert len(taken) == len(missing) == 10
    assert len(closed) == 1 and closed["minute_ns"][0] == gap_lo - MINUTE_NS  # the live bar before the gap
    assert len(part.insert_repaired(missing)[1]) == 0  # twice: nothing new
    out += [closed, taken, part.on_ticks(after), part.close_all()]
    got = np.concatenate(out)
    assert np.array_equal(got, full_bars)
    for k in ("day_volume", "day_high", "day_low", "day_open", "day_trades", "bars_closed", "hod_ts_ns"):
        assert fc[k][0] == pc[k][0], k
    np.testing.assert_allclose(pc["vwap"][0], fc["vwap"][0], rtol=1e-12)
    np.testing.assert_array_equal(part.hist[HIST["close"]], full.hist[HIST["close"]])
