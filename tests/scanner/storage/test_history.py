"""Startup history: merging stored bars with the shared-memory ring; the summed volume profile."""

from __future__ import annotations

import numpy as np

from scanner.indicators.volume import volume_profile
from scanner.metrics import HIST, HIST_FIELDS
from scanner.storage.history import merge_history, profile_from_sums, ring_records

F = len(HIST_FIELDS)


def ring(n_rows: int, k: int, bars: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A history ring with bars at the given minutes per row (close = minute)."""
    hist = np.full((F, n_rows, k), np.nan)
    head = np.zeros(n_rows, np.int64)
    for r, minutes in bars.items():
        for m in minutes:
            hist[:, r, head[r] % k] = m
            head[r] += 1
    return hist, head


def stored(entries: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array([e[0] for e in entries])
    vals = np.empty((F, len(entries)))
    vals[:] = [e[2] for e in entries]
    vals[HIST["minute"]] = [e[1] for e in entries]
    return rows, vals


def test_merge_keeps_last_k_by_minute_and_prefers_the_ring() -> None:
    hist, head = ring(3, 4, {0: [10, 11], 1: [20, 21, 22, 23, 24, 25]})  # row 1 wrapped
    rows, vals = stored([(0, 7, -1), (0, 8, -1), (0, 9, -1), (0, 11, -1), (2, 5, -1)])
    out, out_head = merge_history(hist, head, rows, vals)
    assert out_head.tolist() == [4, 4, 1]
    got = {r: out[HIST["minute"], r, :out_head[r]].tolist() for r in range(3)}
    assert got == {0: [8, 9, 10, 11], 1: [22, 23, 24, 25], 2: [5]}
    assert out[HIST["close"], 0, 3] == 11  # minute 11 in both: the ring's bar (close 11, not -1)
    assert out[HIST["close"], 0, 0] == -1


def test_ring_records_lists_every_held_bar() -> None:
    hist, head = ring(2, 3, {0: [1, 2, 3, 4], 1: [9]})
    rows, vals = ring_records(hist, head)
    got = sorted(zip(rows.tolist(), vals[HIST["minute"]].tolist(), strict=True))
    assert got == [(0, 2), (0, 3), (0, 4), (1, 9)]


def test_profile_from_sums_equals_volume_profile() -> None:
    rng = np.random.default_rng(1)
    n = 500
    rows, days = rng.integers(0, 6, n), rng.choice([20240311, 20240312, 20240313], n)
    mod, vol = rng.integers(570, 960, n), rng.integers(1, 1000, n).astype(float)
    want = volume_profile(rows, days, mod, vol, 8)
    key = rows * 1440 + mod
    uniq, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, weights=vol)
    got = profile_from_sums(uniq // 1440, uniq % 1440, sums, 3, 8)
    assert np.allclose(got, want, equal_nan=True)
