"""Cross-process fuzz of the bar history: a writer process appends bars to random rows (field by
field, then the head, inside the seqlock) while this process reads `History.read` and checks
every value it gets back against the one head it must have been read at."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from shm.history import History
from shm.seqlock import SeqlockTimeout

N_FIELDS, N_ROWS, DEPTH, SHIFT = 5, 1024, 4, 6  # a short ring: slots are overwritten all the time
BARS_AGO = np.array([1, 2, DEPTH, 1, DEPTH + 1, 3, 2])  # DEPTH + 1 is past the ring: always NaN
FIELDS = np.array([0, 4, 2, 3, 1, 0, 1])


def value(row: np.ndarray | int, bar: np.ndarray | int, field: int) -> np.ndarray:
    """What the writer stores: row, bar number and field in one exact float64."""
    return (np.asarray(bar, np.float64) * N_ROWS + row) * N_FIELDS + field


def decode(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = v.astype(np.int64)
    return n // N_FIELDS // N_ROWS, n // N_FIELDS % N_ROWS, n % N_FIELDS  # bar, row, field


def _writer(name: str, seconds: float, seed: int) -> None:
    h = History.attach(name)
    w = h.writer()
    rng = np.random.default_rng(seed)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        rows = np.unique(rng.integers(0, N_ROWS, int(rng.integers(1, 400))))
        blocks = w.mark_rows(rows)
        w.begin(blocks)
        bar = h.head[rows]
        for f in range(N_FIELDS):  # field by field: a reader between two fields would see a tear
            h.hist[f, rows, bar % DEPTH] = value(rows, bar, f)
        h.head[rows] = bar + 1
        w.end(blocks)
        if rng.random() < 0.5:
            time.sleep(0.0001)  # a gap now and then, like the bar process between batches
    h.close()


def inconsistent(out: np.ndarray, lo: int) -> int:
    """Rows of a `read(lo, hi, FIELDS, BARS_AGO, out)` result that no single head explains."""
    bad = np.zeros(out.shape[1], bool)
    rows = np.arange(lo, lo + out.shape[1])
    bar, row, field = decode(np.nan_to_num(out, nan=0.0))
    ok = ~np.isnan(out)
    bad |= (ok & ((row != rows) | (field != FIELDS[:, None]))).any(axis=0)  # the wrong cell
    head = np.where(ok, bar + BARS_AGO[:, None], -1)  # each value implies the head it was read at
    implied = head.max(axis=0)
    bad |= (ok & (head != implied)).any(axis=0)  # two values read at different heads: torn
    # NaN exactly where the head then had fewer bars, or the ring no longer holds that one
    want_nan = (BARS_AGO[:, None] > implied) | (BARS_AGO[:, None] > DEPTH)
    has_value = ok.any(axis=0)
    bad |= has_value & (want_nan != ~ok).any(axis=0)
    return int(bad.sum())


def plain_read(h: History, lo: int, hi: int, out: np.ndarray) -> None:
    """The same gather as `History.read`, without the seqlock: the contrast that shows the race."""
    head = h.head[lo:hi].copy()
    rows = np.arange(lo, hi)
    for i, (f, b) in enumerate(zip(FIELDS, BARS_AGO, strict=True)):
        j = head - b
        out[i] = np.where((j >= 0) & (b <= DEPTH), h.hist[f, rows, j % DEPTH], np.nan)


@pytest.fixture
def hist():
    h = History.create(f"scanner.test{os.getpid()}.hist", n_fields=N_FIELDS, n_rows=N_ROWS, depth=DEPTH,
                       block_shift=SHIFT)
    yield h
    h.seg.unlink()
    h.close()


def test_detector_sees_a_torn_read() -> None:
    out = np.stack([value(np.arange(3), np.array([5, 5, 5]) - b, f) for f, b in zip(FIELDS, BARS_AGO, strict=True)])
    out[BARS_AGO > DEPTH] = np.nan
    assert inconsistent(out, 0) == 0
    torn = out.copy()
    torn[1, 2] = value(2, 5, FIELDS[1])  # one field of row 2 read after the head moved on
    assert inconsistent(torn, 0) == 1
    wrong_row = out.copy()
    wrong_row[0, 0] = value(1, 4, FIELDS[0])
    assert inconsistent(wrong_row, 0) == 1


def test_read_is_never_torn(hist: History) -> None:
    ctx = mp.get_context("fork")
    writer = ctx.Process(target=_writer, args=(hist.seg.name, 2.0, 3))
    writer.start()
    rng = np.random.default_rng(4)
    out = np.empty((len(FIELDS), N_ROWS))
    plain = np.empty_like(out)
    reads = retries = plain_bad = 0
    try:
        while writer.is_alive():
            lo = int(rng.integers(0, N_ROWS - 1))
            hi = int(rng.integers(lo + 1, N_ROWS + 1))
            try:
                retries += hist.read(lo, hi, FIELDS, BARS_AGO, out[:, : hi - lo])
            except SeqlockTimeout:
                continue  # the writer never left a gap this time: allowed, never a torn copy
            assert inconsistent(out[:, : hi - lo], lo) == 0
            reads += 1
            plain_read(hist, 0, N_ROWS, plain)
            plain_bad += inconsistent(plain, 0)
    finally:
        writer.join(60)
    assert writer.exitcode == 0
    assert reads > 50
    assert retries + plain_bad > 0  # the writer really raced with us (else the test proves nothing)
    # at rest every row reads back exactly its last bars
    out[:] = 0
    hist.read(0, N_ROWS, FIELDS, BARS_AGO, out)
    head = hist.head.copy()
    assert head.sum() > 0
    for i, (f, b) in enumerate(zip(FIELDS, BARS_AGO, strict=True)):
        want = np.where((head >= b) & (b <= DEPTH), value(np.arange(N_ROWS), head - b, f), np.nan)
        np.testing.assert_array_equal(out[i], want)
