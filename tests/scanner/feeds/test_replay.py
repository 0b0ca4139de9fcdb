"""Replay sources: format detection, the universe of the files, event-time merging of several
files, daily reference data, and the user errors (one line, no traceback)."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scanner.config import Settings
from scanner.feeds.common import FeedStats, SymbolMap, make_ticks
from scanner.feeds.lean import read_lean_daily
from scanner.feeds.replay import (
    ReplayError,
    detect_format,
    estimate_rows,
    index,
    merge_streams,
    open_ticks,
    reference,
    spec_from_settings,
)
from scanner.session import session_bounds_ns
from tests.scanner.helpers import data_path

T0 = session_bounds_ns(20240102)["open"]
FLAT_HEAD = ("ticker,conditions,correction,exchange,id,participant_timestamp,price,sequence_number,"
             "sip_timestamp,size,tape,trf_id,trf_timestamp")


def _settings(files: list[Path], **more: object) -> Settings:
    return Settings(feed="replay", replay_files=[str(f) for f in files], **more)


def _flat(path: Path, rows: list[tuple[str, int, float]]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("\n".join([FLAT_HEAD, *(f"{s},,0,4,1,{t},{p},1,{t},100,3,," for s, t, p in rows)]) + "\n")
    return path


def _lean(root: Path, sym: str, day: int, ms: list[int]) -> Path:
    p = root / "tick" / sym / f"{day}_trade.zip"
    p.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr(p.stem + ".csv", "".join(f"{m},1000000,100,P,0,0\n" for m in ms))
    return p


def _all(spec_files: list[Path], **more: object) -> tuple[np.ndarray, list[str], FeedStats]:
    spec = spec_from_settings(_settings(spec_files, **more))
    names = index(spec).symbols
    stats = FeedStats()
    parts = list(open_ticks(spec, SymbolMap(names, grow=False), stats, batch_size=3))
    return np.concatenate(parts), names, stats


def test_formats_are_detected_from_names_and_headers(tmp_path: Path) -> None:
    flat = _flat(tmp_path / "2024-01-02.csv.gz", [("AAA", T0, 1.0)])
    plain = tmp_path / "t.csv"
    plain.write_text("symbol,ts,price,size\nAAA,1,2,3\n")
    assert detect_format(flat) == "flat" and detect_format(plain) == "csv"
    assert detect_format(Path("x/tick/spy/20131008_trade.zip")) == "lean"
    assert detect_format(Path("a.trades.dbn.zst")) == "dbn"
    with pytest.raises(ReplayError, match="cannot tell the format"):
        detect_format(tmp_path / "x.parquet")


def test_flat_files_of_one_day_merge_in_event_time(tmp_path: Path) -> None:
    a = _flat(tmp_path / "a-2024-01-02.csv.gz", [("AAA", T0 + 5, 1.0), ("AAA", T0 + 1, 2.0), ("BBB", T0 + 9, 3.0)])
    b = _flat(tmp_path / "b-2024-01-02.csv.gz", [("CCC", T0 + 2, 4.0), ("CCC", T0 + 7, 5.0)])
    ticks, names, stats = _all([a, b])
    assert names == ["AAA", "BBB", "CCC"]
    assert ticks["ts_ns"].tolist() == [T0 + 1, T0 + 2, T0 + 5, T0 + 7, T0 + 9]
    assert ticks["price"].tolist() == [2.0, 4.0, 1.0, 5.0, 3.0] and stats.malformed == 0
    assert estimate_rows(spec_from_settings(_settings([a, b]))) == 5
    # a symbol filter narrows the universe; the other symbols' ticks are skipped, counted
    ticks, names, stats = _all([a, b], replay_symbols=["ccc"])
    assert names == ["CCC"] and len(ticks) == 2 and stats.skipped == 3


def test_merge_streams_keeps_every_tick_and_orders_them() -> None:
    rng = np.random.default_rng(1)

    def stream(k: int, n: int) -> list[np.ndarray]:
        ts = np.sort(rng.integers(0, 10_000, n))
        t = make_ticks(np.full(n, k), ts, np.arange(n, dtype=float), np.ones(n))
        cuts = np.sort(rng.integers(0, max(n, 1), 5))
        return np.split(t, cuts)

    streams = [stream(k, n) for k, n in enumerate((500, 50, 1, 0))]
    out = np.concatenate(list(merge_streams([iter(s) for s in streams])))
    assert len(out) == 551 and (np.diff(out["ts_ns"]) >= 0).all()
    for k in range(3):  # each stream's own order survives (stable on ties)
        mine = out[out["sym"] == k]
        assert (np.diff(mine["price"]) > 0).all()


def test_lean_files_universe_day_daily_and_symbol_filter(tmp_path: Path) -> None:
    a = _lean(tmp_path, "aaa", 20131008, [34_200_000, 34_260_000])
    b = _lean(tmp_path, "bbb", 20131008, [34_230_000])
    (tmp_path / "daily").mkdir()
    spec = spec_from_settings(_settings([a, b]))
    assert spec.daily == tmp_path / "daily"
    ix = index(spec)
    assert (ix.symbols, ix.first_day) == (["AAA", "BBB"], 20131008)
    ticks, _, _ = _all([a, b])
    assert ticks["sym"].tolist() == [0, 1, 0]
    # filtered Lean files are not even opened
    assert [p.parent.name for p, _ in spec_from_settings(_settings([a, b], replay_symbols=["BBB"])).files] == ["bbb"]
    with pytest.raises(ReplayError, match="none of the files hold"):
        spec_from_settings(_settings([a, b], replay_symbols=["ZZZ"]))


def test_lean_and_csv_files_of_one_day_merge(tmp_path: Path) -> None:
    a = _lean(tmp_path, "aaa", 20131008, [34_200_000, 34_260_000])
    open_ms = session_bounds_ns(20131008)["open"] // 1_000_000
    c = tmp_path / "ccc-20131008.csv"
    c.write_text(f"symbol,ts,price,size\nCCC,{open_ms + 30_000},5,100\nCCC,{open_ms + 90_000},6,100\n")
    ticks, names, _ = _all([c, a])
    assert names == ["AAA", "CCC"] and ticks["sym"].tolist() == [0, 1, 0, 1]
    assert (np.diff(ticks["ts_ns"]) > 0).all()


def test_reference_from_real_daily_history() -> None:
    daily = data_path("lean-us-equity", "daily")
    ref, found = reference(["SPY", "NOPE"], 20131008, daily)
    prev, adv = ref["prev_close"], ref["avg_daily_volume"]
    d = read_lean_daily(daily / "spy.zip")
    before = d[d["day"] < 20131008]
    assert found == 1 and prev[0] == before["close"][-1]
    assert adv[0] == pytest.approx(before["volume"][-20:].mean(), rel=1e-15)
    assert ref["prev_high"][0] == before["high"][-1] and ref["low_52w"][0] == before["low"][-252:].min()
    assert all(np.isnan(v[1]) for v in ref.values())
    assert np.isnan(reference(["SPY"], None, daily)[0]["prev_close"][0])


def test_real_lean_day_index_and_estimate() -> None:
    files = sorted(data_path("lean-us-equity", "tick").glob("*/20131008_trade.zip"))
    spec = spec_from_settings(_settings(files))
    assert index(spec).symbols == ["AIG", "BAC", "IBM", "SPY"]
    assert estimate_rows(spec) == 654_140
    assert spec.daily is not None and spec.daily.name == "daily"


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no replay files"):
        spec_from_settings(_settings([]))
    with pytest.raises(ReplayError, match="does not exist"):
        spec_from_settings(_settings([tmp_path / "absent.csv"]))
    f = tmp_path / "t.csv"
    f.write_text("sym,time,px,qty\nAAA,1,2,3\n")
    with pytest.raises(ReplayError, match="unknown CSV layout key"):
        spec_from_settings(_settings([f], replay_csv_layout={"colour": "x"}))
    with pytest.raises(ReplayError, match="header lacks column 'symbol'"):
        index(spec_from_settings(_settings([f])))
    layout = {"symbol": "sym", "ts": "time", "price": "px", "size": "qty", "ts_unit": "s"}
    assert index(spec_from_settings(_settings([f], replay_csv_layout=layout))).symbols == ["AAA"]
    ohlcv = data_path("databento-glbx", "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst")
    with pytest.raises(ReplayError, match="schema 'ohlcv-1m': replay feeds trades only"):
        spec_from_settings(_settings([ohlcv]))


def test_dbn_trades_universe() -> None:
    f = data_path("databento-glbx", "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    ix = index(spec_from_settings(_settings([f])))
    assert ix.symbols == ["ESU4"] and ix.first_day == 20240701
