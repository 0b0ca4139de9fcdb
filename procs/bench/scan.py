"""Rule-evaluation benchmark: the compiled engine vs a pure-Python loop vs one polars `select`.

All three evaluate the same random-but-realistic rule set over the same random table (every
f8 catalogue metric, NaNs sprinkled) and must return the same match sets. The pure-Python
loop (`python_matches`) is the spec's pseudocode - for each symbol, for each rule, compare -
and doubles as the reference evaluator of the tests (it handles every rule feature). Both
engine backends are timed (numpy ufunc calls, the numba kernel); `engine_ms_median` is the
default backend's. Crosses and bars_ago operands are left out of the timed rule set (polars
would need the previous snapshot and history as extra columns); the tests cover them against
the plain loop.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scanner.metrics import CATALOGUE
from scanner.rules.compiler import DEFAULT_BACKEND, compile_rules
from scanner.rules.limits import COMPARE_OPS, Ref
from scanner.rules.model import Comparison, Group, Rule, parse_rules

Row = dict[Ref, float]

# ---------------------------------------------------------------- random table and rules


def random_column(unit: str, n: int, rng: np.random.Generator, price: np.ndarray) -> np.ndarray:
    """Plausible values for a metric of this unit (prices hover around each symbol's price)."""
    if unit == "USD":
        return price * (1 + rng.normal(0, 0.02, n))
    if unit == "shares":
        return np.round(rng.lognormal(10, 2, n))
    if unit == "%":
        return rng.normal(0, 4, n)
    if unit == "0-100":
        return rng.uniform(0, 100, n)
    if unit == "ratio":
        return rng.lognormal(0, 0.7, n)
    if unit == "min":
        return rng.uniform(-60, 400, n).round()
    if unit == "0/1":
        return rng.integers(0, 2, n).astype(np.float64)
    if unit == "%/min":
        return rng.normal(0, 0.8, n)
    return rng.poisson(3, n).astype(np.float64)


def random_table(n_rows: int, seed: int = 1, nan_frac: float = 0.02) -> dict[str, np.ndarray]:
    """Every f8 catalogue metric -> float64 column of `n_rows` values, NaN at `nan_frac`."""
    rng = np.random.default_rng(seed)
    price = np.round(rng.lognormal(3.5, 1.0, n_rows), 2)
    table: dict[str, np.ndarray] = {}
    for m in CATALOGUE.metrics:
        if m.dtype == "f8":
            col = price.copy() if m.name == "price" else random_column(m.unit, n_rows, rng, price)
            col[rng.random(n_rows) < nan_frac] = np.nan
            table[m.name] = col
    return table


def random_hist(table: dict[str, np.ndarray], refs: Sequence[Ref], seed: int = 3,
                nan_frac: float = 0.05) -> dict[Ref, np.ndarray]:
    """Plausible bar-history values for (field, bars_ago) refs: prices near today's price."""
    rng = np.random.default_rng(seed)
    price = table["price"]
    out: dict[Ref, np.ndarray] = {}
    for field, k in refs:
        n = len(price)
        if field in ("volume", "trades"):
            col = np.round(rng.lognormal(8, 2, n))
        elif field == "minute":
            col = np.full(n, 29_000_000.0 - k)
        else:
            col = price * (1 + rng.normal(0, 0.01 * math.sqrt(k), n))
        col[rng.random(n) < nan_frac] = np.nan
        out[(field, k)] = col
    return out


class _RuleGen:
    """Random leaves and trees drawn from a table's value distributions."""

    def __init__(self, table: dict[str, np.ndarray], seed: int, extended: bool) -> None:
        self.table, self.rng, self.extended = table, np.random.default_rng(seed), extended
        self.names = sorted(table)
        self.by_unit: dict[str, list[str]] = {}
        for nm in self.names:
            self.by_unit.setdefault(CATALOGUE[nm].unit, []).append(nm)

    def threshold(self, col: np.ndarray) -> float:
        return float(round(np.nanquantile(col, self.rng.uniform(0.05, 0.95)), 4))

    def leaf(self) -> dict[str, Any]:
        rng = self.rng
        name = self.names[rng.integers(len(self.names))]
        col = self.table[name]
        if self.extended and rng.random() < 0.25:
            return self.extended_leaf()
        kind = rng.random()
        if kind < 0.2:  # metric vs metric, same unit, sometimes scaled
            peers = self.by_unit[CATALOGUE[name].unit]
            leaf: dict[str, Any] = {"metric": name, "operator": str(rng.choice(COMPARE_OPS[:4])),
                                    "other": peers[rng.integers(len(peers))]}
            if rng.random() < 0.5:
                leaf["factor"] = float(round(rng.uniform(0.8, 3.0), 2))
            return leaf
        if kind < 0.35:
            lo, hi = sorted((self.threshold(col), self.threshold(col)))
            return {"metric": name, "operator": "between", "value": [lo, hi]}
        op = str(rng.choice(COMPARE_OPS, p=[0.3, 0.2, 0.2, 0.2, 0.05, 0.05]))
        v = float(col[rng.integers(len(col))]) if op in ("==", "!=") else self.threshold(col)
        return {"metric": name, "operator": op, "value": 0.0 if math.isnan(v) else v}

    def extended_leaf(self) -> dict[str, Any]:
        """Crosses (value / metric, scaled) and bars_ago operands."""
        rng = self.rng
        usd = self.by_unit["USD"]
        x = usd[rng.integers(len(usd))]
        k = int(rng.choice([1, 2, 3, 5]))
        field = str(rng.choice(["open", "high", "low", "close", "vwap"]))
        pick = rng.integers(5)
        if pick == 0:
            return {"metric": x, "operator": str(rng.choice(["crosses_above", "crosses_below"])),
                    "value": self.threshold(self.table[x])}
        if pick == 1:
            cross = str(rng.choice(["crosses_above", "crosses_below"]))
            leaf: dict[str, Any] = {"metric": x, "operator": cross, "other": usd[rng.integers(len(usd))]}
            if rng.random() < 0.5:
                leaf |= {"factor": float(round(rng.uniform(0.98, 1.02), 3)), "offset": 0.01}
            return leaf
        if pick == 2:
            factor = float(round(rng.uniform(0.99, 1.01), 3))
            return {"metric": x, "operator": str(rng.choice(COMPARE_OPS)),
                    "other": {"metric": field, "bars_ago": k}, "factor": factor}
        if pick == 3:
            return {"metric": field, "bars_ago": k, "operator": str(rng.choice(COMPARE_OPS[:4])),
                    "value": self.threshold(self.table["price"])}
        return {"metric": field, "bars_ago": k, "operator": "between",
                "value": sorted([self.threshold(self.table["price"]), self.threshold(self.table["price"])])}

    def condition(self, depth: int) -> dict[str, Any]:
        if depth <= 0 or self.rng.random() < 0.55:
            return self.leaf()
        kids = [self.condition(depth - 1) for _ in range(self.rng.integers(2, 4))]
        return {str(self.rng.choice(["all", "all", "any", "none"])): kids}


def random_rules(table: dict[str, np.ndarray], n_rules: int, seed: int = 2, symbols: Sequence[str] = (),
                 extended: bool = False) -> list[Rule]:
    """A realistic mix: single comparisons, metric vs metric (scaled), between, nested groups,
    some universe filters (a few shared, as real rule sets share them). `extended` adds
    crosses, bars_ago operands, time windows, excluded symbols and disabled rules."""
    g = _RuleGen(table, seed, extended)
    rng = g.rng
    shared_universes = [{"min_price": 1.0},
                        {"min_price": 5.0, "max_price": 500.0, "min_day_volume": 50_000.0}]
    out: list[dict[str, Any]] = []
    for i in range(n_rules):
        r: dict[str, Any] = {"id": f"r{i}"}
        if rng.random() < 0.5:
            r |= g.leaf()
        else:
            r["condition"] = g.condition(2)
            if "metric" in r["condition"]:
                r["condition"] = {"all": [r["condition"], g.leaf()]}
        u = rng.random()
        if u < 0.3:
            r["universe"] = dict(shared_universes[rng.integers(2)])
        elif u < 0.35 and symbols:
            r["universe"] = {"symbols": [s.lower() for s in rng.choice(list(symbols), 20)]}
        elif u < 0.4 and symbols and extended:
            r["universe"] = {"exclude_symbols": list(rng.choice(list(symbols), 20)), "min_price": 2.0}
        if extended and rng.random() < 0.2:
            a, b = rng.integers(0, 1440, 2)
            if a != b:
                r["window"] = {"start": f"{a // 60:02d}:{a % 60:02d}", "end": f"{b // 60:02d}:{b % 60:02d}"}
        if extended and rng.random() < 0.1:
            r["enabled"] = False
        out.append(r)
    return parse_rules(out)


# ---------------------------------------------------------------- the reference: a plain loop


def _cmp(op: str, x: float, y: float) -> bool:
    if op == ">":
        return x > y
    if op == ">=":
        return x >= y
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == "==":
        return x == y
    return x < y or x > y  # "!=": NaN does not match


def _eval(node: Comparison | Group, row: Row, prev: Row | None) -> bool:
    if isinstance(node, Group):
        return (all(_eval(c, row, prev) for c in node.all or ())
                and (node.any is None or any(_eval(c, row, prev) for c in node.any))
                and not any(_eval(c, row, prev) for c in node.none or ()))
    x = row[(node.metric, node.bars_ago)]
    other = node.other_operand
    if node.operator == "between":
        lo, hi = node.value  # type: ignore[misc]
        return lo <= x <= hi
    if node.operator in COMPARE_OPS:
        y = float(node.value) if other is None else row[other.ref] * node.factor + node.offset  # type: ignore[arg-type]
        return _cmp(node.operator, x, y)
    if prev is None:
        return False
    px = prev[(node.metric, 0)]
    if other is None:
        y = py = float(node.value)  # type: ignore[arg-type]
    else:
        y, py = row[other.ref] * node.factor + node.offset, prev[other.ref] * node.factor + node.offset
    if node.operator == "crosses_above":
        return px <= py and x > y
    return px >= py and x < y


def _in_window(rule: Rule, minute: int) -> bool:
    if rule.window is None:
        return True
    s, e = rule.window.minutes()
    return s <= minute < e if s < e else (minute >= s or minute < e)


def python_matches(rules: Sequence[Rule], rows: Sequence[Row], prev_rows: Sequence[Row] | None,
                   keys: Sequence[str], minute: int = 600) -> np.ndarray:
    """For each symbol, for each rule: does it match? bool (n_rules, n_rows)."""
    out = np.zeros((len(rules), len(rows)), bool)
    hits: list[tuple[int, int]] = []
    for r, row in enumerate(rows):
        key = keys[r].upper()
        prev = prev_rows[r] if prev_rows is not None else None
        for i, rule in enumerate(rules):
            if not rule.enabled or not _in_window(rule, minute):
                continue
            u = rule.universe
            if u is not None:
                if any(not _cmp(op, row[(m, 0)], v) for m, op, v in u.bounds()):
                    continue
                if u.symbols is not None and key not in {s.upper() for s in u.symbols}:
                    continue
                if key in {s.upper() for s in u.exclude_symbols}:
                    continue
            if _eval(rule.tree(), row, prev):
                hits.append((i, r))
    if hits:
        out[tuple(np.array(hits).T)] = True
    return out


def table_rows(table: dict[str, np.ndarray], hist: dict[Ref, np.ndarray] | None = None) -> list[Row]:
    """Per-symbol dicts {(metric, 0): value, (field, k): value} (the loop's favourite shape)."""
    cols: dict[Ref, list[float]] = {(k, 0): v.tolist() for k, v in table.items()}
    cols |= {k: v.tolist() for k, v in (hist or {}).items()}
    n = len(next(iter(cols.values())))
    return [{k: v[r] for k, v in cols.items()} for r in range(n)]


# ---------------------------------------------------------------- polars


def polars_exprs(rules: Sequence[Rule]) -> list[Any]:
    """One boolean polars expression per rule (nulls stand for NaN; a null comparison is False)."""
    import polars as pl

    def operand(ref: Ref) -> pl.Expr:
        return pl.col(ref[0] if ref[1] == 0 else f"{ref[0]}@{ref[1]}")

    def leaf(c: Comparison) -> pl.Expr:
        x = operand((c.metric, c.bars_ago))
        other = c.other_operand
        if c.operator == "between":
            lo, hi = c.value  # type: ignore[misc]
            e = (x >= lo) & (x <= hi)
        elif c.operator in COMPARE_OPS:
            y = pl.lit(c.value) if other is None else operand(other.ref) * c.factor + c.offset
            e = {">": x > y, ">=": x >= y, "<": x < y, "<=": x <= y, "==": x == y, "!=": x != y}[c.operator]
        else:
            raise ValueError("the polars comparison skips crosses")
        return e.fill_null(False)

    def node(t: Comparison | Group) -> pl.Expr:
        if isinstance(t, Comparison):
            return leaf(t)
        parts = [node(c) for c in t.all or ()]
        if t.any:
            parts.append(pl.any_horizontal([node(c) for c in t.any]))
        if t.none:
            parts.append(~pl.any_horizontal([node(c) for c in t.none]))
        return pl.all_horizontal(parts)

    exprs = []
    for i, r in enumerate(rules):
        e = node(r.tree())
        if r.universe is not None:
            u = r.universe
            parts = [leaf(Comparison.model_construct(metric=m, bars_ago=0, operator=op, value=v, other=None,
                                                     factor=1.0, offset=0.0)) for m, op, v in u.bounds()]
            if u.symbols is not None:
                parts.append(pl.col("__key").is_in([s.upper() for s in u.symbols]))
            if u.exclude_symbols:
                parts.append(~pl.col("__key").is_in([s.upper() for s in u.exclude_symbols]))
            e = pl.all_horizontal([e, *parts])
        exprs.append((e if r.enabled else pl.lit(False)).alias(f"m{i}"))
    return exprs


# ---------------------------------------------------------------- the benchmark


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter_ns()
    res = fn()
    return (time.perf_counter_ns() - t0) / 1e6, res


def bench_scan(symbols: int = 10_000, rules: int = 200, repeats: int = 50, python_repeats: int = 3,
               seed: int = 7) -> dict[str, Any]:
    """Time the engine's full evaluate, the Python loop and a polars select on the same data,
    interleaved in one process; `identical` is True only when all of them give the same
    match matrix. The Python loop is slow: it runs only `python_repeats` times."""
    import polars as pl

    if symbols < 1 or rules < 1 or repeats < 1 or not 1 <= python_repeats <= repeats:
        raise ValueError(f"need symbols, rules, repeats >= 1 and 1 <= python_repeats <= repeats; was "
                         f"{symbols}, {rules}, {repeats}, {python_repeats}")

    keys = [f"S{i:05d}" for i in range(symbols)]
    table = random_table(symbols, seed)
    rule_list = random_rules(table, rules, seed + 1, keys)
    comp = compile_rules(rule_list, keys, backend="numpy")
    t0 = time.perf_counter_ns()
    comp_nb = compile_rules(rule_list, keys, backend="numba")
    compile_ms = (time.perf_counter_ns() - t0) / 1e6  # what a rule change costs (the kernel is data-driven)
    snap = np.ascontiguousarray(np.stack([table[n] for n in comp.f8_names]))
    rows = table_rows(table)
    df = pl.DataFrame({k: v for k, v in table.items()} | {"__key": np.array([k.upper() for k in keys])},
                      nan_to_null=True)
    exprs = polars_exprs(rule_list)
    minute = 600
    comp.evaluate(snap, None, None, minute)  # warm the resolved-op cache, as a running worker would
    comp_nb.evaluate(snap, None, None, minute)  # JIT (or load the cached kernel)
    df.select(exprs)
    t_np: list[float] = []
    t_nb: list[float] = []
    t_pl: list[float] = []
    t_py: list[float] = []
    res_np = res_nb = res_pl = res_py = None
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            ms, res_np = _time(lambda: comp.evaluate(snap, None, None, minute))
            t_np.append(ms)
            ms, res_nb = _time(lambda: comp_nb.evaluate(snap, None, None, minute))
            t_nb.append(ms)
            ms, res_pl = _time(lambda: df.select(exprs))
            t_pl.append(ms)
            if i < python_repeats:
                ms, res_py = _time(lambda: python_matches(rule_list, rows, None, keys, minute))
                t_py.append(ms)
    finally:
        if gc_was:
            gc.enable()
    assert res_np is not None and res_nb is not None and res_pl is not None and res_py is not None
    m_pl = res_pl.to_numpy().T.astype(bool)
    identical = bool(np.array_equal(res_np, m_pl) and np.array_equal(res_np, res_py)
                     and np.array_equal(res_np, res_nb))
    np_ms, nb_ms, pl_ms, py_ms = (statistics.median(x) for x in (t_np, t_nb, t_pl, t_py))
    e_ms = np_ms if DEFAULT_BACKEND == "numpy" else nb_ms
    return {
        "symbols": symbols, "rules": rules, "repeats": repeats, "python_repeats": python_repeats,
        "backend": DEFAULT_BACKEND, "engine_ms_median": round(e_ms, 4),
        "engine_numpy_ms_median": round(np_ms, 4), "engine_numba_ms_median": round(nb_ms, 4),
        "polars_ms_median": round(pl_ms, 4), "python_ms_median": round(py_ms, 2),
        "speedup_vs_python": round(py_ms / e_ms, 1), "speedup_vs_polars": round(pl_ms / e_ms, 2),
        "identical": identical, "matches": int(res_np.sum()), "compile_ms": round(compile_ms, 2),
        "nodes": comp.n_nodes, "steps": comp.n_steps, "snap_columns": len(comp.f8_cols),
        "catalogue_metrics": len(table), "rule_metrics_used": len(comp.f8_cols),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_scan(), indent=2))
