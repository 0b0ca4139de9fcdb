"""`scanner bench engine`: the shared-memory primitives measured with real processes.

* snapshot: seqlocked copy of a 10,000-row x 32-column partition while another process keeps
  writing the table (ingest-like batches), against a plain copy of the same bytes in the same
  run (the floor set by memory bandwidth).
* ring: one producer process, two consumer processes, records/s end to end, lost records.
* ingest: binary tick batches (`np.frombuffer`) validated, published to the tick ring and
  applied to the last-trade columns under the seqlock, against a per-tick Python loop.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from scanner.records import TICK_DTYPE
from scanner.ticks import LastTradeWriter, validate_ticks
from shm.ring import Ring
from shm.table import ColumnTable

N_ROWS, N_COLS = 10_000, 32
WRITER_PAUSE_S = 0.001  # concurrent writer: a 2,048-row batch every ~1 ms (ingest runs every 10 ms)


def _name(part: str) -> str:
    return f"scanner.bench{os.getpid()}.{part}"


def _table_writer(table_name: str, stop_at: float) -> None:
    t = ColumnTable.attach(table_name)
    w = t.writer(0)
    rng = np.random.default_rng(3)
    rows = rng.integers(0, t.n_rows, 2048)
    vals = rng.random(2048)
    while time.monotonic() < stop_at:
        blocks = w.mark_rows(rows)
        w.begin(blocks)
        for c in range(0, 8):  # the writer owns the first 8 columns, like ingest
            t.f8[c, rows] = vals
        w.end(blocks)
        time.sleep(WRITER_PAUSE_S)


def bench_snapshot(repeats: int = 400) -> dict:
    name = _name("table")
    t = ColumnTable.create(name, keys=[f"S{i}" for i in range(N_ROWS)],
                           writer_f8=[0] * 8 + [1] * 24 + [2] * 8, writer_i8=[0], n_writers=3,
                           layout_hash="bench")
    try:
        t.f8[:] = np.random.default_rng(1).random(t.f8.shape)
        cols = np.arange(N_COLS)
        out = np.empty((N_COLS, N_ROWS))
        plain, snap, retries = [], [], 0
        ctx = mp.get_context("fork")
        writer = ctx.Process(target=_table_writer, args=(name, time.monotonic() + 60))
        writer.start()
        try:
            time.sleep(0.2)
            for _ in range(20):
                t.snapshot(0, N_ROWS, cols, out)
            for _ in range(repeats):  # interleaved: baseline and candidate see the same noise
                a = time.perf_counter()
                np.copyto(out, t.f8[:N_COLS])
                b = time.perf_counter()
                retries += t.snapshot(0, N_ROWS, cols, out)
                c = time.perf_counter()
                plain.append(b - a)
                snap.append(c - b)
        finally:
            writer.terminate()
            writer.join()
        med, p99 = np.median(snap) * 1e6, np.percentile(snap, 99) * 1e6
        pmed = np.median(plain) * 1e6
        return {"snapshot_us_median": round(med, 1), "snapshot_us_p99": round(p99, 1),
                "plain_copy_us_median": round(pmed, 1), "snapshot_vs_plain_copy": round(med / pmed, 3),
                "snapshot_retry_rounds": retries, "snapshot_repeats": repeats,
                "snapshot_writer_pause_ms": WRITER_PAUSE_S * 1e3}
    finally:
        t.seg.unlink()
        t.close()


def _consume(ring_name: str, index: int, total: int, result: mp.Queue[tuple[int, int, int, float]]) -> None:
    r = Ring.attach(ring_name, TICK_DTYPE)
    c = r.consumer(index)
    got = 0
    checksum = 0
    while got + c.lost < total:
        batch = c.poll(65536)
        if len(batch):
            got += len(batch)
            checksum += int(batch["ts_ns"][-1])
    result.put((index, got, c.lost, time.perf_counter()))


def bench_ring(total: int = 20_000_000, batch: int = 8192, capacity: int = 1 << 20) -> dict:
    name = _name("ring")
    r = Ring.create(name, capacity, TICK_DTYPE)
    try:
        for i in range(2):
            r.consumer(i)  # register both consumers at head 0 before the producer starts
        ctx = mp.get_context("fork")
        q: mp.Queue = ctx.Queue()
        procs = [ctx.Process(target=_consume, args=(name, i, total, q)) for i in range(2)]
        for p in procs:
            p.start()
        time.sleep(0.3)
        recs = np.zeros(batch, TICK_DTYPE)
        recs["ts_ns"] = np.arange(batch)
        prod = r.producer()
        t0 = time.perf_counter()
        sent = 0
        cons = r.consumers
        while sent < total:
            # bench-only flow control: stay within half a ring of the slowest consumer, so the
            # figure is throughput rather than how much the consumers lose
            while sent - int(cons["cursor"][:2].min()) > capacity // 2:
                pass
            n = min(batch, total - sent)
            prod.publish(recs[:n])
            sent += n
        results = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
        t_end = max(res[3] for res in results)
        lost = sum(res[2] for res in results)
        return {"ring_records_per_s": round(total / (t_end - t0)), "ring_records": total,
                "ring_consumers": 2, "ring_lost": lost, "ring_batch": batch}
    finally:
        r.seg.unlink()
        r.close()


def bench_ingest(n_ticks: int = 4_000_000, batch: int = 16384) -> dict:
    """Binary batches -> frombuffer -> validate -> ring -> last-trade columns (seqlocked)."""
    tname, rname = _name("itable"), _name("iring")
    t = ColumnTable.create(tname, keys=[f"S{i}" for i in range(N_ROWS)], writer_f8=[0, 0],
                           writer_i8=[0, 0], n_writers=1, layout_hash="bench")
    r = Ring.create(rname, 1 << 20, TICK_DTYPE)
    try:
        rng = np.random.default_rng(5)
        src = np.zeros(n_ticks, TICK_DTYPE)
        src["sym"] = rng.integers(0, N_ROWS, n_ticks)
        src["ts_ns"] = 1_700_000_000_000_000_000 + np.arange(n_ticks)
        src["price"] = rng.uniform(5, 500, n_ticks).round(2)
        src["size"] = rng.integers(1, 10, n_ticks) * 100
        payloads = [src[i:i + batch].tobytes() for i in range(0, n_ticks, batch)]
        prod = r.producer()
        seq = t.writer(0)
        last = LastTradeWriter(t.f8[0], t.f8[1], t.i8[0], t.i8[1])

        def ingest_all() -> float:
            a = time.perf_counter()
            for p in payloads:
                ticks, _bad = validate_ticks(np.frombuffer(p, TICK_DTYPE), N_ROWS)
                prod.publish(ticks)
                blocks = seq.mark_rows(ticks["sym"].astype(np.intp))
                seq.begin(blocks)
                last.apply(ticks)
                seq.end(blocks)
            return time.perf_counter() - a

        price, size, ts, cnt = t.f8[0], t.f8[1], t.i8[0], t.i8[1]

        def python_loop(n: int) -> float:  # the per-tick baseline the design warns about
            a = time.perf_counter()
            for rec in src[:n].tolist():
                sym, _flags, tsn, px, sz = rec
                if 0 < px and sz >= 0:
                    price[sym] = px
                    size[sym] = sz
                    ts[sym] = tsn
                    cnt[sym] += 1
            return (time.perf_counter() - a) / n

        fast, slow = [], []
        for _ in range(3):
            fast.append(n_ticks / ingest_all())
            slow.append(1.0 / python_loop(100_000))
        f, s = float(np.median(fast)), float(np.median(slow))
        return {"ingest_ticks_per_s": round(f), "ingest_batch": batch,
                "python_loop_ticks_per_s": round(s), "ingest_speedup_vs_python": round(f / s, 1)}
    finally:
        for x in (t, r):
            x.seg.unlink()
            x.close()


def bench_engine(quick: bool = False) -> dict:
    out: dict = {"benchmark": "engine", "cores": os.cpu_count()}
    out.update(bench_snapshot(100 if quick else 400))
    out.update(bench_ring(2_000_000 if quick else 20_000_000))
    out.update(bench_ingest(500_000 if quick else 4_000_000))
    return out
