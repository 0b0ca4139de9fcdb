"""Smoke test of `scanner bench boot --rounds 1 --json` (figures in docs/benchmarks.md): one
start and one publisher restart in each mode, every key of the contract on the last line, the
times and CPU positive. No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO


@pytest.mark.slow
def test_bench_boot_prints_its_keys() -> None:
    r = subprocess.run([sys.executable, "-m", "cli.app", "bench", "boot", "--rounds", "1", "--symbols", "200",
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for mode in ("fork_server", "fresh"):
        for key in ("boot_s", "boot_cpu_s", "restart_s"):
            assert out[f"{key}_{mode}"] > 0, (key, mode, out)
        assert out[f"restart_cpu_s_{mode}"] >= 0  # a forked child's CPU may be below the clock tick
    assert out["boot_cpu_ratio"] > 0 and out["rounds"] == 1
