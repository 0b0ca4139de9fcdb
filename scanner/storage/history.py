"""Startup history: past bars from storage merged into the indicator warm-up arrays.

`merge_history` combines bars loaded from PostgreSQL or the archive with the shared-memory bar
history into one `hist[field, row, slot]` ring (HIST_FIELDS order) holding, per row, the last
K bars by minute (the shared-memory copy wins where both have a minute), ready for
`IndicatorEngine.warm_up`; `StoredBars` does the same for one chunk of rows at a time
(`IndicatorEngine.fold_history`), so the merged ring is never whole in memory. `profile_from_sums`
is `indicators.volume.volume_profile` for volume already summed per (row, minute of day) by the
database.
"""

from __future__ import annotations

import numpy as np

from scanner.indicators.volume import MINUTES_PER_DAY
from scanner.metrics import HIST

_MIN = HIST["minute"]


def ring_records(hist: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values[field, record]) of every bar held in a history ring."""
    k = hist.shape[2]
    held = np.minimum(head, k)
    valid = np.arange(k)[None, :] < held[:, None]  # record j sits in slot j % k: slots < held are valid
    rows, slots = np.nonzero(valid)
    return rows, hist[:, rows, slots]


def merge_history(hist: np.ndarray, head: np.ndarray, rows: np.ndarray, values: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """A new (hist, head): the ring's bars plus `values[field, i]` for table row `rows[i]`, the
    last K per row by minute, oldest first; a minute present in both keeps the ring's bar."""
    n_fields, n_rows, k = hist.shape
    if values.shape != (n_fields, len(rows)):
        raise ValueError(f"'values' must be ({n_fields}, {len(rows)}), was {values.shape}")
    r_rows, r_vals = ring_records(hist, head)
    all_rows = np.concatenate([np.asarray(rows, np.int64), r_rows.astype(np.int64)])
    all_vals = np.concatenate([values, r_vals], axis=1)
    prio = np.concatenate([np.zeros(len(rows), np.int8), np.ones(len(r_rows), np.int8)])
    order = np.lexsort((prio, all_vals[_MIN], all_rows))
    all_rows, all_vals = all_rows[order], all_vals[:, order]
    last = np.ones(len(all_rows), bool)  # per (row, minute) keep the last: the ring's when both
    last[:-1] = (all_rows[1:] != all_rows[:-1]) | (all_vals[_MIN, 1:] != all_vals[_MIN, :-1])
    all_rows, all_vals = all_rows[last], all_vals[:, last]
    counts = np.bincount(all_rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(all_rows)) - starts[all_rows]
    keep_from = np.maximum(counts - k, 0)
    keep = pos >= keep_from[all_rows]
    out = np.full_like(hist, np.nan)
    out_head = np.minimum(counts, k).astype(head.dtype)
    out[:, all_rows[keep], (pos - keep_from[all_rows])[keep]] = all_vals[:, keep]
    return out, out_head


class StoredBars:
    """Bars loaded from storage (`values[field, i]` of table row `rows[i]`), merged into the
    history ring a chunk of rows at a time: `merge(hist, head, row0)` is `merge_history` of
    ring rows `row0 + i` with the stored bars of those rows, the same rows as the whole merge
    would give (a row's result depends only on its own bars, in their load order)."""

    def __init__(self, rows: np.ndarray, values: np.ndarray) -> None:
        if values.ndim != 2 or values.shape[1] != len(rows):
            raise ValueError(f"'values' must be (n_fields, {len(rows)}), was {values.shape}")
        self.rows, self.values = np.asarray(rows, np.int64), values
        self._order = np.argsort(self.rows, kind="stable")  # indices, not a sorted copy of the values
        self._sorted = self.rows[self._order]

    def __len__(self) -> int:
        return len(self.rows)

    def merge(self, hist: np.ndarray, head: np.ndarray, row0: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(hist, head) of ring rows `row0 + i` (`hist[field, i, slot]`) merged with their stored bars."""
        lo, hi = np.searchsorted(self._sorted, [row0, row0 + hist.shape[1]])
        mine = self._order[lo:hi]
        return merge_history(hist, head, self.rows[mine] - row0, self.values[:, mine])


class ProfileSums:
    """Accumulates volume per (row, minute of day) over days, then gives the volume profile:
    same definition as `indicators.volume.volume_profile` (average cumulative volume; NaN for
    rows without bars), without holding every bar of every day."""

    def __init__(self, n_rows: int) -> None:
        self.sums = np.zeros((n_rows, MINUTES_PER_DAY))
        self.seen = np.zeros(n_rows, bool)

    def add(self, rows: np.ndarray, minute_of_day: np.ndarray, volume: np.ndarray) -> None:
        rows = np.asarray(rows, np.intp)
        mod = np.asarray(minute_of_day, np.intp)
        if len(mod) and (mod.min() < 0 or mod.max() >= MINUTES_PER_DAY):
            raise ValueError("'minute_of_day' must be in 0..1439")
        np.add.at(self.sums, (rows, mod), np.asarray(volume, np.float64))
        self.seen[rows] = True

    def profile(self, n_days: int) -> np.ndarray:
        prof = np.cumsum(self.sums, axis=1) / max(1, n_days)
        prof[~self.seen] = np.nan
        return prof


def profile_from_sums(rows: np.ndarray, minute_of_day: np.ndarray, volume_sum: np.ndarray, n_days: int,
                      n_rows: int) -> np.ndarray:
    """Volume profile (n_rows, 1440) from volume summed over `n_days` days per (row, minute of day)."""
    acc = ProfileSums(n_rows)
    acc.add(rows, minute_of_day, volume_sum)
    return acc.profile(n_days)
