"""Lower the compiler's steps to a backend: numpy `ufunc(x, y, out)` calls or the numba table.

A handle names an argument before any array exists: ("snap" | "prev" | "hist" | "b" | "out" |
"mask" | "tmp" | "ftmp", row) or ("c", value) for a constant. The numpy ops are bound to
concrete row views once per (snap, prev, hist) triple by `resolve_ops`; evaluation is then
`for f, x, y, o in ops: f(x, y, o)`. The numba table is the same program as integer columns
(see `scanner.rules.kernel`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scanner.rules import kernel

Handle = tuple[str, Any]
Step = tuple[Any, ...]
Op = tuple[np.ufunc, Handle, Handle, Handle]

_CMP: dict[str, np.ufunc] = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
                             "==": np.equal}
_NO: Handle = ("c", False)


def _leaf_ops(args: tuple[Any, ...], target: Handle) -> list[Op]:
    """Ops computing leaf `args` = (op, x, y, c0, c1, px, py, a, b) into `target`; uses the
    second tmp row and the two float tmp rows."""
    op, x, y, c0, c1, px, py, a, b = args
    t2: Handle = ("tmp", 1)
    ops: list[Op] = []

    def scaled(h: Handle | None, k: int) -> Handle:
        if h is None:
            return ("c", c0)
        if a == 1.0 and b == 0.0:
            return h
        f: Handle = ("ftmp", k)
        ops.append((np.multiply, h, ("c", a), f))
        if b != 0.0:
            ops.append((np.add, f, ("c", b), f))
        return f

    if op == "between":
        ops += [(np.greater_equal, x, ("c", c0), target), (np.less_equal, x, ("c", c1), t2),
                (np.logical_and, target, t2, target)]
    elif op in ("crosses_above", "crosses_below"):
        yy, pyy = scaled(y, 0), scaled(py, 1)
        before, now = (np.less_equal, np.greater) if op == "crosses_above" else (np.greater_equal, np.less)
        ops += [(before, px, pyy, target), (now, x, yy, t2), (np.logical_and, target, t2, target)]
    else:
        yy = scaled(y, 0)
        if op == "!=":  # NaN != v is True in IEEE; "<" or ">" keeps NaN from matching
            ops += [(np.less, x, yy, target), (np.greater, x, yy, t2), (np.logical_or, target, t2, target)]
        else:
            ops.append((_CMP[op], x, yy, target))
    return ops


def numpy_ops(steps: list[Step]) -> list[Op]:
    """Steps -> unbound ufunc calls (a leaf folded into a group goes through tmp row 0)."""
    ops: list[Op] = []
    for st in steps:
        kind = st[0]
        if kind == "not":
            ops.append((np.equal, st[1], _NO, st[1]))
            continue
        src, target, mode = st[1], st[2], st[3]
        if kind == "leaf":
            if mode == "set":
                ops += _leaf_ops(src, target)
                continue
            src = ("tmp", 0)
            ops += _leaf_ops(st[1], src)
        if mode == "set":
            ops.append((np.logical_or, src, _NO, target))
        else:
            ops.append((np.logical_and if mode == "and" else np.logical_or, target, src, target))
    return ops


def resolve_ops(ops: list[Op], arrays: dict[str, np.ndarray]) -> list[tuple[Any, ...]]:
    """Bind handles to row views of `arrays` (constants stay scalars)."""

    def bind(h: Handle) -> Any:
        return h[1] if h[0] == "c" else arrays[h[0]][h[1]]

    return [(f, bind(x), bind(y), bind(o)) for f, x, y, o in ops]


_FK = {"snap": kernel.F_SNAP, "prev": kernel.F_PREV, "hist": kernel.F_HIST}
_MODES = {"set": kernel.SET, "and": kernel.AND, "or": kernel.OR}


def numba_table(steps: list[Step], base: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Steps -> the kernel's (prog int64 (n, N_COLS), consts float64 (n, 4)); `base` gives the
    first row of "out", "b" and "mask" rows in the kernel's single bool array."""
    prog = np.zeros((len(steps), kernel.N_COLS), np.int64)
    consts = np.zeros((len(steps), 4), np.float64)
    for s, st in enumerate(steps):
        p = prog[s]
        target = st[1] if st[0] == "not" else st[2]
        p[kernel.C_OI] = base[target[0]] + target[1]
        if st[0] == "not":
            p[kernel.C_CODE] = kernel.NOT
            continue
        p[kernel.C_MODE] = _MODES[st[3]]
        if st[0] == "acc":
            p[kernel.C_CODE] = kernel.ACC
            p[kernel.C_SI] = base[st[1][0]] + st[1][1]
            continue
        op, x, y, c0, c1, px, py, a, b = st[1]
        p[kernel.C_CODE], p[kernel.C_OP] = kernel.LEAF, kernel.OP_CODES[op]
        for col, h in ((kernel.C_XK, x), (kernel.C_YK, y), (kernel.C_PXK, px), (kernel.C_PYK, py)):
            if h is None:
                p[col] = kernel.F_NONE
            else:
                p[col], p[col + 1] = _FK[h[0]], h[1]
        consts[s] = c0, c1, a, b
    return prog, consts
