"""`scanner soak --minutes M`: the whole pipeline at a high tick rate for M minutes, sampled.

Every `interval_s` it records, per process, the resident memory (VmRSS) and, for the instance,
the scan p99, the ticks/s and the drops; at the end it fits a line through each process's RSS
after the first fifth of the run (warm-up: caches, first kernels, the day's first bars) and
reports the slope in MB/hour (also after the last restart of any process: a restarted process
starts small again). A flat memory trend is a slope near zero for every process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

from procs.bench.live import LiveInstance, rss_mb

log = logging.getLogger("scanner.soak")


def soak(minutes: float, *, symbols: int = 5000, feed_rate: float = 50_000.0, interval_s: float | None = None,
         scan_interval_ms: int = 250, echo: Callable[[str], None] = print) -> dict:
    """Run, sample, stop; returns the summary (with every sample)."""
    interval = interval_s or max(1.0, min(30.0, minutes * 60 / 20))
    inst = LiveInstance(f"soak{os.getpid()}", symbols=symbols, feed_rate=feed_rate,
                        scan_interval_ms=scan_interval_ms, checkpoint_interval_s=60)
    samples: list[dict] = []
    inst.start()
    try:
        inst.wait("all processes running", inst.running, 600, 0.2)
        t0 = time.monotonic()
        end = t0 + minutes * 60
        echo(f"{'t_s':>7} {'ticks/s':>9} {'scan p99 ms':>11} {'drops':>6}  RSS MB per process")
        while True:
            st = inst.status()
            rss = {p["name"]: round(rss_mb(p["pid"]) or 0.0, 1) for p in st["processes"]}
            s = {"t_s": round(time.monotonic() - t0, 1), "ticks_per_s": st["ticks_per_s"],
                 "scan_p99_ms": st["scan_p99_ms"], "drops": st["drops"], "ring_lost": sum(st["ring_lost"].values()),
                 "restarts": sum(p["restarts"] for p in st["processes"]), "rss_mb": rss}
            samples.append(s)
            echo(f"{s['t_s']:>7} {s['ticks_per_s']:>9.0f} {s['scan_p99_ms']:>11.2f} {s['drops']:>6}  "
                 + " ".join(f"{k}={v:.0f}" for k, v in rss.items()))
            if time.monotonic() >= end:
                break
            time.sleep(min(interval, max(0.0, end - time.monotonic())))
    finally:
        code = inst.stop()
        inst.close()
    return summarize(samples, minutes, symbols, feed_rate, code)


def summarize(samples: list[dict], minutes: float, symbols: int, feed_rate: float, exit_code: int) -> dict:
    t = np.array([s["t_s"] for s in samples]) / 3600.0
    # the trend is fitted after the warm-up (first fifth) and after the last restart of any
    # process (a restarted process starts small again: that is not a trend)
    restarts = np.array([s["restarts"] for s in samples])
    changed = np.flatnonzero(np.diff(restarts)) + 1
    since = t[changed[-1]] if len(changed) else 0.0
    steady = (t >= max(t[-1] * 0.2, since)) if len(t) > 2 else np.ones(len(t), bool)
    procs = sorted({k for s in samples for k in s["rss_mb"]})
    slope, first, last, peak = {}, {}, {}, {}
    for name in procs:
        y = np.array([s["rss_mb"].get(name, np.nan) for s in samples])
        ok = steady & np.isfinite(y) & (y > 0)
        slope[name] = round(float(np.polyfit(t[ok], y[ok], 1)[0]), 1) if ok.sum() >= 3 else None
        first[name], last[name], peak[name] = float(y[0]), float(y[-1]), float(np.nanmax(y))
    p99 = np.array([s["scan_p99_ms"] for s in samples])
    return {
        "minutes": minutes, "symbols": symbols, "feed_rate": feed_rate, "samples": len(samples),
        "rss_first_mb": first, "rss_last_mb": last, "rss_peak_mb": peak, "rss_slope_mb_per_h": slope,
        "trend_window_s": [round(float(t[steady][0] * 3600), 1), round(float(t[-1] * 3600), 1)] if steady.any()
        else None,
        "rss_total_last_mb": round(sum(last.values()), 1),
        "scan_p99_ms_median": round(float(np.median(p99)), 3), "scan_p99_ms_max": round(float(p99.max()), 3),
        "ticks_per_s_median": round(float(np.median([s["ticks_per_s"] for s in samples])), 1),
        "drops": samples[-1]["drops"], "ring_lost": samples[-1]["ring_lost"], "restarts": samples[-1]["restarts"],
        "exit_code": exit_code, "series": samples,
    }
