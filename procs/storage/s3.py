"""S3 cold archive: a trading day's bars (and trades) as Parquet, uploaded and verified, and back.

`archive_day` reads the day from PostgreSQL (or ClickHouse without PostgreSQL), trades from
ClickHouse, writes zstd Parquet files, uploads each as a multipart upload with a SHA-256 per
part, checks every part's echo and then the object's composite checksum and size from S3, and
writes the manifest last. `restore_day` verifies each file's SHA-256 against the manifest and
replaces that day in ClickHouse. `SessionArchiver` runs `archive_day` in a thread of the storage
process once the session of a day is over.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.config import Settings, reveal
from scanner.session import session_bounds_ns, trading_day
from scanner.storage import StorageError
from scanner.storage.archive import (
    PART_SIZE,
    build_manifest,
    data_key,
    file_checksums,
    iso_day,
    manifest_key,
    parse_manifest,
    same_composite,
)
from scanner.storage.rows import BARS_SCHEMA, TRADES_SCHEMA, bars_arrow

log = logging.getLogger("scanner.storage.s3")
NS = 1_000_000_000


def s3_client(s: Settings) -> Any:
    import boto3
    from botocore.config import Config

    if not s.s3_bucket:
        raise StorageError("no archive configured (set s3_bucket)")
    cfg = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=s.s3_endpoint_url, region_name=s.s3_region, config=cfg)


def upload_verified(s3: Any, bucket: str, key: str, path: Path, part_size: int = PART_SIZE) -> dict[str, Any]:
    """Multipart upload with per-part SHA-256, then verify the parts' echoes, the composite
    checksum and the size S3 reports. Aborted (nothing left behind) on any failure."""
    sums = file_checksums(path, part_size)
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    uid = up["UploadId"]
    try:
        parts = []
        with open(path, "rb") as f:
            for i, expected in enumerate(sums["parts_b64"], start=1):
                body = f.read(part_size)
                r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=body,
                                   ChecksumAlgorithm="SHA256", ChecksumSHA256=expected)
                if r.get("ChecksumSHA256") not in (None, expected):
                    raise StorageError(f"s3://{bucket}/{key} part {i}: checksum mismatch")
                parts.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumSHA256": expected})
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
        raise
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    size = path.stat().st_size
    reported = head.get("ChecksumSHA256")
    if head["ContentLength"] != size or reported is None or not same_composite(reported, sums["composite_b64"]):
        s3.delete_object(Bucket=bucket, Key=key)
        raise StorageError(f"s3://{bucket}/{key}: verification failed after upload "
                           f"(size {head['ContentLength']} vs {size}, checksum {reported} vs {sums['composite_b64']})")
    return {"key": key, "bytes": size, "sha256": sums["sha256"], "s3_checksum_sha256": sums["composite_b64"],
            "parts": len(parts)}


WINDOW_NS = 30 * 60 * NS  # a day is read and written in 30-minute parts: memory stays bounded


def _windows(day: int) -> Iterator[tuple[int, int]]:
    b = session_bounds_ns(day)
    for lo in range(b["day_start"], b["day_end"], WINDOW_NS):
        yield lo, min(lo + WINDOW_NS, b["day_end"])


def _day_parts(s: Settings, day: int, ch: Any) -> dict[str, Iterator[pa.Table]]:
    """Per table, the day's rows as a sequence of Arrow tables (one per window, sorted within)."""

    def pg_bars() -> Iterator[pa.Table]:
        from procs.storage.pg import connect, read_day_bars

        with connect(reveal(s.database_url) or "") as conn:
            for lo, hi in _windows(day):
                yield bars_arrow(read_day_bars(conn, day, lo, hi))

    def ch_rows(table: str, schema: pa.Schema, ts: str, order: str) -> Iterator[pa.Table]:
        names = ", ".join(schema.names)
        for lo, hi in _windows(day):
            q = (f"SELECT {names} FROM {table} WHERE day = {int(day)} AND {ts} >= fromUnixTimestamp64Nano({lo}) "
                 f"AND {ts} < fromUnixTimestamp64Nano({hi}) ORDER BY {order}")
            yield ch.query_arrow(q).cast(schema)

    parts: dict[str, Iterator[pa.Table]] = {}
    if s.database_url:
        parts["bars"] = pg_bars()
    elif ch is not None:
        parts["bars"] = ch_rows("bars_1m FINAL", BARS_SCHEMA, "minute", "symbol, minute")
    else:
        raise StorageError("nothing to archive from: set database_url or clickhouse_url")
    if ch is not None:
        parts["trades"] = ch_rows("trades", TRADES_SCHEMA, "ts", "symbol, ts")
    return parts


def _write_parts(parts: Iterator[pa.Table], schema: pa.Schema, path: Path, ts: str) -> dict[str, Any] | None:
    """Stream the parts into one zstd Parquet file; its stats, or None when there were no rows."""
    rows, symbols, lo, hi = 0, set(), None, None
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for t in parts:
            if not t.num_rows:
                continue
            writer.write_table(t, row_group_size=1 << 20)
            rows += t.num_rows
            symbols.update(pc.unique(t.column("symbol")).to_pylist())
            mn, mx = pc.min(t.column(ts)).as_py(), pc.max(t.column(ts)).as_py()
            lo, hi = min(lo or mn, mn), max(hi or mx, mx)
    if not rows:
        return None
    return {"rows": rows, "symbols": len(symbols), "min_ts": str(lo), "max_ts": str(hi)}


def archive_day(s: Settings, day: int) -> dict[str, Any] | None:
    """Archive trading day `day`; returns the manifest (None when the day has no bars)."""
    s3 = s3_client(s)
    t0 = time.perf_counter()
    ch = None
    if s.clickhouse_url:
        from procs.storage.ch import client

        ch = client(reveal(s.clickhouse_url) or "")
    files = []
    try:
        with tempfile.TemporaryDirectory(prefix="scanner-archive-") as tmp:
            for name, parts in _day_parts(s, day, ch).items():
                path = Path(tmp) / f"{name}.parquet"
                schema, ts = (BARS_SCHEMA, "minute") if name == "bars" else (TRADES_SCHEMA, "ts")
                stats = _write_parts(parts, schema, path, ts)
                if stats is None:
                    if name == "bars":
                        log.info("archive %s: no bars, nothing archived", iso_day(day))
                        return None
                    continue
                info = upload_verified(s3, s.s3_bucket, data_key(s.s3_prefix, name, day), path)
                files.append({"table": name, **stats, **info})
    finally:
        if ch is not None:
            ch.close()
    body = build_manifest(day, files, source="postgresql" if s.database_url else "clickhouse", instance=s.instance)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    s3.put_object(Bucket=s.s3_bucket, Key=manifest_key(s.s3_prefix, day), Body=body, ChecksumSHA256=digest,
                  ContentType="application/json")
    log.info("archived %s: %s in %.1f s", iso_day(day),
             ", ".join(f"{f['table']} {f['rows']} rows {f['bytes'] / 1e6:.1f} MB" for f in files),
             time.perf_counter() - t0)
    return json.loads(body)


def has_manifest(s3: Any, s: Settings, day: int) -> bool:
    try:
        s3.head_object(Bucket=s.s3_bucket, Key=manifest_key(s.s3_prefix, day))
        return True
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def download_verified(s: Settings, day: int, table: str, folder: Path, s3: Any = None) -> tuple[Path, int] | None:
    """Download one archived file of a day into `folder`, SHA-256 checked against the manifest:
    (path, rows), or None when that day or table is not archived."""
    s3 = s3 or s3_client(s)
    if not has_manifest(s3, s, day):
        return None
    manifest = parse_manifest(s3.get_object(Bucket=s.s3_bucket, Key=manifest_key(s.s3_prefix, day))["Body"].read())
    entry = next((f for f in manifest["files"] if f["table"] == table), None)
    if entry is None:
        return None
    path = folder / f"{table}-{day}.parquet"
    s3.download_file(s.s3_bucket, entry["key"], str(path))
    if file_checksums(path)["sha256"] != entry["sha256"]:
        raise StorageError(f"s3://{s.s3_bucket}/{entry['key']} does not match its manifest checksum")
    return path, int(entry["rows"])


def read_archived(s: Settings, day: int, table: str = "bars", s3: Any = None,
                  columns: list[str] | None = None) -> pa.Table | None:
    """One archived table of one day (verified), or None if not archived."""
    with tempfile.TemporaryDirectory(prefix="scanner-restore-") as tmp:
        got = download_verified(s, day, table, Path(tmp), s3)
        if got is None:
            return None
        data = pq.read_table(got[0], columns=columns)
    if data.num_rows != got[1]:
        raise StorageError(f"{table} of {iso_day(day)}: {data.num_rows} rows, the manifest says {got[1]}")
    return data


def restore_day(s: Settings, day: int) -> dict[str, int]:
    """Load an archived day back into ClickHouse (that day's partitions are replaced)."""
    if not s.clickhouse_url:
        raise StorageError("restore loads into ClickHouse: set clickhouse_url")
    from procs.storage.ch import ChWriter

    s3 = s3_client(s)
    if not has_manifest(s3, s, day):
        raise StorageError(f"no archive for {iso_day(day)} in s3://{s.s3_bucket}/{s.s3_prefix}")
    w = ChWriter(reveal(s.clickhouse_url) or "")
    w.open()
    out = {}
    try:
        with tempfile.TemporaryDirectory(prefix="scanner-restore-") as tmp:
            for table, ch_table in (("bars", "bars_1m"), ("trades", "trades")):
                got = download_verified(s, day, table, Path(tmp), s3)
                if got is None:
                    continue
                pf = pq.ParquetFile(got[0])
                if pf.metadata.num_rows != got[1]:
                    raise StorageError(f"{table} of {iso_day(day)}: {pf.metadata.num_rows} rows, manifest {got[1]}")
                out[table] = w.restore_day(ch_table, day, pf.iter_batches(batch_size=500_000))
    finally:
        w.close()
    return out


class SessionArchiver:
    """Archives each trading day once its session is over (event time past 20:00 New York plus
    a minute), from a thread, only when the bar spool is empty (so the database has the day)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.done: set[int] = set()
        self.retry_at: dict[int, float] = {}
        self.thread: threading.Thread | None = None

    def poll(self, event_ns: int, idle: bool) -> None:
        if not idle or (self.thread is not None and self.thread.is_alive()):
            return
        day = trading_day(event_ns)
        prev = trading_day(session_bounds_ns(day)["day_start"] - NS)
        for d in (prev, day):
            over = event_ns >= session_bounds_ns(d)["after_close"] + 60 * NS
            if over and d not in self.done and time.monotonic() >= self.retry_at.get(d, 0.0):
                self.thread = threading.Thread(target=self._run, args=(d,), name=f"archive-{d}", daemon=True)
                self.thread.start()
                return

    def _run(self, day: int) -> None:
        try:
            s3 = s3_client(self.s)
            if not has_manifest(s3, self.s, day):
                archive_day(self.s, day)
            self.done.add(day)
        except Exception as exc:  # noqa: BLE001 - archive trouble must not stop storage; retried later
            log.error("archive of %s failed (%s); retrying in 5 min", iso_day(day), exc)
            self.retry_at[day] = time.monotonic() + 300
