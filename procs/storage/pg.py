"""PostgreSQL / TimescaleDB side of storage: migrations, the bar and alert writer, bulk reads.

Daily bars (`bars_daily`, the live day's reference history) are rolled up from `bars_1m` in
SQL by the writer when a trading day's session closes or the next day begins, and caught up
when it (or the reference loader) starts: `roll_daily`, `read_daily`.

Bars go in with one binary COPY into a session temp table and one `INSERT ... ON CONFLICT
(symbol, bucket) DO UPDATE` per batch, in one transaction: a batch retried after an outage or a
crash rewrites the same rows, never duplicates them. Bulk reads (startup history, archive) use
binary `COPY ... TO STDOUT` with fixed-width rows parsed by numpy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from scanner.session import session_bounds_ns, trading_days
from scanner.storage import StorageError
from scanner.storage.migrations import discover, plan, split_statements
from scanner.storage.rows import ALERT_COLUMNS, BAR_VALUES, COPY_BAR_COLUMNS, dedupe_bars, pg_copy_bars

log = logging.getLogger("scanner.storage.pg")
LOCK_KEY = 0x5CA11E5  # advisory lock: one `migrate` at a time
PARTITION_DAYS_AHEAD = 7
SYM16 = "substring(convert_to({col}, 'UTF8') || decode(repeat('00', 16), 'hex') FROM 1 FOR 16)"


def connect(url: str, *, autocommit: bool = False, statement_timeout_ms: int = 0) -> psycopg.Connection:
    """A connection that fails fast (3 s connect timeout) instead of hanging the caller."""
    opts = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else ""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=3, options=opts)
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc


# ---------------------------------------------------------------------------------------- migrations
def detect_flavor(conn: psycopg.Connection, wanted: str) -> str:
    """'timescale' when asked for, or when 'auto' and the extension can be installed; else 'native'."""
    have = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None
    if wanted == "timescale" and not have:
        raise StorageError("storage_flavor=timescale, but the timescaledb extension is not available")
    return "timescale" if wanted == "timescale" or (wanted == "auto" and have) else "native"


def migrate(url: str, *, flavor: str = "auto", retention_days: int = 30, compress_after_days: int = 2) -> dict:
    """Apply pending migrations (idempotent; serialised by an advisory lock), then the policies."""
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, flavor text, checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        rows = conn.execute("SELECT version, flavor, checksum FROM schema_migrations").fetchall()
        chosen = next((f for _, f, _ in rows if f), None) or detect_flavor(conn, flavor)
        available = discover("postgres")
        for version, _f, checksum in rows:
            files = available.get(version, [])
            mine = [m for m in files if m.flavor in (None, chosen)]
            if mine and mine[0].checksum != checksum:
                log.warning("migration %04d changed after it was applied (checksum %s, now %s)", version,
                            checksum, mine[0].checksum)
        todo = plan(available, {v for v, _, _ in rows}, chosen)
        for mig in todo:
            t0 = time.perf_counter()
            record = ("INSERT INTO schema_migrations (version, name, flavor, checksum) VALUES (%s, %s, %s, %s)",
                      (mig.version, mig.name, mig.flavor, mig.checksum))
            try:
                if mig.transactional:
                    with conn.transaction():
                        conn.execute(mig.sql)
                        conn.execute(*record)
                else:
                    for stmt in split_statements(mig.sql):
                        conn.execute(stmt)
                    conn.execute(*record)
            except psycopg.Error as exc:
                hint = "; storage_flavor=native avoids TimescaleDB" if mig.flavor == "timescale" else ""
                raise StorageError(f"migration {mig.version:04d}_{mig.name} ({mig.flavor or 'all'}) failed: "
                                   f"{str(exc).strip().splitlines()[0]}{hint}") from exc
            log.info("applied migration %04d_%s (%s) in %.0f ms", mig.version, mig.name, mig.flavor or "all",
                     (time.perf_counter() - t0) * 1000)
        apply_policies(conn, chosen, retention_days, compress_after_days)
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return {"flavor": chosen, "applied": [f"{m.version:04d}_{m.name}" for m in todo],
            "current": max(available) if available else 0}


def apply_policies(conn: psycopg.Connection, flavor: str, retention_days: int, compress_after_days: int) -> None:
    """Retention (and compression): TimescaleDB policy jobs, or partitions made/dropped now."""
    if flavor == "timescale":
        conn.execute("SELECT remove_retention_policy('bars_1m', if_exists => TRUE)")
        conn.execute("SELECT add_retention_policy('bars_1m', make_interval(days => %s))", (retention_days,))
        conn.execute("SELECT remove_compression_policy('bars_1m', if_exists => TRUE)")
        conn.execute("SELECT add_compression_policy('bars_1m', make_interval(days => %s))", (compress_after_days,))
        return
    today = date.today()
    conn.execute("SELECT scanner_ensure_bar_partitions(%s, %s)", (today - timedelta(days=1),
                                                                 today + timedelta(days=PARTITION_DAYS_AHEAD)))
    conn.execute("SELECT scanner_drop_bar_partitions(%s)", (retention_days,))


# ---------------------------------------------------------------------------------------- writer
_UPSERT = sql.SQL("""INSERT INTO bars_1m (symbol, bucket, {cols})
SELECT convert_from(rtrim(sym, '\\x00'::bytea), 'UTF8'), bucket, {cols} FROM bars_stage
ON CONFLICT (symbol, bucket) DO UPDATE SET {sets}
WHERE ({old}) IS DISTINCT FROM ({new})""").format(
    cols=sql.SQL(", ").join(map(sql.Identifier, (*BAR_VALUES, "trades"))),
    sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in (*BAR_VALUES, "trades")),
    old=sql.SQL(", ").join(sql.SQL("bars_1m.{}").format(sql.Identifier(c)) for c in (*BAR_VALUES, "trades")),
    new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in (*BAR_VALUES, "trades")),
)
_ALERT_INSERT = sql.SQL("""INSERT INTO alert_history ({cols}) VALUES ({vals})
ON CONFLICT (stream_id) DO NOTHING""").format(
    cols=sql.SQL(", ").join(map(sql.Identifier, ALERT_COLUMNS)),
    vals=sql.SQL(", ").join(
        sql.SQL("to_timestamp(%s)") if c in ("event_ts", "scan_ts") else sql.SQL("%s") for c in ALERT_COLUMNS),
)


class PgWriter:
    """The storage process's PostgreSQL sink (one connection, used by one thread)."""

    name = "postgres"
    coalesce = True  # upserts are idempotent, so pending frames may be merged into one transaction

    def __init__(self, url: str, *, flavor: str = "auto", retention_days: int = 30,
                 compress_after_days: int = 2) -> None:
        self.url = url
        self.flavor, self.retention_days, self.compress_after_days = flavor, retention_days, compress_after_days
        self.conn: psycopg.Connection | None = None
        self._days: set[int] = set()  # trading days whose partitions exist
        self._migrated = False
        self._maintained = float("-inf")
        self._bar_day = 0  # latest trading day of the bars written (daily roll-up, `_roll_daily`)
        self._closed: set[int] = set()  # trading days whose 16:00 close was seen and rolled

    def open(self) -> None:
        if not self._migrated:  # the writer brings the schema up to date itself (idempotent)
            migrate(self.url, flavor=self.flavor, retention_days=self.retention_days,
                    compress_after_days=self.compress_after_days)
            self._migrated = True
            self._maintained = time.monotonic()  # migrate just applied the policies
        self.conn = connect(self.url, statement_timeout_ms=30_000)
        self.conn.execute(sql.SQL("""CREATE TEMP TABLE IF NOT EXISTS bars_stage (sym bytea, bucket timestamptz,
            {cols}, trades integer) ON COMMIT DELETE ROWS""").format(
            cols=sql.SQL(", ").join(sql.SQL("{} double precision").format(sql.Identifier(c)) for c in BAR_VALUES)))
        self.conn.commit()
        self._days.clear()
        n = roll_daily(self.conn)  # catch up on days whose bars were written but not rolled up
        if n:
            log.info("daily bars: %d rows rolled up from bars_1m", n)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def write_bars(self, recs: np.ndarray, token: str = "") -> None:
        """Upsert spool bar records in one transaction (COPY into the temp table, then merge)."""
        assert self.conn is not None
        recs = dedupe_bars(recs)
        days = set(np.unique(recs["minute_ns"] // 86_400_000_000_000).tolist()) - self._days
        with self.conn.transaction():
            cur = self.conn.cursor()
            if days:  # partitions by UTC day: make sure each day of this batch has one
                first, last = min(days), max(days)
                cur.execute("SELECT scanner_ensure_bar_partitions(%s, %s)",
                            (date(1970, 1, 1) + timedelta(days=first), date(1970, 1, 1) + timedelta(days=last)))
            cols = sql.SQL(", ").join(map(sql.Identifier, COPY_BAR_COLUMNS))
            with cur.copy(sql.SQL("COPY bars_stage ({}) FROM STDIN (FORMAT BINARY)").format(cols)) as cp:
                cp.write(pg_copy_bars(recs))
            cur.execute(_UPSERT)
        self._days |= days
        self._roll_daily(recs["minute_ns"])

    def _roll_daily(self, minute_ns: np.ndarray) -> None:
        """Roll the 1-minute bars up into `bars_daily` when a trading day ended: its regular
        session closed (the first bar at or after 16:00 of the latest day), a later day began
        (the previous day's after-hours volume is in by then), or bars of an ended day arrive
        late (gap repair, a spool replayed after an outage). Rolls from the earliest such day.
        Marked done only once the roll committed: a failure is retried with the next batch."""
        assert self.conn is not None
        days = trading_days(minute_ns)
        last = int(days.max())
        newest = max(self._bar_day, last)
        closed = last not in self._closed and bool((minute_ns[days == last] >= session_bounds_ns(last)["close"]).any())
        ended = [int(d) for d in np.unique(days) if d < newest]
        if self._bar_day and self._bar_day < newest:
            ended.append(self._bar_day)
        if closed:
            ended.append(last)
        if ended:
            n = roll_daily(self.conn, min(ended))
            log.info("daily bars rolled up from trading day %d (%d rows)", min(ended), n)
        if closed:
            self._closed.add(last)
        self._bar_day = newest

    def write_trades(self, recs: np.ndarray, token: str = "") -> None:
        raise StorageError("trades are stored in ClickHouse only")

    def write_alerts(self, rows: list[tuple[Any, ...]]) -> None:
        assert self.conn is not None
        with self.conn.transaction():
            self.conn.cursor().executemany(_ALERT_INSERT, rows)

    def maintain(self) -> None:
        """Hourly: next week's partitions, drop those past the retention (native flavour)."""
        if self.conn is None or time.monotonic() - self._maintained < 3600:
            return
        with self.conn.transaction():
            apply_policies(self.conn, "native" if self._flavor_native() else "timescale", self.retention_days,
                           self.compress_after_days)
        self._maintained = time.monotonic()

    def _flavor_native(self) -> bool:
        assert self.conn is not None
        row = self.conn.execute("SELECT flavor FROM schema_migrations WHERE flavor IS NOT NULL LIMIT 1").fetchone()
        return not row or row[0] == "native"

    def sync_rules(self, rules: list[dict[str, Any]]) -> None:
        """Mirror the rule store into the `rules` table (upsert present ones, delete the rest)."""
        assert self.conn is not None
        from psycopg.types.json import Jsonb

        with self.conn.transaction():
            cur = self.conn.cursor()
            ids = [str(r.get("id")) for r in rules]
            cur.executemany("""INSERT INTO rules (id, name, body) VALUES (%s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, body = EXCLUDED.body, updated_at = now()
                WHERE rules.body IS DISTINCT FROM EXCLUDED.body""",
                            [(i, str(r.get("name", i)), Jsonb(r)) for i, r in zip(ids, rules, strict=True)])
            cur.execute("DELETE FROM rules WHERE NOT (id = ANY(%s))", (ids,))


# ---------------------------------------------------------------------------------------- bulk reads
def copy_out(conn: psycopg.Connection, query: sql.Composable | str, dtype: np.dtype,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Run `COPY (query) TO STDOUT (FORMAT BINARY)` and parse its fixed-width rows into `dtype`
    (big-endian fields with their length words, as `scanner.storage.rows.COPY_BAR_ROW`).
    `progress(bytes so far)` is called per chunk."""
    stmt = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(sql.SQL(query) if isinstance(query, str) else query)
    buf = bytearray()
    with conn.cursor().copy(stmt) as cp:
        for chunk in cp:
            buf += chunk
            if progress is not None:
                progress(len(buf))
    if len(buf) < 21:
        return np.empty(0, dtype)
    ext = int.from_bytes(buf[15:19], "big")
    body = memoryview(buf)[19 + ext:len(buf) - 2]
    if len(body) % dtype.itemsize:
        raise StorageError(f"COPY rows are not {dtype.itemsize} bytes wide (NULLs in a fixed-width read?)")
    return np.frombuffer(body, dtype)


def fixed_row_dtype(fields: list[tuple[str, str]]) -> np.dtype:
    """Packed dtype of one binary COPY row with these (name, big-endian format) fields."""
    names, formats = ["ncols"], [">i2"]
    for name, fmt in fields:
        names += [f"len_{name}", name]
        formats += [">i4", fmt]
    return np.dtype({"names": names, "formats": formats})


DAY_BAR_ROW = fixed_row_dtype([("symbol", "S16"), ("bucket", ">i8"), *((f, ">f8") for f in BAR_VALUES),
                               ("trades", ">i4")])


def read_day_bars(conn: psycopg.Connection, day: int, start_ns: int | None = None,
                  end_ns: int | None = None) -> np.ndarray:
    """Bars of trading day `day` (yyyymmdd, New York) as spool records ordered by symbol and
    minute; `start_ns`/`end_ns` narrow it to a window of the day (for reading a day in parts)."""
    from scanner.storage.rows import PG_EPOCH_US, SPOOL_BAR_DTYPE

    b = session_bounds_ns(day)
    lo = max(b["day_start"], start_ns or b["day_start"])
    hi = min(b["day_end"], end_ns or b["day_end"])
    q = sql.SQL("SELECT {sym}, bucket, {cols}, trades FROM bars_1m WHERE bucket >= to_timestamp({lo}) "
                "AND bucket < to_timestamp({hi}) ORDER BY symbol, bucket").format(
        sym=sql.SQL(SYM16.format(col="symbol")), cols=sql.SQL(", ").join(map(sql.Identifier, BAR_VALUES)),
        lo=sql.Literal(lo / 1e9), hi=sql.Literal(hi / 1e9))
    rows = copy_out(conn, q, DAY_BAR_ROW)
    out = np.zeros(len(rows), SPOOL_BAR_DTYPE)
    out["symbol"] = rows["symbol"]
    out["minute_ns"] = (rows["bucket"].astype(np.int64) + PG_EPOCH_US) * 1000
    for f in BAR_VALUES:
        out[f] = rows[f]
    out["trades"] = rows["trades"]
    return out[trading_days(out["minute_ns"]) == day]


# ---------------------------------------------------------------------------------------- daily bars
_ROLL_DAILY = """INSERT INTO bars_daily (symbol, day, open, high, low, close, volume, vwap, trades)
SELECT symbol, ny, (array_agg(open ORDER BY bucket) FILTER (WHERE regular))[1],
       max(high) FILTER (WHERE regular), min(low) FILTER (WHERE regular),
       (array_agg(close ORDER BY bucket DESC) FILTER (WHERE regular))[1], sum(volume),
       sum(vwap * volume) / NULLIF(sum(volume), 0), sum(trades)
FROM (SELECT symbol, bucket, open, high, low, close, volume, vwap, trades,
             (bucket AT TIME ZONE 'America/New_York')::date AS ny,
             (bucket AT TIME ZONE 'America/New_York')::time >= '09:30'
             AND (bucket AT TIME ZONE 'America/New_York')::time < '16:00' AS regular
      FROM bars_1m WHERE bucket >= to_timestamp(%(lo)s)) b
GROUP BY symbol, ny HAVING bool_or(regular)
ON CONFLICT (symbol, day) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume, vwap = EXCLUDED.vwap, trades = EXCLUDED.trades
WHERE (bars_daily.open, bars_daily.high, bars_daily.low, bars_daily.close, bars_daily.volume, bars_daily.trades)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume, EXCLUDED.trades)"""


def roll_daily(conn: psycopg.Connection, first_day: int | None = None) -> int:
    """Upsert `bars_daily` from `bars_1m` for trading day `first_day` (yyyymmdd) and every later
    one; without it, from the last day already rolled (re-rolled: it may have been rolled before
    it ended), or all of `bars_1m` when none is. Idempotent. Returns the rows written."""
    with conn.transaction():  # one transaction of its own (the caller holds none open)
        if first_day is None:
            row = conn.execute("SELECT to_char(max(day), 'YYYYMMDD')::bigint FROM bars_daily").fetchone()
            first_day = int(row[0]) if row and row[0] is not None else None
        lo = session_bounds_ns(first_day)["day_start"] / 1e9 if first_day else 0.0
        conn.execute("SET LOCAL statement_timeout = 0")  # a whole day of 10,000 symbols, off the hot path
        cur = conn.execute(_ROLL_DAILY, {"lo": lo})
        return max(cur.rowcount, 0)


DAILY_ROW = fixed_row_dtype([("symbol", "S16"), ("day", ">i4"),
                             *((f, ">f8") for f in ("open", "high", "low", "close", "volume"))])


def read_daily(conn: psycopg.Connection, keys: list[str], first_day: int, before_day: int,
               chunk: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Daily bars of `keys` for trading days in [first_day, before_day): (index into `keys`,
    `scanner.feeds.lean.DAILY_DTYPE` records). Read with binary COPY, `chunk` symbols at a
    time (10,000 symbols x 252 days as Python rows would be ~0.5 GB of objects)."""
    from scanner.feeds.lean import DAILY_DTYPE

    index = {k.encode(): i for i, k in enumerate(keys)}
    syms, parts = [], []
    for a in range(0, len(keys), chunk):
        q = sql.SQL("SELECT {sym}, to_char(day, 'YYYYMMDD')::int4, open, high, low, close, volume FROM bars_daily "
                    "WHERE symbol = ANY({keys}) AND day >= to_date({lo}, 'YYYYMMDD') "
                    "AND day < to_date({hi}, 'YYYYMMDD')").format(
            sym=sql.SQL(SYM16.format(col="symbol")), keys=sql.Literal(keys[a:a + chunk]),
            lo=sql.Literal(str(first_day)), hi=sql.Literal(str(before_day)))
        rows = copy_out(conn, q, DAILY_ROW)
        d = np.zeros(len(rows), DAILY_DTYPE)
        for f in DAILY_DTYPE.names:
            d[f] = rows[f]
        names, inverse = np.unique(rows["symbol"], return_inverse=True)
        syms.append(np.array([index[bytes(n).rstrip(b"\0")] for n in names], np.int64)[inverse])
        parts.append(d)
    if not parts:
        return np.empty(0, np.int64), np.empty(0, DAILY_DTYPE)
    return np.concatenate(syms), np.concatenate(parts)
