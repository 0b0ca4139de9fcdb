"""Malformed feed input, property-based (hypothesis): CSV trade files and Lean tick files with
garbage lines mixed into good ones, and DBN streams with corrupted or truncated bytes. No
decoder raises; every row is a tick, a skip or a counted malformed line; every tick is valid."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.csv_trades import read_csv_trades
from scanner.feeds.dbn import read_dbn_trades, read_raw
from scanner.feeds.lean import read_lean_ticks
from tests.support import SHARED_DATA

HOSTILE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
number = st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", " ", "nan", "inf", "-0", "1e999", "0x10", "1,5", '"', "\x00", "١٢"]))
junk = st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1")))


def check(stats: FeedStats, ticks: np.ndarray, n_rows: int) -> None:
    assert stats.rows == stats.ticks + stats.skipped + stats.malformed, stats.report()
    assert len(ticks) == stats.ticks
    assert len(stats.bad_lines) <= stats.max_bad
    # parse-level sanity here; the magnitude bounds are ingest's (validate_ticks, counted there)
    px, sz = ticks["price"], ticks["size"]
    assert np.all(np.isfinite(px) & (px > 0) & np.isfinite(sz) & (sz >= 0) & (ticks["ts_ns"] > 0)), ticks[:5]
    assert np.all(ticks["sym"] < n_rows)


def _all(batches) -> np.ndarray:  # type: ignore[no-untyped-def]
    from scanner.records import TICK_DTYPE

    return np.concatenate([b.ticks for b in batches] or [np.zeros(0, TICK_DTYPE)])


@HOSTILE
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(["AAA", "BBB", "aaa", "", "ZZZ" * 30]), st.sampled_from(
        ["2026-11-02T14:30:00Z", "2026-11-02 14:30:00.123456789", "1793716200000000000", "1793716200", "nope",
         "2026-13-40T99:99:99", "9999999999999999999999"]), number, number).map(",".join),
    junk, st.lists(number, max_size=8).map(",".join)), max_size=40))
def test_csv_trades_with_garbage_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "trades.csv"
        p.write_text("symbol,ts,price,size\n" + "\n".join("2026-11-02T14:30:00Z" if ln == "" else ln
                                                           for ln in lines) + "\n", errors="replace")
        stats = FeedStats()
        syms = SymbolMap()
        ticks = _all(read_csv_trades([p], syms, stats=stats))
    check(stats, ticks, max(1, len(syms)))


@HOSTILE
@given(st.lists(st.one_of(
    st.tuples(st.integers(-10, 90_000_000).map(str), number, number, st.just("P"), st.just("0"),
              st.sampled_from(["0", "1", "2", "x"])).map(",".join),
    junk, st.lists(number, min_size=6, max_size=6).map(",".join)), max_size=40))
def test_lean_ticks_with_garbage_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "tick" / "aaa"
        folder.mkdir(parents=True)
        p = folder / "20261102_trade.csv"
        p.write_text("\n".join(lines) + "\n", errors="replace")
        stats = FeedStats()
        ticks = _all(read_lean_ticks([p], SymbolMap(), stats=stats))
    check(stats, ticks, 1)


DBN = SHARED_DATA / "databento-glbx" / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"


@pytest.fixture(scope="module")
def dbn_bytes() -> bytes:
    if not DBN.exists():
        pytest.skip(f"real market data file {DBN} is absent")
    return read_raw(DBN)


@HOSTILE
@given(data=st.data())
def test_dbn_with_corrupted_or_truncated_records(dbn_bytes: bytes, data: st.DataObject) -> None:
    raw = bytearray(dbn_bytes)
    flips = data.draw(st.integers(0, 8))
    for _ in range(flips):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.dbn"
        p.write_bytes(bytes(raw[:cut]))
        stats = FeedStats()
        syms = SymbolMap()
        ticks = _all(read_dbn_trades([p], syms, stats=stats))
    assert len(ticks) == stats.ticks and np.all(ticks["sym"] < max(1, len(syms)))
    if flips == 0 and cut == len(raw):
        assert stats.ticks == 120 and stats.malformed == 0
    elif len(ticks) < 120:
        assert stats.malformed or stats.skipped or cut < len(raw), stats.report()  # a loss is accounted
