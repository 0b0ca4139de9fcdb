"""Row layouts and conversions for the sinks: spool records, PostgreSQL binary COPY, Arrow tables.

Spool records carry the symbol name (not the table row), so a spool written by one universe is
still meaningful after a restart with another. Every conversion is vectorised: a 10,000-bar
minute close is a few numpy operations, never a Python loop per bar.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from scanner.records import BAR_DTYPE, TICK_DTYPE, TICK_MARKS, TICK_REBUILD
from scanner.session import trading_days

SPOOL_BAR_DTYPE = np.dtype([
    ("symbol", "S16"), ("minute_ns", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"),
    ("close", "<f8"), ("volume", "<f8"), ("vwap", "<f8"), ("trades", "<u4"), ("_pad", "<u4"),
])
SPOOL_TRADE_DTYPE = np.dtype([
    ("symbol", "S16"), ("ts_ns", "<i8"), ("price", "<f8"), ("size", "<f8"), ("flags", "<u4"), ("_pad", "<u4"),
])
assert SPOOL_BAR_DTYPE.itemsize == 80 and SPOOL_TRADE_DTYPE.itemsize == 48
BAR_VALUES = ("open", "high", "low", "close", "volume", "vwap")


def bars_to_spool(bars: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Closed bars (BAR_DTYPE, `sym` = table row) -> spool records (symbol name from `keys`, S16)."""
    if bars.dtype != BAR_DTYPE:
        raise ValueError(f"'bars' must be BAR_DTYPE records, was {bars.dtype}")
    out = np.zeros(len(bars), SPOOL_BAR_DTYPE)
    out["symbol"] = keys[bars["sym"]]
    out["minute_ns"] = bars["minute_ns"]
    for f in BAR_VALUES:
        out[f] = bars[f]
    out["trades"] = bars["trades"]
    return out


def trades_to_spool(ticks: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Ticks (TICK_DTYPE) -> spool records with the symbol name. Kafka group mode's ownership
    marks and replayed ticks are left out: marks are no trades, and a replay's trades were
    stored by the host that took them live."""
    if ticks.dtype != TICK_DTYPE:
        raise ValueError(f"'ticks' must be TICK_DTYPE records, was {ticks.dtype}")
    if (ticks["flags"] & (TICK_MARKS | TICK_REBUILD)).any():
        ticks = ticks[(ticks["flags"] & (TICK_MARKS | TICK_REBUILD)) == 0]
    out = np.zeros(len(ticks), SPOOL_TRADE_DTYPE)
    out["symbol"] = keys[ticks["sym"]]
    for f in ("ts_ns", "price", "size", "flags"):
        out[f] = ticks[f]
    return out


def dedupe_bars(recs: np.ndarray) -> np.ndarray:
    """Keep the last record per (symbol, minute): one upsert may not touch a row twice."""
    if len(recs) < 2:
        return recs
    order = np.lexsort((np.arange(len(recs)), recs["minute_ns"], recs["symbol"]))
    s = recs[order]
    last = np.ones(len(s), bool)
    last[:-1] = (s["symbol"][1:] != s["symbol"][:-1]) | (s["minute_ns"][1:] != s["minute_ns"][:-1])
    return s if last.all() else s[last]


# -- PostgreSQL binary COPY: every field fixed width, so one structured array is the whole body.
PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
PGCOPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_COPY_FIELDS = [("symbol", "S16", 16), ("bucket", ">i8", 8)] + [(f, ">f8", 8) for f in BAR_VALUES] + \
    [("trades", ">i4", 4)]
_names: list[str] = ["ncols"]
_formats: list[str] = [">i2"]
for _f, _fmt, _len in _COPY_FIELDS:
    _names += [f"len_{_f}", _f]
    _formats += [">i4", _fmt]
COPY_BAR_ROW = np.dtype({"names": _names, "formats": _formats})  # packed: no alignment padding
# staging columns, in COPY order (the symbol travels as 16 NUL-padded bytes)
COPY_BAR_COLUMNS = ("sym", "bucket", *BAR_VALUES, "trades")


def pg_copy_bars(recs: np.ndarray) -> bytes:
    """Spool bar records -> a complete PGCOPY binary stream for the staging table."""
    rows = np.empty(len(recs), COPY_BAR_ROW)
    rows["ncols"] = len(_COPY_FIELDS)
    for f, _fmt, length in _COPY_FIELDS:
        rows[f"len_{f}"] = length
    rows["symbol"] = recs["symbol"]
    rows["bucket"] = recs["minute_ns"] // 1000 - PG_EPOCH_US
    for f in BAR_VALUES:
        rows[f] = recs[f]
    rows["trades"] = recs["trades"]
    return PGCOPY_HEADER + rows.tobytes() + PGCOPY_TRAILER


# -- Arrow (ClickHouse inserts and Parquet files share these schemas)
BARS_SCHEMA = pa.schema([
    ("day", pa.uint32()), ("symbol", pa.string()), ("minute", pa.timestamp("ms", tz="UTC")),
    *((f, pa.float64()) for f in BAR_VALUES), ("trades", pa.uint32()),
])
TRADES_SCHEMA = pa.schema([
    ("day", pa.uint32()), ("symbol", pa.string()), ("ts", pa.timestamp("ns", tz="UTC")),
    ("price", pa.float64()), ("size", pa.float64()), ("flags", pa.uint32()),
])


def _symbols(raw: np.ndarray) -> pa.Array:
    """S16 names -> Arrow strings via a dictionary: one decode per distinct symbol."""
    uniq, inv = np.unique(raw, return_inverse=True)
    names = pa.array([u.decode() for u in uniq.tolist()], pa.string())
    return names.take(pa.array(inv.astype(np.int32)))


def bars_arrow(recs: np.ndarray) -> pa.Table:
    """Spool bar records -> Arrow table (`BARS_SCHEMA`)."""
    cols = [pa.array(trading_days(recs["minute_ns"]).astype(np.uint32)), _symbols(recs["symbol"]),
            pa.array(recs["minute_ns"] // 1_000_000, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            *(pa.array(np.ascontiguousarray(recs[f])) for f in BAR_VALUES),
            pa.array(np.ascontiguousarray(recs["trades"]))]
    return pa.Table.from_arrays(cols, schema=BARS_SCHEMA)


def trades_arrow(recs: np.ndarray) -> pa.Table:
    """Spool trade records -> Arrow table (`TRADES_SCHEMA`)."""
    cols = [pa.array(trading_days(recs["ts_ns"]).astype(np.uint32)), _symbols(recs["symbol"]),
            pa.array(np.ascontiguousarray(recs["ts_ns"]), pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            pa.array(np.ascontiguousarray(recs["price"])), pa.array(np.ascontiguousarray(recs["size"])),
            pa.array(np.ascontiguousarray(recs["flags"]))]
    return pa.Table.from_arrays(cols, schema=TRADES_SCHEMA)


def arrow_to_spool_bars(table: pa.Table) -> np.ndarray:
    """Arrow bars (`BARS_SCHEMA` columns, any order) -> spool records (for archive restore checks)."""
    out = np.zeros(table.num_rows, SPOOL_BAR_DTYPE)
    out["symbol"] = np.array(table.column("symbol").to_pylist(), dtype="S16")
    out["minute_ns"] = table.column("minute").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy() \
        * 1_000_000
    for f in BAR_VALUES:
        out[f] = table.column(f).to_numpy()
    out["trades"] = table.column("trades").to_numpy()
    return out


# -- alerts (from the Redis stream: field `alert` = the publisher's JSON)
ALERT_COLUMNS = ("stream_id", "event_ts", "scan_ts", "day", "rule", "rule_name", "symbol", "kind", "severity",
                 "host", "worker", "generation", "seq", "metric_values")


def alert_rows(entries: list[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    """(stream id, JSON) -> tuples in `ALERT_COLUMNS` order; timestamps as epoch seconds (float),
    `metric_values` as JSON text. Malformed entries are skipped (they would block the stream forever)."""
    out = []
    for sid, raw in entries:
        try:
            a = json.loads(raw)
            ev = float(a["event_ts"])
            out.append((sid, ev, float(a.get("scan_ts", ev)), int(trading_days(np.array([int(ev * 1e9)]))[0]),
                        str(a["rule"]), str(a.get("rule_name", a["rule"])), str(a["symbol"]),
                        str(a.get("kind", "enter")), str(a.get("severity", "info")), str(a.get("host", "")),
                        int(a.get("worker", 0)), int(a.get("generation", 0)), int(a.get("seq", 0)),
                        json.dumps(a.get("values", {}), separators=(",", ":"))))
        except (ValueError, KeyError, TypeError, RecursionError):  # deep JSON would block the stream too
            continue
    return out
