"""Compile a rule list once into a step table evaluated over whole snapshot rows.

Calling contract of `CompiledRules.evaluate`:

* `snap[i, r]` float64, shaped `(len(f8_cols), n_rows)`: catalogue column `f8_cols[i]` of the
  worker's row `r` (the worker snapshots only these columns, in this order).
* `prev_snap`: the same array from the previous scan cycle, or None (first cycle: no crosses).
* `hist[j, r]` float64, shaped `(len(hist_refs), n_rows)`: bar-history field `hist_refs[j][0]`
  of row `r`, `hist_refs[j][1]` closed bars back; NaN where there is none. None if no refs.

Compilation turns every rule into a DAG of boolean nodes (leaf comparisons, AND/OR/NOR
groups, symbol masks); identical nodes are shared between rules (a common universe filter is
computed once). A rule's root is computed straight into its row of the output matrix; a leaf
used by one group only is folded into that group's row (stored, AND-ed or OR-ed in as it is
computed); other nodes get scratch rows, recycled after their last use so the working set
stays in cache. The steps then run on one of two backends (`scanner.rules.lower`): numpy
ufunc calls with preallocated outputs, or one numba kernel over row blocks. NaN never
matches: comparisons with NaN are False, and `!=` is `<` or `>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from scanner.metrics import CATALOGUE, HIST
from scanner.records import ALERT_VALUES, rule_key
from scanner.rules import kernel
from scanner.rules.alerts import warm_up as warm_alerts
from scanner.rules.limits import ALERT_MODES, Ref, ref_name
from scanner.rules.lower import Handle, Step, numba_table, numpy_ops, resolve_ops
from scanner.rules.model import Comparison, Group, Rule

Backend = Literal["numpy", "numba"]
DEFAULT_BACKEND: Backend = "numba"
_MODE = {"and": "and", "or": "or", "nor": "or"}


@dataclass
class _Node:
    kind: str  # leaf | and | or | nor | mask
    args: tuple[Any, ...]  # leaf: (op, x, y, c0, c1, px, py, a, b); mask: (include, exclude)
    children: tuple[int, ...] = ()
    home: Handle | None = None


class _Builder:
    """Rules -> DAG of boolean nodes over operand handles, identical nodes shared."""

    def __init__(self, col_pos: dict[str, int], hist_pos: dict[Ref, int], keys: Sequence[str]) -> None:
        self.col_pos, self.hist_pos = col_pos, hist_pos
        self.key_index = {k.upper(): i for i, k in enumerate(keys)}
        self.n_rows = len(keys)
        self.nodes: list[_Node] = []
        self.node_ids: dict[Any, int] = {}
        self.masks: list[np.ndarray] = []

    def operand(self, ref: Ref, prev: bool = False) -> Handle:
        name, ago = ref
        if ago:
            return ("hist", self.hist_pos[ref])
        return ("prev" if prev else "snap", self.col_pos[name])

    def node(self, kind: str, args: tuple[Any, ...], children: tuple[int, ...] = ()) -> int:
        key = (kind, args, children)
        nid = self.node_ids.get(key)
        if nid is None:
            nid = self.node_ids[key] = len(self.nodes)
            self.nodes.append(_Node(kind, args, children))
        return nid

    def group(self, kind: str, ids: list[int]) -> int:
        uniq = tuple(sorted(set(ids)))
        if len(uniq) == 1 and kind != "nor":
            return uniq[0]
        return self.node(kind, (), uniq)

    def leaf(self, op: str, x: Handle, y: Handle | None = None, c0: float = 0.0, c1: float = 0.0,
             px: Handle | None = None, py: Handle | None = None, a: float = 1.0, b: float = 0.0) -> int:
        return self.node("leaf", (op, x, y, c0, c1, px, py, a, b))

    def comparison(self, c: Comparison) -> int:
        x = self.operand((c.metric, c.bars_ago))
        other = c.other_operand
        if c.operator == "between":
            lo, hi = c.value  # type: ignore[misc]
            return self.leaf("between", x, c0=float(lo), c1=float(hi))
        px = self.operand((c.metric, 0), prev=True) if c.operator.startswith("crosses") else None
        if other is None:
            return self.leaf(c.operator, x, c0=float(c.value), px=px)  # type: ignore[arg-type]
        y = self.operand(other.ref)
        py = self.operand(other.ref, prev=True) if px is not None else None
        return self.leaf(c.operator, x, y, px=px, py=py, a=float(c.factor), b=float(c.offset))

    def tree(self, t: Comparison | Group) -> int:
        if isinstance(t, Comparison):
            return self.comparison(t)
        parts = [self.tree(c) for c in t.all or ()]
        if t.any:
            parts.append(self.group("or", [self.tree(c) for c in t.any]))
        if t.none:
            parts.append(self.group("nor", [self.tree(c) for c in t.none]))
        return self.group("and", parts)

    def mask(self, include: list[str] | None, exclude: list[str]) -> int:
        inc = None if include is None else tuple(sorted({s.upper() for s in include}))
        exc = tuple(sorted({s.upper() for s in exclude}))
        if ("mask", (inc, exc), ()) not in self.node_ids:
            m = np.ones(self.n_rows, bool) if inc is None else np.zeros(self.n_rows, bool)
            m[[self.key_index[s] for s in inc or () if s in self.key_index]] = True
            m[[self.key_index[s] for s in exc if s in self.key_index]] = False
            self.nodes.append(_Node("mask", (inc, exc), (), ("mask", len(self.masks))))
            self.node_ids[("mask", (inc, exc), ())] = len(self.nodes) - 1
            self.masks.append(m)
        return self.node_ids[("mask", (inc, exc), ())]

    def rule(self, r: Rule) -> int:
        root = self.tree(r.tree())
        u = r.universe
        if u is None:
            return root
        parts = [self.leaf(op, self.operand((m, 0)), c0=v) for m, op, v in u.bounds()]
        if u.symbols is not None or u.exclude_symbols:
            parts.append(self.mask(u.symbols, u.exclude_symbols))
        return self.group("and", [root, self.group("and", parts)]) if parts else root


def _emit(b: _Builder, roots: dict[int, list[int]]) -> tuple[list[Step], int]:
    """Steps in topological order with homes assigned; returns (steps, scratch bool rows).
    Step shapes: ("leaf", (op, x, y, c0, c1, px, py, a, b), target, mode) |
    ("acc", source, target, mode) | ("not", target); mode is "set", "and" or "or"."""
    needed: set[int] = set()
    stack = list(roots)
    while stack:
        nid = stack.pop()
        if nid not in needed:
            needed.add(nid)
            stack.extend(b.nodes[nid].children)
    order = sorted(needed)  # creation order is topological (children are built first)
    refc = dict.fromkeys(order, 0)
    for nid in order:
        for c in b.nodes[nid].children:
            refc[c] += 1
    inline = {nid for nid in order if b.nodes[nid].kind == "leaf" and refc[nid] == 1 and nid not in roots}
    last_use: dict[int, int] = {}
    for i, nid in enumerate(order):
        for c in b.nodes[nid].children:
            last_use[c] = i
    for nid, rules in roots.items():
        b.nodes[nid].home = ("out", rules[0])
    free: list[int] = []
    n_scratch = 0
    steps: list[Step] = []
    for i, nid in enumerate(order):
        n = b.nodes[nid]
        if nid in inline or n.kind == "mask":
            continue
        if n.home is None:
            if not free:
                free.append(n_scratch)
                n_scratch += 1
            n.home = ("b", free.pop())
        if n.kind == "leaf":
            steps.append(("leaf", n.args, n.home, "set"))
            continue
        kids = sorted(n.children, key=lambda c: c not in inline)  # folded leaves first
        for j, c in enumerate(kids):
            mode = "set" if j == 0 else _MODE[n.kind]
            ch = b.nodes[c]
            steps.append(("leaf", ch.args, n.home, mode) if c in inline else ("acc", ch.home, n.home, mode))
        if n.kind == "nor":
            steps.append(("not", n.home))
        for c in n.children:
            ch_home = b.nodes[c].home
            if c not in inline and last_use[c] == i and ch_home is not None and ch_home[0] == "b":
                free.append(ch_home[1])
    for rules in roots.values():  # rules sharing a root node copy it from the first one
        steps.extend(("acc", ("out", rules[0]), ("out", r), "set") for r in rules[1:])
    return steps, n_scratch


class CompiledRules:
    """A rule list compiled for one worker's rows; see the module docstring for `evaluate`.

    Public attributes: `rules`, `n_rows`, `f8_cols` (int64, sorted catalogue f8 indices = the
    rows of `snap`), `f8_names`, `hist_refs` ((HIST_FIELDS name, bars_ago) per row of `hist`),
    `value_pos` (int64 (n_rules, ALERT_VALUES): p < len(f8_cols) -> snap[p], else hist[p - m];
    -1 pads), `value_names`, `modes` (int8 index into ALERT_MODES), `cooldown_ns` (int64),
    `enabled` (bool), `keys` (uint64 `rule_key` of each rule id: what alerts carry), `backend`,
    `n_nodes`, `n_steps`.
    """

    def __init__(self, rules: list[Rule], n_rows: int, f8_names: list[str], hist_refs: list[Ref],
                 b: _Builder, roots: dict[int, list[int]], backend: Backend, block: int) -> None:
        m = len(f8_names)
        self.rules, self.n_rows, self.f8_names, self.hist_refs = rules, n_rows, f8_names, hist_refs
        self.f8_cols = np.array([CATALOGUE.f8(nm) for nm in f8_names], np.int64)
        self.price_pos = f8_names.index("price")  # row of `snap` the alert records' price comes from
        self.backend, self.block, self.n_nodes = backend, block, len(b.nodes)
        self.modes = np.array([ALERT_MODES.index(r.alert_mode) for r in rules], np.int8)
        self.cooldown_ns = np.array([round(r.cooldown_seconds * 1e9) for r in rules], np.int64)
        self.enabled = np.array([r.enabled for r in rules], bool)
        self.keys = np.array([rule_key(r.id) for r in rules], np.uint64)
        if len(np.unique(self.keys)) != len(rules):
            raise ValueError("two rules share an id (or a 64-bit rule key): alerts could not tell them apart")
        self.value_pos = np.full((len(rules), ALERT_VALUES), -1, np.int64)
        self.value_names: list[list[str]] = []
        for i, r in enumerate(rules):
            refs = r.refs()[:ALERT_VALUES]
            self.value_names.append([ref_name(x) for x in refs])
            if r.enabled:
                pos = [b.col_pos[x[0]] if x[1] == 0 else m + b.hist_pos[x] for x in refs]
                self.value_pos[i, :len(refs)] = pos
        win = [(i, *r.window.minutes()) for i, r in enumerate(rules) if r.enabled and r.window is not None]
        self._win = np.array(win, np.int64).reshape(-1, 3)  # rule, start minute, end minute
        steps, n_scratch = _emit(b, roots)
        self.n_steps = len(steps)
        # one bool array: output rows, scratch rows, symbol masks, two tmp rows
        n_out, n_mask = len(rules), len(b.masks)
        base = {"out": 0, "b": n_out, "mask": n_out + n_scratch, "tmp": n_out + n_scratch + n_mask}
        self._bools = np.zeros((base["tmp"] + 2, n_rows), bool)
        self.out = self._bools[:n_out]
        if b.masks:
            self._bools[base["mask"]:base["tmp"]] = b.masks
        self._views = {k: self._bools[base[k]:] for k in base}
        self._tmp_row = base["tmp"]
        self._ftmp = np.zeros((2, n_rows), np.float64)
        uses_prev = any(st[0] == "leaf" and st[1][5] is not None for st in steps)
        self._nan_prev = np.full((m, n_rows), np.nan) if uses_prev else None
        self._no_hist = np.zeros((0, n_rows), np.float64)
        self._ops = numpy_ops(steps) if backend == "numpy" else []
        self._prog, self._consts = numba_table(steps, base)
        self._cache: dict[tuple[int, int, int], tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = {}

    @property
    def n_rules(self) -> int:
        return len(self.rules)

    @property
    def hist_fields(self) -> np.ndarray:
        """HIST indices of `hist_refs` (for `History.read`)."""
        return np.array([HIST[f] for f, _ in self.hist_refs], np.int64)

    @property
    def hist_bars_ago(self) -> np.ndarray:
        return np.array([k for _, k in self.hist_refs], np.int64)

    def _resolved(self, snap: np.ndarray, prev: np.ndarray, hist: np.ndarray) -> list[tuple[Any, ...]]:
        """numpy ops with handles bound to these arrays, cached by array identity (ScanEngine
        swaps two preallocated buffers, so after two cycles this is a dict lookup)."""
        key = (id(snap), id(prev), id(hist))
        hit = self._cache.get(key)
        if hit is None:
            arrays = {"snap": snap, "prev": prev, "hist": hist, "ftmp": self._ftmp, **self._views}
            if len(self._cache) >= 4:
                self._cache.clear()
            hit = self._cache[key] = ((snap, prev, hist), resolve_ops(self._ops, arrays))  # keeps ids unique
        return hit[1]

    def evaluate(self, snap: np.ndarray, prev_snap: np.ndarray | None, hist: np.ndarray | None,
                 minute_of_day_et: int) -> np.ndarray:
        """Match matrix bool (n_rules, n_rows). The returned array is owned by this object and
        overwritten by the next call; disabled rules' rows are always False."""
        m, n = len(self.f8_cols), self.n_rows
        if snap.shape != (m, n) or snap.dtype != np.float64:
            raise ValueError(f"'snap' must be float64 {(m, n)}, was {snap.dtype} {snap.shape}")
        if not self.hist_refs:
            hist = self._no_hist
        elif hist is None or hist.shape != (len(self.hist_refs), n) or hist.dtype != np.float64:
            raise ValueError(f"'hist' must be float64 {(len(self.hist_refs), n)}, "
                             f"was {None if hist is None else (hist.dtype, hist.shape)}")
        if prev_snap is None:
            prev_snap = self._nan_prev if self._nan_prev is not None else snap
        elif prev_snap.shape != (m, n) or prev_snap.dtype != np.float64:
            raise ValueError(f"'prev_snap' must be float64 {(m, n)}, was {prev_snap.dtype} {prev_snap.shape}")
        if self.backend == "numpy":
            for f, x, y, o in self._resolved(snap, prev_snap, hist):
                f(x, y, o)
        else:
            c = np.ascontiguousarray
            kernel.run_steps(self._prog, self._consts, c(snap), c(prev_snap), c(hist), self._bools,
                             self._tmp_row, self.block)
        if len(self._win):
            t = minute_of_day_et
            r, s, e = self._win[:, 0], self._win[:, 1], self._win[:, 2]
            inside = np.where(s < e, (s <= t) & (t < e), (t >= s) | (t < e))
            if not inside.all():
                self.out[r[~inside]] = False
        return self.out


DEFAULT_BLOCK = 8192
"""Rows per block of the numba kernel. Measured with `scanner bench scan` (10,000 rows, 200 rules,
568 steps; quiet AMD EPYC box, 2026-11-30, medians of 60 evaluations, two passes): 256 rows
1.92-2.12 ms, 1,024 1.20-1.45, 2,048 0.90-1.00, 4,096 0.79-0.90, 8,192 0.68-0.75, 16,384
0.63-0.64. Each step costs a few slices per block, so small blocks pay that overhead many
times; the block's columns and boolean rows stream through L2 at these sizes anyway. 8,192
keeps a scan worker's partition (10,000 rows over 2+ workers) in one block."""


def compile_rules(rules: Sequence[Rule], keys: Sequence[str], backend: Backend = DEFAULT_BACKEND,
                  block: int = DEFAULT_BLOCK) -> CompiledRules:
    """Compile `rules` for the rows named by `keys` (symbol masks are built here, once).
    `backend`: "numba" (one kernel, `block` rows at a time) or "numpy" (ufunc calls)."""
    if backend not in ("numpy", "numba"):
        raise ValueError(f"'backend' must be 'numpy' or 'numba', was {backend!r}")
    if block < 1:
        raise ValueError(f"'block' must be positive, was {block}")
    rules = list(rules)
    refs = [ref for r in rules if r.enabled for ref in r.refs()]
    # `price` always: every alert record carries the last trade price of its snapshot
    f8_names = sorted({name for name, ago in refs if ago == 0} | {"price"}, key=CATALOGUE.f8)
    hist_refs = sorted({ref for ref in refs if ref[1] > 0}, key=lambda ref: (HIST[ref[0]], ref[1]))
    b = _Builder({nm: i for i, nm in enumerate(f8_names)}, {ref: i for i, ref in enumerate(hist_refs)}, keys)
    roots: dict[int, list[int]] = {}
    for i, r in enumerate(rules):
        if r.enabled:
            roots.setdefault(b.rule(r), []).append(i)
    return CompiledRules(rules, len(keys), f8_names, hist_refs, b, roots, backend, block)


def warm_up() -> None:
    """Load (or, the first time on a machine, JIT-compile: a few seconds) the numba kernels (the
    rules', the alert state's), so that a worker pays for them at boot rather than in its first
    scan cycle."""
    rule = Rule.model_validate({"id": "warm-up", "metric": "price", "operator": ">", "value": 0})
    comp = compile_rules([rule], ["X"], backend="numba")
    comp.evaluate(np.zeros((1, 1)), None, None, 0)
    warm_alerts()
