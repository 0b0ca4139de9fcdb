"""Every f8 metric of the catalogue (the issue-15 ones included) in every operator: a value, a
range, crosses (of a value and of another metric) and metric-vs-metric, compiled by both
backends and checked against the plain Python loop on random rows and a previous cycle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from procs.bench.scan import python_matches, random_table, table_rows
from scanner.metrics import CATALOGUE
from scanner.rules.compiler import compile_rules
from scanner.rules.limits import COMPARE_OPS, rule_metrics
from scanner.rules.model import parse_rules

N = 400


def _rules(table: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    by_unit: dict[str, list[str]] = {}
    for name in table:
        by_unit.setdefault(CATALOGUE[name].unit, []).append(name)
    out: list[dict[str, Any]] = []
    for name in sorted(table):
        col = table[name]
        v = float(np.nanmedian(col))
        lo, hi = (float(x) for x in np.nanquantile(col, [0.2, 0.8]))
        peers = by_unit[CATALOGUE[name].unit]
        other = peers[(peers.index(name) + 1) % len(peers)]
        leaves = [{"operator": op, "value": v} for op in COMPARE_OPS]
        leaves += [{"operator": "between", "value": [lo, hi]},
                   {"operator": "crosses_above", "value": v}, {"operator": "crosses_below", "value": v},
                   {"operator": ">", "other": other}, {"operator": "<=", "other": other, "factor": 1.01},
                   {"operator": "crosses_above", "other": other}, {"operator": "crosses_below", "other": other}]
        out += [{"id": f"{name}-{i}", "metric": name, **leaf} for i, leaf in enumerate(leaves)]
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_every_metric_in_every_operator(backend: str) -> None:
    table, prev = random_table(N, seed=11), random_table(N, seed=12)
    assert set(table) == set(rule_metrics())
    for new in ("change_5m_pct", "or_high_5m", "rsi_14_5m", "sma_50_1d", "high_52w", "gap_filled", "vwap_60m"):
        assert new in table
    prev["price"] = table["price"] * (1 + np.random.default_rng(5).normal(0, 0.02, N))  # crosses happen
    rules = parse_rules(_rules(table))
    keys = [f"S{i}" for i in range(N)]
    comp = compile_rules(rules, keys, backend=backend)  # type: ignore[arg-type]
    snap = np.stack([table[n] for n in comp.f8_names])
    psnap = np.stack([prev[n] for n in comp.f8_names])
    got = comp.evaluate(snap, psnap, None, 600)
    want = python_matches(rules, table_rows(table), table_rows(prev), keys, 600)
    np.testing.assert_array_equal(got, want)
    assert got.any(axis=1).mean() > 0.8  # most rules match somewhere: the check is not vacuous


def test_orb_rule_reads_the_opening_range() -> None:
    """`price crosses_above or_high_5m` fires on the row whose price moved over its range high."""
    rules = parse_rules([{"id": "orb", "metric": "price", "operator": "crosses_above", "other": "or_high_5m"}])
    comp = compile_rules(rules, ["A", "B", "C"], backend="numpy")
    now = {n: np.full(3, np.nan) for n in comp.f8_names}
    before = {n: np.full(3, np.nan) for n in comp.f8_names}
    now["or_high_5m"][:] = before["or_high_5m"][:] = [10.0, 10.0, np.nan]
    before["price"][:] = [9.9, 10.1, 9.0]
    now["price"][:] = [10.2, 10.3, 11.0]
    got = comp.evaluate(np.stack([now[n] for n in comp.f8_names]), np.stack([before[n] for n in comp.f8_names]),
                        None, 600)
    assert got[0].tolist() == [True, False, False]
