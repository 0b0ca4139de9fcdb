"""Sequence counters (seqlocks) over blocks of rows, one set per writer.

Layout: `counters[writer, block, 0..7]` int64; only word 0 is used, the other seven pad each
counter to its own 64-byte cache line so that writers of neighbouring blocks never share one.

Contract (one writer per counter; see `shm.platform` for the hardware part):

* Writer: bump the counters of the blocks it will touch (they become odd), store the data,
  bump them again (even). Stores are seen by other cores in program order (x86-64 TSO).
* Reader: load the counters (retry a block whose counter is odd), copy the data, load the
  counters again; a block whose counter moved is copied again. Loads are not reordered with
  loads on TSO, so an unchanged even counter means the copy of that block is not torn.
* Bounded: after `max_retries` rounds the reader raises `SeqlockTimeout` instead of spinning
  for ever (a writer that never leaves a gap, or one that died mid-write).
* A writer that dies mid-write leaves odd counters; the supervisor calls `repair()` for that
  writer before restarting it (the rows it was writing may hold a partial update; the next
  write by the restarted writer replaces them).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

PAD_WORDS = 8  # 64 bytes per counter


class SeqlockTimeout(RuntimeError):
    """A reader could not get a consistent copy within its retry budget."""


def counters_nbytes(n_writers: int, n_blocks: int) -> int:
    return n_writers * n_blocks * PAD_WORDS * 8


class SeqWriter:
    """The write side for one writer's counters (`seq` is a 1-D strided int64 view)."""

    def __init__(self, seq: np.ndarray, block_shift: int) -> None:
        self.seq = seq
        self.block_shift = block_shift
        self._mask = np.zeros(seq.shape[0], dtype=bool)

    def mark_rows(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask of the blocks holding `rows` (reuses one scratch array)."""
        self._mask[:] = False
        self._mask[rows >> self.block_shift] = True
        return self._mask

    def begin(self, blocks: np.ndarray | slice) -> None:
        self.seq[blocks] += 1

    def end(self, blocks: np.ndarray | slice) -> None:
        self.seq[blocks] += 1

    def block_range(self, lo_row: int, hi_row: int) -> slice:
        return slice(lo_row >> self.block_shift, ((hi_row - 1) >> self.block_shift) + 1)

    def repair(self) -> int:
        """Make odd counters even again (after this writer died mid-write); returns how many."""
        odd = (self.seq & 1).astype(bool)
        n = int(odd.sum())
        if n:
            self.seq[odd] += 1
        return n


def read_blocks(
    seq: np.ndarray,
    writers: np.ndarray,
    copy_block_range: Callable[[int, int], None],
    b0: int,
    b1: int,
    max_retries: int = 10_000,
) -> int:
    """Copy blocks [b0, b1) consistently against the counters of `writers`.

    `seq` is the live (n_writers, n_blocks) counter view; every `seq[writers, b0:b1]` is a
    fresh load. `copy_block_range(lo, hi)` copies blocks lo..hi-1. Returns re-copy rounds.
    """
    rounds = 0
    s1 = _wait_even(seq, writers, b0, b1)
    copy_block_range(b0, b1)
    while True:
        s2 = seq[writers, b0:b1]
        bad = ((s1 != s2) | (s1 & 1).astype(bool)).any(axis=0)
        if not bad.any():
            return rounds
        rounds += 1
        if rounds > max_retries:
            raise SeqlockTimeout(
                f"no consistent copy of blocks {b0}..{b1} after {max_retries} retries "
                "(writer stuck mid-write or never leaving a gap)"
            )
        if rounds > 64:
            os.sched_yield()  # let a descheduled writer finish its critical section
        s1 = _wait_even(seq, writers, b0, b1)
        # re-copy only the blocks that moved, as contiguous runs
        edges = np.flatnonzero(np.diff(np.concatenate(([False], bad, [False])).astype(np.int8)))
        for run_lo, run_hi in zip(edges[::2], edges[1::2], strict=False):
            copy_block_range(b0 + int(run_lo), b0 + int(run_hi))


def _wait_even(seq: np.ndarray, writers: np.ndarray, b0: int, b1: int, spins: int = 2000) -> np.ndarray:
    """Load the counters, spinning briefly while a writer is mid-write (odd counter)."""
    s = seq[writers, b0:b1]
    for _ in range(spins):
        if not (s & 1).any():
            break
        s = seq[writers, b0:b1]
    return s
