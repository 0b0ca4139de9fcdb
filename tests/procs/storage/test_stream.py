"""The ring -> spool hand-off at each crash point: nothing lost, nothing spooled twice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from procs.storage.process import SpooledStream
from scanner.records import BAR_DTYPE
from scanner.storage.rows import SPOOL_BAR_DTYPE, bars_to_spool
from scanner.storage.spool import Spool
from shm.ring import Ring

KEYS = np.array([f"S{i}".encode() for i in range(50)], dtype="S16")
RING_ID = 1234


@pytest.fixture
def ring() -> Iterator[Ring]:
    r = Ring.create(f"scanner.t{os.getpid()}.bars", 1024, BAR_DTYPE)
    yield r
    r.close()
    r.seg.unlink()


def closed(n: int, start: int) -> np.ndarray:
    b = np.zeros(n, BAR_DTYPE)
    b["sym"] = np.arange(start, start + n) % 50
    b["minute_ns"] = (np.arange(start, start + n) // 50 + 1) * 60_000_000_000
    b["close"] = np.arange(start, start + n)
    return b


def stream(ring: Ring, path: Path, flush_s: float = 0.0) -> SpooledStream:
    return SpooledStream("bars", ring, 1, Spool(path, SPOOL_BAR_DTYPE, ("pg",)), lambda r: bars_to_spool(r, KEYS),
                         flush_s, RING_ID)


def spooled(path: Path) -> np.ndarray:
    sp = Spool(path, SPOOL_BAR_DTYPE, ("pg",))
    frames = sp.pending("pg")[1]
    return np.concatenate([sp.read(f) for f in frames]) if frames else np.empty(0, SPOOL_BAR_DTYPE)


def test_every_record_spooled_once_across_crashes(ring: Ring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b.spool"
    prod = ring.producer()
    prod.publish(closed(30, 0))  # published before the writer ever attached: still stored (from_start)
    st = stream(ring, path)
    assert st.pump(0.0) == 30

    # crash 1: polled, not yet spooled (still buffering) -> the shared cursor did not move
    prod.publish(closed(20, 30))
    st = stream(ring, path, flush_s=60.0)
    assert st.pump(0.0) == 20 and st.spool.last_seq == 1
    del st

    # crash 2: spooled and fsynced, killed before the cursor was published
    monkeypatch.setattr(SpooledStream, "commit", lambda self: None)
    st = stream(ring, path)
    assert st.pump(0.0) == 20 and st.spool.last_seq == 2
    monkeypatch.undo()

    # restart: the spool's last frame says how far the ring was read
    st = stream(ring, path)
    assert st.skipped == 20 and st.pump(0.0) == 0
    prod.publish(closed(10, 50))
    assert st.pump(0.0) == 10
    got = spooled(path)
    assert np.array_equal(got, bars_to_spool(closed(60, 0), KEYS))


def test_a_new_ring_does_not_skip(ring: Ring, tmp_path: Path) -> None:
    """A spool frame from another ring (instance restarted) must not move this ring's cursor."""
    path = tmp_path / "b.spool"
    Spool(path, SPOOL_BAR_DTYPE, ("pg",)).append(bars_to_spool(closed(5, 0), KEYS), ring_id=999, cursor_end=500)
    ring.producer().publish(closed(5, 5))
    st = stream(ring, path)
    assert st.skipped == 0 and st.pump(0.0) == 5
