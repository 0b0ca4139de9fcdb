"""Row conversions: spool records, de-duplication, Arrow round trips, alerts, migrations files."""

from __future__ import annotations

import json

import numpy as np

from scanner.records import BAR_DTYPE, TICK_DTYPE
from scanner.session import session_bounds_ns
from scanner.storage.migrations import discover, pick, plan, split_statements
from scanner.storage.rows import (
    COPY_BAR_ROW,
    PGCOPY_HEADER,
    arrow_to_spool_bars,
    bars_arrow,
    bars_to_spool,
    dedupe_bars,
    pg_copy_bars,
    trades_arrow,
    trades_to_spool,
)

KEYS = np.array([b"AAPL", b"MSFT", b"X"], dtype="S16")
OPEN = session_bounds_ns(20240315)["open"]


def closed_bars() -> np.ndarray:
    b = np.zeros(4, BAR_DTYPE)
    b["sym"] = [0, 1, 2, 0]
    b["minute_ns"] = [OPEN, OPEN, OPEN, OPEN + 60_000_000_000]
    b["open"], b["close"], b["volume"], b["trades"] = [1, 2, 3, 4], [1.5, 2.5, 3.5, 4.5], [100, 200, 300, 400], 7
    return b


def test_bars_to_spool_names_symbols_and_round_trips_through_arrow() -> None:
    s = bars_to_spool(closed_bars(), KEYS)
    assert s["symbol"].tolist() == [b"AAPL", b"MSFT", b"X", b"AAPL"]
    t = bars_arrow(s)
    assert t.column("day").to_pylist() == [20240315] * 4
    assert t.column("symbol").to_pylist() == ["AAPL", "MSFT", "X", "AAPL"]
    assert np.array_equal(arrow_to_spool_bars(t), s)


def test_dedupe_keeps_the_last_bar_per_symbol_and_minute() -> None:
    s = bars_to_spool(closed_bars(), KEYS)
    again = s[:1].copy()
    again["close"] = 99.0
    d = dedupe_bars(np.concatenate([s, again]))
    assert len(d) == 4
    assert d[(d["symbol"] == b"AAPL") & (d["minute_ns"] == OPEN)]["close"].tolist() == [99.0]


def test_pg_copy_buffer_is_one_fixed_width_row_per_bar() -> None:
    s = bars_to_spool(closed_bars(), KEYS)
    buf = pg_copy_bars(s)
    assert buf.startswith(PGCOPY_HEADER) and buf.endswith(b"\xff\xff")
    rows = np.frombuffer(buf[len(PGCOPY_HEADER):-2], COPY_BAR_ROW)
    assert rows["ncols"].tolist() == [9] * 4 and rows["len_symbol"].tolist() == [16] * 4
    assert rows["bucket"][0] == OPEN // 1000 - 946_684_800_000_000  # µs since 2000-01-01


def test_trades_to_arrow() -> None:
    t = np.zeros(2, TICK_DTYPE)
    t["sym"], t["ts_ns"], t["price"], t["size"] = [2, 1], [OPEN + 5, OPEN + 9], [10.0, 11.0], [100, 5]
    a = trades_arrow(trades_to_spool(t, KEYS))
    assert a.column("symbol").to_pylist() == ["X", "MSFT"]
    assert a.column("ts").cast("int64").to_pylist() == [OPEN + 5, OPEN + 9]


def test_alert_rows_skip_malformed_entries() -> None:
    from scanner.storage.rows import alert_rows

    good = json.dumps({"rule": "r1", "symbol": "AAPL", "event_ts": OPEN / 1e9, "values": {"price": 3.5}}).encode()
    deep = b"[" * 100_000 + b"]" * 100_000  # past the JSON parser's recursion limit
    rows = alert_rows([("1-0", good), ("1-1", b"not json"), ("1-2", b'{"symbol": "X"}'), ("1-3", deep)])
    assert len(rows) == 1 and rows[0][0] == "1-0" and rows[0][3] == 20240315 and rows[0][-1] == '{"price":3.5}'


def test_migration_files_have_both_flavours_and_split_cleanly() -> None:
    found = discover("postgres")
    assert list(found)[:4] == [1, 2, 3, 4]
    assert {m.flavor for m in found[2]} == {"native", "timescale"}
    # after 0001: the two flavoured versions on the native path, then 0004 on (one file for both)
    todo = plan(found, {1}, "native")
    assert [m.version for m in todo] == sorted(found)[1:]
    assert [m.flavor for m in todo] == ["native", "native"] + [None] * (len(todo) - 2)
    assert not pick(found[3], "timescale").transactional and pick(found[3], "native").transactional
    native = split_statements(pick(found[2], "native").sql)
    assert any(s.startswith("CREATE OR REPLACE FUNCTION scanner_ensure_bar_partitions") and "END $$" in s
               for s in native)
    assert len(split_statements(pick(found[3], "timescale").sql)) == 8  # 4 aggregates + 4 policies
    assert [m.version for m in discover("clickhouse")[1]] == [1]
