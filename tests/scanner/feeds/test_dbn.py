"""Databento DBN decoder: real trades / bars / definitions, format fixtures, and bad records
reported by record number instead of raised."""

from __future__ import annotations

from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pytest

import scanner.feeds.dbn as dbn_mod
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.dbn import (
    TRADE_REC,
    UNDEF_PRICE,
    load_definitions,
    read_dbn_ohlcv,
    read_dbn_trades,
    read_metadata,
    read_raw,
    split_dbn,
)
from tests.scanner.helpers import data_path

TRADES = "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
OHLCV = "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"


def _ticks(paths: list[Path], stats: FeedStats, syms: SymbolMap | None = None) -> np.ndarray:
    return np.concatenate([b.ticks for b in read_dbn_trades(paths, syms, stats=stats)] or [np.empty(0)])


def test_real_trades_match_the_official_decoder() -> None:
    path = data_path("databento-glbx", TRADES)
    stats = FeedStats()
    syms = SymbolMap()
    ticks = _ticks([path], stats, syms)
    dec = dbn.DBNDecoder()
    dec.write(read_raw(path))
    recs = dec.decode()[1:]
    assert syms.names == ["ESU4"] and stats.ticks == len(recs) == 120 and stats.malformed == 0
    assert ticks["ts_ns"].tolist() == [r.ts_event for r in recs]
    assert ticks["price"].tolist() == [r.pretty_price for r in recs]
    assert ticks["size"].tolist() == [r.size for r in recs]
    recv = np.concatenate([b.ticks for b in read_dbn_trades([path], ts_field="ts_recv")])
    assert recv["ts_ns"].tolist() == [r.ts_recv for r in recs]


def test_bars_definitions_and_format_fixtures() -> None:
    syms = SymbolMap()
    bars = read_dbn_ohlcv(data_path("databento-glbx", OHLCV), syms)
    assert syms.names == ["ESU4", "NQU4"] and len(bars) == 60
    assert bars[["sym", "open", "high", "low", "close", "volume"]][:2].tolist() == [
        (0, 5527.25, 5527.5, 5527.0, 5527.5, 180.0), (1, 20014.25, 20016.25, 20013.5, 20016.25, 35.0)]
    defs = load_definitions(data_path("databento-glbx", "futures_definition.dbn.zst"))
    assert defs == {118: "ESU4", 4358: "NQU4"}
    v2 = _ticks([data_path("dbn-format", "test_data.trades.dbn")], FeedStats())
    v3 = _ticks([data_path("dbn-format", "test_data.trades.v3.dbn.zst")], FeedStats())
    assert v2.tobytes() == v3.tobytes() and v2["price"].tolist() == [3720.25, 3720.25]
    # this fixture stores prices x100 (see its SOURCE.md): decoded as stored
    fx = read_dbn_ohlcv(data_path("dbn-format", "test_data.ohlcv-1m.v3.dbn.zst"))
    assert fx["open"].tolist() == [372025.0, 372100.0] and fx["volume"].tolist() == [353.0, 152.0]


def test_bad_records_are_reported(tmp_path: Path) -> None:
    raw = bytearray(read_raw(data_path("databento-glbx", TRADES)))
    body = 8 + int.from_bytes(raw[4:8], "little")
    price_at = body + 2 * TRADE_REC.itemsize + TRADE_REC.fields["price"][1]
    raw[price_at:price_at + 8] = UNDEF_PRICE.to_bytes(8, "little", signed=True)
    bad = tmp_path / "bad.dbn"
    bad.write_bytes(bytes(raw))
    cut = tmp_path / "cut.dbn"
    cut.write_bytes(bytes(raw[:body + 10 * TRADE_REC.itemsize + 20]))
    junk = tmp_path / "junk.dbn.zst"
    junk.write_bytes(b"not zstd at all")
    stats = FeedStats()
    ticks = _ticks([bad, cut, junk, tmp_path / "missing.dbn"], stats)
    assert len(ticks) == 119 + 9
    found = sorted((Path(s).name, ln) for s, ln, _ in stats.bad_lines)
    assert found == [("bad.dbn", 3), ("cut.dbn", 3), ("cut.dbn", 11), ("junk.dbn.zst", 0), ("missing.dbn", 0)]
    assert stats.malformed == 5


def test_metadata_is_read_from_the_header_alone(tmp_path: Path) -> None:
    """`read_metadata` (the check before a replay) gives the metadata the whole-file decode
    gives, for plain and zstd files, and refuses what is not DBN or ends inside its header."""
    for path in (data_path("databento-glbx", TRADES), data_path("dbn-format", "test_data.trades.dbn")):
        meta, body = split_dbn(read_raw(path))
        got = read_metadata(path)
        assert (got.schema, got.dataset, got.start, got.end, got.symbols, got.mappings) == (
            meta.schema, meta.dataset, meta.start, meta.end, meta.symbols, meta.mappings)
        assert isinstance(body, memoryview) and len(body) % TRADE_REC.itemsize == 0  # a view, not a copy
    raw = read_raw(data_path("databento-glbx", TRADES))
    cut = tmp_path / "cut.dbn"
    cut.write_bytes(raw[:40])
    junk = tmp_path / "junk.dbn"
    junk.write_bytes(b"PK\x03\x04" + raw[4:200])
    for bad in (cut, junk):
        with pytest.raises(ValueError):
            read_metadata(bad)


def test_chunked_reading_gives_the_whole_file_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file converted a few records at a time (`CHUNK_RECORDS`, memory-mapped, pages released
    as it goes) gives the ticks, batches, counts and bad-record numbers of one pass over it."""
    raw = bytearray(read_raw(data_path("databento-glbx", TRADES)))
    body = 8 + int.from_bytes(raw[4:8], "little")
    for rec in (2, 57):  # bad records on either side of chunk boundaries
        at = body + rec * TRADE_REC.itemsize + TRADE_REC.fields["price"][1]
        raw[at:at + 8] = UNDEF_PRICE.to_bytes(8, "little", signed=True)
    path = tmp_path / "bad.dbn"
    path.write_bytes(bytes(raw))

    def read(chunk: int, batch: int) -> tuple[list[bytes], FeedStats, list[str]]:
        monkeypatch.setattr(dbn_mod, "CHUNK_RECORDS", chunk)
        stats, syms = FeedStats(), SymbolMap()
        got = [b.ticks.tobytes() for b in read_dbn_trades([path], syms, stats=stats, batch_size=batch)]
        return got, stats, syms.names

    for batch in (1, 7, 50, 1000):
        whole, s0, n0 = read(1 << 20, batch)
        assert sum(len(b) for b in whole) == 118 * 32 and all(len(b) == batch * 32 for b in whole[:-1])
        for chunk in (1, 5, 16, 119):
            got, s1, n1 = read(chunk, batch)
            assert got == whole and n1 == n0 == ["ESU4"]
            assert (s1.ticks, s1.rows, s1.malformed) == (s0.ticks, s0.rows, s0.malformed) == (118, 120, 2)
            assert sorted(ln for _, ln, _ in s1.bad_lines) == [3, 58]


def test_row_cache_maps_ids_as_the_sorting_lookup_does() -> None:
    """`_RowCache` (a dense table per file) gives `_rows`' answer chunk after chunk: rows of
    known ids, -1 for ids a fixed map does not hold, new names added in ascending id order, and
    ids past the table's bound through `_rows` itself."""
    rng = np.random.default_rng(3)
    imap = {int(i): f"S{i}" for i in rng.choice(5000, 300, replace=False)}
    for grow in (True, False):
        fixed = [f"S{i}" for i in sorted(imap)[:150]]
        cache_map, ref_map = SymbolMap(fixed, grow=grow), SymbolMap(fixed, grow=grow)
        cache = dbn_mod._RowCache(imap, cache_map)
        for chunk in range(6):
            hi = 6000 if chunk < 5 else dbn_mod.LUT_IDS + 10  # the last chunk passes the table's bound
            ids = rng.integers(0, hi, 2000).astype(np.uint32)
            np.testing.assert_array_equal(cache(ids), dbn_mod._rows(ids, imap, ref_map))
            assert cache_map.names == ref_map.names
        assert (cache(np.empty(0, np.uint32)) == np.empty(0)).all()
