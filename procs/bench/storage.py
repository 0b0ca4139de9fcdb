"""`scanner bench storage`: the storage sinks against real engines started for the run.

* PostgreSQL 15 (initdb'd on a free port, fsync on): a minute close of `symbols` bars through
  the writer's path (binary COPY into the temp table + upsert, one transaction), median over
  `minutes` closes -> `pg_minute_close_ms`, `pg_bars_per_s`; the same bars again (a replay after
  a crash: no row changes) -> `pg_replay_ms`; the local spool append + fdatasync -> `spool_append_ms`.
* ClickHouse (embedded chdb): the same minute closes as columnar Arrow inserts -> `clickhouse_rows_per_s`.
* S3 (moto_server): `s3_minutes` minutes of bars as zstd Parquet, multipart upload with per-part
  SHA-256 and verification -> `s3_parquet_mb_per_s` (Parquet bytes / (write + upload + verify)).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from scanner.session import MINUTE_NS, session_bounds_ns
from scanner.storage.rows import SPOOL_BAR_DTYPE, bars_arrow

BENCH_DAY = 20131008


def minute_bars(symbols: int, minute: int, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """One minute close: a bar per symbol around a per-symbol price level."""
    recs = np.zeros(symbols, SPOOL_BAR_DTYPE)
    recs["symbol"] = np.char.add(b"S", np.arange(symbols).astype("S15"))
    recs["minute_ns"] = session_bounds_ns(BENCH_DAY)["open"] + minute * MINUTE_NS
    o = base * (1 + rng.normal(0, 0.001, symbols))
    c = o * (1 + rng.normal(0, 0.002, symbols))
    recs["open"], recs["close"] = o, c
    recs["high"] = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.001, symbols)))
    recs["low"] = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.001, symbols)))
    recs["volume"] = rng.integers(100, 50_000, symbols).astype(np.float64)
    recs["vwap"] = (o + c) / 2
    recs["trades"] = rng.integers(1, 400, symbols)
    return recs


def bench_postgres(workdir: Path, closes: list[np.ndarray]) -> dict[str, Any]:
    from procs.bench.services import PostgresServer
    from procs.storage.pg import PgWriter, migrate
    from scanner.storage.spool import Spool

    srv = PostgresServer(workdir / "pg", fsync=True)
    try:
        migrate(srv.url)
        w = PgWriter(srv.url)
        w.open()
        w.write_bars(closes[0])  # partitions, plan cache
        times = []
        for recs in closes[1:]:
            t0 = time.perf_counter()
            w.write_bars(recs)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        w.write_bars(closes[-1])
        replay = time.perf_counter() - t0
        w.close()
        spool = Spool(workdir / "bench.spool", SPOOL_BAR_DTYPE, ("postgres",))
        spool_t = []
        for recs in closes[1:]:
            t0 = time.perf_counter()
            spool.append(recs)
            spool_t.append(time.perf_counter() - t0)
        spool.close()
    finally:
        srv.remove()
    med = statistics.median(times)
    n = len(closes[0])
    return {"pg_minute_close_ms": round(med * 1000, 2), "pg_minute_close_max_ms": round(max(times) * 1000, 2),
            "pg_bars_per_s": round(n / med), "pg_replay_ms": round(replay * 1000, 2),
            "spool_append_ms": round(statistics.median(spool_t) * 1000, 2)}


def bench_clickhouse(workdir: Path, closes: list[np.ndarray]) -> dict[str, Any]:
    from procs.storage.ch import ChWriter

    w = ChWriter(f"chdb://{workdir / 'chdb'}")
    w.open()
    try:
        w.write_bars(closes[0], "bench:0")
        t0 = time.perf_counter()
        for i, recs in enumerate(closes[1:], start=1):
            w.write_bars(recs, f"bench:{i}")
        dt = time.perf_counter() - t0
        rows = sum(len(r) for r in closes[1:])
    finally:
        w.close()
    return {"clickhouse_rows_per_s": round(rows / dt), "clickhouse_insert_ms": round(dt / (len(closes) - 1) * 1000, 2)}


def bench_s3(workdir: Path, symbols: int, minutes: int, rng: np.random.Generator, base: np.ndarray) -> dict[str, Any]:
    import boto3

    from procs.bench.services import MotoServer
    from procs.storage.s3 import upload_verified
    from scanner.storage.archive import write_parquet

    table = bars_arrow(np.concatenate([minute_bars(symbols, m, rng, base) for m in range(minutes)]))
    moto = MotoServer()
    try:
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench")
        s3.create_bucket(Bucket="scanner-bench")
        path = workdir / "bars.parquet"
        t0 = time.perf_counter()
        size = write_parquet(table, path)
        t1 = time.perf_counter()
        info = upload_verified(s3, "scanner-bench", "bench/bars.parquet", path)
        t2 = time.perf_counter()
    finally:
        moto.stop()
    mb = size / 1e6
    return {"s3_parquet_mb_per_s": round(mb / (t2 - t0), 1), "s3_upload_mb_per_s": round(mb / (t2 - t1), 1),
            "parquet_mb": round(mb, 2), "parquet_rows": table.num_rows,
            "parquet_bytes_per_bar": round(size / table.num_rows, 1),
            "s3_parts": info["parts"]}


def bench_storage(symbols: int = 10_000, minutes: int = 20, s3_minutes: int = 120) -> dict[str, Any]:
    """One run of all three sinks (each engine started here and stopped after)."""
    rng = np.random.default_rng(11)
    base = rng.uniform(2, 400, symbols)
    closes = [minute_bars(symbols, m, rng, base) for m in range(minutes + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="scanner-bench-storage-"))
    os.chmod(tmp, 0o711)  # the postgres user must reach its cluster directory
    try:
        out: dict[str, Any] = {"symbols": symbols, "minutes": minutes}
        out.update(bench_postgres(tmp, closes))
        out.update(bench_clickhouse(tmp, closes))
        out.update(bench_s3(tmp, symbols, s3_minutes, rng, base))
        out["pg_target_ms"] = 250
        out["pg_meets_target"] = out["pg_minute_close_ms"] < 250
        return out
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
