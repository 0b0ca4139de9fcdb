"""SPMC ring of fixed-size records in shared memory (SPSC is the one-consumer case).

Layout (bytes; every counter on its own 64-byte line):

| offset | size | field |
| --- | --- | --- |
| 0 | 64 | header: magic, capacity (power of two), record size, max consumers |
| 64 | 64 | `reserve`: records the producer has started writing (monotonic count) |
| 128 | 64 | `head`: records the producer has finished writing (monotonic count) |
| 192 | 64 x MAX_CONSUMERS | per consumer: cursor, lost, attached flag, delivered |
| 192 + 64 x MAX_CONSUMERS | capacity x record size | the records (record `i` in slot `i % capacity`) |

Contract: one producer process, up to MAX_CONSUMERS consumers, each owning its cursor. The
producer never waits for consumers: it stores `reserve = head + n`, writes the records, then
stores `head += n` (x86-64 keeps stores in that order, see `shm.platform`). A consumer loads
`head`, copies records `[cursor, head)`, then loads `reserve`; any record with index below
`reserve - capacity` may have been overwritten while it was copied (the consumer was lapped),
so it is discarded and counted in `lost`, never returned. A consumer whose cursor is more than
one capacity behind skips to the oldest record still intact and counts what it skipped.
Consumer state lives in shared memory, so a restarted consumer resumes where it stopped.
"""

from __future__ import annotations

import numpy as np

from shm.records import copy_into
from shm.segment import Segment

RING_MAGIC = int.from_bytes(b"SCANRNG1", "little")
MAX_CONSUMERS = 8
RING_HEADER_DTYPE = np.dtype(
    {"names": ["magic", "capacity", "record_size", "max_consumers"],
     "formats": ["<u8", "<i8", "<i8", "<i8"], "offsets": [0, 8, 16, 24], "itemsize": 64}
)
CONSUMER_DTYPE = np.dtype(
    {"names": ["cursor", "lost", "attached", "delivered"],
     "formats": ["<i8", "<i8", "<i8", "<i8"], "offsets": [0, 8, 16, 24], "itemsize": 64}
)
RESERVE_OFF, HEAD_OFF, CONSUMERS_OFF = 64, 128, 192
RECORDS_OFF = CONSUMERS_OFF + CONSUMER_DTYPE.itemsize * MAX_CONSUMERS
assert RING_HEADER_DTYPE.itemsize == 64 and CONSUMER_DTYPE.itemsize == 64


def ring_nbytes(capacity: int, dtype: np.dtype) -> int:
    return RECORDS_OFF + capacity * dtype.itemsize


class Ring:
    """Views over a ring segment; use `producer()` or `consumer(i)` for the two sides."""

    def __init__(self, seg: Segment, dtype: np.dtype) -> None:
        self.seg = seg
        self.dtype = np.dtype(dtype)
        h = np.ndarray((), RING_HEADER_DTYPE, seg.buf, 0)
        if int(h["magic"]) != RING_MAGIC:
            raise ValueError(f"segment {seg.name!r} is not a ring")
        if int(h["record_size"]) != self.dtype.itemsize:
            raise ValueError(
                f"ring {seg.name!r} holds {int(h['record_size'])}-byte records, "
                f"expected {self.dtype.itemsize}"
            )
        self.header = h
        self.capacity = int(h["capacity"])
        self.mask = self.capacity - 1
        self._reserve = np.ndarray((1,), "<i8", seg.buf, RESERVE_OFF)
        self._head = np.ndarray((1,), "<i8", seg.buf, HEAD_OFF)
        self.consumers = np.ndarray((MAX_CONSUMERS,), CONSUMER_DTYPE, seg.buf, CONSUMERS_OFF)
        self.records = np.ndarray((self.capacity,), self.dtype, seg.buf, RECORDS_OFF)

    @classmethod
    def create(cls, name: str, capacity: int, dtype: np.dtype) -> Ring:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"'capacity' must be a positive power of two, was {capacity}")
        dtype = np.dtype(dtype)
        seg = Segment.create(name, ring_nbytes(capacity, dtype), replace=True)
        h = np.ndarray((), RING_HEADER_DTYPE, seg.buf, 0)
        h["capacity"], h["record_size"], h["max_consumers"] = capacity, dtype.itemsize, MAX_CONSUMERS
        h["magic"] = RING_MAGIC
        return cls(seg, dtype)

    @classmethod
    def attach(cls, name: str, dtype: np.dtype) -> Ring:
        return cls(Segment.attach(name), dtype)

    @property
    def head(self) -> int:
        return int(self._head[0])

    def producer(self) -> RingProducer:
        return RingProducer(self)

    def consumer(self, index: int, *, from_start: bool = False) -> RingConsumer:
        return RingConsumer(self, index, from_start=from_start)

    def close(self) -> None:
        del self.header, self._reserve, self._head, self.consumers, self.records
        self.seg.close()


class RingProducer:
    """The single producer. `publish` never blocks; slow consumers get lapped."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        # A restarted producer continues the count; an interrupted batch (reserve > head) is
        # abandoned: reserve stays ahead, so consumers treat those slots as overwritten.
        r = ring
        if int(r._reserve[0]) > int(r._head[0]):
            r._head[0] = r._reserve[0]

    def publish(self, batch: np.ndarray) -> int:
        """Append records; a batch larger than the ring keeps its newest `capacity` records."""
        r = self.ring
        n = len(batch)
        if n == 0:
            return 0
        cap = r.capacity
        if n > cap:
            batch = batch[n - cap:]
            skipped = n - cap
            n = cap
        else:
            skipped = 0
        start = int(r._head[0]) + skipped
        r._reserve[0] = start + n  # first: consumers learn these slots are being overwritten
        i = start & r.mask
        first = min(n, cap - i)
        copy_into(r.records[i:i + first], batch[:first])
        if first < n:
            copy_into(r.records[:n - first], batch[first:])
        r._head[0] = start + n  # last: the records are complete
        return n


class RingConsumer:
    """One consumer slot. Not thread-safe; one process per slot."""

    def __init__(self, ring: Ring, index: int, *, from_start: bool = False) -> None:
        if not 0 <= index < MAX_CONSUMERS:
            raise ValueError(f"'index' must be in 0..{MAX_CONSUMERS - 1}, was {index}")
        self.ring = ring
        self.state = ring.consumers[index : index + 1]
        if not int(self.state["attached"][0]):
            # First attach: start at the head (or at the oldest record kept, if asked).
            self.state["cursor"] = max(0, ring.head - ring.capacity) if from_start else ring.head
            self.state["attached"] = 1
        self._buf = np.empty(0, ring.dtype)

    @property
    def cursor(self) -> int:
        return int(self.state["cursor"][0])

    @property
    def lost(self) -> int:
        return int(self.state["lost"][0])

    def backlog(self) -> int:
        return self.ring.head - self.cursor

    def poll(self, max_records: int = 65536) -> np.ndarray:
        """Copy out up to `max_records` new records (a view of an internal buffer, valid until
        the next poll). Records the producer overwrote meanwhile are dropped and counted."""
        r = self.ring
        cap = r.capacity
        head = int(r._head[0])
        c = int(self.state["cursor"][0])
        if head == c:
            return self._buf[:0]
        lost = 0
        if head - c > cap:
            lost += head - cap - c
            c = head - cap
        n = min(head - c, max_records)
        if len(self._buf) < n:
            self._buf = np.empty(max(n, min(cap, max_records)), r.dtype)
        out = self._buf
        i = c & r.mask
        first = min(n, cap - i)
        copy_into(out[:first], r.records[i:i + first])
        if first < n:
            copy_into(out[first:n], r.records[:n - first])
        oldest_intact = int(r._reserve[0]) - cap  # loaded after the copy: see module contract
        skip = 0
        if c < oldest_intact:
            skip = min(n, oldest_intact - c)
            lost += skip
        self.state["cursor"] = c + n
        if lost:
            self.state["lost"] += lost
        self.state["delivered"] += n - skip
        return out[skip:n]
