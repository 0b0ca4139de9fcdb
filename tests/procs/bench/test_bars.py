"""Smoke test of the bar benchmark (the real numbers come from `scanner bench` / docs)."""

from __future__ import annotations

from procs.bench.bars import bench_bars, synthetic_ticks


def test_bench_bars_runs_small() -> None:
    out = bench_bars(symbols=50, ticks=20_000, batch=5_000, close_minutes=4, nautilus=False)
    assert out["ticks_per_s"] > 0 and out["minute_close_ms"] > 0 and out["bars_closed"] > 0
    assert out["all_timeframes_close_full_session_ms"] > 0 and out["minute_close_full_session_ms"] > 0
    assert out["nautilus_ticks_per_s"] is None and out["speedup_vs_nautilus"] is None
    assert "skipped" in out["nautilus_note"]
    t = synthetic_ticks(5, 100, seed=1)
    assert (t["sym"] < 5).all() and (t["ts_ns"][1:] >= t["ts_ns"][:-1]).all()


def test_numpy_baseline_agrees_with_the_aggregator() -> None:
    import numpy as np

    from procs.bench.bars import numpy_batch_bars
    from scanner.bars import BarAggregator, new_columns, new_history

    t = synthetic_ticks(20, 5_000, seed=2, minutes=5)
    agg = BarAggregator(new_columns(20), *new_history(20, 16))
    mine = np.concatenate([agg.on_ticks(t), agg.close_all()])
    mine = mine[np.lexsort((mine["minute_ns"], mine["sym"]))]
    base = numpy_batch_bars(t)
    for k in ("sym", "minute_ns", "open", "high", "low", "close", "volume", "trades"):
        np.testing.assert_array_equal(mine[k], base[k], err_msg=k)
    np.testing.assert_allclose(mine["vwap"], base["vwap"], rtol=1e-12)
