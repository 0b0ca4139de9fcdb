"""`scanner backtest` end to end on a real day, checked against an independent pandas script.

The pandas side rebuilds from the same decoded ticks, without any of our engine: the last
trade price at every event-time scan boundary, the previous close from Lean daily history, a
`change_pct < -1` rule in enter mode with no cooldown (edge-triggered: the boundary where it
starts to match), 1-minute bars by resample, and the forward returns / excursions by the
definitions in `scanner.backtest.returns`. Alerts must be equal, returns equal to 1e-9.
A damaged day file in the input is skipped and counted; a bad rule names the rule and field;
Ctrl-C writes partial results.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from procs.instance import read_pid
from procs.shared import instance_segments
from procs.status import pid_alive
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.lean import daily_reference, read_lean_daily, read_lean_ticks
from scanner.records import TICK_NO_LAST, TICK_ODD_LOT
from scanner.session import MINUTE_NS, NS, session_bounds_ns
from tests.procs.test_replay import LEAN_DAY
from tests.scanner.helpers import pandas_reference_bars
from tests.support import SHARED_DATA, eventually, stop_pid

SCANNER = [sys.executable, "-m", "cli.app"]
DAY = 20131008
STEP_S = 5
RULES = [{"id": "down-1pct", "metric": "change_pct", "operator": "<", "value": -1.0, "alert_mode": "enter",
          "cooldown_seconds": 0},
         {"id": "down-1pct-short", "metric": "change_pct", "operator": "<", "value": -1.0, "side": "short"}]
HORIZONS = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "60m": 60}


def run_backtest(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    name = f"b{os.getpid()}"
    argv = [*SCANNER, "backtest", "--workers", "1", *args, "--instance", name, "--data-dir", str(tmp / "data")]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    finally:
        pid = read_pid(tmp / "data" / f"{name}.pid")
        if pid:
            stop_pid(pid, 30)
        for seg in instance_segments(name):
            os.unlink(f"/dev/shm/{seg}")


def lean_files() -> list[str]:
    files = sorted(glob.glob(LEAN_DAY))
    if len(files) < 2:
        pytest.skip(f"real market data {SHARED_DATA} is absent (see ../shared/data/README.md)")
    return files


def pandas_alerts(files: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(alerts with forward returns, the ticks) computed with pandas only."""
    syms = SymbolMap()
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, stats=FeedStats())])
    df = pd.DataFrame({k: ticks[k] for k in ("sym", "ts_ns", "price", "size", "flags")})
    df["symbol"] = [syms.names[i] for i in df.sym]
    daily = SHARED_DATA / "lean-us-equity" / "daily"
    prev = {s: daily_reference(read_lean_daily(daily / f"{s.lower()}.zip"), DAY)[0] for s in syms.names}
    step = STEP_S * NS
    first, last = int(df.ts_ns.min()), int(df.ts_ns.max())
    end = last - last % MINUTE_NS + MINUTE_NS + 2 * NS  # the last minute + the 2 s bar grace
    grid = np.arange(-(-first // step) * step, -(-end // step) * step + 1, step)
    priced = df[(df["flags"] & (TICK_ODD_LOT | TICK_NO_LAST)) == 0].sort_values("ts_ns", kind="stable")
    out = []
    for s, g in priced.groupby("symbol"):
        at = pd.merge_asof(pd.DataFrame({"t": grid}), g[["ts_ns", "price"]].rename(columns={"ts_ns": "t"}),
                           on="t", direction="backward")
        match = ((at.price - prev[s]) / prev[s] * 100 < -1.0).to_numpy()
        starts = match & ~np.concatenate(([False], match[:-1]))
        out.append(pd.DataFrame({"symbol": s, "event_ns": grid[starts], "price": at.price.to_numpy()[starts]}))
    alerts = pd.concat(out, ignore_index=True)
    bars = pandas_reference_bars(df)
    bars["symbol"] = [syms.names[int(i)] for i in bars.sym]
    b = session_bounds_ns(DAY)
    rets = {}
    for h, m in HORIZONS.items():
        t = alerts.event_ns + m * MINUTE_NS
        p = _close_asof(alerts.assign(t=t // MINUTE_NS * MINUTE_NS), bars)
        rets[h] = np.where(t > b["after_close"], np.nan, p / alerts.price - 1)
    p = _close_asof(alerts.assign(t=np.where(alerts.event_ns < b["close"], b["close"] - MINUTE_NS,
                                             b["after_close"] - MINUTE_NS)), bars)
    rets["close"] = p / alerts.price - 1
    mfe, mae = [], []
    for a in alerts.itertuples():
        m0 = a.event_ns // MINUTE_NS * MINUTE_NS
        w = bars[(bars.symbol == a.symbol) & (bars.minute_ns > m0)
                 & (bars.minute_ns <= (a.event_ns + 30 * MINUTE_NS) // MINUTE_NS * MINUTE_NS)]
        late = a.event_ns + 30 * MINUTE_NS > b["after_close"]
        mfe.append(np.nan if late or w.empty else w.high.max() / a.price - 1)
        mae.append(np.nan if late or w.empty else w.low.min() / a.price - 1)
    for h, r in rets.items():
        alerts[f"ret_{h}"] = r
    alerts["mfe_30m"], alerts["mae_30m"] = mfe, mae
    return alerts.sort_values(["event_ns", "symbol"], ignore_index=True), df


def _close_asof(q: pd.DataFrame, bars: pd.DataFrame) -> np.ndarray:
    """Close of the last bar of the symbol starting at or before q.t (NaN if none)."""
    q = q.reset_index().sort_values("t")
    r = pd.merge_asof(q, bars[["symbol", "minute_ns", "close"]].sort_values("minute_ns"), left_on="t",
                      right_on="minute_ns", by="symbol", direction="backward")
    return r.sort_values("index").close.to_numpy()


@pytest.mark.slow
def test_backtest_equals_pandas_and_skips_a_damaged_day_file(tmp_path: Path) -> None:
    files = lean_files()
    broken = tmp_path / "tick" / "xyz" / "20131009_trade.zip"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 this is not a zip archive")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    out = tmp_path / "out"
    r = run_backtest(tmp_path, "--rules", str(rules), *files, str(broken), "--out", str(out),
                     "--scan-interval-ms", str(STEP_S * 1000))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["files_skipped"] == 1 and summary["skipped_files"][0][0] == str(broken)
    assert summary["days_scored"] == [DAY] and summary["alerts_lost"] == 0 and not summary["interrupted"]
    got = pd.read_parquet(out / "alerts.parquet")
    want, _ = pandas_alerts(files)
    assert len(want) > 0, "the rule must alert on the real day"
    for side, sign in (("long", 1.0), ("short", -1.0)):
        g = got[got.side == side].sort_values(["event_ns", "symbol"], ignore_index=True)
        assert g.symbol.tolist() == want.symbol.tolist()
        np.testing.assert_array_equal(g.event_ns.to_numpy(), want.event_ns.to_numpy())
        np.testing.assert_array_equal(g.price.to_numpy(), want.price.to_numpy())
        for k in [f"ret_{h}" for h in (*HORIZONS, "close")] + ["mfe_30m", "mae_30m"]:
            w = want[k].to_numpy()
            if side == "short" and k in ("mfe_30m", "mae_30m"):  # favourable = the low for a short
                w = -want["mae_30m" if k == "mfe_30m" else "mfe_30m"].to_numpy()
            else:
                w = sign * w
            np.testing.assert_allclose(g[k].to_numpy(), w, rtol=0, atol=1e-9, err_msg=f"{side} {k}")
    s = summary["rules"]["down-1pct"]["all"]
    assert s["alerts"] == len(want) and s["symbols"] == want.symbol.nunique()
    r30 = want.ret_30m.dropna()
    assert s["30m"]["n"] == len(r30) and abs(s["30m"]["mean"] - r30.mean()) < 1e-12
    assert abs(s["30m"]["hit_rate"] - (r30 > 0).mean()) < 1e-12
    html = (out / "report.html").read_text()
    assert "down-1pct-short" in html and "<svg" in html and "http" not in html.replace("http-equiv", "")
    assert pd.read_parquet(out / "stats.parquet").rule.nunique() == 2
    # the scores never need the publisher or a gateway: a backtest runs without them
    spawned = {line.split(" spawned ")[1].split()[0] for line in (tmp_path / "data" / f"b{os.getpid()}.log")
               .read_text().splitlines() if " spawned " in line}
    assert spawned == {"ingest", "bars", "indicators", "scan-0"}, spawned


def test_a_bad_rule_is_named_with_its_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([RULES[0], {"id": "oops", "metric": "change_pct", "operator": "~", "value": 1}]))
    r = run_backtest(tmp_path, "--rules", str(rules), str(tmp_path), timeout=60)
    assert r.returncode == 1
    assert "rule 'oops' (#2): field 'operator'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["backtest", "replay"])
def test_ctrl_c_stops_cleanly_and_writes_partial_results(tmp_path: Path, command: str) -> None:
    """Ctrl-C stops the instance (a backtest writes what it scored so far), however many signals follow."""
    files = lean_files()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    name = f"b{os.getpid()}"
    out = tmp_path / "out"
    what = ["backtest", "--rules", str(rules), *files, "--out", str(out)] if command == "backtest" else \
        ["replay", *files, "--max", "--no-serve"]
    argv = [*SCANNER, *what, "--workers", "1", "--scan-interval-ms", "1000", "--instance", name,
            "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    supervisor = None
    try:
        from shm.control import ControlBlock

        def clock_moved() -> bool:
            ctl = ControlBlock.attach(f"scanner.{name}.ctl")
            try:
                return ctl.clock_anchor_ns > session_bounds_ns(DAY)["premarket"] + 600 * NS
            finally:
                ctl.close()

        eventually(clock_moved, timeout=120, interval=0.2, what="the replay to run for 10 event minutes")
        supervisor = read_pid(tmp_path / "data" / f"{name}.pid")
        proc.send_signal(signal.SIGINT)
        # an impatient user: Ctrl-C and TERM again while the command takes its last alerts and
        # stops the instance (they once killed it there and left the pipeline running)
        for k in range(100):
            time.sleep(0.001)
            proc.send_signal(signal.SIGINT if k % 2 else signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        left = instance_segments(name)  # the supervisor unlinks them when it stops
        alive = supervisor is not None and pid_alive(supervisor)
    finally:
        if proc.poll() is None:
            proc.kill()
        if supervisor is not None:
            stop_pid(supervisor)
        for seg in instance_segments(name):
            os.unlink(f"/dev/shm/{seg}")
    assert proc.returncode == 130, stderr[-3000:]
    assert not alive and not left, (alive, left)
    if command == "replay":  # it prints no summary when interrupted
        return
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] and summary["exit_code"] == 0
    assert (out / "report.html").exists() and (out / "alerts.parquet").exists()
