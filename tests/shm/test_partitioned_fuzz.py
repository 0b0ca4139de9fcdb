"""Cross-process fuzz of `shm.partitioned`: writer processes publish their column ranges (every
column of a row gets the same value, derived from the tag, in one publish), a reader reads rows
concurrently; a torn copy would mix values or disagree with its tag."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from shm import partitioned
from shm.arrays import NamedArrays
from shm.partitioned import PartitionedMatrix
from shm.seqlock import SeqlockTimeout

N_ITEMS, N_COLS, N_WRITERS = 8, 60_000, 3
RANGES = [(i * N_COLS // N_WRITERS, (i + 1) * N_COLS // N_WRITERS) for i in range(N_WRITERS)]


def expected(tag: int, item: int) -> bool:
    return (tag + item) % 2 == 1


def _writer(name: str, w: int, seconds: float) -> None:
    m = PartitionedMatrix(NamedArrays.attach(name).arrays)
    lo, hi = RANGES[w]
    part = np.empty((N_ITEMS, hi - lo), np.bool_)
    tag = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        tag += 1
        for i in range(N_ITEMS):
            part[i] = expected(tag, i)
        m.publish(w, lo, hi, part, tag)


@pytest.fixture
def matrix():
    na = NamedArrays.create(f"scanner.ptest{os.getpid()}.state.matches",
                            {k: (v.dtype, v.shape) for k, v in partitioned.arrays(N_ITEMS, N_COLS, N_WRITERS).items()},
                            fill=partitioned.arrays(N_ITEMS, N_COLS, N_WRITERS))
    yield na
    na.seg.unlink()
    na.close()


def test_no_torn_read_gets_through(matrix: NamedArrays) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(matrix.seg.name, w, 2.0)) for w in range(N_WRITERS)]
    for p in procs:
        p.start()
    m = PartitionedMatrix(matrix.arrays)
    reads = plain_torn = 0
    tags_seen: set[tuple[int, int]] = set()
    try:
        while any(p.is_alive() for p in procs):
            for w, (lo, hi) in enumerate(RANGES):
                item = reads % N_ITEMS
                row, tag = m.read(w, item, lo, hi)
                assert row is not None
                tags_seen.add((w, tag))
                if tag > 0:
                    assert (row == expected(tag, item)).all(), f"torn read of writer {w}, tag {tag}"
                reads += 1
                raw = matrix.arrays["data"][item, lo:hi].copy()  # unsynchronised, for contrast
                plain_torn += int(raw.any() and not raw.all())
    finally:
        for p in procs:
            p.join()
    assert reads > 100
    assert all(p.exitcode == 0 for p in procs)
    # the writers really raced the reader: it saw their parts change many times while reading
    assert len(tags_seen) > 3 * N_WRITERS or plain_torn > 0


def test_publish_clears_rows_past_the_part_and_items_past_the_matrix(matrix: NamedArrays) -> None:
    m = PartitionedMatrix(matrix.arrays)
    lo, hi = RANGES[1]
    m.publish(1, lo, hi, np.ones((N_ITEMS, hi - lo), np.bool_), 5)
    m.publish(1, lo, hi, np.ones((2, hi - lo), np.bool_), 6)  # fewer rules now
    row, tag = m.read(1, 1, lo, hi)
    assert tag == 6 and row is not None and row.all()
    row, _ = m.read(1, 2, lo, hi)
    assert row is not None and not row.any()
    assert m.read(1, N_ITEMS, lo, hi)[0] is None
    assert m.read(0, 0, *RANGES[0])[1] == -1  # writer 0 never published


def test_a_restarted_writer_clears_what_its_predecessor_wrote(matrix: NamedArrays) -> None:
    """A publish clears only the rows this object wrote before; a new object (a restarted worker)
    does not know them and clears every row past its part once, then only its own."""
    lo, hi = RANGES[1]
    PartitionedMatrix(matrix.arrays).publish(1, lo, hi, np.ones((N_ITEMS, hi - lo), np.bool_), 5)
    m = PartitionedMatrix(matrix.arrays)  # the worker restarted
    m.publish(1, lo, hi, np.ones((3, hi - lo), np.bool_), 6)
    assert [bool(m.read(1, i, lo, hi)[0].any()) for i in range(N_ITEMS)] == [i < 3 for i in range(N_ITEMS)]
    m.publish(1, lo, hi, np.ones((1, hi - lo), np.bool_), 7)
    m.publish(1, lo, hi, None, 8)
    assert not any(bool(m.read(1, i, lo, hi)[0].any()) for i in range(N_ITEMS))
    assert not matrix.arrays["data"][:, lo:hi].any()


def test_a_writer_dead_mid_publish_times_out_readers_until_repaired(matrix: NamedArrays) -> None:
    m = PartitionedMatrix(matrix.arrays)
    m.seq[2] += 1  # died between begin and end
    with pytest.raises(SeqlockTimeout):
        m.read(2, 0, *RANGES[2], max_retries=20)
    m.read(0, 0, *RANGES[0])  # the other writers' parts stay readable
    assert m.repair(2) is True and m.repair(2) is False
    assert m.read(2, 0, *RANGES[2])[1] == -1
