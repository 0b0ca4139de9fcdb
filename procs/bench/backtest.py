"""Benchmark of a replay with scans on event time: `scanner bench backtest --json`.

A synthetic session of `symbols` symbols (default 10,000: `procs.bench.bars.synthetic_ticks`,
prices around a level per symbol, so VWAP crosses and RSI extremes fire) is written as a DBN
trades file and replayed twice with `scanner replay --max --no-serve` through the real processes
(ingest, bars, indicators, scan workers; no publisher or gateway, as `scanner backtest` runs), with
the default rule pack and a 1 s event-time scan cadence, at two decode batch sizes. Keys:

- `ticks_per_s`: ticks / feed wall time of the first run (decode, ring, bars, indicators and
  every scan boundary's hand-off included; process start-up excluded);
- `event_seconds_per_wall_second`: replayed event time / feed wall time;
- `alerts`, `identical_alerts` (both runs raised the same alerts, field by field),
  `boundaries` (scans per worker), `peak_rss_mb` (the largest process of the runs: supervisor,
  children, the replay command);
- `decode_ticks_per_s`: the same file through the DBN decoder alone, in this run: the baseline
  the replay's rate is a ratio of (`ratio_vs_decode`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from procs.bench.bars import BENCH_DAY, synthetic_ticks
from scanner.feeds.common import SymbolMap
from scanner.feeds.dbn import encode_dbn_trades, read_dbn_trades
from scanner.session import NS


def write_day(path: Path, symbols: int, ticks: int, minutes: int, seed: int) -> int:
    """The synthetic session as a DBN file named with its day; returns the ticks written."""
    t = synthetic_ticks(symbols, ticks, seed, minutes)
    names = [f"S{i:05d}" for i in range(symbols)]
    d = BENCH_DAY
    path.write_bytes(encode_dbn_trades(t["ts_ns"], t["sym"], t["price"], t["size"], names,
                                       (d // 10_000, d // 100 % 100, d % 100)))
    return len(t)


def _replay(path: Path, work: Path, name: str, batch: int, workers: int) -> tuple[dict, dict, Path]:
    out = work / f"{name}.parquet"
    data = work / name
    argv = [sys.executable, "-m", "cli.app", "replay", str(path), "--max", "--json", "--batch", str(batch),
            "--scan-interval-ms", "1000", "--alerts-out", str(out), "--instance", f"bench{os.getpid()}{name}",
            "--data-dir", str(data), "--no-serve", "--workers", str(workers)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"replay {name} failed ({r.returncode}): {r.stderr[-2000:]}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((data / f"bench{os.getpid()}{name}.replay.json").read_text())
    return summary, report, out


def _same_alerts(a: Path, b: Path) -> bool:
    """Field by field (both files are sorted by event time, rule, symbol; NaN equals NaN)."""
    import pyarrow.parquet as pq

    ta, tb = (pq.read_table(p).drop(["seq", "worker"]) for p in (a, b))
    if ta.column_names != tb.column_names or ta.num_rows != tb.num_rows:
        return False
    for c in ta.column_names:
        x, y = ta[c].to_numpy(zero_copy_only=False), tb[c].to_numpy(zero_copy_only=False)
        same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else bool((x == y).all())
        if not same:
            return False
    return True


def bench_backtest(symbols: int = 10_000, minutes: int = 20, rate: float = 5_000.0, seed: int = 7,
                   batches: tuple[int, int] = (65_536, 5_000), workers: int = 0) -> dict[str, Any]:
    """Run the benchmark; see the module docstring for the keys."""
    if symbols <= 0 or minutes <= 0 or rate <= 0:
        raise ValueError(f"'symbols', 'minutes' and 'rate' must be positive, were {symbols}, {minutes}, {rate}")
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        work = Path(tmp)
        path = work / f"synthetic-{BENCH_DAY}.dbn"
        n = write_day(path, symbols, int(minutes * 60 * rate), minutes, seed)
        t0 = time.perf_counter()
        decoded = sum(len(b.ticks) for b in read_dbn_trades([path], SymbolMap()))
        decode_rate = decoded / (time.perf_counter() - t0)
        runs = [_replay(path, work, f"b{b}", b, workers) for b in batches]
        (s1, r1, a1), (s2, r2, a2) = runs
        feed_s = (r1["wall_done_ns"] - r1["wall_start_ns"]) / NS
        event_s = (r1["last_event_ns"] - r1["first_event_ns"]) / NS
        feed2 = (r2["wall_done_ns"] - r2["wall_start_ns"]) / NS
        same = _same_alerts(a1, a2)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rate1 = s1["ticks"] / feed_s
    return {
        "symbols": symbols, "ticks": n, "event_minutes": minutes, "scan_interval_ms": 1000,
        "rules": "default pack", "batches": list(batches),
        "ticks_per_s": round(rate1), "ticks_per_s_second_batch": round(s1["ticks"] / feed2),
        "event_seconds_per_wall_second": round(event_s / feed_s, 2), "feed_s": round(feed_s, 2),
        "alerts": s1["alerts_written"], "alerts_second_batch": s2["alerts_written"], "identical_alerts": same,
        "alerts_lost": s1["alerts_lost"] + s2["alerts_lost"],
        "late_ticks": s1["late_ticks"], "peak_rss_mb": round(peak, 1),
        "decode_ticks_per_s": round(decode_rate), "ratio_vs_decode": round(rate1 / decode_rate, 4),
    }
