"""Smoke test of the CLI start-up benchmark (figures in docs/benchmarks.md): one JSON object on
the last line, every key present, every command actually run (no time is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_bench_cli_prints_its_keys() -> None:
    r = subprocess.run([sys.executable, "-m", "cli.app", "bench", "cli", "--rounds", "1", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rounds"] == 1
    for name in ("python_startup", "import_cli", "status", "stop", "rules_list", "status_full_settings"):
        assert out[f"{name}_cpu_ms_median"] > 0 and out[f"{name}_cpu_ms_min"] > 0
    for name in ("status", "stop", "rules_list", "status_full_settings"):
        assert out[f"{name}_vs_python_startup"] > 0
