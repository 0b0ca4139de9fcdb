"""Storage writer: closed bars (and captured trades) -> local spool -> PostgreSQL / ClickHouse.

The loop only polls rings and appends to the spool; database I/O happens in one thread per
database (`procs.storage.sink`), the day's archive in another (`procs.storage.s3`), so a slow
or absent database never stalls the loop, its heartbeat, or any other process.

Nothing is lost: the loop reads the ring through a private copy of its consumer cursor and
moves the shared cursor only after the batch is fsynced in the spool. A `kill -9` before that
leaves the records in the ring for the restarted writer; one after it is caught by the spool's
last frame (it records the ring cursor it reached). Frames leave the spool only once every
database committed them, and every write is idempotent, so a replay never duplicates.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import numpy as np

from procs.runtime import BootError, Context
from procs.shared import BAR_CONSUMER_STORAGE, TICK_CONSUMER_STORAGE
from procs.status import pid_alive
from procs.storage.sink import SinkThread, Writer
from scanner.config import Settings, reveal
from scanner.storage.rows import SPOOL_BAR_DTYPE, SPOOL_TRADE_DTYPE, bars_to_spool, trades_to_spool
from scanner.storage.spool import Spool
from shm.control import STATE_RUNNING
from shm.ring import Ring

log = logging.getLogger("scanner.storage")
PASS_S = 0.01
MAX_POLL = 1 << 16
MAX_FRAME = 1 << 20  # records per spool frame


class SpooledStream:
    """A ring consumer whose shared cursor advances only once the records are in the spool."""

    def __init__(self, name: str, ring: Ring, consumer: int, spool: Spool, convert: Callable[[np.ndarray], np.ndarray],
                 flush_s: float, ring_id: int) -> None:
        self.name, self.spool, self.convert, self.flush_s, self.ring_id = name, spool, convert, flush_s, ring_id
        self.consumer = ring.consumer(consumer, from_start=True)
        self.shared_state = self.consumer.state
        # poll() moves a private copy of the cursor; commit() publishes it after the fsync
        self.consumer.state = self.shared_state.copy()
        last = spool.last_frame()
        self.skipped = 0
        if last is not None and last.ring_id == ring_id and last.cursor_end > self.consumer.cursor:
            # spooled just before a crash, cursor not yet published: do not spool those twice
            self.skipped = last.cursor_end - self.consumer.cursor
            self.consumer.state["cursor"] = last.cursor_end
            self.commit()
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.first_at = 0.0
        self.full_since = 0.0  # monotonic time the spool stopped taking writes (0: it takes them)
        self.retry_at = 0.0
        self.write_errors = 0
        self.trim_failing = False

    def commit(self) -> None:
        self.shared_state[:] = self.consumer.state

    def pump(self, now: float, force: bool = False) -> int:
        """Poll the ring; spool a frame when the oldest buffered record waited `flush_s`. Returns
        the records polled. A spool write that fails (disk full) keeps the records buffered and
        the ring cursor where it was, stops polling, and retries a second later: the records
        wait in the ring (counted as lost only if the ring laps the cursor meanwhile)."""
        n = 0
        if self.full_since:
            if now < self.retry_at:
                return 0
        else:
            recs = self.consumer.poll(MAX_POLL)
            n = len(recs)
            if n:
                if not self.buf:
                    self.first_at = now
                self.buf.append(self.convert(recs))
                self.buffered += n
        if self.buf and (force or self.full_since or now - self.first_at >= self.flush_s
                         or self.buffered >= MAX_FRAME):
            batch = np.concatenate(self.buf) if len(self.buf) > 1 else self.buf[0]
            try:
                self.spool.append(batch, ring_id=self.ring_id, cursor_end=self.consumer.cursor)
            except OSError as exc:
                if not self.full_since:
                    log.error("%s: cannot write the spool (%s); %d records wait, retrying every second",
                              self.name, exc, self.buffered)
                    self.full_since = now
                self.retry_at = now + 1.0
                self.write_errors += 1
                return n
            if self.full_since:
                log.warning("%s: spool writable again after %.1f s; %d records spooled", self.name,
                            now - self.full_since, self.buffered)
                self.full_since = 0.0
            self.commit()
            self.buf, self.buffered = [], 0
        return n


def make_writers(s: Settings) -> list[Writer]:
    writers: list[Writer] = []
    if s.database_url:
        from procs.storage.pg import PgWriter

        writers.append(PgWriter(reveal(s.database_url) or "", flavor=s.storage_flavor,
                                retention_days=s.bar_retention_days, compress_after_days=s.bar_compress_after_days))
    if s.clickhouse_url:
        from procs.storage.ch import ChWriter, check_url

        check_url(reveal(s.clickhouse_url) or "")  # a malformed URL is a boot error, not a retry loop
        writers.append(ChWriter(reveal(s.clickhouse_url) or ""))
    return writers


def open_streams(ctx: Context, names: tuple[str, ...]) -> list[SpooledStream]:
    s, sh = ctx.settings, ctx.shared
    keys = sh.table.keys.copy()
    ring_id = int(sh.control.header["created_ns"])
    folder = s.spool_path()
    bars = Spool(folder / f"{s.instance}.bars.spool", SPOOL_BAR_DTYPE, names)
    streams = [SpooledStream("bars", sh.bars, BAR_CONSUMER_STORAGE, bars, lambda r: bars_to_spool(r, keys),
                             s.storage_flush_ms / 1000, ring_id)]
    if s.capture_trades:
        if "clickhouse" in names:
            trades = Spool(folder / f"{s.instance}.trades.spool", SPOOL_TRADE_DTYPE, ("clickhouse",))
            streams.append(SpooledStream("trades", sh.ticks, TICK_CONSUMER_STORAGE, trades,
                                         lambda r: trades_to_spool(r, keys), max(1.0, s.storage_flush_ms / 1000),
                                         ring_id))
        else:
            log.warning("capture_trades is on but no clickhouse_url is set: trades are not stored")
    for st in streams:
        sp = st.spool
        if sp.set_aside:
            log.warning("spool of another layout moved to %s (not replayed)", sp.set_aside)
        if sp.torn_bytes:
            log.warning("%s spool: cut %d bytes of a torn last write (re-read from the ring)", st.name, sp.torn_bytes)
        if sp.frames:
            log.info("%s spool: %d records from a previous run to write", st.name, sum(f.n for f in sp.frames))
        if st.skipped:
            log.info("%s: %d ring records were spooled before a crash; not spooled again", st.name, st.skipped)
    return streams


def main(ctx: Context) -> None:
    s = ctx.settings
    if not s.storage_enabled():
        raise BootError("the storage process needs database_url or clickhouse_url")
    try:
        writers = make_writers(s)
    except Exception as exc:  # noqa: BLE001 - configuration errors: stop the instance, do not restart
        raise BootError(str(exc)) from exc
    names = tuple(w.name for w in writers)
    streams = open_streams(ctx, names)
    consumer = f"{socket.gethostname()}-{s.instance}"
    mirror = None if s.rules_in_postgres() else s.rules_file()  # the PostgreSQL store needs no mirror
    threads = [SinkThread(w, {st.name: st.spool for st in streams if w.name in st.spool.sinks},
                          redis_url=reveal(s.redis_url), consumer=consumer, rules_file=mirror) for w in writers]
    for t in threads:
        t.start()
    archiver = None
    if s.s3_bucket and s.archive_at_session_end:
        from procs.storage.s3 import SessionArchiver

        archiver = SessionArchiver(s)
    log.info("storage: %s -> %s; spool %s%s", "+".join(st.name for st in streams), ", ".join(names),
             s.spool_path(), f"; archive s3://{s.s3_bucket}/{s.s3_prefix}" if archiver else "")
    seen = {"rows": 0, "errors": 0, "lost": sum(st.consumer.lost for st in streams)}
    next_trim = 0.0
    while ctx.should_run():
        ctx.beat()
        now = time.monotonic()
        t0 = time.perf_counter()
        n = sum(st.pump(now) for st in streams)
        if n:
            ctx.count(n_in=n)
            ctx.record_cycle(time.perf_counter() - t0)
        if now >= next_trim:
            next_trim = now + 0.2
            for st in streams:
                if st.spool.frames:
                    try:
                        st.spool.trim()
                        st.trim_failing = False
                    except OSError as exc:  # disk full: the committed prefix stays until there is room
                        st.write_errors += 1
                        if not st.trim_failing:
                            log.error("%s: cannot trim the spool (%s); retrying", st.name, exc)
                        st.trim_failing = True
            for t in threads:
                t.wake.set()
            _report(ctx, threads, streams, seen)
            if archiver is not None:
                archiver.poll(ctx.event_now_ns(), idle=all(not st.spool.backlog() for st in streams))
        if n < MAX_POLL:
            time.sleep(PASS_S)
    # stop: spool what the producers published up to their exit, give the databases a moment to
    # catch up, keep the rest spooled for the next start
    _drain_until_producers_stop(ctx, streams)
    for t in threads:
        t.stop(min(5.0, s.stop_timeout_s / 2))
    for t in threads:
        t.join(timeout=s.stop_timeout_s / 2 + 1)
    for st in streams:
        st.spool.trim()
        left = st.spool.backlog()
        if left:
            log.warning("%s: %d records stay in the spool for the next start", st.name, left)
        st.spool.close()


def _drain_until_producers_stop(ctx: Context, streams: list[SpooledStream], timeout_s: float = 3.0) -> None:
    """Keep spooling until bars (and ingest, for trades) left their loops: a bar closed in their
    last pass must reach the spool, or a clean stop would lose it (the next start gets new rings)."""
    slots = ctx.shared.control.slots
    producers = []
    for name in ("bars", "ingest") if len(streams) > 1 else ("bars",):
        try:
            producers.append(ctx.shared.control.slot_index(name))
        except KeyError:
            continue
    deadline = time.monotonic() + timeout_s
    while True:
        ctx.beat()
        running = [i for i in producers if int(slots[i]["state"]) == STATE_RUNNING and pid_alive(int(slots[i]["pid"]))]
        for st in streams:
            st.pump(time.monotonic(), force=not running)
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(PASS_S)
    for st in streams:
        st.pump(time.monotonic(), force=True)


def _report(ctx: Context, threads: list[SinkThread], streams: list[SpooledStream], seen: dict[str, int]) -> None:
    """Slot counters: rows committed (out), ring records lost (drops), database errors."""
    rows = sum(t.rows for t in threads)
    errors = sum(t.errors for t in threads) + sum(st.write_errors for st in streams)
    lost = sum(st.consumer.lost for st in streams)
    if lost != seen["lost"]:
        log.error("ring lapped: %d records lost before they reached the spool", lost - seen["lost"])
    ctx.count(n_out=rows - seen["rows"], errors=errors - seen["errors"], drops=lost - seen["lost"])
    seen.update(rows=rows, errors=errors, lost=lost)
