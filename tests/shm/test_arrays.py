"""Named-arrays segments: the layout table, create/attach/close, and state surviving a restart."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterator

import numpy as np
import pytest

from shm.arrays import ARRAYS_MAGIC, NamedArrays
from shm.segment import Segment, SegmentError

SPEC = {
    "open": (np.dtype(np.float64), (1000,)),
    "flags": (np.dtype(np.uint8), (3,)),  # odd size: the next array still starts on a cache line
    "ohlc": (np.dtype(np.float32), (4, 10)),
    "count": (np.dtype(np.int64), ()),
}


@pytest.fixture
def name() -> Iterator[str]:
    n = f"scanner.test{os.getpid()}.state.x"
    yield n
    if os.path.exists(Segment.path(n)):
        os.unlink(Segment.path(n))


def test_layout_table(name: str) -> None:
    na = NamedArrays.create(name, SPEC)
    try:
        hdr = np.ndarray((2,), "<u8", na.seg.buf, 0)
        assert int(hdr[0]) == ARRAYS_MAGIC
        directory = json.loads(bytes(na.seg.buf[16 : 16 + int(hdr[1])]))
        assert directory == [[k, dt.str, list(shape)] for k, (dt, shape) in SPEC.items()]
        base = np.frombuffer(na.seg.buf, np.uint8).ctypes.data
        offsets = [na[k].ctypes.data - base for k in SPEC]
        assert offsets[0] >= 16 + int(hdr[1])  # after the directory
        assert all(off % 64 == 0 for off in offsets)  # each array on its own cache line
        assert offsets == sorted(offsets)  # in directory order, not overlapping:
        for (k, (dt, shape)), off, nxt in zip(SPEC.items(), offsets, [*offsets[1:], na.seg.size], strict=True):
            assert na[k].dtype == dt and na[k].shape == shape
            assert off + na[k].nbytes <= nxt
        assert na.seg.size % 64 == 0
        del hdr, base
    finally:
        na.close()


def test_create_zero_fills_then_fills(name: str) -> None:
    na = NamedArrays.create(name, SPEC, fill={"open": np.nan, "count": 7})
    try:
        assert np.isnan(na["open"]).all() and int(na["count"]) == 7
        assert not na["flags"].any() and not na["ohlc"].any()
    finally:
        na.close()


def test_an_empty_spec_is_still_a_segment(name: str) -> None:
    na = NamedArrays.create(name, {})
    assert na.arrays == {} and na.seg.size >= 64
    na.close()
    again = NamedArrays.attach(name)
    assert again.arrays == {}
    again.close()


def _restarted_owner(name: str) -> None:
    na = NamedArrays.attach(name)  # a restarted process finds its state as it left it
    assert na["open"][999] == 5.5 and na["ohlc"][3, 9] == 2.25 and int(na["count"]) == 3
    na["count"][...] = 4
    na["open"][:] = np.arange(1000)
    na.close()


def test_state_survives_the_owner_across_processes(name: str) -> None:
    na = NamedArrays.create(name, SPEC)
    na["open"][999] = 5.5
    na["ohlc"][3, 9] = 2.25
    na["count"][...] = 3
    p = mp.get_context("fork").Process(target=_restarted_owner, args=(name,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert int(na["count"]) == 4
    np.testing.assert_array_equal(na["open"], np.arange(1000))
    na.close()


def test_close_keeps_the_data_and_drops_the_views(name: str) -> None:
    na = NamedArrays.create(name, SPEC)
    na["flags"][:] = [1, 2, 3]
    na.close()
    assert na.arrays == {}
    again = NamedArrays.attach(name)
    assert again["flags"].tolist() == [1, 2, 3]
    again.close()


def test_attach_refuses_what_is_not_named_arrays(name: str) -> None:
    with pytest.raises(SegmentError, match="does not exist"):
        NamedArrays.attach(name)
    Segment.create(name, 4096).close()
    with pytest.raises(ValueError, match="not a named-arrays segment"):
        NamedArrays.attach(name)
