"""Replay sources: recorded trade files of several formats as one tick stream in event-time order.

| format | files | decoder |
| --- | --- | --- |
| `lean` | Lean / AlgoSeek `tick/<sym>/<yyyymmdd>_trade.zip` | `read_lean_ticks` (all files of a day merged) |
| `dbn` | Databento `*.dbn`, `*.dbn.zst`, schema `trades` | `read_dbn_trades` |
| `flat` | vendor flat files `*.csv.gz` (header with `ticker`, `sip_timestamp`) | `read_flat_file` |
| `csv` | trades CSV with a header row; columns named by a `CsvLayout` | `read_csv_trades` |

`auto` decides per file from its name and, for CSV, its header line. Every file (all Lean files
together) is one stream sorted by event time; streams are merged by event time (`merge_streams`),
one calendar day at a time when every file name carries a date (so a month of flat files is not
held in memory at once). `ReplaySpec` is built from the settings; `index` lists the symbols in
the files (the table's universe, known before the supervisor creates the table) and the first
trading day; `reference` reads the daily reference columns (previous close, average daily volume,
previous high/low, 52 weeks, daily SMAs) from Lean daily files.
Databento `ohlcv-*` files are refused: replay feeds trades, and the bars come out of the bar process.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import zstandard

from scanner.config import Settings
from scanner.daily import daily_matrix, reference_columns
from scanner.feeds.common import FeedStats, SymbolMap, TickBatch
from scanner.feeds.csv_trades import POLYGON_TRADES, CsvLayout, parse_ts, read_csv_trades, read_flat_file
from scanner.feeds.dbn import CHUNK_RECORDS, map_raw, read_dbn_trades, read_metadata, split_dbn
from scanner.feeds.lean import file_day, read_lean_daily, read_lean_ticks
from scanner.session import trading_day
from shm.records import concat, take

MAX_SYMBOL_BYTES = 16  # the table's key width
_NAME_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_TS_UNITS = ("auto", "iso", "s", "ms", "us", "ns")


class ReplayError(ValueError):
    """The replay cannot start: missing file, unknown format, no symbols (one-line message)."""


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: files with their formats, the CSV layout, the symbol filter, daily history."""

    files: tuple[tuple[Path, str], ...]
    layout: CsvLayout = CsvLayout()
    symbols: frozenset[str] = frozenset()  # upper-case filter; empty = all
    daily: Path | None = None

    def of(self, fmt: str) -> list[Path]:
        return [p for p, f in self.files if f == fmt]


@dataclass
class ReplayIndex:
    """The symbols found in the files (sorted, after the filter) and the first trading day."""

    symbols: list[str]
    first_day: int | None
    sources: dict[str, int] = field(default_factory=dict)  # format -> number of files


def detect_format(path: Path) -> str:
    """`lean`, `dbn`, `flat` or `csv` from the file name (and a CSV's header line)."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "lean"
    if name.endswith((".dbn", ".dbn.zst")):
        return "dbn"
    if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        header = _header(path)
        return "flat" if {"ticker", "sip_timestamp"} <= set(header) else "csv"
    raise ReplayError(f"cannot tell the format of {path} (expected .zip, .dbn[.zst], .csv[.gz]); "
                      "pass --format")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _header(path: Path) -> list[str]:
    try:
        with _open_text(path) as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, EOFError, csv.Error) as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None


def csv_layout(overrides: dict[str, str]) -> CsvLayout:
    """`CsvLayout` defaults with column names / ts unit replaced; unknown keys are an error."""
    names = {f.name for f in fields(CsvLayout)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ReplayError(f"unknown CSV layout key(s) {bad}; known: {sorted(names)}")
    if overrides.get("ts_unit", "auto") not in _TS_UNITS:
        raise ReplayError(f"CSV ts unit must be one of {list(_TS_UNITS)}, was {overrides['ts_unit']!r}")
    return replace(CsvLayout(), **overrides)  # type: ignore[arg-type]


def spec_from_settings(s: Settings) -> ReplaySpec:
    """Check the files exist, decide their formats, find the daily history folder."""
    if not s.replay_files:
        raise ReplayError("no replay files given")
    files = []
    for name in s.replay_files:
        p = Path(name)
        if not p.is_file():
            raise ReplayError(f"replay file {p} does not exist")
        fmt = s.replay_format if s.replay_format != "auto" else detect_format(p)
        if fmt == "dbn":
            _check_dbn(p)
        files.append((p, fmt))
    want = frozenset(x.strip().upper() for x in s.replay_symbols if x.strip())
    if want:  # Lean files name their symbol: skip the others without decoding them
        files = [(p, f) for p, f in files if f != "lean" or p.parent.name.upper() in want]
        if not files:
            raise ReplayError(f"none of the files hold the symbols {sorted(want)}")
    daily = s.replay_daily
    if daily is not None and not daily.is_dir():
        raise ReplayError(f"daily history folder {daily} does not exist")
    if daily is None:
        daily = next((d for p, f in files if f == "lean"
                      if (d := p.parent.parent.parent / "daily").is_dir() and p.parent.parent.name == "tick"), None)
    return ReplaySpec(tuple(files), csv_layout(s.replay_csv_layout), want, daily)


# ------------------------------------------------------------------ the universe


def index(spec: ReplaySpec) -> ReplayIndex:
    """Symbols in the files (Lean: folder names; DBN: decoded; CSV: one pass over the symbol
    column) after the filter, and the first trading day (from names or first rows)."""
    found: set[str] = set()
    days: list[int] = []
    for p in spec.of("lean"):
        found.add(p.parent.name.upper())
        if (d := file_day(p)) is not None:
            days.append(d)
    for p in spec.of("dbn"):  # a pass over the file a chunk at a time, never all its ticks at once
        m = SymbolMap()
        rows: set[int] = set()
        first = None
        for b in read_dbn_trades([p], m, batch_size=CHUNK_RECORDS):
            rows.update(np.unique(b.ticks["sym"]).tolist())
            t = int(b.ticks["ts_ns"].min())
            first = t if first is None else min(first, t)
        found.update(m.names[r] for r in rows)
        if first is not None:
            days.append(trading_day(first))
    for fmt, layout in (("csv", spec.layout), ("flat", POLYGON_TRADES)):
        for p in spec.of(fmt):
            names, first = _csv_symbols(p, layout)
            found |= names
            if first is not None:
                days.append(trading_day(first))
    if spec.symbols:
        found = {s for s in found if s.upper() in spec.symbols}
    if not found:
        what = f"the symbols {sorted(spec.symbols)}" if spec.symbols else "any symbol"
        raise ReplayError(f"the replay files do not hold {what}")
    long = sorted(s for s in found if len(s.encode()) > MAX_SYMBOL_BYTES)
    if long:
        raise ReplayError(f"symbol names longer than {MAX_SYMBOL_BYTES} bytes: {long[:5]}")
    counts: dict[str, int] = {}
    for _, f in spec.files:
        counts[f] = counts.get(f, 0) + 1
    return ReplayIndex(sorted(found), min(days) if days else None, counts)


def _check_dbn(path: Path) -> None:
    try:
        meta = read_metadata(path)
    except (OSError, ValueError, zstandard.ZstdError) as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None
    schema = str(meta.schema) if meta.schema is not None else "trades"
    if schema != "trades":
        raise ReplayError(f"{path} has DBN schema {schema!r}: replay feeds trades only")


def _csv_symbols(path: Path, layout: CsvLayout) -> tuple[set[str], int | None]:
    """Distinct symbols of a trades CSV (one pass over the symbol column) and the time of its
    first data row. Malformed rows are left for the decoder to report."""
    names: set[str] = set()
    first: int | None = None
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            if layout.symbol not in header or layout.ts not in header:
                raise ReplayError(f"{path}: header lacks column {layout.symbol!r} or {layout.ts!r} "
                                  f"(has {header[:12]})")
            i, j, n = header.index(layout.symbol), header.index(layout.ts), len(header)
            add = names.add
            for rec in reader:
                if len(rec) == n:
                    add(rec[i].strip())
                    if first is None:
                        try:
                            first = parse_ts(rec[j], layout.ts_unit)
                        except (ValueError, OverflowError):
                            pass
    except (OSError, EOFError, csv.Error):
        pass  # a truncated file: keep what was read; the decoder reports the rest
    names.discard("")
    return names, first


def estimate_rows(spec: ReplaySpec) -> int:
    """Data rows in the files (newlines / record sizes; no parsing): a progress bar's total."""
    total = 0
    for p, fmt in spec.files:
        try:
            if fmt == "lean":
                with zipfile.ZipFile(p) as z:
                    total += sum(_lines(z.read(n)) for n in z.namelist() if not n.endswith("/"))
            elif fmt == "dbn":
                _, body = split_dbn(map_raw(p))
                total += len(body) // 48
            else:
                total += _count_lines(p) - 1  # minus the header
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue
    return max(total, 0)


def _lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _count_lines(p: Path) -> int:
    n, last = 0, b"\n"
    with (gzip.open(p, "rb") if p.name.endswith(".gz") else open(p, "rb")) as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


# ------------------------------------------------------------------ the stream


def open_ticks(spec: ReplaySpec, symbols: SymbolMap, stats: FeedStats, *,
               batch_size: int = 65_536) -> Iterator[np.ndarray]:
    """TICK_DTYPE batches of every file in event-time order (rows of `symbols`, a fixed map:
    other symbols are skipped and counted). Malformed rows go to `stats`, never raise. Files
    are merged one day at a time when every name carries a date, else all at once."""
    by_day: dict[int | None, list[tuple[Path, str]]] = {}
    for p, f in spec.files:
        by_day.setdefault(name_day(p), []).append((p, f))
    days = sorted(d for d in by_day if d is not None)
    groups = [list(spec.files)] if None in by_day else [by_day[d] for d in days]
    for group in groups:
        lean = [p for p, f in group if f == "lean"]  # one stream: the Lean decoder merges its files itself
        streams = [_stream(p, f, spec, symbols, stats, batch_size) for p, f in group if f != "lean"]
        if lean:
            streams.append(_batches(read_lean_ticks(lean, symbols, stats=stats, batch_size=batch_size)))
        yield from merge_streams(streams)


def name_day(p: Path) -> int | None:
    """yyyymmdd of the first plausible date (yyyymmdd or yyyy-mm-dd) in a file name."""
    for m in _NAME_DATE.finditer(p.name):
        y, mo, d = (int(x) for x in m.groups())
        if 1900 <= y <= 2200 and 1 <= mo <= 12 and 1 <= d <= 31:
            return y * 10_000 + mo * 100 + d
    return None


def _batches(it: Iterable[TickBatch]) -> Iterator[np.ndarray]:
    return (b.ticks for b in it)


def _stream(p: Path, fmt: str, spec: ReplaySpec, symbols: SymbolMap, stats: FeedStats,
            batch_size: int) -> Iterator[np.ndarray]:
    if fmt == "dbn":
        return _batches(read_dbn_trades([p], symbols, stats=stats, batch_size=batch_size))
    if fmt == "flat":
        return _batches(read_flat_file([p], symbols, stats=stats, batch_size=batch_size))
    if fmt == "csv":
        return _batches(read_csv_trades([p], symbols, layout=spec.layout, stats=stats, batch_size=batch_size))
    raise ReplayError(f"unknown replay format {fmt!r}")


def merge_streams(streams: list[Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """Merge tick streams, each in event-time order, into one: emit every buffered tick up to
    the smallest of the buffers' latest times (no stream can still deliver an earlier one),
    stably sorted, so ties keep stream order. A stream that is not quite sorted still comes
    out whole, in near order (the bar aggregator merges or counts what is out of order)."""
    its = list(streams)
    bufs: list[np.ndarray | None] = [_next(it) for it in its]
    while True:
        live = [i for i, b in enumerate(bufs) if b is not None]
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            yield bufs[i]  # type: ignore[misc]
            yield from (b for b in its[i] if len(b))
            return
        bound = min(int(bufs[i]["ts_ns"].max()) for i in live)  # type: ignore[index]
        parts = []
        for i in live:
            b = bufs[i]
            assert b is not None
            now = b["ts_ns"] <= bound
            parts.append(take(b, now))
            rest = take(b, ~now)
            bufs[i] = rest if len(rest) else _next(its[i])
        out = concat(parts)
        yield take(out, np.argsort(out["ts_ns"], kind="stable"))


def _next(it: Iterator[np.ndarray]) -> np.ndarray | None:
    for b in it:
        if len(b):
            return b
    return None


# ------------------------------------------------------------------ reference data


def reference(symbols: list[str], day: int | None, daily: Path | None) -> tuple[dict[str, np.ndarray], int]:
    """(REFERENCE columns, symbols found) from Lean daily files `daily/<sym>.zip` before
    trading day `day` (see `scanner.daily.reference_columns`); NaN where there is no history."""
    m, found = daily_history(symbols, day, daily)
    return reference_columns(m), found


def daily_history(symbols: list[str], day: int | None, daily: Path | None) -> tuple[dict[str, np.ndarray], int]:
    """(right-aligned daily matrices as `scanner.daily.daily_matrix` gives them, symbols found)
    from Lean daily files `daily/<sym>.zip` before trading day `day`."""
    per: list[np.ndarray | None] = [None] * len(symbols)
    found = 0
    if daily is not None and day is not None:
        for i, sym in enumerate(symbols):
            f = daily / f"{sym.lower()}.zip"
            if f.is_file():
                try:
                    per[i] = read_lean_daily(f)
                    found += 1
                except (OSError, ValueError, zipfile.BadZipFile):
                    continue
    return daily_matrix(per, day or 0), found
