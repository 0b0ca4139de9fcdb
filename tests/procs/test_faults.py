"""Issue 10.11: the fault programme (procs/bench/faults.py) end to end, with short outages: every
process killed with -9 comes back with the table intact, Redis and PostgreSQL outages and a full
spool disk lose no bar, and a killed supervisor's next start cleans up and restores."""

from __future__ import annotations

import pytest

from procs.bench.faults import KILLED, bench_faults


@pytest.mark.slow
def test_fault_programme_loses_no_bar() -> None:
    out = bench_faults(symbols=300, feed_rate=5000.0, speed=20.0, redis_s=3.0, pg_s=3.0, full_s=3.0, spool_mb=16,
                       echo=lambda _line: None)
    rows = {r["fault"].split(" (")[0]: r for r in out["rows"]}
    for name in KILLED:
        assert rows[f"kill -9 {name}"]["table_intact"], rows[f"kill -9 {name}"]
    bars = rows["bars: history vs PostgreSQL"]
    assert bars["bars_missing"] == 0 and bars["bars_unexpected"] == 0, bars
    sup = rows["kill -9 supervisor"]
    assert sup["stale_cleaned"] and sup["checkpoint_restored"], sup
    assert out["exit_code"] == 0
    if out["spool_on_tmpfs"]:
        assert any(f.startswith("spool disk full") for f in rows)
