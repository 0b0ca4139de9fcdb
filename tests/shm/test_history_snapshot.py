"""`History.snapshot`: the checkpoint's consistent copy of the bar history."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shm.history import History
from shm.seqlock import SeqlockTimeout


@pytest.fixture
def hist():
    h = History.create(f"scanner.htest{os.getpid()}.hist", n_fields=3, n_rows=700, depth=5, block_shift=6)
    yield h
    h.seg.unlink()
    h.close()


def test_snapshot_copies_every_row_and_head(hist: History) -> None:
    hist.hist[:] = np.arange(hist.hist.size, dtype=np.float64).reshape(hist.hist.shape)
    hist.head[:] = np.arange(700)
    out, head = np.empty_like(hist.hist), np.empty_like(hist.head)
    assert hist.snapshot(out, head) == 0
    np.testing.assert_array_equal(out, hist.hist)
    np.testing.assert_array_equal(head, hist.head)


def test_snapshot_refuses_a_block_left_mid_write(hist: History) -> None:
    w = hist.writer()
    w.begin(w.block_range(100, 101))  # the bar process died while closing a bar
    out, head = np.empty_like(hist.hist), np.empty_like(hist.head)
    with pytest.raises(SeqlockTimeout):
        hist.snapshot(out, head, max_retries=20)
    assert w.repair() == 1
    hist.snapshot(out, head)


def test_chunks_walk_every_row_through_one_buffer(hist: History) -> None:
    from scanner.bars import new_history

    for ring in (hist.hist, new_history(2, 4)[0]):  # indexed [field, row, slot], laid out by record
        assert ring.transpose(1, 2, 0).flags.c_contiguous
    hist.hist[:] = np.arange(hist.hist.size, dtype=np.float64).reshape(hist.hist.shape)
    hist.head[:] = np.arange(700)
    seen, buffers = [], set()
    for lo, h, head in hist.chunks(150):  # 150 rows -> two 64-row blocks a step: 5 x 128 + 60
        n = len(head)
        assert h.shape == (3, n, 5) and head.flags.c_contiguous
        assert h.transpose(1, 2, 0).flags.c_contiguous  # the segment's layout: a record's fields together
        np.testing.assert_array_equal(h, hist.hist[:, lo:lo + n])
        np.testing.assert_array_equal(head, hist.head[lo:lo + n])
        seen.append((lo, n))
        buffers.add(h.__array_interface__["data"][0])
    assert seen == [(0, 128), (128, 128), (256, 128), (384, 128), (512, 128), (640, 60)]
    assert len(buffers) == 1  # one reusable buffer, not a copy per chunk
