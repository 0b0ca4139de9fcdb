"""Smoke test of the end-to-end benchmark (figures in docs/benchmarks.md): `scanner bench e2e
--quick --json` runs real instances (one host, two hosts, two latency runs) and prints one JSON
object on its last line with every key of the contract; rates positive, latencies ordered and
positive (an alert is never received before the tick that led to it), and the Redis tap's
split likewise. No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO


@pytest.mark.slow
def test_bench_e2e_quick_prints_its_keys() -> None:
    r = subprocess.run([sys.executable, "-m", "cli.app", "bench", "e2e", "--quick", "--json",
                        "--symbols", "2000", "--ticks", "100000"], cwd=REPO,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["max_sustained_ticks_per_s"] > 0
    assert out["two_host_max_sustained_ticks_per_s"] > 0
    assert out["ticks_per_s_per_core"] > 0 and out["cores"] >= 1
    for cadence in ("1000ms", "100ms"):
        assert out[f"latency_alerts_{cadence}"] > 0
        assert 0 < out[f"latency_ms_p50_{cadence}"] <= out[f"latency_ms_p99_{cadence}"]
        # the Redis tap saw the alerts leave Redis after their scan, in bursts of at least one
        assert 0 < out[f"scan_to_redis_ms_p50_{cadence}"] <= out[f"scan_to_redis_ms_p99_{cadence}"]
        assert 1 <= out[f"alerts_per_scan_p50_{cadence}"] <= out[f"alerts_per_scan_max_{cadence}"]
