"""`History.read`: operands `bars_ago` records back, and the reads that skip rows whose head has
not moved (`known`), as a scan worker makes them every cycle."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shm.history_read
from shm.history import History

FIELDS, AGO = np.array([0, 2, 2]), np.array([1, 1, 4])


@pytest.fixture
def hist():
    h = History.create(f"scanner.hread{os.getpid()}.hist", n_fields=3, n_rows=300, depth=5, block_shift=6)
    yield h
    h.seg.unlink()
    h.close()


def append(h: History, rows: np.ndarray, rng: np.random.Generator) -> None:
    """What the bar process does: a record into slot head % depth, then the head moves on."""
    w = h.writer()
    for r in rows.tolist():
        blocks = w.block_range(r, r + 1)
        w.begin(blocks)
        h.hist[:, r, h.head[r] % h.depth] = rng.normal(size=h.n_fields)
        h.head[r] += 1
        w.end(blocks)


def fresh(h: History, lo: int, hi: int) -> np.ndarray:
    out = np.empty((len(FIELDS), hi - lo))
    h.read(lo, hi, FIELDS, AGO, out)
    return out


def test_reads_with_known_heads_equal_fresh_reads_as_records_are_appended(hist: History) -> None:
    rng = np.random.default_rng(3)
    lo, hi = 40, 290  # a range that starts and ends inside blocks
    out = np.full((len(FIELDS), hi - lo), np.nan)
    known = np.full(hi - lo, -1, np.int64)
    for step in range(60):
        append(hist, rng.choice(300, size=(0, 1, 5, 120)[step % 4], replace=False), rng)
        hist.read(lo, hi, FIELDS, AGO, out, known)
        np.testing.assert_array_equal(out, fresh(hist, lo, hi))
        np.testing.assert_array_equal(known, hist.head[lo:hi])
    assert np.isnan(out).any() and not np.isnan(out).all()  # rows with fewer records than 4 back


def test_rows_whose_head_did_not_move_are_not_read_again(hist: History) -> None:
    rng = np.random.default_rng(4)
    append(hist, np.arange(300), rng)
    out = np.full((len(FIELDS), 300), np.nan)
    known = np.full(300, -1, np.int64)
    hist.read(0, 300, FIELDS, AGO, out, known)
    hist.hist[0, 7, 0] = 123.0  # behind the reader's back (no writer does this): head of row 7 unchanged
    append(hist, np.array([9]), rng)
    hist.read(0, 300, FIELDS, AGO, out, known)
    assert out[0, 7] != 123.0  # skipped: the history is append-only, its head did not move
    assert out[0, 9] == hist.hist[0, 9, 1]  # moved: read again
    hist.read(0, 300, FIELDS, AGO, out)  # no known heads: every row
    assert out[0, 7] == 123.0


def test_a_block_read_again_after_an_overlapping_write_is_read_whole(hist: History,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that overlapped the first pass makes `read_blocks` copy the block again; that copy
    must not trust the heads of the torn pass."""
    rng = np.random.default_rng(5)
    append(hist, np.arange(300), rng)
    out = np.full((len(FIELDS), 300), np.nan)
    known = np.full(300, -1, np.int64)
    hist.read(0, 300, FIELDS, AGO, out, known)
    real, calls = shm.history_read.read_ago, []

    def overlapped(*args: object) -> None:
        if not calls:  # a writer changes row 5's newest record while this pass runs (its head moves after)
            w = hist.writer()
            blocks = w.block_range(5, 6)
            w.begin(blocks)
            hist.hist[0, 5, (hist.head[5] - 1) % hist.depth] = -7.0
            w.end(blocks)
        calls.append(args[-1])
        real(*args)

    monkeypatch.setattr(shm.history_read, "read_ago", overlapped)
    assert hist.read(0, 300, FIELDS, AGO, out, known) == 1  # one retry round
    assert calls == [shm.history_read.SKIP_KNOWN, shm.history_read.ALL]
    assert out[0, 5] == -7.0
