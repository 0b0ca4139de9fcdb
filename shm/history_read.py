"""`History.read`'s gather as one numba pass: for each operand, each row's record `bars_ago`
back. numpy needed six passes with temporaries and a two-index fancy gather per operand (~80 us
for 5,000 rows and one operand, on a scan worker's critical path in a replay: ingest waits for
its snapshot); this is ~35 us. A module of its own so that the processes that map the history
without reading it (every child) do not import numba for it.

A reader that keeps its output between reads may pass the heads it read last time (`known`):
the history is only appended to (a record is written, then the row's head moves on), so a row
whose head has not moved still has the values it read, and the gather skips it. Each row's
values are read at one head, loaded before them. In the pipeline a row's head moves when its
minute closes: between two closes a read touches no history at all (the rows' slots lie in
5,000 different pages, so each one is a TLB miss: ~0.2 ms a read in a busy replay)."""

from __future__ import annotations

import numpy as np
from numba import njit

ALL, SKIP_KNOWN = 0, 1  # `read_ago` modes: every row; only rows whose head moved since `known`


@njit(cache=True, nogil=True)
def read_ago(hist: np.ndarray, head: np.ndarray, fields: np.ndarray, bars_ago: np.ndarray, r0: int, r1: int,
             lo: int, out: np.ndarray, known: np.ndarray, mode: int) -> None:
    """out[i, r - lo] = field `fields[i]` of row r (r0 <= r < r1), `bars_ago[i]` records back
    (record `j` of a row is in slot `j % depth`); NaN where the row has fewer records or the
    ring is shallower than that. With `known` (one head per output row; an empty array: none),
    each row's head is stored there, and with mode SKIP_KNOWN a row whose head equals it is
    left as it is."""
    k = hist.shape[2]
    track = known.shape[0] > 0
    for r in range(r0, r1):
        h = head[r]
        if track:
            if mode == SKIP_KNOWN and known[r - lo] == h:
                continue
            known[r - lo] = h
        for i in range(fields.shape[0]):
            a = bars_ago[i]
            j = h - a
            out[i, r - lo] = hist[fields[i], r, j % k] if j >= 0 and a <= k else np.nan


def warm_up() -> None:
    """Compile (first time on a machine) or load the kernel with the argument kinds a scan
    worker passes (the segment's views, the compiled rules' int64 operands, its buffers)."""
    from shm.history import records

    hist, head = records(2, 3, 4), np.array([1, 5, 0], np.int64)  # the segment's layout
    hist[:] = 0.0
    out, known = np.empty((1, 3)), np.full(3, -1, np.int64)
    for kn in (known, known[:0]):
        read_ago(hist, head, np.array([1], np.int64), np.array([1], np.int64), 0, 3, 0, out, kn, SKIP_KNOWN)
