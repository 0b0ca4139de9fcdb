"""`scanner status` memory figures: RSS of a process and the size of each segment."""

from __future__ import annotations

import os

import numpy as np

from procs.status import process_memory, segment_sizes
from shm.segment import Segment


def test_process_memory_and_segment_sizes() -> None:
    ballast = np.ones(64 * 2**20 // 8)  # 64 MB touched: private memory
    mem = process_memory(os.getpid())
    assert mem["rss_mb"] is not None and mem["private_mb"] is not None
    assert mem["rss_mb"] >= mem["private_mb"] >= 64
    assert process_memory(2**22 + 12345)["rss_mb"] is None  # no such pid: nothing, no exception
    name = f"scanner.statmem{os.getpid()}.probe"
    seg = Segment.create(name, 3 * 2**20, replace=True)
    try:
        assert segment_sizes(f"statmem{os.getpid()}") == [{"name": name, "mb": 3.0}]
    finally:
        seg.close()
        seg.unlink()
    assert segment_sizes(f"statmem{os.getpid()}") == []
    del ballast
