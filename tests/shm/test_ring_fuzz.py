"""Cross-process fuzz of the SPMC ring: a fast consumer sees every record in order; a slow one
is lapped, counts what it lost, and never returns a record the producer was overwriting."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from shm.ring import Ring

DT = np.dtype([("seq", "<i8"), ("a", "<f8"), ("b", "<f8"), ("pad", "<i8")])
TOTAL = 3_000_000
CAP = 1 << 14
STALL_S = 120.0  # a consumer that makes no room for this long is dead or stuck: fail, do not hang


def _valid(recs: np.ndarray) -> bool:
    s = recs["seq"].astype(np.float64)
    return bool(np.all(recs["a"] == s * 3.0) and np.all(recs["b"] == -s) and np.all(recs["pad"] == recs["seq"]))


def _consumer(name: str, index: int, slow: bool, q: mp.Queue) -> None:
    r = Ring.attach(name, DT)
    c = r.consumer(index)
    got, bad, order_errors, last = 0, 0, 0, -1
    while got + c.lost < TOTAL:
        recs = c.poll(4096)
        if len(recs):
            got += len(recs)
            if not _valid(recs):
                bad += 1
            seqs = recs["seq"]
            if seqs[0] <= last or np.any(np.diff(seqs) != 1):
                order_errors += 1
            last = int(seqs[-1])
        if slow:
            time.sleep(0.0005)
    q.put((index, got, c.lost, bad, order_errors))


@pytest.fixture
def ring():
    r = Ring.create(f"scanner.test{os.getpid()}.ring", CAP, DT)
    yield r
    r.seg.unlink()
    r.close()


def test_lapped_consumer_never_reads_garbage(ring: Ring) -> None:
    for i in range(2):
        ring.consumer(i)
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_consumer, args=(ring.seg.name, 0, False, q)),
             ctx.Process(target=_consumer, args=(ring.seg.name, 1, True, q))]
    for p in procs:
        p.start()
    prod = ring.producer()
    seq = 0
    cons = ring.consumers
    while seq < TOTAL:
        n = 1000
        s = np.arange(seq, seq + n)
        recs = np.empty(n, DT)
        recs["seq"], recs["a"], recs["b"], recs["pad"] = s, s * 3.0, -s.astype(np.float64), s
        # keep the fast consumer (0) within the ring; the slow one (1) gets lapped on purpose
        deadline = time.monotonic() + STALL_S
        while seq - int(cons["cursor"][0]) > CAP - 2 * n:
            if time.monotonic() > deadline or not procs[0].is_alive():
                for p in procs:
                    p.kill()
                pytest.fail(f"the fast consumer stopped taking records at {int(cons['cursor'][0])} of {TOTAL} "
                            f"(exit code {procs[0].exitcode})")
        prod.publish(recs)
        seq += n
    results = {r[0]: r for r in (q.get(timeout=60) for _ in procs)}
    for p in procs:
        p.join()
    _, got0, lost0, bad0, order0 = results[0]
    _, got1, lost1, bad1, order1 = results[1]
    assert (got0, lost0, bad0, order0) == (TOTAL, 0, 0, 0)
    assert bad1 == 0 and lost1 > 0 and got1 + lost1 == TOTAL
    assert order1 == 0  # lapping skips ahead but never goes back


def test_wraparound_and_oversized_batch(ring: Ring) -> None:
    c = ring.consumer(0)
    prod = ring.producer()
    recs = np.zeros(CAP + 10, DT)
    recs["seq"] = np.arange(CAP + 10)
    prod.publish(recs)  # larger than the ring: keeps the newest CAP records
    out = c.poll(CAP * 2)
    assert c.lost == 10
    np.testing.assert_array_equal(out["seq"], np.arange(10, CAP + 10))


def test_restarted_consumer_resumes(ring: Ring) -> None:
    prod = ring.producer()
    c = ring.consumer(3)
    recs = np.zeros(100, DT)
    recs["seq"] = np.arange(100)
    prod.publish(recs[:60])
    assert len(c.poll(1000)) == 60
    prod.publish(recs[60:])
    again = ring.consumer(3)  # a restarted process attaches to the same slot
    assert again.poll(1000)["seq"].tolist() == list(range(60, 100))
