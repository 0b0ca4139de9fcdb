"""Issue 10.14: the soak command end to end, short (CI): it runs the pipeline, samples RSS per
process, scan p99 and drops over time, and reports a memory trend per process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_short_soak_reports_memory_latency_and_drops() -> None:
    r = subprocess.run([sys.executable, "-m", "cli.app", "soak", "--minutes", "0.5", "--symbols", "300",
                        "--rate", "5000", "--interval", "5", "--json"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["exit_code"] == 0 and out["samples"] >= 3 and len(out["series"]) == out["samples"]
    for name in ("supervisor", "ingest", "bars", "indicators", "scan-0", "publisher", "gateway"):
        assert out["rss_last_mb"][name] > 0 and name in out["rss_slope_mb_per_h"]
    assert out["ticks_per_s_median"] > 0 and out["scan_p99_ms_max"] > 0
    assert {"drops", "ring_lost", "restarts"} <= set(out)
    assert r.stdout.count("\n") > out["samples"]  # a human line per sample before the JSON
