"""Lean / AlgoSeek decoder: real tick, minute and daily files; malformed rows reported with
line numbers instead of raised."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.lean import (
    daily_reference,
    lean_tick_files,
    read_lean_daily,
    read_lean_minute,
    read_lean_ticks,
)
from scanner.records import TICK_ODD_LOT
from scanner.session import MINUTE_NS, NS, session_bounds_ns
from tests.scanner.helpers import data_path


def _zip(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.stem + ".csv", "\n".join(lines) + "\n")
    return path


def test_real_ticks_decode_in_time_order() -> None:
    root = data_path("lean-us-equity")
    files = lean_tick_files(root, symbols=["spy", "ibm"], days=[20131008])
    assert [f.parent.name for f in files] == ["ibm", "spy"]
    stats = FeedStats()
    syms = SymbolMap()
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, stats=stats, batch_size=100_000)])
    raw = pd.read_csv(files[1], header=None, dtype={4: str})
    assert stats.malformed == 0 and stats.skipped == 0
    assert stats.rows == stats.ticks == len(ticks) == len(raw) + len(pd.read_csv(files[0], header=None))
    assert (np.diff(ticks["ts_ns"]) >= 0).all()
    spy = ticks[ticks["sym"] == syms.row("SPY")]
    assert len(spy) == 451_545
    # 14417034,1674200,210,Q,2000,0 -> 04:00:17.034 New York, $167.42
    assert spy["ts_ns"][0] == session_bounds_ns(20131008)["premarket"] + 17_034 * 1_000_000
    assert (spy["price"][0], spy["size"][0], spy["flags"][0]) == (167.42, 210.0, 0)
    np.testing.assert_array_equal(spy["price"], raw[1].to_numpy() / 10_000)


def test_malformed_rows_are_counted_with_line_numbers(tmp_path: Path) -> None:
    f = _zip(tmp_path / "tick" / "xyz" / "20131008_trade.zip", [
        "34200000,1674100,100,P,0,0",
        "abc,1674100,100,P,0,0",
        "34200001,1674100,100,P,0",
        "34200002,-5,100,P,0,0",
        "34200003,1674100,0,P,0,0",
        "99999999,1674100,100,P,0,0",
        "34200004,1674100,100,P,0,1",
        "34200005,1674100,50,P,0,0",
        "34200006,1674100,100,P,0,2",
    ])
    stats = FeedStats(max_bad=4)
    ticks = np.concatenate([b.ticks for b in read_lean_ticks([f], stats=stats)])
    assert (stats.rows, stats.ticks, stats.skipped, stats.malformed) == (9, 2, 1, 6)
    assert [ln for _, ln, _ in stats.bad_lines] == [2, 3, 6, 4]  # parse errors first, then range checks
    assert "expected 6 fields, got 5" in stats.bad_lines[1][2]
    assert "... 2 more" in stats.report()
    assert ticks["flags"].tolist() == [0, TICK_ODD_LOT]
    assert ticks["ts_ns"][0] == session_bounds_ns(20131008)["open"]


def test_range_errors_on_the_fast_path_and_bad_file_names(tmp_path: Path) -> None:
    good = _zip(tmp_path / "tick" / "abc" / "20131008_trade.zip",
                ["34200000,1674100,100,P,0,0", "34200000,0,100,P,0,0", "86400000,1674100,100,P,0,0"])
    nodate = _zip(tmp_path / "tick" / "abc" / "trade.zip", ["34200000,1674100,100,P,0,0"])
    stats = FeedStats()
    ticks = np.concatenate([b.ticks for b in read_lean_ticks([good, nodate], stats=stats)])
    assert len(ticks) == 1
    assert sorted((Path(s).name, ln, why) for s, ln, why in stats.bad_lines) == [
        ("20131008_trade.zip", 2, "price not positive"), ("20131008_trade.zip", 3, "time outside the day"),
        ("trade.zip", 0, "file name has no yyyymmdd date")]


def test_fixed_symbol_map_skips_unknown_symbols(tmp_path: Path) -> None:
    a = _zip(tmp_path / "tick" / "aaa" / "20131008_trade.zip", ["34200000,100000,100,P,0,0"])
    b = _zip(tmp_path / "tick" / "bbb" / "20131008_trade.zip", ["34200001,200000,100,P,0,0"])
    stats = FeedStats()
    syms = SymbolMap(["ZZZ", "BBB"], grow=False)
    ticks = np.concatenate([x.ticks for x in read_lean_ticks([a, b], syms, stats=stats)])
    assert ticks["sym"].tolist() == [1] and ticks["price"].tolist() == [20.0] and stats.skipped == 1


def test_minute_and_daily_files() -> None:
    m = read_lean_minute(data_path("lean-us-equity", "minute", "spy", "20131008_trade.zip"), row=3)
    assert len(m) == 828 and (m["sym"] == 3).all()
    assert m["minute_ns"][0] == session_bounds_ns(20131008)["premarket"]
    assert (m["open"][0], m["volume"][0]) == (167.42, 210.0)
    assert (np.diff(m["minute_ns"]) % MINUTE_NS == 0).all()
    daily = read_lean_daily(data_path("lean-us-equity", "daily", "spy.zip"))
    df = pd.read_csv(data_path("lean-us-equity", "daily", "spy.zip"), header=None)
    assert len(daily) == len(df) and daily["day"][0] == 19980102 and daily["close"][0] == 97.36
    prev, adv = daily_reference(daily, 20131008)
    before = df[df[0].str[:8].astype(int) < 20131008]
    assert prev == before[4].iloc[-1] / 10_000
    assert adv == before[5].iloc[-20:].mean()
    assert np.isnan(daily_reference(daily, 19980102)[0])


def test_daily_malformed_dates(tmp_path: Path) -> None:
    f = _zip(tmp_path / "daily" / "x.zip", ["19980102 00:00,973100,975300,965300,973600,2150000",
                                            "1998010x 00:00,1,1,1,1,1", "19980106 00:00,1,1,1,1"])
    stats = FeedStats()
    d = read_lean_daily(f, stats)
    assert d["day"].tolist() == [19980102] and [ln for _, ln, _ in stats.bad_lines] == [2, 3]
    assert NS == 1_000_000_000
