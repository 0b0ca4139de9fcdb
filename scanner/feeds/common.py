"""What every decoder shares: the batch it yields, its statistics, the symbol -> row map, and a
CSV row parser that never raises on bad input.

Decoders yield `TickBatch`es: TICK_DTYPE ticks whose `sym` is a row of the `SymbolMap` the
caller passed (a fixed map: rows of the caller's symbol table, unknown symbols skipped and
counted) or one the decoder builds as it meets symbols (`SymbolMap(grow=True)`). Malformed rows
are counted in `FeedStats` with their line numbers and reasons (the first `max_bad`), never raised.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from scanner.records import TICK_DTYPE
from shm.records import concat


class SymbolMap:
    """symbol -> table row. `grow=True` assigns the next row to a new symbol; a fixed map
    (`grow=False`) answers -1 for symbols it does not hold."""

    def __init__(self, symbols: Iterable[str] = (), *, grow: bool = True) -> None:
        self.names: list[str] = []
        self.rows: dict[str, int] = {}
        self.grow = grow
        for s in symbols:
            if s in self.rows:
                raise ValueError(f"duplicate symbol {s!r} in the symbol map")
            self.rows[s] = len(self.names)
            self.names.append(s)

    def __len__(self) -> int:
        return len(self.names)

    def row(self, symbol: str) -> int:
        """Row of `symbol`; -1 when unknown to a fixed map."""
        r = self.rows.get(symbol)
        if r is None:
            if not self.grow:
                return -1
            r = self.rows[symbol] = len(self.names)
            self.names.append(symbol)
        return r

    def rows_of(self, symbols: Sequence[str] | np.ndarray) -> np.ndarray:
        """Rows of many symbols (int64, -1 unknown); one dict lookup per distinct symbol."""
        arr = np.asarray(symbols, dtype=object)
        if len(arr) == 0:
            return np.empty(0, np.int64)
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        return np.array([self.row(str(s)) for s in uniq], np.int64)[inv.reshape(-1)]


@dataclass
class TickBatch:
    """Ticks in feed order; `ticks["sym"]` indexes `symbols` (the map's row -> name list)."""

    ticks: np.ndarray
    symbols: list[str]


@dataclass
class FeedStats:
    """Counts of one decoding run. `rows` = data rows read, `ticks` = ticks yielded,
    `skipped` = well-formed rows not yielded (unknown symbol, suspicious or filtered),
    `malformed` = rows that could not be decoded; `bad_lines` keeps the first `max_bad` as
    (source, line number, reason)."""

    rows: int = 0
    ticks: int = 0
    skipped: int = 0
    malformed: int = 0
    max_bad: int = 20
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)

    def bad(self, source: str, line: int, reason: str) -> None:
        self.malformed += 1
        if len(self.bad_lines) < self.max_bad:
            self.bad_lines.append((source, line, reason))

    def bad_many(self, source: str, lines: np.ndarray, reason: str) -> None:
        for ln in lines[: max(0, self.max_bad - len(self.bad_lines))].tolist():
            self.bad_lines.append((source, int(ln), reason))
        self.malformed += len(lines)

    def report(self) -> str:
        """One line, then one per recorded bad line."""
        head = (f"{self.rows} rows, {self.ticks} ticks, {self.skipped} skipped, "
                f"{self.malformed} malformed")
        more = [f"  {src}:{ln}: {why}" for src, ln, why in self.bad_lines]
        if self.malformed > len(self.bad_lines):
            more.append(f"  ... {self.malformed - len(self.bad_lines)} more")
        return "\n".join([head, *more])


def parse_numeric_rows(lines: list[str], n_fields: int, usecols: Sequence[int], source: str,
                       stats: FeedStats, *, converters: dict[int, Callable[[str], float]] | None = None,
                       first_line: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Parse comma-separated lines with exactly `n_fields` fields into float64 values of
    `usecols` (shape (n_ok, len(usecols))) plus their 1-based line numbers. Clean input takes
    the fast path (`np.loadtxt`); anything odd falls back to a per-line parse that records each
    bad line in `stats` and carries on."""
    n = len(lines)
    if n == 0:
        return np.empty((0, len(usecols))), np.empty(0, np.int64)
    commas = sum(ln.count(",") for ln in lines)
    if commas == n * (n_fields - 1):
        try:
            with np.errstate(all="ignore"):
                vals = np.loadtxt(lines, delimiter=",", usecols=tuple(usecols), dtype=np.float64, ndmin=2,
                                  converters=converters, comments=None, quotechar=None)
            if len(vals) == n and np.isfinite(vals).all():
                return vals, np.arange(first_line, first_line + n, dtype=np.int64)
        except (ValueError, TypeError, IndexError):
            pass
    out: list[list[float]] = []
    line_no: list[int] = []
    conv_map = converters or {}
    for i, row in enumerate(csv.reader(lines, quoting=csv.QUOTE_NONE)):  # a stray quote must not join lines
        ln = first_line + i
        if len(row) != n_fields:
            stats.bad(source, ln, f"expected {n_fields} fields, got {len(row)}")
            continue
        try:
            vals_row = [conv_map[k](row[k]) if k in conv_map else float(row[k]) for k in usecols]
        except (ValueError, TypeError, IndexError) as exc:
            stats.bad(source, ln, f"unparsable field: {exc}")
            continue
        if not all(np.isfinite(vals_row)):
            stats.bad(source, ln, "non-finite number")
            continue
        out.append(vals_row)
        line_no.append(ln)
    return np.array(out, np.float64).reshape(-1, len(usecols)), np.array(line_no, np.int64)


def make_ticks(rows: np.ndarray, ts_ns: np.ndarray, price: np.ndarray, size: np.ndarray,
               flags: np.ndarray | int = 0) -> np.ndarray:
    """A TICK_DTYPE array from columns."""
    t = np.empty(len(rows), TICK_DTYPE)
    t["sym"], t["ts_ns"], t["price"], t["size"], t["flags"] = rows, ts_ns, price, size, flags
    return t


def in_batches(ticks: np.ndarray, symbols: SymbolMap, batch_size: int,
               stats: FeedStats) -> Iterator[TickBatch]:
    """Cut ticks into TickBatches of at most `batch_size`, counting them in `stats`."""
    return (TickBatch(part, symbols.names) for part in rebatch([ticks], batch_size, stats))


def rebatch(parts: Iterable[np.ndarray], batch_size: int, stats: FeedStats) -> Iterator[np.ndarray]:
    """Tick arrays cut and joined into batches of exactly `batch_size` (the last one may be
    shorter), counted in `stats`: batch sizes do not depend on how a reader split its input."""
    if batch_size <= 0:
        raise ValueError(f"'batch_size' must be positive, was {batch_size}")
    pending: list[np.ndarray] = []
    n = 0
    for p in parts:
        while len(p):
            k = min(batch_size - n, len(p))
            pending.append(p[:k])
            n += k
            p = p[k:]
            if n == batch_size:
                out = pending[0] if len(pending) == 1 else concat(pending)
                pending, n = [], 0
                stats.ticks += len(out)
                yield out
    if n:
        out = pending[0] if len(pending) == 1 else concat(pending)
        stats.ticks += len(out)
        yield out
