"""The control block: its layout table, create/attach/close, and what each method promises."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator

import numpy as np
import pytest

from shm.control import (
    BUCKETS_US,
    CONTROL_SIZE,
    GENERATION_OFF,
    HEADER_DTYPE,
    HIST_OFF,
    HIST_WORDS,
    LAYOUT_VERSION,
    MAGIC,
    MAX_SLOTS,
    N_BUCKETS,
    PROGRESS_OFF,
    PROGRESS_STRIDE,
    SHUTDOWN_OFF,
    SLOT_DTYPE,
    SLOTS_OFF,
    ControlBlock,
)
from shm.segment import Segment, SegmentError


@pytest.fixture
def name() -> Iterator[str]:
    n = f"scanner.test{os.getpid()}.ctl"
    yield n
    if os.path.exists(Segment.path(n)):
        os.unlink(Segment.path(n))


def _create(name: str) -> ControlBlock:
    return ControlBlock.create(name, n_symbols=123, layout_hash="abcdef0123456789", trading_day=20261127,
                               supervisor_pid=os.getpid(), created_ns=42)


def test_layout_table() -> None:
    # the module docstring's table: header 128, generation and shutdown on their own cache lines,
    # 192-byte slots (three cache lines), then 17 words of histogram per slot
    assert HEADER_DTYPE.itemsize == 128 and GENERATION_OFF == 128 and SHUTDOWN_OFF == 192 and SLOTS_OFF == 256
    assert SLOT_DTYPE.itemsize == 192 and SLOT_DTYPE.itemsize % 64 == 0
    assert HIST_OFF == SLOTS_OFF + 192 * MAX_SLOTS and HIST_OFF % 64 == 0
    assert HIST_WORDS == N_BUCKETS + 1 == len(BUCKETS_US) + 2
    hist_end = HIST_OFF + 17 * 8 * MAX_SLOTS
    assert PROGRESS_OFF == -(-hist_end // 64) * 64  # the next cache line after the histograms
    assert PROGRESS_STRIDE == 64  # one progress word per cache line
    assert CONTROL_SIZE == PROGRESS_OFF + 64 * MAX_SLOTS
    assert list(BUCKETS_US) == sorted(BUCKETS_US)
    for dt in (HEADER_DTYPE, SLOT_DTYPE):  # every numeric field an aligned 8-byte word (shm.platform)
        for field, (sub, off) in dt.fields.items():
            if sub.kind != "S":
                assert sub.itemsize == 8 and off % 8 == 0, field


def test_create_then_attach_sees_the_header(name: str) -> None:
    cb = _create(name)
    other = ControlBlock.attach(name)
    try:
        h = other.header
        assert int(h["magic"]) == MAGIC and int(h["layout_version"]) == LAYOUT_VERSION
        assert (int(h["n_symbols"]), int(h["trading_day"]), int(h["supervisor_pid"]), int(h["created_ns"])) == \
            (123, 20261127, os.getpid(), 42)
        assert bytes(h["layout_hash"]) == b"abcdef0123456789"
        assert other.rules_generation == 0 and not other.shutdown
        assert not other.slots["name"].any() and not other.cycle_hist.any()
    finally:
        other.close()
        cb.close()


def test_attach_refuses_what_is_not_a_control_block(name: str) -> None:
    with pytest.raises(SegmentError, match="does not exist"):
        ControlBlock.attach(name)
    seg = Segment.create(name, CONTROL_SIZE)  # zeros: no magic
    seg.close()
    with pytest.raises(ValueError, match="not a scanner control block"):
        ControlBlock.attach(name)
    cb = _create(name)
    cb.header["layout_version"] = LAYOUT_VERSION + 1
    with pytest.raises(ValueError, match="layout"):
        ControlBlock.attach(name)
    cb.close()
    small = Segment.create(name, CONTROL_SIZE - 8, replace=True)
    with pytest.raises(ValueError, match=f"need {CONTROL_SIZE}"):
        ControlBlock(small)
    small.close()


def test_create_replaces_a_stale_block(name: str) -> None:
    old = _create(name)
    old.bump_rules_generation()
    old.close()
    new = _create(name)
    assert new.rules_generation == 0  # a fresh, zero-filled segment
    new.close()


def _child_bumps_and_beats(name: str, slot: int, bumps: int) -> None:
    cb = ControlBlock.attach(name)
    for _ in range(bumps):
        cb.bump_rules_generation()
    cb.slots[slot : slot + 1]["heartbeat_ns"] = 777
    cb.slots[slot : slot + 1]["pid"] = os.getpid()
    cb.cycle_hist[slot, 3] += 5
    cb.publish_progress(slot, 123_456)
    cb.publish_read(slot, 654_321)
    cb.close()


def test_a_child_writes_are_seen_by_the_parent(name: str) -> None:
    cb = _create(name)
    cb.slots[5]["name"] = b"scan-0"
    p = mp.get_context("fork").Process(target=_child_bumps_and_beats, args=(name, 5, 3))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert cb.rules_generation == 3
    assert int(cb.slots[5]["heartbeat_ns"]) == 777 and int(cb.slots[5]["pid"]) == p.pid
    assert int(cb.cycle_hist[5, 3]) == 5 and int(cb.cycle_hist.sum()) == 5  # only its own slot's row
    assert int(cb.slots[4]["heartbeat_ns"]) == 0 and int(cb.slots[6]["heartbeat_ns"]) == 0
    assert cb.progress_of(5) == 123_456 and int(cb.progress.sum()) == 123_456
    assert cb.read_progress_of(5) == 654_321 and int(cb.read_progress.sum()) == 654_321
    raw = np.ndarray((CONTROL_SIZE // 8,), "<i8", cb.seg.buf, 0)  # both words sit on slot 5's own line
    assert int(raw[(PROGRESS_OFF + 64 * 5) // 8]) == 123_456
    assert int(raw[(PROGRESS_OFF + 64 * 5) // 8 + 1]) == 654_321
    assert int(raw[PROGRESS_OFF // 8:].sum()) == 123_456 + 654_321  # nothing else of the progress lines
    del raw
    cb.close()


def test_generation_and_shutdown(name: str) -> None:
    cb = _create(name)
    assert [cb.bump_rules_generation() for _ in range(3)] == [1, 2, 3]
    assert cb.rules_generation == 3
    cb.request_shutdown()
    assert cb.shutdown
    # each on its own cache line: neither touches the header or the other
    raw = np.ndarray((CONTROL_SIZE // 8,), "<i8", cb.seg.buf, 0)
    assert int(raw[GENERATION_OFF // 8]) == 3 and int(raw[SHUTDOWN_OFF // 8]) == 1
    assert not raw[GENERATION_OFF // 8 + 1 : SHUTDOWN_OFF // 8].any()
    assert not raw[SHUTDOWN_OFF // 8 + 1 : SLOTS_OFF // 8].any()
    del raw
    cb.close()


def test_feed_clock_extrapolates_at_its_speed(name: str) -> None:
    cb = _create(name)
    cb.set_clock(event_ns=1_000_000_000, wall_ns=5_000_000_000, speed=2.0)
    assert cb.event_time_ns(5_000_000_000) == 1_000_000_000
    assert cb.event_time_ns(6_000_000_000) == 3_000_000_000  # one wall second = two event seconds
    cb.set_clock(event_ns=9_000, wall_ns=0, speed=0.0)  # replay: a stopped clock, moved by ingest only
    assert cb.event_time_ns(10**18) == 9_000
    cb.close()


def test_slot_index(name: str) -> None:
    cb = _create(name)
    cb.slots[0]["name"] = b"supervisor"
    cb.slots[7]["name"] = b"gateway-1"
    assert cb.slot_index("supervisor") == 0 and cb.slot_index("gateway-1") == 7
    with pytest.raises(KeyError):
        cb.slot_index("gateway")
    cb.close()


def test_close_keeps_the_data_for_the_next_attach(name: str) -> None:
    cb = _create(name)
    cb.slots[1]["restarts"] = 4
    cb.close()
    again = ControlBlock.attach(name)
    assert int(again.slots[1]["restarts"]) == 4
    again.close()
