"""`History.read`'s gather as one numba pass: for each operand, each row's record `bars_ago`
back. numpy needed six passes with temporaries and a two-index fancy gather per operand (~80 us
for 5,000 rows and one operand, on a scan worker's critical path in a replay: ingest waits for
its snapshot); this is ~35 us. A module of its own so that the processes that map the history
without reading it (every child) do not import numba for it."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def read_ago(hist: np.ndarray, head: np.ndarray, fields: np.ndarray, bars_ago: np.ndarray, r0: int, r1: int,
             lo: int, out: np.ndarray) -> None:
    """out[i, r - lo] = field `fields[i]` of row r (r0 <= r < r1), `bars_ago[i]` records back
    (record `j` of a row is in slot `j % depth`); NaN where the row has fewer records or the
    ring is shallower than that."""
    k = hist.shape[2]
    for i in range(fields.shape[0]):
        f, a = fields[i], bars_ago[i]
        for r in range(r0, r1):
            j = head[r] - a
            out[i, r - lo] = hist[f, r, j % k] if j >= 0 and a <= k else np.nan


def warm_up() -> None:
    """Compile (first time on a machine) or load the kernel with the argument kinds a scan
    worker passes (the segment's views, the compiled rules' int64 operands, its buffer)."""
    hist, head = np.zeros((2, 3, 4)), np.array([1, 5, 0], np.int64)
    out = np.empty((1, 3))
    read_ago(hist, head, np.array([1], np.int64), np.array([1], np.int64), 0, 3, 0, out)
