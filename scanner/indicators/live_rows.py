"""Which rows' live indicator values can have changed since the last refresh.

The per-row kernels of a live refresh (`IndicatorEngine.update_live`, `TimeframeIndicators.
update_live`) give a row the same values as last time unless one of these changed for it:

- an input column they read (`engine.ROW_INPUTS`, `timeframes.ROW_INPUTS`): compared bit for
  bit with the copy taken at the last refresh (so NaN equals NaN, and 0.0 differs from -0.0);
- its bar state: closed 1-minute or higher-timeframe bars folded in (`mark`);
- the minute of the refresh (volume_5m, the rolling windows, the opening ranges and the day's
  open move with it): a refresh in a new minute takes every row.

Between two refreshes of one minute only the rows that traded (or whose bar closed) have to be
recomputed: about 40 % of 10,000 symbols per second in the backtest's synthetic day. Columns
that move with the clock (minutes since, relative volume, ...) are not per-row kernel values
and are recomputed for every row anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit

from scanner.indicators.engine import ROW_INPUTS as ENGINE_INPUTS
from scanner.indicators.timeframes import ROW_INPUTS as TIMEFRAME_INPUTS
from scanner.session import MINUTE_NS

INPUTS = tuple(dict.fromkeys(ENGINE_INPUTS + TIMEFRAME_INPUTS))  # what the per-row kernels read


@njit(cache=True, nogil=True)
def _take(cur: tuple, prev: np.ndarray, marked: np.ndarray, rows: np.ndarray) -> int:
    """Rows (ascending, into `rows`) marked or with any `cur[k][r]` != `prev[k, r]` (int64 bit
    patterns); `prev` takes the new values and the marks are cleared. Returns how many."""
    m = 0
    for r in range(marked.shape[0]):
        changed = marked[r]
        for k in range(len(cur)):
            x = cur[k][r]
            if x != prev[k, r]:
                prev[k, r] = x
                changed = True
        if changed:
            rows[m] = r
            m += 1
            marked[r] = False
    return m


class ChangedRows:
    """Tracks, for `n_rows` rows, the rows whose per-row live values need a recompute (module
    docstring). `mark(rows)` after folding their bars; `take(columns, event_ns)` at each refresh."""

    def __init__(self, n_rows: int, inputs: Sequence[str] = INPUTS) -> None:
        if n_rows <= 0:
            raise ValueError(f"'n_rows' must be positive, was {n_rows}")
        self.inputs = tuple(dict.fromkeys(inputs))
        self._prev = np.zeros((len(self.inputs), n_rows), np.int64)
        self._marked = np.zeros(n_rows, np.bool_)
        self._rows = np.empty(n_rows, np.int64)
        self._all = np.arange(n_rows, dtype=np.int64)
        self._minute = -1  # minute of the last refresh; -1: none yet, every row is due

    def mark(self, rows: np.ndarray) -> None:
        """Rows whose bar state changed (closed bars folded in) since the last `take`."""
        self._marked[rows] = True

    def take(self, columns: Mapping[str, np.ndarray], event_ns: int) -> np.ndarray:
        """The rows to recompute for a refresh at `event_ns` over `columns` (ascending int64;
        every row in a new minute), and remember the inputs as of now."""
        cur = tuple(columns[k].view(np.int64) for k in self.inputs)
        minute = int(event_ns) - int(event_ns) % MINUTE_NS
        if minute != self._minute:
            self._minute = minute
            for k, col in enumerate(cur):
                self._prev[k] = col
            self._marked[:] = False
            return self._all
        return self._rows[:_take(cur, self._prev, self._marked, self._rows)]


def warm_kernels() -> None:
    """Compile (first time on a machine) or load the kernel with the argument kinds the
    indicator process passes (int64 views of the `INPUTS` columns: one tuple type per count)."""
    from scanner.metrics import CATALOGUE

    cols = {k: np.zeros(2, np.int64 if CATALOGUE[k].dtype == "i8" else np.float64) for k in INPUTS}
    c = ChangedRows(2)
    c.take(cols, 0)
    c.mark(np.array([1]))
    c.take(cols, 1)
