"""CSV trade decoder: configurable columns and time units, the vendor flat-file layout with
condition flags, and malformed rows reported with line numbers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.csv_trades import CsvLayout, parse_ts, read_csv_trades, read_flat_file
from scanner.records import TICK_NO_HIGH_LOW, TICK_NO_LAST, TICK_ODD_LOT
from tests.scanner.helpers import data_path

T0 = 1_381_239_000_000_000_000  # 2013-10-08 13:30:00 UTC


def _ticks(batches: object) -> np.ndarray:
    return np.concatenate([b.ticks for b in batches])  # type: ignore[attr-defined]


def test_parse_ts_units() -> None:
    assert parse_ts("2013-10-08T13:30:00Z") == T0
    assert parse_ts("2013-10-08 09:30:00.000000001-04:00") == T0 + 1
    assert parse_ts("2013-10-08T13:30:00.5") == T0 + 500_000_000  # naive = UTC
    assert parse_ts("1381239000") == T0
    assert parse_ts("1381239000000") == T0
    assert parse_ts("1381239000000000") == T0
    assert parse_ts(str(T0)) == T0
    assert parse_ts("1381239000000.5", "ms") == T0 + 500_000
    with pytest.raises(ValueError):
        parse_ts("yesterday")


def test_custom_layout_and_malformed_rows(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("when,sym,px,qty\n"
                 "2013-10-08T13:30:01Z,AAA,10.5,100\n"
                 "1381239000000,BBB,20,5\n"
                 "1381239002000,AAA,x,5\n"
                 "1381239002000,AAA,10\n"
                 "1381239002000,AAA,-1,5\n"
                 "soon,AAA,10,5\n"
                 "1381239003000,AAA,11,-5\n")
    stats = FeedStats()
    syms = SymbolMap()
    layout = CsvLayout(symbol="sym", ts="when", price="px", size="qty")
    ticks = _ticks(read_csv_trades([f], syms, layout=layout, stats=stats, odd_lots=True))
    assert syms.names == ["AAA", "BBB"]
    assert ticks["sym"].tolist() == [1, 0]  # sorted by event time
    assert ticks["ts_ns"].tolist() == [T0, T0 + 1_000_000_000]
    assert ticks["flags"].tolist() == [TICK_ODD_LOT, 0]
    assert (stats.rows, stats.ticks, stats.malformed) == (7, 2, 5)
    assert [ln for _, ln, _ in stats.bad_lines] == [4, 5, 6, 7, 8]


def test_missing_columns_and_unreadable_files(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("symbol,ts,price\nAAA,1,2\n")
    stats = FeedStats()
    assert list(read_csv_trades([f, tmp_path / "absent.csv"], stats=stats)) == []
    assert [(Path(s).name, ln) for s, ln, _ in stats.bad_lines] == [("t.csv", 1), ("absent.csv", 0)]
    assert "lacks column(s) ['size']" in stats.bad_lines[0][2]


def _flat_file(path: Path, rows: list[str]) -> Path:
    head = ("ticker,conditions,correction,exchange,id,participant_timestamp,price,sequence_number,"
            "sip_timestamp,size,tape,trf_id,trf_timestamp")
    with gzip.open(path, "wt") as f:
        f.write("\n".join([head, *rows]) + "\n")
    return path


def test_vendor_flat_file_flags_and_sorting(tmp_path: Path) -> None:
    f = _flat_file(tmp_path / "2013-10-08.csv.gz", [
        f'AAA,"12,37",0,4,1,{T0 + 5},10.1,1,{T0 + 6},30,3,,',
        f"AAA,2,0,4,2,{T0 + 7},10.2,2,{T0 + 8},100,3,,",
        f"AAA,,1,4,3,{T0 + 9},10.3,3,{T0 + 10},100,3,,",
        f"BBB,,0,4,4,{T0 + 1},20.0,4,{T0 + 2},200,3,,",
        f"CCC,,0,4,5,{T0 + 3},30.0,5,{T0 + 4},100,3,,",
        f"BBB,,0,4,6,{T0 + 11},oops,6,{T0 + 12},200,3,,",
    ])
    stats = FeedStats()
    syms = SymbolMap(["AAA", "BBB"], grow=False)
    ticks = _ticks(read_flat_file([f], syms, stats=stats))
    assert ticks["ts_ns"].tolist() == [T0 + 2, T0 + 6, T0 + 8]  # sip_timestamp order
    assert ticks["sym"].tolist() == [1, 0, 0]
    assert ticks["flags"].tolist() == [0, TICK_ODD_LOT, TICK_NO_LAST | TICK_NO_HIGH_LOW]  # -, odd lot, average price
    assert (stats.skipped, stats.malformed, stats.bad_lines[0][1]) == (2, 1, 7)  # correction, CCC; bad price
    part = _ticks(read_flat_file([f], SymbolMap(), ts_field="participant_timestamp"))
    assert part["ts_ns"].tolist() == [T0 + 1, T0 + 3, T0 + 5, T0 + 7]


def test_truncated_gzip_keeps_the_rows_before_the_cut(tmp_path: Path) -> None:
    rows = [f"AAA,,0,4,{i},{T0 + i},10.0,{i},{T0 + i},100,3,," for i in range(5000)]
    full = _flat_file(tmp_path / "full.csv.gz", rows).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(full[: len(full) // 2])
    stats = FeedStats()
    ticks = _ticks(read_flat_file([cut], stats=stats))
    assert 0 < len(ticks) < 5000 and stats.malformed == 1
    assert "unreadable from here on" in stats.bad_lines[0][2]


def test_real_bitmex_trades_csv() -> None:
    path = data_path("crypto-trades", "bitmex_trades_XBTUSD.csv")
    stats = FeedStats()
    layout = CsvLayout(symbol="symbol", ts="timestamp", price="price", size="amount")
    ticks = _ticks(read_csv_trades([path], layout=layout, stats=stats))
    assert stats.ticks == stats.rows == 10 and stats.malformed == 0
    assert ticks["ts_ns"][0] == 1583020803145000 * 1000 and ticks["price"][0] == 8531.5
    assert ticks["size"][:2].tolist() == [2152.0, 1.0]
