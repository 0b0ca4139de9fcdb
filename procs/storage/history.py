"""Startup history for the indicator process: the last N trading days of bars from PostgreSQL
(or, without a database, from the Parquet archive), so that moving averages and relative
volume are warm from the first minute.

Called once, before the indicator loop starts and before the shared-memory history is read:
the only place the pipeline reads a database. Beats the heartbeat while it loads and logs its
progress. It hands the engine its volume profile and returns the stored bars, which the
indicators merge into the history one chunk of rows at a time (`scanner.storage.history.
StoredBars`). Any failure (database down, no archive) only logs a warning: the indicators then
warm up from shared memory alone.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, timedelta

import numpy as np

from procs.runtime import Context
from scanner.config import Settings, reveal
from scanner.indicators.engine import IndicatorEngine
from scanner.metrics import HIST, HIST_FIELDS
from scanner.session import MINUTE_NS, minute_of_day, session_bounds_ns
from scanner.storage.history import ProfileSums, StoredBars, profile_from_sums

log = logging.getLogger("scanner.indicators.history")
NS = 1_000_000_000


def past_days(day: int, limit: int) -> list[int]:
    """Weekdays before `day`, newest first (holidays are found empty and skipped by the caller)."""
    d = date(day // 10000, day // 100 % 100, day % 100)
    out = []
    while len(out) < limit:
        d -= timedelta(days=1)
        if d.weekday() < 5:
            out.append(d.year * 10000 + d.month * 100 + d.day)
    return out


class Progress:
    """Progress log lines, at most one a second (called from the loading thread)."""

    def __init__(self, what: str) -> None:
        self.what, self.t0, self.last = what, time.monotonic(), 0.0

    def __call__(self, msg: str) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            log.info("warm start (%s): %s [%.1f s]", self.what, msg, now - self.t0)


def warm_start(ctx: Context, engine: IndicatorEngine, depth: int) -> StoredBars | None:
    """Load the last `depth` bars per symbol of past days (and today's, when stored) and the
    volume profile; `engine` gets the profile, the caller the bars to merge with the shared-memory
    ring (None: nothing stored, or no database / archive configured). The load runs in a thread
    while this one keeps the heartbeat going (a long query is not a stall)."""
    s = ctx.settings
    if s.warm_history_days <= 0 or not (s.database_url or s.s3_bucket):
        return None
    source = "postgresql" if s.database_url else "archive"
    t0 = time.monotonic()
    progress = Progress(source)
    day = int(ctx.shared.control.header["trading_day"])
    keys = ctx.shared.table.key_list()
    now = ctx.event_now_ns()
    result: dict[str, object] = {}

    def load() -> None:
        try:
            if source == "postgresql":
                result["data"] = _from_postgres(s, day, now, keys, depth, progress)
            else:
                result["data"] = _from_archive(s, day, keys, depth, progress)
        except Exception as exc:  # noqa: BLE001 - history is an optimisation: never stop the indicators for it
            result["error"] = exc

    loader = threading.Thread(target=load, name="warm-start", daemon=True)
    loader.start()
    while loader.is_alive() and ctx.should_run():
        ctx.beat()
        loader.join(0.25)
    if "data" not in result:
        exc = result.get("error", "stopped")
        log.warning("warm start from %s skipped: %s", source, str(exc).strip().splitlines()[0] if str(exc) else exc)
        return None
    rows, values, profile, days = result["data"]  # type: ignore[misc]
    if profile is not None:
        engine.load_volume_profile(profile)
    log.info("warm start: %d bars over %d past days for %d of %d symbols from %s in %.1f s", len(rows), len(days),
             len(np.unique(rows)), len(keys), source, time.monotonic() - t0)
    return StoredBars(rows, values) if len(rows) else None


History = tuple[np.ndarray, np.ndarray, "np.ndarray | None", list[int]]


def _from_postgres(s: Settings, day: int, now: int, keys: list[str], depth: int, progress: Progress) -> History:
    """(rows, values[HIST field, bar], volume profile, days used) from bars_1m."""
    from psycopg import sql

    from procs.storage.pg import connect, copy_out, fixed_row_dtype

    today = session_bounds_ns(day)["day_start"]
    until = now if now > today else session_bounds_ns(day)["day_end"]
    with connect(reveal(s.database_url) or "", statement_timeout_ms=120_000) as conn:
        days = []
        for d in past_days(day, 2 * s.warm_history_days + 10):
            b = session_bounds_ns(d)
            hit = conn.execute("SELECT EXISTS (SELECT 1 FROM bars_1m WHERE bucket >= to_timestamp(%s) "
                               "AND bucket < to_timestamp(%s))", (b["day_start"] / NS, b["day_end"] / NS)).fetchone()
            if hit and hit[0]:
                days.append(d)
                if len(days) == s.warm_history_days:
                    break
        progress(f"{len(days)} past days with bars")
        since = session_bounds_ns(days[-1])["day_start"] if days else today
        conn.execute("CREATE TEMP TABLE warm_syms (symbol text PRIMARY KEY, row integer) ON COMMIT DROP")
        with conn.cursor().copy("COPY warm_syms (symbol, row) FROM STDIN") as cp:
            for i, k in enumerate(keys):
                cp.write_row((k, i))
        value_cols = [f for f in HIST_FIELDS if f not in ("minute",)]
        q = sql.SQL("""SELECT row, (extract(epoch FROM bucket) / 60)::float8, {vals} FROM (
            SELECT w.row, b.bucket, {bvals}, row_number() OVER (PARTITION BY b.symbol ORDER BY b.bucket DESC) AS rn
            FROM bars_1m b JOIN warm_syms w USING (symbol)
            WHERE b.bucket >= to_timestamp({lo}) AND b.bucket < to_timestamp({hi})) x WHERE rn <= {k}""").format(
            vals=sql.SQL(", ").join(sql.SQL("{}::float8").format(sql.Identifier(c)) for c in value_cols),
            bvals=sql.SQL(", ").join(sql.SQL("b.{}").format(sql.Identifier(c)) for c in value_cols),
            lo=sql.Literal(since / NS), hi=sql.Literal(until / NS), k=sql.Literal(depth))
        dt = fixed_row_dtype([("row", ">i4"), ("minute", ">f8"), *((c, ">f8") for c in value_cols)])
        bars = copy_out(conn, q, dt, lambda nb: progress(f"last {depth} bars: {nb // dt.itemsize:,} rows"))
        values = np.empty((len(HIST_FIELDS), len(bars)))
        for i, f in enumerate(HIST_FIELDS):
            values[i] = bars[f]
        profile = None
        if days:
            q = sql.SQL("""SELECT w.row, (extract(hour FROM b.bucket AT TIME ZONE 'America/New_York') * 60
                + extract(minute FROM b.bucket AT TIME ZONE 'America/New_York'))::int4, sum(b.volume)::float8
                FROM bars_1m b JOIN warm_syms w USING (symbol)
                WHERE b.bucket >= to_timestamp({lo}) AND b.bucket < to_timestamp({hi}) GROUP BY 1, 2""").format(
                lo=sql.Literal(since / NS), hi=sql.Literal(today / NS))
            pdt = fixed_row_dtype([("row", ">i4"), ("mod", ">i4"), ("volume", ">f8")])
            sums = copy_out(conn, q, pdt, lambda nb: progress(f"volume profile: {nb // pdt.itemsize:,} cells"))
            profile = profile_from_sums(sums["row"], sums["mod"], sums["volume"], len(days), len(keys))
        conn.rollback()
    return bars["row"].astype(np.int64), values, profile, days


def _from_archive(s: Settings, day: int, keys: list[str], depth: int, progress: Progress) -> History:
    """The same from the Parquet archive, newest day first: every day feeds the profile (three
    columns), whole bars are kept only until each symbol has `depth` of them."""
    from procs.storage.s3 import read_archived, s3_client

    s3 = s3_client(s)
    index = {k: i for i, k in enumerate(keys)}
    acc = ProfileSums(len(keys))
    have = np.zeros(len(keys), np.int64)
    parts, days = [], []
    for d in past_days(day, 2 * s.warm_history_days + 10):
        whole = bool((have < depth).any())
        cols = ["symbol", "minute", *HIST_FIELDS[1:]] if whole else ["symbol", "minute", "volume"]
        t = read_archived(s, d, "bars", s3, columns=cols)
        if t is None:
            continue
        days.append(d)
        progress(f"{len(days)}/{s.warm_history_days} archived days")
        sym = t.column("symbol").dictionary_encode().combine_chunks()
        lookup = np.array([index.get(x, -1) for x in sym.dictionary.to_pylist()] + [-1], np.int64)
        rows = lookup[sym.indices.to_numpy(zero_copy_only=False)]
        minute_ns = t.column("minute").cast("int64").to_numpy() * 1_000_000
        mine = rows >= 0
        acc.add(rows[mine], minute_of_day(minute_ns[mine]), t.column("volume").to_numpy()[mine])
        if whole:
            vals = np.empty((len(HIST_FIELDS), int(mine.sum())))
            vals[HIST["minute"]] = (minute_ns[mine] // MINUTE_NS).astype(np.float64)
            for f in HIST_FIELDS[1:]:
                vals[HIST[f]] = t.column(f).to_numpy()[mine]
            parts.append((rows[mine], vals))
            have += np.bincount(rows[mine], minlength=len(keys))
        if len(days) == s.warm_history_days:
            break
    if not parts:
        return np.empty(0, np.int64), np.empty((len(HIST_FIELDS), 0)), None, []
    rows = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts], axis=1)
    return rows, values, acc.profile(len(days)), days
