"""ClickHouse side of storage: client from a URL, migrations, the bar / trade / alert writer.

`clickhouse_url` picks the interface by scheme, the rest of the code is the same:
`http(s)://user:pass@host:8123/db` is a server over HTTP; `chdb:///abs/dir` (or `chdb://rel/dir`)
is the embedded engine (clickhouse-connect's chdb interface: one process per directory at a
time, so stop the instance before pointing another process at the same directory).
Inserts are columnar (Arrow arrays built from numpy) and carry a de-duplication token naming
the spool frame, so a retried frame is dropped by the server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from scanner.storage import StorageError
from scanner.storage.migrations import discover, plan, split_statements
from scanner.storage.rows import ALERT_COLUMNS, bars_arrow, trades_arrow

log = logging.getLogger("scanner.storage.ch")
_chdb_lock = threading.Lock()


def chdb_path(url: str) -> str | None:
    """The directory of a `chdb://` URL, else None."""
    if not url.startswith("chdb://"):
        return None
    path = url[len("chdb://"):]
    if not path:
        raise StorageError("clickhouse_url chdb:// needs a directory, e.g. chdb:///var/lib/scanner/ch")
    return path


def check_url(url: str) -> None:
    """Raise StorageError for a URL no interface can use (a configuration error, not an outage)."""
    if chdb_path(url) is None and not url.startswith(("http://", "https://", "clickhouse://", "clickhouses://")):
        raise StorageError(f"clickhouse_url must start with http(s):// or chdb://, was {url!r}")


def client(url: str) -> Any:
    """A clickhouse-connect client for `url` (HTTP server or embedded chdb)."""
    import clickhouse_connect

    try:
        path = chdb_path(url)
        if path is not None:
            with _chdb_lock:
                return clickhouse_connect.get_client(interface="chdb", path=path)
        check_url(url)
        return clickhouse_connect.get_client(dsn=url, connect_timeout=3, send_receive_timeout=30)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors vary by interface; report one line
        raise StorageError(f"cannot connect to ClickHouse ({url}): {exc}") from exc


def migrate(ch: Any) -> dict:
    """Apply pending ClickHouse migrations, recorded in its own `schema_migrations`."""
    ch.command("""CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String,
        applied_at DateTime64(3) DEFAULT now64()) ENGINE = ReplacingMergeTree ORDER BY version""")
    applied = {int(r[0]) for r in ch.query("SELECT version FROM schema_migrations FINAL").result_rows}
    available = discover("clickhouse")
    todo = plan(available, applied, "clickhouse")
    for mig in todo:
        for stmt in split_statements(mig.sql):
            ch.command(stmt)
        ch.insert("schema_migrations", [[mig.version, mig.name, mig.checksum]],
                  column_names=["version", "name", "checksum"])
        log.info("applied ClickHouse migration %04d_%s", mig.version, mig.name)
    return {"applied": [f"{m.version:04d}_{m.name}" for m in todo], "current": max(available) if available else 0}


class ChWriter:
    """The storage process's ClickHouse sink (one client, used by one thread)."""

    name = "clickhouse"
    coalesce = False  # one insert per spool frame: the frame names the insert's de-duplication token

    def __init__(self, url: str) -> None:
        self.url = url
        self.ch: Any = None

    def open(self) -> None:
        self.ch = client(self.url)
        migrate(self.ch)

    def close(self) -> None:
        if self.ch is not None:
            try:
                self.ch.close()
            finally:
                self.ch = None

    def _insert(self, table: str, data: pa.Table, token: str) -> None:
        settings = {"insert_deduplication_token": token} if token else {}
        self.ch.insert_arrow(table, data, settings=settings)

    def write_bars(self, recs: np.ndarray, token: str = "") -> None:
        self._insert("bars_1m", bars_arrow(recs), token)

    def write_trades(self, recs: np.ndarray, token: str = "") -> None:
        self._insert("trades", trades_arrow(recs), token)

    def write_alerts(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        data = {name: list(col) for name, col in zip(ALERT_COLUMNS, cols, strict=True)}
        for ts in ("event_ts", "scan_ts"):
            data[ts] = pa.array((np.array(data[ts]) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))
        table = pa.table(data)
        table = table.cast(pa.schema([
            (n, pa.timestamp("us", tz="UTC") if n in ("event_ts", "scan_ts") else
             pa.uint32() if n in ("day", "generation") else pa.uint16() if n == "worker" else
             pa.int64() if n == "seq" else pa.string()) for n in ALERT_COLUMNS]))
        self._insert("alerts", table, f"alerts:{rows[0][0]}:{rows[-1][0]}:{len(rows)}")

    def maintain(self) -> None:
        """Nothing periodic: partitions are managed by the server."""

    def restore_day(self, table: str, day: int, batches: Iterable[pa.RecordBatch]) -> int:
        """Replace one trading day of `table` with `batches` (drop the partition, insert): exactly once."""
        self.ch.command(f"ALTER TABLE {table} DROP PARTITION {int(day)}")
        t0 = time.perf_counter()
        rows = 0
        for batch in batches:
            self.ch.insert_arrow(table, pa.Table.from_batches([batch]))
            rows += batch.num_rows
        log.info("restored %d rows of %s for %d in %.1f s", rows, table, day, time.perf_counter() - t0)
        return rows
