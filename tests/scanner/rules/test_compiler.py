"""Compiled rules: every feature on hand-made rows, then random rule sets against the plain loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from procs.bench.scan import python_matches, random_hist, random_rules, random_table, table_rows
from scanner.metrics import CATALOGUE, HIST
from scanner.rules.compiler import CompiledRules, compile_rules, warm_up
from scanner.rules.limits import Ref
from scanner.rules.model import parse_rules

NAN = float("nan")
BACKENDS = ["numpy", "numba"]


def table(comp: CompiledRules, data: dict[str, list[float]]) -> np.ndarray:
    """A snapshot for `comp` from {metric: values}; metrics not given are NaN."""
    snap = np.full((len(comp.f8_cols), comp.n_rows), np.nan)
    for i, name in enumerate(comp.f8_names):
        if name in data:
            snap[i] = data[name]
    return snap


def hist_for(comp: CompiledRules, data: dict[Ref, list[float]]) -> np.ndarray:
    h = np.full((len(comp.hist_refs), comp.n_rows), np.nan)
    for i, ref in enumerate(comp.hist_refs):
        if ref in data:
            h[i] = data[ref]
    return h


def run(
    rules: list[dict[str, Any]],
    data: dict[str, list[float]],
    backend: str,
    *,
    prev: dict[str, list[float]] | None = None,
    hist: dict[Ref, list[float]] | None = None,
    minute: int = 600,
    keys: list[str] | None = None,
) -> np.ndarray:
    n = len(next(iter(data.values())))
    keys = keys or [f"S{i}" for i in range(n)]
    full = [{"id": f"r{i}", **r} for i, r in enumerate(rules)]
    comp = compile_rules(parse_rules(full), keys, backend=backend)  # type: ignore[arg-type]
    out = comp.evaluate(
        table(comp, data),
        None if prev is None else table(comp, prev),
        hist_for(comp, hist or {}) if comp.hist_refs else None,
        minute,
    )
    return out.copy()


def rows(m: np.ndarray) -> list[list[int]]:
    return [np.flatnonzero(r).tolist() for r in m]


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_operator_and_nan(backend: str) -> None:
    price = [1.0, 2.0, 3.0, NAN]
    ops = [">", ">=", "<", "<=", "==", "!="]
    m = run([{"metric": "price", "operator": op, "value": 2.0} for op in ops], {"price": price}, backend)
    assert rows(m) == [[2], [1, 2], [0], [0, 1], [1], [0, 2]]  # NaN (row 3) never matches, not even !=


@pytest.mark.parametrize("backend", BACKENDS)
def test_metric_vs_metric_with_factor_and_offset(backend: str) -> None:
    data = {"volume_1m": [100.0, 301.0, 300.0, NAN, 500.0], "avg_volume_1m": [100.0, 100.0, 100.0, 1.0, NAN]}
    m = run(
        [
            {"metric": "volume_1m", "operator": ">", "other": "avg_volume_1m", "factor": 3},
            {"metric": "volume_1m", "operator": ">=", "other": "avg_volume_1m", "factor": 2, "offset": 100},
            {"metric": "volume_1m", "operator": "!=", "other": "avg_volume_1m"},
            {"metric": "volume_1m", "operator": "==", "other": "avg_volume_1m"},
        ],
        data,
        backend,
    )
    assert rows(m) == [[1], [1, 2], [1, 2], [0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_between_is_inclusive(backend: str) -> None:
    m = run(
        [{"metric": "rsi_14", "operator": "between", "value": [30, 70]}],
        {"rsi_14": [29.9, 30.0, 50.0, 70.0, 70.1, NAN]},
        backend,
    )
    assert rows(m) == [[1, 2, 3]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_crosses(backend: str) -> None:
    rules = [
        {"metric": "price", "operator": "crosses_above", "other": "vwap"},
        {"metric": "price", "operator": "crosses_below", "other": "vwap"},
        {"metric": "rsi_14", "operator": "crosses_above", "value": 70},
        {"metric": "rsi_14", "operator": "crosses_below", "value": 30},
    ]
    prev = {
        "price": [9.0, 10.0, 11.0, 9.0, NAN, 10.0],
        "vwap": [10.0] * 6,
        "rsi_14": [69.0, 70.0, 71.0, 31.0, 30.0, NAN],
    }
    now = {
        "price": [10.5, 10.5, 9.5, 9.5, 11.0, 12.0],
        "vwap": [10.0, 10.0, 10.0, 10.0, 10.0, NAN],
        "rsi_14": [70.5, 71.0, 72.0, 29.0, 29.0, 80.0],
    }
    m = run(rules, now, backend, prev=prev)
    # above: from <= to >; 3 was below and stays below; NaN before or now never crosses
    assert rows(m) == [[0, 1], [2], [0, 1], [3, 4]]
    assert not run(rules, now, backend).any()  # first cycle: no previous snapshot, no crosses


@pytest.mark.parametrize("backend", BACKENDS)
def test_scaled_cross(backend: str) -> None:
    rule = [{"metric": "price", "operator": "crosses_above", "other": "sma_20", "factor": 1.01}]
    m = run(
        rule,
        {"price": [10.2, 10.0], "sma_20": [10.0, 10.0]},
        backend,
        prev={"price": [10.05, 10.2], "sma_20": [10.0, 10.0]},
    )
    assert rows(m) == [[0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_groups(backend: str) -> None:
    data = {
        "price": [5.0, 15.0, 15.0, 15.0, NAN],
        "rsi_14": [20.0, 20.0, 80.0, 50.0, 20.0],
        "gap_pct": [0.0, 5.0, 0.0, 0.0, 0.0],
    }
    rule = {
        "condition": {
            "all": [
                {"metric": "price", "operator": ">", "value": 10},
                {
                    "any": [
                        {"metric": "rsi_14", "operator": "<", "value": 30},
                        {"metric": "rsi_14", "operator": ">", "value": 70},
                    ]
                },
            ],
            "none": [{"metric": "gap_pct", "operator": ">", "value": 3}],
        }
    }
    none_nan = {"condition": {"none": [{"metric": "price", "operator": ">", "value": 10}]}}
    m = run([rule, none_nan], data, backend)
    assert rows(m) == [[2], [0, 4]]  # a NaN comparison is False, so NOT of it is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_bars_ago(backend: str) -> None:
    rules = [
        {"metric": "price", "operator": ">", "other": {"metric": "close", "bars_ago": 3}},
        {"metric": "close", "bars_ago": 1, "operator": ">=", "value": 10},
        {
            "condition": {
                "all": [
                    {"metric": "price", "operator": ">", "other": {"metric": "high", "bars_ago": 1}},
                    {"metric": "volume", "bars_ago": 1, "operator": ">", "value": 1000},
                ]
            }
        },
    ]
    hist = {
        ("close", 3): [9.0, 11.0, NAN, 9.0],
        ("close", 1): [10.0, 9.0, 12.0, NAN],
        ("high", 1): [9.5, 9.5, 9.5, 9.5],
        ("volume", 1): [2000.0, 2000.0, 500.0, 2000.0],
    }
    m = run(rules, {"price": [10.0, 10.0, 10.0, 10.0]}, backend, hist=hist)
    assert rows(m) == [[0, 3], [0, 2], [0, 1, 3]]
    comp = compile_rules(
        parse_rules([{"id": f"r{i}", **r} for i, r in enumerate(rules)]), ["A", "B"], backend=backend
    )  # type: ignore[arg-type]
    assert comp.hist_refs == [("high", 1), ("close", 1), ("close", 3), ("volume", 1)]
    assert comp.hist_fields.tolist() == [HIST["high"], HIST["close"], HIST["close"], HIST["volume"]]
    assert comp.hist_bars_ago.tolist() == [1, 1, 3, 1]
    with pytest.raises(ValueError, match="'hist' must be"):
        comp.evaluate(np.zeros((1, 2)), None, None, 600)


@pytest.mark.parametrize("backend", BACKENDS)
def test_universe_filters(backend: str) -> None:
    keys = ["AAPL", "msft", "TSLA", "PENNY", "NVDA"]
    data = {
        "price": [150.0, 300.0, 200.0, 0.5, NAN],
        "day_volume": [1e6, 1e6, 1e3, 1e7, 1e7],
        "change_pct": [1.0] * 5,
    }
    base = {"metric": "change_pct", "operator": ">", "value": 0}
    m = run(
        [
            base | {"universe": {"min_price": 1, "max_price": 250}},
            base | {"universe": {"min_day_volume": 1e5}},
            base | {"universe": {"symbols": ["MSFT", "tsla", "NOPE"]}},
            base | {"universe": {"exclude_symbols": ["aapl"], "min_price": 1}},
            base,
        ],
        data,
        backend,
        keys=keys,
    )
    assert rows(m) == [[0, 2], [0, 1, 3, 4], [1, 2], [1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_windows(backend: str) -> None:
    base = {"metric": "price", "operator": ">", "value": 0}
    rules = [
        base | {"window": {"start": "09:30", "end": "10:00"}},
        base | {"window": {"start": "20:00", "end": "04:00"}},
        base,
    ]
    data = {"price": [1.0, 2.0]}
    expect = {
        569: [[], [], [0, 1]],
        570: [[0, 1], [], [0, 1]],
        599: [[0, 1], [], [0, 1]],
        600: [[], [], [0, 1]],
        1200: [[], [0, 1], [0, 1]],
        100: [[], [0, 1], [0, 1]],
        240: [[], [], [0, 1]],
    }
    for minute, want in expect.items():
        assert rows(run(rules, data, backend, minute=minute)) == want, minute


@pytest.mark.parametrize("backend", BACKENDS)
def test_disabled_and_shared_rules(backend: str) -> None:
    rules = parse_rules(
        [
            {"id": "a", "metric": "price", "operator": ">", "value": 1},
            {"id": "b", "metric": "rsi_14", "operator": ">", "value": 1, "enabled": False},
            {"id": "c", "metric": "price", "operator": ">", "value": 1},
            {"id": "d", "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]}},
        ]
    )
    comp = compile_rules(rules, ["X", "Y"], backend=backend)  # type: ignore[arg-type]
    assert comp.f8_names == ["price"] and comp.f8_cols.tolist() == [CATALOGUE.f8("price")]
    assert comp.n_nodes == 1  # one shared comparison
    m = comp.evaluate(np.array([[2.0, 0.0]]), None, None, 600)
    assert rows(m) == [[0], [], [0], [0]]
    assert comp.enabled.tolist() == [True, False, True, True]
    assert (comp.value_pos[1] == -1).all()


def test_f8_cols_sorted_and_values_positions() -> None:
    rules = parse_rules(
        [
            {
                "id": "a",
                "condition": {
                    "all": [
                        {"metric": "rsi_14", "operator": ">", "value": 1},
                        {"metric": "price", "operator": ">", "other": {"metric": "close", "bars_ago": 2}},
                    ]
                },
                "universe": {"min_day_volume": 10},
            }
        ]
    )
    comp = compile_rules(rules, ["X"])
    assert comp.f8_cols.tolist() == sorted(CATALOGUE.f8(n) for n in ("rsi_14", "price", "day_volume"))
    assert comp.value_names == [["rsi_14", "price", "close[-2]", "day_volume"]]
    m = len(comp.f8_cols)
    pos = comp.value_pos[0]
    assert [comp.f8_names[p] if p < m else comp.hist_refs[p - m] for p in pos[:4]] == [
        "rsi_14",
        "price",
        ("close", 2),
        "day_volume",
    ]
    assert (pos[4:] == -1).all()
    with pytest.raises(ValueError, match="'snap' must be float64"):
        comp.evaluate(np.zeros((m + 1, 1)), None, np.zeros((1, 1)), 600)
    with pytest.raises(ValueError, match="'backend'"):
        compile_rules(rules, ["X"], backend="cuda")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_matches_the_plain_loop_on_random_rules(backend: str, seed: int) -> None:
    """Property check: random rule sets with every feature vs the per-symbol reference loop,
    across two cycles (so crosses fire), with a row count that is not a multiple of the block."""
    n = 701
    keys = [f"S{i:04d}" for i in range(n)]
    t0 = random_table(n, seed, nan_frac=0.05)
    rules = random_rules(t0, 60, seed + 100, keys, extended=True)
    comp = compile_rules(rules, keys, backend=backend, block=128)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    t1 = {k: v * (1 + rng.normal(0, 0.02, n)) for k, v in t0.items()}  # the next cycle: prices moved a bit
    hist = random_hist(t0, comp.hist_refs, seed)
    h = np.stack([hist[r] for r in comp.hist_refs]) if comp.hist_refs else None
    s0 = np.stack([t0[nm] for nm in comp.f8_names])
    s1 = np.stack([t1[nm] for nm in comp.f8_names])
    rows0, rows1 = table_rows(t0, hist), table_rows(t1, hist)
    for minute in (30, 600, 1000):
        first = comp.evaluate(s0, None, h, minute).copy()
        assert np.array_equal(first, python_matches(rules, rows0, None, keys, minute))
        second = comp.evaluate(s1, s0, h, minute).copy()
        want = python_matches(rules, rows1, rows0, keys, minute)
        assert np.array_equal(second, want), np.argwhere(second != want)[:5]
        assert second.any() and not second.all()


def test_backends_agree_on_the_bench_mix() -> None:
    n = 3000
    keys = [f"S{i}" for i in range(n)]
    t = random_table(n, 5)
    rules = random_rules(t, 200, 6, keys)
    a = compile_rules(rules, keys, backend="numpy")
    b = compile_rules(rules, keys, backend="numba", block=1000)
    snap = np.stack([t[nm] for nm in a.f8_names])
    assert np.array_equal(a.evaluate(snap, None, None, 600), b.evaluate(snap, None, None, 600))
    assert a.n_steps == b.n_steps and a.n_nodes < sum(1 for _ in rules) * 4


WARM_UP_PROBE = """
import numpy as np
from procs.bench.scan import random_hist, random_rules, random_table
from scanner.rules import kernel
from scanner.rules.compiler import compile_rules, warm_up

assert kernel.run_steps.signatures == [], "a fresh interpreter has no kernel yet"
warm_up()
ready = list(kernel.run_steps.signatures)
assert len(ready) == 1, ready
n = 500
keys = [f"S{i}" for i in range(n)]
t = random_table(n, 9)
comp = compile_rules(random_rules(t, 60, 9, keys, extended=True), keys, backend="numba", block=128)
assert comp.hist_refs, "the mix should read history too"
hist = random_hist(t, comp.hist_refs, 9)
h = np.stack([hist[r] for r in comp.hist_refs])
snap = np.stack([t[nm] for nm in comp.f8_names])
comp.evaluate(snap, None, h, 600)
comp.evaluate(snap, snap * 1.01, h, 600)
assert list(kernel.run_steps.signatures) == ready, kernel.run_steps.signatures
print("warm")
"""


def test_warm_up_runs() -> None:
    """After `warm_up`, the kernel is loaded once and a real rule set's first scans (with history
    and a previous snapshot) find it ready: no second compile inside a scan cycle."""
    import subprocess
    import sys

    from tests.support import REPO

    r = subprocess.run([sys.executable, "-c", WARM_UP_PROBE], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "warm", r.stderr
    warm_up()  # and in this process: loads the kernel, must not raise
