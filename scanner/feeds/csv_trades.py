"""Decoder for trades in CSV files with a header row (plain or `.gz`).

`CsvLayout` names the columns (symbol, timestamp, price, size, optionally conditions and a
correction indicator) and the timestamp unit: "auto" (ISO-8601 text, or an epoch integer whose
magnitude tells s / ms / us / ns), "iso", "s", "ms", "us" or "ns". ISO times without a zone
are UTC; fractions keep up to nanoseconds.

`POLYGON_TRADES` is the vendor flat-file layout (Polygon / Massive `us_stocks_sip/trades_v1`:
ticker, conditions, correction, exchange, id, participant_timestamp, price, sequence_number,
sip_timestamp, size, tape, trf_id, trf_timestamp). There, sizes under 100 flag TICK_ODD_LOT and
the condition ids set the flags of the vendor's table (`scanner.feeds.conditions.POLYGON`, the
same table the live Polygon parser reads: odd lot, average-price, out-of-sequence, official
open/close... prints), and corrected/cancelled trades (correction != 0) are skipped.

Vendor files are often sorted by symbol; `sort=True` (default) orders each file by event time
before yielding, which holds the whole file in memory.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from scanner.feeds.common import FeedStats, SymbolMap, TickBatch, in_batches, make_ticks
from scanner.feeds.conditions import POLYGON, Rule, flags_of
from scanner.records import TICK_ODD_LOT

TsUnit = Literal["auto", "iso", "s", "ms", "us", "ns"]
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class CsvLayout:
    """Column names of a trades CSV and its timestamp unit."""

    symbol: str = "symbol"
    ts: str = "ts"
    price: str = "price"
    size: str = "size"
    conditions: str | None = None  # comma-separated integer condition codes
    correction: str | None = None  # non-zero = corrected / cancelled trade
    ts_unit: TsUnit = "auto"


POLYGON_TRADES = CsvLayout(symbol="ticker", ts="sip_timestamp", price="price", size="size",
                           conditions="conditions", correction="correction", ts_unit="ns")


def parse_ts(text: str, unit: TsUnit = "auto") -> int:
    """Epoch ns of an ISO-8601 string or an epoch number in `unit` ("auto": by magnitude)."""
    s = text.strip()
    if unit == "iso" or (unit == "auto" and not s.lstrip("-").replace(".", "", 1).isdigit()):
        m = _ISO.match(s)
        if not m:
            raise ValueError(f"not an ISO-8601 time: {text!r}")
        day, clock, frac, tz = m.groups()
        dt = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if tz in (None, 'Z') else tz}")
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    whole, _, frac = s.partition(".")  # integer arithmetic: a float would lose the nanoseconds
    v = int(whole)
    if unit == "auto":
        a = abs(v)
        unit = "ns" if a >= 10**17 else "us" if a >= 10**14 else "ms" if a >= 10**11 else "s"
    scale = _UNIT_NS[unit]
    sub = (int(frac) * scale + 10 ** len(frac) // 2) // 10 ** len(frac) if frac else 0
    return v * scale + (sub if v >= 0 else -sub)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


@dataclass(frozen=True)
class _Cols:
    """Column positions of one file and the flag rules."""

    sym: int
    ts: int
    price: int
    size: int
    cond: int
    corr: int
    n_fields: int
    ts_unit: TsUnit
    odd_lots: bool
    conditions: dict[int, Rule]


_Parsed = tuple[str, int, float, float, int]


def _parse_row(rec: list[str], c: _Cols) -> _Parsed | str | None:
    """(symbol, ts_ns, price, size, flags); a reason string when malformed; None when it is a
    well-formed row to skip (corrected / cancelled trade)."""
    if len(rec) != c.n_fields:
        return f"expected {c.n_fields} fields, got {len(rec)}"
    try:
        t = parse_ts(rec[c.ts], c.ts_unit)
        p = float(rec[c.price])
        q = float(rec[c.size])
        conds = {int(x) for x in rec[c.cond].replace(" ", "").split(",") if x} if c.cond >= 0 else set()
    except (ValueError, OverflowError) as exc:
        return f"unparsable field: {exc}"
    if not (0 < p < float("inf")) or not (0 <= q < float("inf")) or t <= 0:
        return "price, size or time out of range"
    if c.corr >= 0 and rec[c.corr].strip() not in ("", "0"):
        return None
    flags = flags_of(conds, c.conditions) if conds else 0
    if c.odd_lots and q < 100:
        flags |= TICK_ODD_LOT
    return rec[c.sym].strip(), t, p, q, flags


def _columns(header: list[str], layout: CsvLayout, **rules: object) -> _Cols | str:
    idx = {name.strip(): i for i, name in enumerate(header)}
    need = [layout.symbol, layout.ts, layout.price, layout.size]
    missing = [n for n in [*need, layout.conditions, layout.correction] if n is not None and n not in idx]
    if missing:
        return f"header lacks column(s) {missing}"
    cond, corr = idx.get(layout.conditions or "", -1), idx.get(layout.correction or "", -1)
    return _Cols(*(idx[n] for n in need), cond, corr, len(header), layout.ts_unit, **rules)  # type: ignore[arg-type]


def _decode_file(path: Path, layout: CsvLayout, symbols: SymbolMap, stats: FeedStats,
                 **rules: object) -> np.ndarray:
    src = str(path)
    out: list[tuple[int, int, float, float, int]] = []
    with _open_text(path) as f:
        reader = csv.reader(f)
        line = 1
        try:
            header = next(reader, None)
            cols = _columns(header, layout, **rules) if header is not None else "empty file"
            if isinstance(cols, str):
                stats.bad(src, 1, cols)
                return _EMPTY.copy()
            for line, rec in enumerate(reader, start=2):
                stats.rows += 1
                got = _parse_row(rec, cols)
                if isinstance(got, str):
                    stats.bad(src, line, got)
                    continue
                r = symbols.row(got[0]) if got is not None else -1
                if r < 0:
                    stats.skipped += 1
                    continue
                out.append((r, *got[1:]))
        except (OSError, EOFError, csv.Error) as exc:  # truncated gzip, broken quoting: keep what was read
            stats.bad(src, line + 1, f"unreadable from here on: {exc}")
    if not out:
        return _EMPTY.copy()
    r, t, p, q, fl = zip(*out, strict=True)
    return make_ticks(np.array(r, np.int64), np.array(t, np.int64), np.array(p), np.array(q),
                      np.array(fl, np.uint32))


_EMPTY = make_ticks(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))


def read_csv_trades(paths: Iterable[str | Path], symbols: SymbolMap | None = None, *,
                    layout: CsvLayout = CsvLayout(), batch_size: int = 65_536, stats: FeedStats | None = None,
                    sort: bool = True, odd_lots: bool = False,
                    conditions: dict[int, Rule] = POLYGON) -> Iterator[TickBatch]:
    """Ticks of trade CSV files, file by file (each sorted by event time when `sort`).
    `odd_lots` flags sizes under 100 as TICK_ODD_LOT (US equities); `conditions` maps the
    condition ids of the layout's conditions column to their update rules."""
    symbols = symbols if symbols is not None else SymbolMap()
    stats = stats if stats is not None else FeedStats()
    for p in map(Path, paths):
        try:
            ticks = _decode_file(p, layout, symbols, stats, odd_lots=odd_lots, conditions=conditions)
        except OSError as exc:  # missing or unreadable file
            stats.bad(str(p), 0, f"unreadable file: {exc}")
            continue
        if sort:
            ticks = ticks[np.argsort(ticks["ts_ns"], kind="stable")]
        yield from in_batches(ticks, symbols, batch_size, stats)


def read_flat_file(paths: Iterable[str | Path], symbols: SymbolMap | None = None, *, batch_size: int = 65_536,
                   stats: FeedStats | None = None, ts_field: str = "sip_timestamp") -> Iterator[TickBatch]:
    """Ticks of vendor trade flat files (`POLYGON_TRADES` layout, `.csv.gz`); `ts_field` may
    be "participant_timestamp" instead."""
    layout = replace(POLYGON_TRADES, ts=ts_field)
    return read_csv_trades(paths, symbols, layout=layout, batch_size=batch_size, stats=stats, odd_lots=True)
