"""Scans on event time in a replay: the same alerts at any speed and batch size.

A real recorded day (Lean, four symbols, 04:00-20:00) replayed through the running processes
with `--max` at two decode batch sizes and two scan workers vs one; a real 20-second window of
the same day replayed paced at `--speed 1` and with `--max`. The alert files are compared field
by field (symbol, rule, kind, event time, values); only the wall-clock scan time may differ.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.lean import read_lean_ticks
from scanner.rules.store import default_pack
from scanner.session import NS, session_bounds_ns
from tests.procs.test_replay import LEAN_DAY, replay
from tests.support import SHARED_DATA

DAILY = SHARED_DATA / "lean-us-equity" / "daily"
# crossings happen many times a day on real prints: a set that alerts often, plus the default pack
BUSY_RULES = [
    {"id": "above-vwap", "metric": "price", "operator": ">", "other": "vwap", "alert_mode": "enter_exit"},
    {"id": "up-half-pct", "metric": "change_pct", "operator": ">", "value": 0.5},
    {"id": "ema-cross", "metric": "price", "operator": "crosses_above", "other": "ema_9"},
]
KEY = ["event_ns", "rule", "symbol", "kind"]


def lean_files() -> list[str]:
    files = sorted(glob.glob(LEAN_DAY))
    if len(files) < 2:
        pytest.skip(f"real market data {SHARED_DATA} is absent (see ../shared/data/README.md)")
    return files


def with_rules(tmp: Path) -> Path:
    """A replay directory whose rule store holds BUSY_RULES + the default pack."""
    (tmp / "data").mkdir(parents=True)
    rules = BUSY_RULES + [r.dump() for r in default_pack()]
    (tmp / "data" / "rules.json").write_text(json.dumps(rules))
    return tmp


def alerts(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=["seq", "worker"]).sort_values(KEY, ignore_index=True)


def assert_same_alerts(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    for col in a.columns:  # field by field, so a failure names the field
        if a[col].dtype == float:
            np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col


@pytest.mark.slow
def test_real_day_same_alerts_at_any_batch_size_and_worker_count(tmp_path: Path) -> None:
    files = lean_files()
    runs = []
    for name, extra in (("a", ["--batch", "65536", "--workers", "1"]), ("b", ["--batch", "777", "--workers", "2"])):
        d = with_rules(tmp_path / name)
        out = d / "alerts.csv"
        summary, _ = replay(d, *files, "--max", "--alerts-out", str(out), "--scan-interval-ms", "5000", *extra)
        assert summary["alerts_lost"] == 0 and summary["late_ticks"] == 0
        runs.append(alerts(out))
    a, b = runs
    assert len(a) > 100, "the busy rules must alert on a real day"
    assert set(a.rule) >= {"above-vwap", "up-half-pct", "ema-cross"}
    assert set(a.symbol) == {"AIG", "BAC", "IBM", "SPY"}
    assert (a.event_ns % (5 * NS) == 0).all(), "alerts are raised at event-time scan boundaries"
    assert_same_alerts(a, b)


def window_csv(path: Path, start_s: float, seconds: float) -> Path:
    """The real ticks of `seconds` from `start_s` after the open, as a trades CSV."""
    syms = SymbolMap()
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(lean_files(), syms, stats=FeedStats())])
    t0 = session_bounds_ns(20131008)["open"] + int(start_s * NS)
    w = ticks[(ticks["ts_ns"] >= t0) & (ticks["ts_ns"] < t0 + int(seconds * NS))]
    w = w[np.argsort(w["ts_ns"], kind="stable")]
    pd.DataFrame({"symbol": [syms.names[int(i)] for i in w["sym"]], "ts": w["ts_ns"], "price": w["price"],
                  "size": w["size"]}).to_csv(path, index=False)
    return path


def test_paced_real_window_gives_the_same_alerts_as_max(tmp_path: Path) -> None:
    """20 s of the open at --speed 1 (real time) and at --max: the same alerts."""
    f = window_csv(tmp_path / "window.csv", 10, 20)
    runs = []
    for name, pace in (("max", ["--max"]), ("paced", ["--speed", "1"])):
        d = with_rules(tmp_path / name)
        out = d / "alerts.parquet"
        replay(d, str(f), *pace, "--daily", str(DAILY), "--alerts-out", str(out), "--scan-interval-ms", "1000")
        runs.append(pd.read_parquet(out).drop(columns=["seq", "worker"]).sort_values(KEY, ignore_index=True))
    a, b = runs
    assert len(a) > 0, "the busy rules must alert in the window"
    assert_same_alerts(a, b)
