"""Cross-process fuzz: a writer process rewrites rows (every column of a row gets the same
value in one write), readers snapshot concurrently; a torn row would hold mixed values."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from shm.seqlock import SeqlockTimeout
from shm.table import ColumnTable

N_ROWS, N_COLS = 4096, 24


def _writer(name: str, seconds: float, seed: int) -> None:
    t = ColumnTable.attach(name)
    w = t.writer(0)
    rng = np.random.default_rng(seed)
    stop = time.monotonic() + seconds
    v = 1.0
    while time.monotonic() < stop:
        rows = rng.integers(0, N_ROWS, int(rng.integers(1, 3000)))
        blocks = w.mark_rows(rows)
        w.begin(blocks)
        for c in range(N_COLS):  # column by column: a reader between two columns sees a tear
            t.f8[c, rows] = v
        w.end(blocks)
        v += 1.0
        if rng.random() < 0.5:
            time.sleep(0.0001)  # a short gap now and then, like a real writer between batches


def torn_rows(snap: np.ndarray) -> int:
    return int(np.count_nonzero((snap != snap[0]).any(axis=0)))


@pytest.fixture
def table():
    name = f"scanner.test{os.getpid()}.table"
    t = ColumnTable.create(name, keys=[str(i) for i in range(N_ROWS)], writer_f8=[0] * N_COLS,
                           writer_i8=[0], n_writers=1, layout_hash="test", block_shift=6)
    t.f8[:] = 0.0
    yield t
    t.seg.unlink()
    t.close()


def test_detector_sees_a_torn_row(table: ColumnTable) -> None:
    snap = table.f8.copy()
    snap[: N_COLS // 2, 7] = 5.0  # half a row written
    assert torn_rows(snap) == 1


def test_no_torn_read_gets_through(table: ColumnTable) -> None:
    ctx = mp.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(table.seg.name, 2.0, 1))]
    for p in writers:
        p.start()
    cols = np.arange(N_COLS)
    out = np.empty((N_COLS, N_ROWS))
    plain = np.empty((N_COLS, N_ROWS))
    snaps = retries = plain_torn = 0
    try:
        while any(p.is_alive() for p in writers):
            retries += table.snapshot(0, N_ROWS, cols, out)
            assert torn_rows(out) == 0
            snaps += 1
            np.copyto(plain, table.f8)  # unsynchronised copy, for contrast
            plain_torn += torn_rows(plain)
    finally:
        for p in writers:
            p.join()
    assert snaps > 50
    # the writer really did race with us (else the test proves nothing)
    assert retries + plain_torn > 0


def test_partition_snapshot_and_column_subset(table: ColumnTable) -> None:
    table.f8[:] = np.arange(N_ROWS)[None, :] + 1000.0 * np.arange(N_COLS)[:, None]
    cols = np.array([3, 1, 7])
    out = np.empty((3, 1000))
    table.snapshot(500, 1500, cols, out)
    np.testing.assert_array_equal(out, table.f8[cols, 500:1500])


def test_stuck_writer_times_out_and_repair_recovers(table: ColumnTable) -> None:
    w = table.writer(0)
    w.begin(w.block_range(0, 100))  # a writer that died mid-write leaves odd counters
    out = np.empty((N_COLS, N_ROWS))
    with pytest.raises(SeqlockTimeout):
        table.snapshot(0, N_ROWS, np.arange(N_COLS), out, max_retries=20)
    assert w.repair() == 2
    table.snapshot(0, N_ROWS, np.arange(N_COLS), out, max_retries=20)
