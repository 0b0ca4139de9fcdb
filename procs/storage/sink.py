"""One thread per database: drains the spools (and the Redis alerts stream) into its writer.

The storage process's loop never touches a socket: it spools and wakes these threads. A thread
writes every frame its writer has not acknowledged, oldest first, acknowledges after commit,
and on any error closes the connection and retries with backoff (`scanner.backoff.Backoff`), so an
outage only grows the spool. Alerts are read with a consumer group of their own per database
(`storage-postgres`, `storage-clickhouse`): the stream keeps what was not yet acknowledged, so
a crash re-delivers, and the writers are idempotent on the stream id.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scanner.backoff import Backoff
from scanner.storage.rows import alert_rows
from scanner.storage.spool import Spool

log = logging.getLogger("scanner.storage")
ALERT_STREAM = "alerts"  # procs.redis_out.STREAM
MAX_ROWS = 200_000  # records merged into one transaction by a coalescing writer
ALERT_BATCH = 2000


class Writer(Protocol):
    name: str
    coalesce: bool

    def open(self) -> None: ...
    def close(self) -> None: ...
    def write_bars(self, recs: np.ndarray, token: str = "") -> None: ...
    def write_trades(self, recs: np.ndarray, token: str = "") -> None: ...
    def write_alerts(self, rows: list[tuple[Any, ...]]) -> None: ...
    def maintain(self) -> None: ...


class SinkThread(threading.Thread):
    """Drives one writer; `stop()` asks it to finish what is spooled (until a deadline) and exit."""

    def __init__(self, writer: Writer, spools: dict[str, Spool], *, redis_url: str | None = None,
                 consumer: str = "", rules_file: Path | None = None) -> None:
        super().__init__(name=f"sink-{writer.name}", daemon=True)
        self.writer, self.spools = writer, spools
        self.redis_url = redis_url
        self.group = f"storage-{writer.name}"
        self.consumer = consumer or f"{socket.gethostname()}-{writer.name}"
        self.wake = threading.Event()
        self._stop_at: float | None = None
        self.connected = False
        self.rows = 0  # records committed (bars + trades + alerts)
        self.errors = 0
        self.last_error = ""
        self.commit_ms = 0.0  # last commit's duration
        self._backoff = Backoff()
        self._redis: Any = None
        self._alerts_from = "0"  # own pending entries first, then new ones ('>')
        self._redis_backoff = Backoff()
        self.rules_file = rules_file if hasattr(writer, "sync_rules") else None
        self._rules_seen: int | None = -1  # mtime_ns of the rule store last mirrored

    # ------------------------------------------------------------------ control
    def stop(self, deadline_s: float) -> None:
        self._stop_at = time.monotonic() + deadline_s
        self.wake.set()

    def _stopping(self) -> bool:
        return self._stop_at is not None

    def run(self) -> None:
        while True:
            if self._stopping() and (time.monotonic() >= self._stop_at or not self._has_work()):  # type: ignore[operator]
                break
            try:
                if not self.connected:
                    self.writer.open()
                    self.connected = True
                    if self._backoff.succeeded():
                        log.info("%s: connected again", self.writer.name)
                busy = self._drain_spools()
                busy |= self._drain_alerts()
                self._sync_rules()
                self.writer.maintain()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect and retry, never lose the spool
                self._failed(exc)
                continue
            if not busy:
                self.wake.wait(0.2)
                self.wake.clear()
        self.writer.close()
        if self._redis is not None:
            self._redis.close()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.connected or not self._backoff.failing:
            log.error("%s unavailable (%s); spooling, retrying", self.writer.name, msg)
        self.last_error = msg
        self.connected = False
        self._alerts_from = "0"  # entries read but not written are pending: re-read them first
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass
        self._backoff.failed()
        while not self._backoff.ready() and not (self._stopping() and time.monotonic() >= self._stop_at):  # type: ignore[operator]
            time.sleep(0.05)

    def _has_work(self) -> bool:
        return any(s.pending(self.writer.name, 1)[1] for s in self.spools.values())

    # ------------------------------------------------------------------ spools
    def _drain_spools(self) -> bool:
        busy = False
        for stream, spool in self.spools.items():
            limit = MAX_ROWS if self.writer.coalesce else 1
            epoch, frames = spool.pending(self.writer.name, limit)
            if not frames:
                continue
            recs = [spool.read(f) for f in frames]
            batch = np.concatenate(recs) if len(recs) > 1 else recs[0]
            token = f"{stream}:{epoch}:{frames[0].seq}" if len(frames) == 1 else ""
            t0 = time.perf_counter()
            if stream == "bars":
                self.writer.write_bars(batch, token)
            else:
                self.writer.write_trades(batch, token)
            self.commit_ms = (time.perf_counter() - t0) * 1000
            spool.ack(self.writer.name, epoch, frames[-1].seq)
            self.rows += len(batch)
            busy = True
        return busy

    def _sync_rules(self) -> None:
        """Mirror the rule store into the database when the file changed (checked each pass: one stat)."""
        if self.rules_file is None:
            return
        try:
            mtime: int | None = self.rules_file.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._rules_seen:
            return
        try:
            rules = json.loads(self.rules_file.read_text()) if mtime is not None else []
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("rule store %s unreadable (%s); not mirrored", self.rules_file, exc)
            self._rules_seen = mtime
            return
        self.writer.sync_rules([r for r in rules if isinstance(r, dict) and "id" in r])  # type: ignore[attr-defined]
        self._rules_seen = mtime

    # ------------------------------------------------------------------ alerts (Redis stream)
    def _drain_alerts(self) -> bool:
        """One batch from the alerts stream into the writer, then XACK. Redis trouble only
        pauses alerts (with its own backoff); the spools keep draining."""
        if not self.redis_url or not self._redis_backoff.ready():
            return False
        import redis

        try:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2.0, socket_connect_timeout=1.0)
                try:
                    self._redis.xgroup_create(ALERT_STREAM, self.group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._alerts_from = "0"
            got = self._redis.xreadgroup(self.group, self.consumer, {ALERT_STREAM: self._alerts_from},
                                         count=ALERT_BATCH)
        except redis.RedisError as exc:
            if not self._redis_backoff.failing:
                log.error("%s: redis unavailable (%s); alerts wait in the stream", self.writer.name, exc)
            self._redis_backoff.failed()
            if self._redis is not None:
                self._redis.close()
                self._redis = None
            return False
        self._redis_backoff.succeeded()
        entries = got[0][1] if got else []
        if not entries:
            if self._alerts_from == "0":
                self._alerts_from = ">"  # own backlog done: now new entries
            return False
        pairs = [(eid.decode(), (fields or {}).get(b"alert", b"")) for eid, fields in entries]
        rows = alert_rows(pairs)
        if len(rows) < len(pairs):
            log.warning("%s: skipped %d malformed alert entries", self.writer.name, len(pairs) - len(rows))
        if rows:
            self.writer.write_alerts(rows)  # a database error propagates: reconnect, entries stay pending
        try:
            self._redis.xack(ALERT_STREAM, self.group, *[eid for eid, _ in entries])
        except redis.RedisError:
            self._redis.close()
            self._redis = None  # not acknowledged: re-delivered, and the writers ignore repeats
        self.rows += len(rows)
        return True
