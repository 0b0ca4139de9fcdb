"""Decoder for QuantConnect Lean / AlgoSeek US-equity files (zipped, header-less CSV).

Layouts (prices are integers in 1/10000 USD; times are milliseconds since New York midnight of
the day in the file name):

| kind | path | fields |
| --- | --- | --- |
| ticks | `tick/<sym>/<yyyymmdd>_trade.zip` | ms, price, size, exchange, sale_condition, suspicious (0/1) |
| minute bars | `minute/<sym>/<yyyymmdd>_trade.zip` | ms (bar start), open, high, low, close, volume |
| daily bars | `daily/<sym>.zip` | "yyyymmdd 00:00", open, high, low, close, volume |

Ticks of several files are merged in event-time order, one trading day at a time. Trades
marked suspicious are skipped (counted); sizes under 100 shares are flagged TICK_ODD_LOT. The
vendor's sale-condition bit string is not interpreted.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from scanner.daily import daily_matrix, reference_columns
from scanner.feeds.common import FeedStats, SymbolMap, TickBatch, in_batches, make_ticks, parse_numeric_rows
from scanner.records import BAR_DTYPE, TICK_ODD_LOT
from scanner.session import day_start_ns
from shm.records import concat

PRICE_SCALE = 10_000.0  # file prices are 1/10000 USD
MS_NS = 1_000_000
DAILY_DTYPE = np.dtype([("day", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
                        ("volume", "<f8")])
_DATE = re.compile(r"(\d{8})")


def read_lines(path: Path) -> list[str]:
    """Text lines of a CSV file, or of the single member of a zip."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            raw = z.read(names[0]) if names else b""
    else:
        raw = path.read_bytes()
    return raw.decode("utf-8", errors="replace").splitlines()


def file_day(path: Path) -> int | None:
    """yyyymmdd from a file name such as 20131008_trade.zip; None when absent."""
    m = _DATE.match(path.name)
    return int(m.group(1)) if m else None


def _decode_ticks(path: Path, symbol: str, day: int, symbols: SymbolMap, stats: FeedStats,
                  odd_lots: bool, keep_suspicious: bool) -> np.ndarray:
    src = str(path)
    lines = read_lines(path)
    stats.rows += len(lines)
    vals, line_no = parse_numeric_rows(lines, 6, (0, 1, 2, 5), src, stats)
    ms, px, size, sus = vals.T
    ok = np.ones(len(ms), bool)
    checks = (((ms < 0) | (ms >= 86_400_000), "time outside the day"), (px <= 0, "price not positive"),
              (size <= 0, "size not positive"), ((sus != 0) & (sus != 1), "suspicious flag not 0/1"))
    for cond, why in checks:
        bad = cond & ok
        if bad.any():
            stats.bad_many(src, line_no[bad], why)
            ok &= ~bad
    drop = ok & (sus == 1) & (not keep_suspicious)
    stats.skipped += int(drop.sum())
    ok &= ~drop
    row = symbols.row(symbol)
    if row < 0:
        stats.skipped += int(ok.sum())
        return make_ticks(np.empty(0), np.empty(0), np.empty(0), np.empty(0))
    ts = day_start_ns(day) + np.rint(ms[ok] * MS_NS).astype(np.int64)
    flags = np.where(size[ok] < 100, TICK_ODD_LOT, 0) if odd_lots else 0
    return make_ticks(np.full(len(ts), row), ts, px[ok] / PRICE_SCALE, size[ok], flags)


def read_lean_ticks(paths: Iterable[str | Path], symbols: SymbolMap | None = None, *,
                    batch_size: int = 65_536, stats: FeedStats | None = None, odd_lots: bool = True,
                    keep_suspicious: bool = False) -> Iterator[TickBatch]:
    """Ticks of Lean tick files (symbol from the parent folder, day from the file name),
    merged in event-time order day by day. Pass `stats` to read the counts afterwards."""
    symbols = symbols if symbols is not None else SymbolMap()
    stats = stats if stats is not None else FeedStats()
    by_day: dict[int, list[Path]] = {}
    for p in map(Path, paths):
        day = file_day(p)
        if day is None:
            stats.bad(str(p), 0, "file name has no yyyymmdd date")
            continue
        by_day.setdefault(day, []).append(p)
    for day in sorted(by_day):
        parts = [_decode_ticks(p, p.parent.name.upper(), day, symbols, stats, odd_lots, keep_suspicious)
                 for p in sorted(by_day[day])]
        ticks = concat(parts)
        ticks = ticks[np.argsort(ticks["ts_ns"], kind="stable")]
        yield from in_batches(ticks, symbols, batch_size, stats)


def lean_tick_files(root: str | Path, symbols: Iterable[str] | None = None,
                    days: Iterable[int] | None = None) -> list[Path]:
    """`root/tick/<sym>/<day>_trade.zip` files, optionally only some symbols / days."""
    want_sym = {s.lower() for s in symbols} if symbols is not None else None
    want_day = set(days) if days is not None else None
    out = []
    for p in sorted(Path(root, "tick").glob("*/*_trade.zip")):
        if (want_sym is None or p.parent.name in want_sym) and (want_day is None or file_day(p) in want_day):
            out.append(p)
    return out


def read_lean_minute(path: str | Path, row: int = 0, stats: FeedStats | None = None) -> np.ndarray:
    """Lean 1-minute trade bars of one file as BAR_DTYPE (sym = `row`, trades 0, vwap NaN)."""
    p = Path(path)
    stats = stats if stats is not None else FeedStats()
    day = file_day(p)
    if day is None:
        stats.bad(str(p), 0, "file name has no yyyymmdd date")
        return np.empty(0, BAR_DTYPE)
    lines = read_lines(p)
    stats.rows += len(lines)
    vals, line_no = parse_numeric_rows(lines, 6, (0, 1, 2, 3, 4, 5), str(p), stats)
    ok = ((vals[:, 1:5] > 0).all(axis=1) & (vals[:, 5] >= 0) & (vals[:, 0] >= 0) & (vals[:, 0] < 86_400_000)
          & (vals[:, 2] >= vals[:, 3]))
    if not ok.all():
        stats.bad_many(str(p), line_no[~ok], "bar values out of range")
    v = vals[ok]
    bars = np.zeros(len(v), BAR_DTYPE)
    bars["sym"] = row
    bars["minute_ns"] = day_start_ns(day) + np.rint(v[:, 0] * MS_NS).astype(np.int64)
    for j, name in enumerate(("open", "high", "low", "close"), start=1):
        bars[name] = v[:, j] / PRICE_SCALE
    bars["volume"] = v[:, 5]
    bars["vwap"] = np.nan
    return bars


def read_lean_daily(path: str | Path, stats: FeedStats | None = None) -> np.ndarray:
    """Lean daily bars as DAILY_DTYPE (prices in USD), in file order."""
    p = Path(path)
    stats = stats if stats is not None else FeedStats()
    lines = read_lines(p)
    stats.rows += len(lines)
    vals, line_no = parse_numeric_rows(lines, 6, (0, 1, 2, 3, 4, 5), str(p), stats,
                                       converters={0: _daily_date})
    ok = (vals[:, 1:5] > 0).all(axis=1) & (vals[:, 5] >= 0) & (vals[:, 0] >= 19000101)
    if not ok.all():
        stats.bad_many(str(p), line_no[~ok], "bar values out of range")
    v = vals[ok]
    out = np.zeros(len(v), DAILY_DTYPE)
    out["day"] = v[:, 0].astype(np.int64)
    for j, name in enumerate(("open", "high", "low", "close"), start=1):
        out[name] = v[:, j] / PRICE_SCALE
    out["volume"] = v[:, 5]
    return out


def _daily_date(s: str) -> float:
    s = s.strip()
    if len(s) < 8 or not s[:8].isdigit():
        raise ValueError(f"bad date {s!r}")
    return float(s[:8])


def daily_reference(daily: np.ndarray, day: int, lookback: int = 20) -> tuple[float, float]:
    """(previous close, average daily volume over the last `lookback` days) before `day`;
    NaNs when there is no earlier day."""
    if lookback <= 0:
        raise ValueError(f"'lookback' must be positive, was {lookback}")
    ref = reference_columns(daily_matrix([daily], day, lookback), adv_days=lookback)
    return float(ref["prev_close"][0]), float(ref["avg_daily_volume"][0])


__all__ = ["DAILY_DTYPE", "daily_reference", "lean_tick_files", "read_lean_daily", "read_lean_minute",
           "read_lean_ticks"]
