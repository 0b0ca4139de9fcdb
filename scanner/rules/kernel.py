"""numba backend of the rule compiler: one kernel interprets the compiled step table.

The step table is data, so a rule change never recompiles anything; the kernel is compiled
once per machine (`cache=True`). Rows go in blocks of `block` so that the block's slices of
the snapshot and of the boolean rows stay in cache while every step runs over them. Each leaf
is one fused pass (`x op y * a + b`, `between`, a cross) that stores, ANDs or ORs its result
into its target row, so a group's children need no rows of their own.

All boolean rows (the output matrix, scratch rows, symbol masks, one tmp row) are rows of one
array `bools`. Step table `prog[s]` (int64 columns C_*): the step code (LEAF / ACC / NOT), the
leaf operator (OP_CODES), float operands as (kind, row) pairs (F_SNAP / F_PREV / F_HIST;
F_NONE = no operand), the target row, the mode (SET / AND / OR) and for ACC the source row.
`consts[s]` = (c0, c1, a, b): the constant (between: c0..c1) and the scaling y * a + b.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LEAF, ACC, NOT = range(3)
SET, AND, OR = range(3)
OP_CODES = {">": 0, ">=": 1, "<": 2, "<=": 3, "==": 4, "!=": 5, "between": 6, "crosses_above": 7,
            "crosses_below": 8}
F_NONE, F_SNAP, F_PREV, F_HIST = range(4)
C_CODE, C_OP, C_XK, C_XI, C_YK, C_YI, C_PXK, C_PXI, C_PYK, C_PYI, C_OI, C_MODE, C_SI = range(13)
N_COLS = 13


@njit(inline="always")
def _cmp_c(op, x, c, o, m):  # type: ignore[no-untyped-def]
    if op == 0:
        for i in range(m):
            o[i] = x[i] > c
    elif op == 1:
        for i in range(m):
            o[i] = x[i] >= c
    elif op == 2:
        for i in range(m):
            o[i] = x[i] < c
    elif op == 3:
        for i in range(m):
            o[i] = x[i] <= c
    elif op == 4:
        for i in range(m):
            o[i] = x[i] == c
    else:  # "!=" that NaN does not match
        for i in range(m):
            o[i] = (x[i] < c) | (x[i] > c)


@njit(inline="always")
def _cmp_y(op, x, y, a, b, o, m):  # type: ignore[no-untyped-def]
    if op == 0:
        for i in range(m):
            o[i] = x[i] > y[i] * a + b
    elif op == 1:
        for i in range(m):
            o[i] = x[i] >= y[i] * a + b
    elif op == 2:
        for i in range(m):
            o[i] = x[i] < y[i] * a + b
    elif op == 3:
        for i in range(m):
            o[i] = x[i] <= y[i] * a + b
    elif op == 4:
        for i in range(m):
            o[i] = x[i] == y[i] * a + b
    else:
        for i in range(m):
            v = y[i] * a + b
            o[i] = (x[i] < v) | (x[i] > v)


@njit(inline="always")
def _leaf(op, x, yk, yi, snap, hist, c0, c1, a, b, o, b0, b1):  # type: ignore[no-untyped-def]
    """Comparison or between of `x` into `o`; y is snap/hist row `yi` (or none: constant c0)."""
    m = b1 - b0
    if op == 6:
        for i in range(m):
            o[i] = (x[i] >= c0) & (x[i] <= c1)
    elif yk == F_NONE:
        _cmp_c(op, x, c0, o, m)
    elif yk == F_SNAP:
        _cmp_y(op, x, snap[yi, b0:b1], a, b, o, m)
    else:
        _cmp_y(op, x, hist[yi, b0:b1], a, b, o, m)


@njit(inline="always")
def _cross(up, x, px, y, py, c0, a, b, o, m, const):  # type: ignore[no-untyped-def]
    """x crosses c0 (const) or y * a + b, from the previous cycle (px, py) to this one."""
    if const:
        if up:
            for i in range(m):
                o[i] = (px[i] <= c0) & (x[i] > c0)
        else:
            for i in range(m):
                o[i] = (px[i] >= c0) & (x[i] < c0)
    elif up:
        for i in range(m):
            o[i] = (px[i] <= py[i] * a + b) & (x[i] > y[i] * a + b)
    else:
        for i in range(m):
            o[i] = (px[i] >= py[i] * a + b) & (x[i] < y[i] * a + b)


@njit(inline="always")
def _combine(mode, o, src, m):  # type: ignore[no-untyped-def]
    if mode == SET:
        for i in range(m):
            o[i] = src[i]
    elif mode == AND:
        for i in range(m):
            o[i] = o[i] & src[i]
    else:
        for i in range(m):
            o[i] = o[i] | src[i]


@njit(cache=True, nogil=True)
def run_steps(prog: np.ndarray, consts: np.ndarray, snap: np.ndarray, prev: np.ndarray, hist: np.ndarray,
              bools: np.ndarray, tmp_row: int, block: int) -> None:
    """Run the step table over all rows, `block` rows at a time (see the module docstring).

    Every view is taken straight from one of the arrays (never chosen between arrays in a
    branch): numba can then drop the views' reference counting, which otherwise costs more
    per step than a whole block of comparisons."""
    n = bools.shape[1]
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        m = b1 - b0
        for s in range(prog.shape[0]):
            code, mode, oi = prog[s, C_CODE], prog[s, C_MODE], prog[s, C_OI]
            if code == NOT:
                o = bools[oi, b0:b1]
                for i in range(m):
                    o[i] = not o[i]
                continue
            if code == LEAF:
                ti = oi if mode == SET else tmp_row
                t = bools[ti, b0:b1]
                op, xi, yk, yi = prog[s, C_OP], prog[s, C_XI], prog[s, C_YK], prog[s, C_YI]
                c0, c1, a, b = consts[s, 0], consts[s, 1], consts[s, 2], consts[s, 3]
                if op >= 7:  # crosses read live values only: x, y from snap, px, py from prev
                    pyi = prog[s, C_PYI] if yk != F_NONE else xi
                    _cross(op == 7, snap[xi, b0:b1], prev[prog[s, C_PXI], b0:b1], snap[yi, b0:b1],
                           prev[pyi, b0:b1], c0, a, b, t, m, yk == F_NONE)
                elif prog[s, C_XK] == F_SNAP:
                    _leaf(op, snap[xi, b0:b1], yk, yi, snap, hist, c0, c1, a, b, t, b0, b1)
                else:
                    _leaf(op, hist[xi, b0:b1], yk, yi, snap, hist, c0, c1, a, b, t, b0, b1)
                if mode != SET:
                    _combine(mode, bools[oi, b0:b1], t, m)
            else:
                _combine(mode, bools[oi, b0:b1], bools[prog[s, C_SI], b0:b1], m)
