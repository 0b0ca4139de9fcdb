"""Decoder for Databento DBN files (`.dbn`, or zstd-compressed `.dbn.zst`): trades and ohlcv-1m.

Prices are int64 in units of 1e-9; timestamps are epoch ns. Instrument ids map to symbols
through the file's metadata mappings (raw_symbol -> instrument_id intervals), optionally
overridden by a definitions file (`load_definitions`) or an explicit mapping.

A file whose records all have one fixed layout (the normal case for a single-schema file) is
read with `np.frombuffer` over the record bytes (a plain file is memory-mapped, not read into
the heap) and converted `CHUNK_RECORDS` at a time, so a replay's memory does not grow with
the file and its first batch does not wait for the whole file; anything else (mixed record types, symbol
mapping records of a live capture) goes through `databento_dbn.DBNDecoder` record by record.
Record numbers (1-based, after the metadata) stand in for line numbers in `FeedStats`.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import numpy as np
import zstandard

from scanner.feeds.common import FeedStats, SymbolMap, TickBatch, make_ticks, rebatch
from scanner.records import BAR_DTYPE

PRICE_SCALE = 1e9  # price units per USD
UNDEF_PRICE = np.iinfo(np.int64).max
RTYPE_MBP_0 = 0x00  # trades
RTYPE_OHLCV = (0x20, 0x21, 0x22, 0x23, 0x24)  # 1s, 1m, 1h, 1d, eod
CHUNK_RECORDS = 1 << 16  # trade records converted at a time: ~3 ms of work, so a paced replay never stalls long
LUT_IDS = 1 << 21  # instrument ids below this are mapped through a dense table (16 MB at most)
UNRESOLVED = -2
_HD = [("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
       ("ts_event", "<u8")]
TRADE_REC = np.dtype(_HD + [("price", "<i8"), ("size", "<u4"), ("action", "S1"), ("side", "S1"),
                            ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
                            ("sequence", "<u4")])
OHLCV_REC = np.dtype(_HD + [("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"),
                            ("volume", "<u8")])
assert TRADE_REC.itemsize == 48 and OHLCV_REC.itemsize == 56


def read_raw(path: str | Path) -> bytes:
    """File bytes, zstd-decompressed when the name ends in .zst."""
    p = Path(path)
    with open(p, "rb") as f:
        if p.suffix == ".zst":
            return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
        return f.read()


def map_raw(path: str | Path) -> bytes | mmap.mmap:
    """The file's bytes for `np.frombuffer`: a read-only memory map of a plain file (pages come
    from the page cache as they are read, none copied into the heap), the decompressed bytes of
    a .zst."""
    p = Path(path)
    if p.suffix == ".zst":
        return read_raw(p)
    with open(p, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return b""


def decode(raw: bytes) -> list[Any]:
    """Every record of a DBN stream (the metadata first) through the official decoder; a corrupt
    stream is a ValueError. The decoder's Rust panics on a corrupt record length (pyo3's
    PanicException) derive from BaseException, not Exception: they are caught here too, and only
    an interrupt or an exit goes on up."""
    dec = dbn.DBNDecoder()
    try:
        dec.write(raw)
        return dec.decode()
    except BaseException as exc:  # noqa: BLE001 - DBNError, or a Rust panic (docstring)
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        raise ValueError(str(exc)) from None


def read_metadata(path: str | Path) -> Any:
    """The metadata of a DBN file (.zst too), reading its header only: a check of a large file
    before its replay need not read (and copy) the gigabyte after it."""
    p = Path(path)
    with open(p, "rb") as f:
        src = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) if p.suffix == ".zst" else f
        head = _read_exact(src, 8)
        if len(head) < 8 or head[:3] != b"DBN":
            raise ValueError("not a DBN stream (no 'DBN' magic)")
        head += _read_exact(src, int.from_bytes(head[4:8], "little"))
    return split_dbn(head)[0]


def _read_exact(f: Any, n: int) -> bytes:
    """Up to `n` bytes, fewer only at the end of the stream (a decompressing reader may return
    less per call)."""
    parts: list[bytes] = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def split_dbn(raw: bytes | mmap.mmap) -> tuple[Any, memoryview]:
    """(Metadata, record bytes: a view into `raw`, not a copy of a file that may be a gigabyte);
    ValueError when the bytes are not DBN."""
    if len(raw) < 8 or raw[:3] != b"DBN":
        raise ValueError("not a DBN stream (no 'DBN' magic)")
    end = 8 + int.from_bytes(raw[4:8], "little")
    try:  # a corrupt or cut header is a bad file (counted by the caller), not a crash
        decoded = decode(raw[:end])
    except ValueError as exc:
        raise ValueError(f"corrupt DBN metadata: {exc}") from None
    if not decoded or end > len(raw):
        raise ValueError("truncated DBN metadata")
    return decoded[0], memoryview(raw)[end:]


def symbols_from_metadata(meta: Any) -> dict[int, str]:
    """instrument_id -> raw symbol from the metadata mappings (when stype_out is instrument_id)."""
    out: dict[int, str] = {}
    for raw_symbol, intervals in (meta.mappings or {}).items():
        for iv in intervals:
            sym = str(iv["symbol"])
            if sym.isdigit():
                out[int(sym)] = raw_symbol
    return out


def load_definitions(path: str | Path) -> dict[int, str]:
    """instrument_id -> raw_symbol from a `definition` schema file."""
    return {int(r.instrument_id): str(r.raw_symbol) for r in decode(read_raw(path))[1:] if hasattr(r, "raw_symbol")}


def _records(body: bytes | memoryview, rec: np.dtype, rtypes: tuple[int, ...], raw: bytes | mmap.mmap = b"",
             base: int = 0) -> np.ndarray | None:
    """All records as one structured array (a view of `body`), or None when the stream is not
    uniform. With `raw` (what `body` is a view of, the records from `base`), the pages checked
    are released as the check goes (`_chunks`)."""
    if len(body) % rec.itemsize:
        return None
    arr = np.frombuffer(body, rec)
    for _lo, c in _chunks(arr, raw, base):
        if not ((c["length"] == rec.itemsize // 4).all() and np.isin(c["rtype"], rtypes).all()):
            return None
    return arr


def _complete_length(body: bytes | memoryview) -> tuple[int, int]:
    """(bytes of whole records, record count), walking the record headers' length words; a
    stream cut inside a record stops before it."""
    off = n = 0
    while off < len(body):
        size = body[off] * 4
        if size == 0 or off + size > len(body):
            break
        off += size
        n += 1
    return off, n


def _objects(raw: bytes | mmap.mmap, body: memoryview, kind: type, instruments: dict[int, str], stats: FeedStats,
             src: str) -> list[Any]:
    """Records of type `kind` via the official decoder; symbol mapping records update
    `instruments`, other records are skipped (counted); a cut-off tail is reported."""
    whole, n = _complete_length(body)
    if whole < len(body):
        stats.bad(src, n + 1, f"truncated record: {len(body) - whole} trailing bytes")
    try:
        recs = decode(raw[:len(raw) - len(body) + whole])[1:]
    except ValueError as exc:  # a corrupt stream is reported, not raised
        stats.bad(src, 0, f"undecodable DBN stream: {exc}")
        return []
    out = []
    for r in recs:
        if isinstance(r, kind):
            out.append(r)
        else:
            stats.skipped += 1
            if isinstance(r, dbn.SymbolMappingMsg):
                instruments[int(r.instrument_id)] = str(r.stype_out_symbol)
    stats.rows += len(recs)
    return out


def _rows(ids: np.ndarray, instruments: Mapping[int, str], symbols: SymbolMap) -> np.ndarray:
    """Table rows of instrument ids (-1 unknown)."""
    uniq, inv = np.unique(ids, return_inverse=True)
    rows = np.array([symbols.row(instruments.get(int(i), str(int(i)))) for i in uniq], np.int64)
    return rows[inv.reshape(-1)]


class _RowCache:
    """`_rows` for the chunks of one file, each id looked up once: a dense table indexed by id
    while the ids stay below LUT_IDS (a gather, ~3 ms per million records, against ~75 ms for
    the sort of `np.unique`), `_rows` above that. New ids are resolved in ascending order, as
    `_rows` does."""

    def __init__(self, instruments: Mapping[int, str], symbols: SymbolMap) -> None:
        self.instruments, self.symbols = instruments, symbols
        self.lut = np.full(0, UNRESOLVED, np.int64)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        top = int(ids.max()) if len(ids) else -1
        if top >= LUT_IDS:
            return _rows(ids, self.instruments, self.symbols)
        if top >= len(self.lut):
            grown = np.full(min(LUT_IDS, max(top + 1, 2 * len(self.lut))), UNRESOLVED, np.int64)
            grown[:len(self.lut)] = self.lut
            self.lut = grown
        rows = self.lut[ids]
        new = rows == UNRESOLVED
        if new.any():
            for i in np.unique(ids[new]).tolist():
                self.lut[i] = self.symbols.row(self.instruments.get(i, str(i)))
            rows = self.lut[ids]
        return rows


def _instrument_map(meta: Any, instruments: Mapping[int, str] | None) -> dict[int, str]:
    out = symbols_from_metadata(meta)
    out.update(instruments or {})
    return out


def _open(path: str | Path, stats: FeedStats) -> tuple[bytes | mmap.mmap, Any, memoryview] | None:
    """Raw bytes (`map_raw`), metadata and record body of a DBN file; None (counted) when
    unreadable."""
    try:
        raw = map_raw(path)
        meta, body = split_dbn(raw)
    except (OSError, ValueError, zstandard.ZstdError) as exc:
        stats.bad(str(path), 0, f"unreadable file: {exc}")
        return None
    return raw, meta, body


def read_dbn_trades(paths: Iterable[str | Path], symbols: SymbolMap | None = None, *,
                    instruments: Mapping[int, str] | None = None, ts_field: str = "ts_event",
                    batch_size: int = 65_536, stats: FeedStats | None = None) -> Iterator[TickBatch]:
    """Ticks from DBN `trades` files, each file in its record order. `ts_field` is
    "ts_event" (matching the vendor's bars) or "ts_recv"; an instrument without a symbol gets
    its id as the symbol name. A growing `symbols` map numbers new symbols as they first
    appear, `CHUNK_RECORDS` records at a time (by instrument id within a chunk)."""
    if ts_field not in ("ts_event", "ts_recv"):
        raise ValueError(f"'ts_field' must be 'ts_event' or 'ts_recv', was {ts_field!r}")
    symbols = symbols if symbols is not None else SymbolMap()
    stats = stats if stats is not None else FeedStats()
    for path in paths:
        src = str(path)
        opened = _open(path, stats)
        if opened is None:
            continue
        raw, meta, body = opened
        imap = _instrument_map(meta, instruments)
        rows_of = _RowCache(imap, symbols)
        base = len(raw) - len(body)  # where the records start in `raw`
        arr = _records(body, TRADE_REC, (RTYPE_MBP_0,), raw, base)
        if arr is not None:
            stats.rows += len(arr)
            parts = (_trade_ticks(lo, c["instrument_id"], c[ts_field], c["price"], c["size"], rows_of, stats, src)
                     for lo, c in _chunks(arr, raw, base))
        else:
            recs = _objects(raw, body, dbn.TradeMsg, imap, stats, src)
            parts = iter([_trade_ticks(0, np.array([r.instrument_id for r in recs], np.int64),
                                       np.array([getattr(r, ts_field) for r in recs], np.uint64),
                                       np.array([r.price for r in recs], np.int64),
                                       np.array([r.size for r in recs], np.int64), rows_of, stats, src)])
        yield from (TickBatch(b, symbols.names) for b in rebatch(parts, batch_size, stats))


def _chunks(arr: np.ndarray, raw: bytes | mmap.mmap, base: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first record, records) `CHUNK_RECORDS` at a time; once the caller is done
    with a chunk, its pages of `raw` (`arr` is a view of it from `base`) are released."""
    for lo in range(0, len(arr), CHUNK_RECORDS):
        c = arr[lo:lo + CHUNK_RECORDS]
        yield lo, c
        _release(raw, base + lo * arr.itemsize, c.nbytes)


def _release(raw: bytes | mmap.mmap, start: int, length: int) -> None:
    """Unmap the pages of `raw[start:start + length]` from this process when `raw` is a memory
    map (they stay in the page cache): a replay's resident memory then stays at a chunk, not
    the whole file it has read so far. Nothing for bytes."""
    if isinstance(raw, mmap.mmap) and length > 0:
        a = start - start % mmap.PAGESIZE
        raw.madvise(mmap.MADV_DONTNEED, a, min(start + length, len(raw)) - a)


def _trade_ticks(first: int, ids: np.ndarray, ts: np.ndarray, price: np.ndarray, size: np.ndarray,
                 rows_of: _RowCache, stats: FeedStats, src: str) -> np.ndarray:
    """TICK_DTYPE ticks of a run of trade records (`first`: the 0-based number of its first
    record); bad and unknown ones counted and left out."""
    ts = ts.astype(np.int64)
    bad = (price == UNDEF_PRICE) | (price <= 0) | (size <= 0) | (ts <= 0)
    if bad.any():
        stats.bad_many(src, np.flatnonzero(bad) + first + 1, "undefined or non-positive price, size or time")
    rows = rows_of(ids)
    unknown = ~bad & (rows < 0)
    stats.skipped += int(unknown.sum())
    ok = ~bad & ~unknown
    if ok.all():  # the usual case: no compaction
        return make_ticks(rows, ts, price / PRICE_SCALE, size.astype(np.float64))
    return make_ticks(rows[ok], ts[ok], price[ok] / PRICE_SCALE, size[ok].astype(np.float64))


def read_dbn_ohlcv(path: str | Path, symbols: SymbolMap | None = None, *,
                   instruments: Mapping[int, str] | None = None,
                   stats: FeedStats | None = None) -> np.ndarray:
    """Bars of an ohlcv-* DBN file as BAR_DTYPE (minute_ns = ts_event, the bar start; trades 0;
    vwap NaN), in file order."""
    symbols = symbols if symbols is not None else SymbolMap()
    stats = stats if stats is not None else FeedStats()
    src = str(path)
    opened = _open(path, stats)
    if opened is None:
        return np.empty(0, BAR_DTYPE)
    raw, meta, body = opened
    imap = _instrument_map(meta, instruments)
    arr = _records(body, OHLCV_REC, RTYPE_OHLCV)
    if arr is None:
        recs = _objects(raw, body, dbn.OHLCVMsg, imap, stats, src)
        arr = np.zeros(len(recs), OHLCV_REC)
        for name in ("instrument_id", "ts_event", "open", "high", "low", "close", "volume"):
            arr[name] = [getattr(r, name) for r in recs]
    else:
        stats.rows += len(arr)
    px = np.stack([arr[k] for k in ("open", "high", "low", "close")])
    bad = ((px == UNDEF_PRICE) | (px <= 0)).any(axis=0)
    if bad.any():
        stats.bad_many(src, np.flatnonzero(bad) + 1, "undefined or non-positive price")
    rows = _rows(arr["instrument_id"], imap, symbols)
    ok = ~bad & (rows >= 0)
    stats.skipped += int((~bad & (rows < 0)).sum())
    a = arr[ok]
    bars = np.zeros(len(a), BAR_DTYPE)
    bars["sym"] = rows[ok]
    bars["minute_ns"] = a["ts_event"].astype(np.int64)
    for k in ("open", "high", "low", "close"):
        bars[k] = a[k] / PRICE_SCALE
    bars["volume"] = a["volume"]
    bars["vwap"] = np.nan
    return bars


def encode_dbn_trades(ts_ns: np.ndarray, instrument_id: np.ndarray, price: np.ndarray, size: np.ndarray,
                      names: list[str], day: tuple[int, int, int]) -> bytes:
    """A DBN `trades` stream (metadata with `names[i]` mapped to instrument id i on `day`, then
    one 48-byte record per trade): synthetic recordings for benchmarks and tests."""
    import datetime as dt

    class _Interval:  # the shapes Metadata.encode reads (databento_dbn declares them as protocols)
        def __init__(self, iid: int) -> None:
            self.start_date = dt.date(*day)
            self.end_date = self.start_date + dt.timedelta(days=1)
            self.symbol = str(iid)

    class _Mapping:
        def __init__(self, raw: str, iid: int) -> None:
            self.raw_symbol, self.intervals = raw, [_Interval(iid)]

    meta = dbn.Metadata(dataset="SYNTHETIC", schema=dbn.Schema.TRADES, start=int(ts_ns.min()) if len(ts_ns) else 0,
                        end=int(ts_ns.max()) + 1 if len(ts_ns) else 1, stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, symbols=list(names), partial=[], not_found=[],
                        mappings=[_Mapping(n, i) for i, n in enumerate(names)])
    rec = np.zeros(len(ts_ns), TRADE_REC)
    rec["length"] = TRADE_REC.itemsize // 4
    rec["rtype"] = RTYPE_MBP_0
    rec["instrument_id"] = instrument_id
    rec["ts_event"] = rec["ts_recv"] = ts_ns
    rec["price"] = np.rint(np.asarray(price) * PRICE_SCALE).astype(np.int64)
    rec["size"] = size
    rec["action"], rec["side"] = b"T", b"N"
    return bytes(meta.encode()) + rec.tobytes()
