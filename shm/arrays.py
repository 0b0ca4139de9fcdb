"""A segment of named numpy arrays: private state a process keeps across its own restarts.

Layout:

| offset | size | field |
| --- | --- | --- |
| 0 | 8 | magic |
| 8 | 8 | length of the JSON directory |
| 16 | n | JSON directory: [[name, dtype str, shape], ...] |
| 64-aligned | ... | each array, 64-byte aligned, in directory order |

This module gives views, not a protocol: who writes which array, and how readers stay
consistent, is the user's contract, stated where the segment is defined. Two kinds exist:

* private state (`state.bars`): one process writes, and nobody else reads it while that
  process runs; the supervisor only checkpoints it. A restarted process attaches and finds its
  state as it left it; a process that died mid-update must cope (the bar kernels re-derive what
  they can from the table and history on start);
* shared state with several writers (`state.matches`): each scan worker writes its own column
  range under its own sequence counter and the gateways read (`shm.partitioned`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from shm.segment import Segment, align64

ARRAYS_MAGIC = int.from_bytes(b"SCANARR1", "little")


Spec = Mapping[str, tuple[np.dtype, tuple[int, ...]]]


def _plan(spec: Spec) -> tuple[bytes, list[tuple[str, np.dtype, tuple, int]], int]:
    directory = json.dumps([[k, np.dtype(dt).str, list(shape)] for k, (dt, shape) in spec.items()]).encode()
    off = align64(16 + len(directory))
    items = []
    for k, (dt, shape) in spec.items():
        dt = np.dtype(dt)
        items.append((k, dt, tuple(shape), off))
        off = align64(off + dt.itemsize * int(np.prod(shape, dtype=np.int64)))
    return directory, items, max(off, 64)


class NamedArrays:
    """`arrays[name]` views over a named-arrays segment."""

    def __init__(self, seg: Segment) -> None:
        hdr = np.ndarray((2,), "<u8", seg.buf, 0)
        if int(hdr[0]) != ARRAYS_MAGIC:
            raise ValueError(f"segment {seg.name!r} is not a named-arrays segment")
        directory = json.loads(bytes(seg.buf[16:16 + int(hdr[1])]).decode())
        spec = {k: (np.dtype(dt), tuple(shape)) for k, dt, shape in directory}
        _, items, _ = _plan(spec)
        self.seg = seg
        self.arrays: dict[str, np.ndarray] = {
            k: np.ndarray(shape, dt, seg.buf, off) for k, dt, shape, off in items
        }

    @classmethod
    def create(cls, name: str, spec: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
               fill: Mapping[str, object] | None = None) -> NamedArrays:
        directory, _, size = _plan(spec)
        seg = Segment.create(name, size, replace=True)
        seg.buf[16:16 + len(directory)] = directory
        hdr = np.ndarray((2,), "<u8", seg.buf, 0)
        hdr[1] = len(directory)
        hdr[0] = ARRAYS_MAGIC
        na = cls(seg)
        for k, v in (fill or {}).items():
            na.arrays[k][...] = v
        return na

    @classmethod
    def attach(cls, name: str) -> NamedArrays:
        return cls(Segment.attach(name))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def close(self) -> None:
        self.arrays.clear()
        self.seg.close()
