"""`scanner replay` end to end: real recorded ticks through the running processes (supervisor,
ingest, bars, indicators, scanners, publisher, gateway); the bars that come out against a pandas
resample of the same ticks; malformed rows reported with line numbers; a paced replay."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from procs.instance import read_pid
from procs.shared import instance_segments
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.lean import read_lean_ticks
from scanner.session import MINUTE_NS, session_bounds_ns
from tests.scanner.helpers import pandas_reference_bars
from tests.support import SHARED_DATA, free_port, stop_pid

SCANNER = [sys.executable, "-m", "cli.app"]
LEAN_DAY = str(SHARED_DATA / "lean-us-equity" / "tick" / "*" / "20131008_trade.zip")


def replay(tmp: Path, *args: str, timeout: float = 180) -> tuple[dict, subprocess.CompletedProcess]:
    """Run `scanner replay ... --json` as its own instance; returns (summary, process)."""
    name = f"r{os.getpid()}"
    argv = [*SCANNER, "replay", "--workers", "1", *args, "--json", "--instance", name,  # args may override
            "--data-dir", str(tmp / "data"), "--port", str(free_port())]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    finally:
        pid = read_pid(tmp / "data" / f"{name}.pid")
        if pid:  # the command was killed (timeout): stop its instance too
            stop_pid(pid, 30)
        leftover = instance_segments(name)
        for seg in leftover:  # never leave segments behind, even on failure
            os.unlink(f"/dev/shm/{seg}")
    assert not leftover, f"the replay left segments behind: {leftover}"
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), r


def reference_bars(ticks: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The pandas reference (tests/scanner/helpers.py), keyed by symbol name."""
    df = pd.DataFrame({k: ticks[k] for k in ("sym", "ts_ns", "price", "size", "flags")})
    ref = pandas_reference_bars(df)
    ref["symbol"] = [names[int(i)] for i in ref["sym"]]
    return ref.sort_values(["symbol", "minute_ns"], ignore_index=True)


def bars_frame(path: Path) -> pd.DataFrame:
    with np.load(path) as z:
        bars, symbols = z["bars"], [str(s) for s in z["symbols"]]
    df = pd.DataFrame({k: bars[k] for k in bars.dtype.names})
    df["symbol"] = [symbols[int(i)] for i in df.sym]
    return df


@pytest.mark.slow
def test_real_day_replay_matches_a_pandas_resample(tmp_path: Path) -> None:
    files = sorted(glob.glob(LEAN_DAY))
    if len(files) < 2:
        pytest.skip(f"real market data {SHARED_DATA} is absent (see ../shared/data/README.md)")
    out = tmp_path / "bars.npz"
    # bars do not depend on the scans: one scan a minute keeps the event-time hand-offs few
    summary, _ = replay(tmp_path, *files, "--max", "--bars-out", str(out), "--scan-interval-ms", "60000")

    stats, syms = FeedStats(), SymbolMap()
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, stats=stats)])
    assert summary["ticks"] == len(ticks) == stats.ticks
    assert (summary["malformed"], summary["dropped"], summary["late_ticks"], summary["bars_lost"]) == (0, 0, 0, 0)
    assert summary["exit_code"] == 0 and summary["ticks_per_s"] > 0

    got = bars_frame(out)
    # per symbol, bars close in minute order (and each minute once)
    for _, g in got.groupby("symbol"):
        assert (np.diff(g.minute_ns.to_numpy()) > 0).all()
    got = got.sort_values(["symbol", "minute_ns"], ignore_index=True)
    ref = reference_bars(ticks, syms.names)
    assert summary["bars"] == summary["bars_collected"] == len(got) == len(ref)
    assert got.symbol.tolist() == ref.symbol.tolist()
    np.testing.assert_array_equal(got.minute_ns.to_numpy(), ref.minute_ns.to_numpy())
    for k in ("open", "high", "low", "close", "volume", "trades"):
        np.testing.assert_array_equal(got[k].to_numpy(), ref[k].to_numpy(), err_msg=k)
    np.testing.assert_allclose(got.vwap.to_numpy(), ref.vwap.to_numpy(), rtol=1e-9, atol=0)
    # the whole day came through: pre-market to after-hours
    b = session_bounds_ns(20131008)
    assert got.minute_ns.min() == b["premarket"] and got.minute_ns.max() == b["after_close"] - MINUTE_NS


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("symbol,ts,price,size\n" + "\n".join(rows) + "\n")
    return path


def test_malformed_csv_rows_are_reported_and_the_replay_finishes(tmp_path: Path) -> None:
    t0 = session_bounds_ns(20240102)["open"] // 1_000_000  # epoch ms
    f = _csv(tmp_path / "trades.csv", [
        f"AAA,{t0},10.0,100",  # line 2
        f"AAA,{t0 + 1000},oops,100",  # 3: bad price
        f"BBB,{t0 + 2000},20.0",  # 4: a field short
        f"BBB,{t0 + 3000},20.5,300",
        f"AAA,{t0 + 61_000},10.5,200",
        f"AAA,{t0 + 62_000},-1,100",  # 7: negative price
    ])
    summary, _ = replay(tmp_path, str(f), "--max", "--bars-out", str(tmp_path / "bars.csv"))
    assert summary["ticks"] == 3 and summary["malformed"] == 3
    assert [line for _, line, _ in summary["bad_lines"]] == [3, 4, 7]
    assert all(src.endswith("trades.csv") for src, _, _ in summary["bad_lines"])
    bars = pd.read_csv(tmp_path / "bars.csv").sort_values(["symbol", "minute_ns"], ignore_index=True)
    assert bars.symbol.tolist() == ["AAA", "AAA", "BBB"] and bars.volume.tolist() == [100.0, 200.0, 300.0]


@pytest.mark.slow
def test_paced_replay_gives_the_same_bars(tmp_path: Path) -> None:
    """At --speed 120 three minutes of trades take ~1.5 s; the bars equal the --max ones and
    each symbol's bars close in minute order (no timing asserted)."""
    t0 = session_bounds_ns(20240102)["open"] // 1_000_000
    rng = np.random.default_rng(5)
    times = np.sort(rng.integers(0, 180_000, 400))
    rows = [f"{'AAA' if i % 3 else 'BBB'},{t0 + int(t)},{10 + i / 100:.2f},{int(rng.integers(1, 5)) * 100}"
            for i, t in enumerate(times)]
    f = _csv(tmp_path / "paced.csv", rows)
    fast, _ = replay(tmp_path / "max", str(f), "--max", "--bars-out", str(tmp_path / "max.npz"))
    paced, _ = replay(tmp_path / "paced", str(f), "--speed", "120", "--bars-out", str(tmp_path / "paced.npz"))
    assert fast["ticks"] == paced["ticks"] == 400 and paced["late_ticks"] == 0
    a, b = bars_frame(tmp_path / "max.npz"), bars_frame(tmp_path / "paced.npz")
    for _, g in b.groupby("symbol"):
        assert (np.diff(g.minute_ns.to_numpy()) > 0).all()
    key = ["symbol", "minute_ns"]
    pd.testing.assert_frame_equal(a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True))
