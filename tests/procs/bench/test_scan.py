"""The rule benchmark, small: all three evaluators agree and the report has its keys."""

from __future__ import annotations

from procs.bench.scan import bench_scan


def test_bench_small_is_identical() -> None:
    res = bench_scan(symbols=400, rules=40, repeats=3, python_repeats=1, seed=3)
    assert res["identical"] is True
    assert res["symbols"] == 400 and res["rules"] == 40
    for key in (
        "engine_ms_median",
        "python_ms_median",
        "polars_ms_median",
        "speedup_vs_python",
        "speedup_vs_polars",
        "engine_numpy_ms_median",
        "engine_numba_ms_median",
    ):
        assert res[key] > 0, key
    assert 0 < res["matches"] < 400 * 40
